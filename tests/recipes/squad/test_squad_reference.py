"""squad against its reference (teticio/llama-squad @27e17cb): the dedent-after-interpolation prompts, the
repeated-<blah> variant and the Llama-3 preset's training settings."""

from __future__ import annotations

from pathlib import Path

from llmft.core.config import Config
from llmft.core.data import IGNORE
from llmft.core.jsonl import read_jsonl
from llmft.core.tokenizers import train_tokenizer
from llmft.recipes.base import load_recipe_config
from llmft.recipes.squad.data import has_answer_instruction, single_turn_instruction, squad_record
from llmft.recipes.squad.recipe import SquadConfig, SquadRecipe

REPO = Path(__file__).resolve().parents[3]
INDENT = " " * 20
ROW = {"id": "q1", "title": "T", "context": "Line one.\nLine two.", "question": "Which line?",
       "answers": {"text": ["Line two."], "answer_start": [10]}}


def test_a_newline_in_the_context_stops_the_dedent_as_in_the_reference():
    """create_squad_dataset.py dedents after filling in: every template line keeps its 20 spaces."""
    assert single_turn_instruction(ROW["context"], ROW["question"]) == (
        INDENT + "Extract from the following context the minimal span word for word that best answers the "
        "question. Think step by step and explain your reasoning. Then give the answer in JSON format as "
        "follows:\n"
        + INDENT + "```json\n" + INDENT + "{\n" + INDENT + '  "answer": ...\n' + INDENT + "}\n" + INDENT + "```\n"
        + INDENT + 'If the answer is not in the context, the answer should be "?".\n'
        + INDENT + "Context: Line one.\nLine two.\n"
        + INDENT + "Question: Which line?"
    )
    assert has_answer_instruction(ROW["context"], ROW["question"]).startswith(INDENT + "Does the the following")
    clean = single_turn_instruction(ROW["context"], ROW["question"], dedent_quirk=False)
    assert clean.startswith("Extract from") and "\n```json\n{\n" in clean
    one_line = single_turn_instruction("One line.", "Which?")
    assert one_line == single_turn_instruction("One line.", "Which?", dedent_quirk=False)
    assert one_line.startswith("Extract from")
    # dedent also blanks a whitespace-only line of the context
    assert "Context: a\n\nb\n" in single_turn_instruction("a\n   \nb", "q")
    record = squad_record(ROW, "", multi_turn=False)
    assert record["messages"][1]["content"].startswith(INDENT + "Extract")
    assert record["messages"][2]["content"] == '\n```json\n{\n  "answer": "Line two."\n}\n```'


def test_make_data_keeps_the_quirk_by_default_and_can_turn_it_off(tmp_path):
    import json

    paragraph = {"context": ROW["context"], "qas": [
        {"id": f"q{i}", "question": f"Which line {i}?", "is_impossible": False,
         "answers": [{"text": "Line two.", "answer_start": 10}]} for i in range(20)]}
    source = tmp_path / "train-v2.0.json"
    source.write_text(json.dumps({"data": [{"title": "T", "paragraphs": [paragraph]}]}), encoding="utf-8")
    recipe = SquadRecipe()
    quirk = read_jsonl(recipe.make_data(tmp_path / "q", 0, source=str(source))["train"])
    clean = read_jsonl(recipe.make_data(tmp_path / "c", 0, source=str(source), dedent_quirk=False)["train"])
    assert all(r["messages"][1]["content"].startswith(INDENT + "Extract") for r in quirk)
    assert all(r["messages"][1]["content"].startswith("Extract") for r in clean)


def test_single_pause_token_repeats_one_blah(tmp_path, monkeypatch):
    """multiple_reasoning_tokens=False: one <blah> token, repeated, masked like the distinct ones."""
    monkeypatch.chdir(tmp_path)
    recipe = SquadRecipe()
    paths = recipe.make_data(None, 0, synthetic=10, num_pause_tokens=25, single_pause_token=True)
    assert paths["train"].parent.name == "synthetic-blah25"
    record = read_jsonl(paths["train"])[0]
    assert record["messages"][-1]["content"].startswith("<blah>" * 25 + "\n```json\n")
    config = Config(recipe="squad", section=SquadConfig(num_pause_tokens=25, distinct_pause_tokens=False))
    assert recipe.special_tokens(config) == ["<blah>"]
    tokenizer = train_tokenizer([m["content"] for m in record["messages"]], "char", extra_tokens=["<blah>"])
    example = recipe.tokenize(record, tokenizer, config)
    blah = tokenizer.convert_tokens_to_ids("<blah>")
    positions = [i for i, token in enumerate(example.input_ids) if token == blah]
    assert len(positions) == 25 and all(example.labels[i] == IGNORE for i in positions)
    assert example.labels[positions[-1] + 1] != IGNORE  # the answer after them trains


def test_llama3_preset_follows_train_sh():
    """train.sh: cosine over 65,000 steps with 3% warmup; QLoRA defaults: no nested quant, fp16 compute;
    the all-linear regex matches lm_head."""
    import torch

    from llmft.core.trainer import _optimizer

    preset, _ = load_recipe_config(REPO / "recipes" / "squad-llama3.toml")
    assert "lm_head" in preset.adapter.target_modules and len(preset.adapter.target_modules) == 8
    assert (preset.adapter.double_quant, preset.adapter.compute_dtype) == (False, "float16")
    assert (preset.train.lr_scheduler, preset.train.lr_schedule_steps, preset.train.max_steps) == \
        ("cosine", 65000, 10000)
    _, scheduler = _optimizer(torch.nn.Linear(2, 2), preset, preset.train.lr_schedule_steps)
    factor = scheduler.lr_lambdas[0]
    assert factor(975) == 0.5 and factor(1950) == 1.0  # warmup: 3% of 65,000 steps
    assert round(factor(10000), 3) == 0.960  # where the 1.2-epoch run stops: still 96% of the peak
