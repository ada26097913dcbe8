"""squad masking: only assistant answers and their end-of-turn token train; prompts match training text."""

from __future__ import annotations

import pytest

from llmft.core.config import Config
from llmft.core.data import IGNORE
from llmft.core.errors import LlmftError
from llmft.core.tokenizers import train_tokenizer
from llmft.recipes.squad.chat import answer_prompt, render, tokenize_chat, turn_opening
from llmft.recipes.squad.data import pause_tokens, squad_record
from llmft.recipes.squad.recipe import SquadConfig, SquadRecipe

ROW = {"id": "q1", "title": "T", "context": "The Normans gave their name to Normandy, a region in France.",
       "question": "In what country is Normandy located?", "answers": {"text": ["France"], "answer_start": [53]}}
NO_ROW = {**ROW, "id": "q2", "question": "Who ruled Normandy?", "answers": {"text": [], "answer_start": []}}
# Llama 3's template (it trims every message), with the tiny tokenizer's BOS.
LLAMA3_TEMPLATE = (
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA3_TOKENS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def _tokenizer(records: list[dict], extra: list[str], template: str = ""):
    texts = [m["content"] for r in records for m in r["messages"]] + ["\\u0123456789"]
    tokenizer = train_tokenizer(texts, "char", extra_tokens=extra)
    if template:
        tokenizer.chat_template = template
    return tokenizer


def _trained(tokenizer, example) -> list[str]:
    """Decoded runs of consecutive trained tokens."""
    runs, current = [], []
    for token, label in zip(example.input_ids, example.labels, strict=True):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_only_the_answer_and_end_of_turn_train_pause_tokens_do_not():
    pause = pause_tokens(3)
    record = squad_record(ROW, "".join(pause), multi_turn=False)
    tokenizer = _tokenizer([record], pause)
    example = tokenize_chat(tokenizer, record["messages"], "".join(pause), max_length=4096)
    answer = '\n```json\n{\n  "answer": "France"\n}\n```'
    assert _trained(tokenizer, example) == [answer + "</s>"]
    assert example.trained == len(answer) + 1  # one token per character, plus EOS
    pause_ids = set(tokenizer.convert_tokens_to_ids(pause))
    at_pause = [label for token, label in zip(example.input_ids, example.labels, strict=True) if token in pause_ids]
    assert len(at_pause) == 3 and set(at_pause) == {IGNORE}
    first = next(i for i, label in enumerate(example.labels) if label != IGNORE)
    assert tokenizer.decode(example.input_ids[:first]).endswith("<|assistant|>\n<blah_0><blah_1><blah_2>")
    assert example.input_ids[-2] == tokenizer.eos_token_id and example.labels[-2] == tokenizer.eos_token_id
    assert example.labels[-1] == IGNORE  # the template's "\n" after </s>


def test_every_assistant_turn_trains_in_the_multi_turn_variant():
    pause = pause_tokens(2)
    record = squad_record(NO_ROW, "".join(pause), multi_turn=True)
    tokenizer = _tokenizer([record], pause)
    example = tokenize_chat(tokenizer, record["messages"], "".join(pause), max_length=4096)
    assert _trained(tokenizer, example) == ['\n```json\n{\n  "answer": "no"\n}\n```</s>',
                                            '\n```json\n{\n  "answer": "?"\n}\n```</s>']


def test_llama3_template_trims_messages_and_trains_eot():
    record = squad_record(ROW, "", multi_turn=False)
    tokenizer = _tokenizer([record], LLAMA3_TOKENS, LLAMA3_TEMPLATE)
    example = tokenize_chat(tokenizer, record["messages"], "", max_length=4096)
    # Without pause tokens the template trims the answer's leading newline: training starts at the fence.
    assert _trained(tokenizer, example) == ['```json\n{\n  "answer": "France"\n}\n```<|eot_id|>']
    assert example.labels[-1] == tokenizer.convert_tokens_to_ids("<|eot_id|>")


@pytest.mark.parametrize("template", ["", LLAMA3_TEMPLATE])
@pytest.mark.parametrize("k", [0, 3])
def test_force_answer_prompt_is_the_training_text_up_to_the_json_body(template, k):
    pause = "".join(pause_tokens(k))
    record = squad_record(ROW, pause, multi_turn=False)
    tokenizer = _tokenizer([record], pause_tokens(k) + LLAMA3_TOKENS, template)
    text = render(tokenizer, record["messages"])
    prompt = answer_prompt(tokenizer, record["messages"][:-1], pause)
    assert text.startswith(prompt) and prompt.endswith(pause + ("" if template and not k else "\n") + "```json")
    assert text[len(prompt):].startswith('\n{\n  "answer": "France"')
    generation_prompt = render(tokenizer, record["messages"][:-1], add_generation_prompt=True)
    assert generation_prompt + turn_opening(tokenizer, pause) == prompt


def test_reference_style_prompt_differs_on_llama3_without_pauses():
    record = squad_record(ROW, "", multi_turn=False)
    tokenizer = _tokenizer([record], LLAMA3_TOKENS, LLAMA3_TEMPLATE)
    naive = render(tokenizer, record["messages"][:-1], add_generation_prompt=True) + "\n```json"
    assert naive.endswith("<|end_header_id|>\n\n\n```json")
    assert answer_prompt(tokenizer, record["messages"][:-1], "").endswith("<|end_header_id|>\n\n```json")


def test_pause_mismatch_with_the_config_is_a_user_error():
    record = squad_record(ROW, "<blah_0><blah_1>", multi_turn=False)
    tokenizer = _tokenizer([record], pause_tokens(2))
    with pytest.raises(LlmftError, match="num_pause_tokens"):
        tokenize_chat(tokenizer, record["messages"], "", max_length=4096)


def test_recipe_tokenize_uses_config_pauses_and_truncates_from_the_left():
    pause = pause_tokens(2)
    record = squad_record(ROW, "".join(pause), multi_turn=False)
    tokenizer = _tokenizer([record], pause)
    recipe = SquadRecipe()
    config = Config(recipe="squad", section=SquadConfig(num_pause_tokens=2))
    assert recipe.special_tokens(config) == ["<blah_0>", "<blah_1>"]
    full = recipe.tokenize(record, tokenizer, config)
    config.data.max_length = 60
    cut = recipe.tokenize(record, tokenizer, config)
    assert len(cut) == 60 and cut.input_ids == full.input_ids[-60:] and cut.trained == full.trained
    assert recipe.tokenize({"prompt": "a", "completion": "b"}, tokenizer, config) is None


@pytest.mark.parametrize("template", ["", LLAMA3_TEMPLATE])
def test_bpe_merges_keep_the_mask_and_the_prompt_is_a_token_prefix(template):
    pause = "".join(pause_tokens(2))
    record = squad_record(ROW, pause, multi_turn=False)
    texts = [m["content"] for m in record["messages"]] * 3
    tokenizer = train_tokenizer(texts, "bpe", vocab_size=400, extra_tokens=pause_tokens(2) + LLAMA3_TOKENS)
    if template:
        tokenizer.chat_template = template
    example = tokenize_chat(tokenizer, record["messages"], pause, max_length=4096)
    end = "<|eot_id|>" if template else "</s>"
    assert _trained(tokenizer, example) == ['\n```json\n{\n  "answer": "France"\n}\n```' + end]
    prompt_ids = tokenizer(answer_prompt(tokenizer, record["messages"][:-1], pause), add_special_tokens=False)
    assert example.input_ids[:len(prompt_ids["input_ids"])] == prompt_ids["input_ids"]


def test_a_passage_trains_every_token_beside_answer_only_questions(tmp_path):
    from llmft.core.data import load_examples
    from llmft.core.jsonl import write_jsonl

    record = squad_record(ROW, "", multi_turn=False)
    tokenizer = _tokenizer([record], [])
    config = Config(recipe="squad", section=SquadConfig())
    path = write_jsonl(tmp_path / "train.jsonl", [record, {"text": ROW["context"]}])
    question, passage = load_examples(path, tokenizer, 512, lambda r: SquadRecipe().tokenize(r, tokenizer, config))
    assert question.trained < len(question) // 2
    assert passage.trained == len(passage) - 1  # every token after BOS is a target
