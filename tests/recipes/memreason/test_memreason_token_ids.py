"""Planning-token ids against the reference's, with a Llama-2-style and a Llama-3-style tokenizer trained here.

The reference's tokenisation (AutoTokenizer of transformers 4.31 with tokenizers 0.13.3; the planning tokens
added as ordinary tokens) was executed on this sequence with both tokenizers. With the Llama-2 normaliser
(spaces to "▁") an added token was matched together with the space before it:
  <s> ▁Question : ... ▁battle ? <0x0A> ▁ <prefix_0> <prefix_1> <memory_0> <memory_1> ▁The ... ▁Jima . <0x0A>
  <prefix_0> <prefix_1> <answer_0> <answer_1> ▁The ▁answer ▁is : ▁True <0x0A>
(decoded: "<prefix_0><prefix_1><memory_0>", as its released outputs read). The byte-level tokenizer kept every
space as its own token: ? Ċ Ġ Ġ <prefix_0> Ġ <prefix_1> Ġ <memory_0> ...
"""

from __future__ import annotations

from typing import Any

import pytest

from llmft.core.data import IGNORE
from llmft.recipes.memreason.data import eval_prompt
from llmft.recipes.memreason.masking import sequence_ids, tokenize_reference
from llmft.recipes.memreason.tokens import all_tokens

QUESTION = "Question: Was ship that recovered Apollo 13 named after a World War II battle?\n "
PREFIX = " <prefix_0> <prefix_1>"
TARGET = (PREFIX + " <memory_0> <memory_1> The ship was the USS Iwo Jima.\n"
          + PREFIX + " <answer_0> <answer_1> The answer is: True\n")
CORPUS = ["Question: Was ship that recovered Apollo 13 named after a World War II battle? The ship was the USS "
          "Iwo Jima. The answer is: True"] * 40
QUESTION_WORDS = ["▁Question", ":", "▁Was", "▁ship", "▁that", "▁recovered", "▁Apollo", "▁13", "▁named", "▁after",
                  "▁a", "▁World", "▁War", "▁II", "▁battle", "?"]


def llama2_style(prepend: str = "first") -> Any:
    """Sentencepiece-style BPE as Llama-2's in transformers 5: "▁" word prefix (on the first piece, or with
    prepend="always" on every piece, as a legacy Llama tokenizer), byte fallback, BOS prepended."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend, split=True), pre_tokenizers.Punctuation()])
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokenizer.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                                              show_progress=False))
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[
        ("<s>", tokenizer.token_to_id("<s>"))])
    return _with_planning_tokens(PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>",
                                                         eos_token="</s>", unk_token="<unk>"))


def llama3_style() -> Any:
    """Byte-level BPE as Llama-3's: spaces and newlines are bytes ("Ġ", "Ċ"), no unk or pad, "!" is id 0 (the
    first byte symbol), BOS prepended."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>"])
    tokenizer.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[
        ("<|begin_of_text|>", tokenizer.token_to_id("<|begin_of_text|>"))])
    return _with_planning_tokens(PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|begin_of_text|>",
                                                         eos_token="<|end_of_text|>"))


def _with_planning_tokens(tokenizer: Any) -> Any:
    tokenizer.add_tokens(all_tokens(2, 2), special_tokens=True)  # as llmft adds them
    return tokenizer


def tokens(tokenizer: Any, ids: list[int]) -> list[str]:
    return tokenizer.convert_ids_to_tokens(ids)


LLAMA2_REFERENCE = ["<s>", *QUESTION_WORDS, "<0x0A>", "▁", "<prefix_0>", "<prefix_1>", "<memory_0>", "<memory_1>",
                    "▁The", "▁ship", "▁was", "▁the", "▁USS", "▁Iwo", "▁Jima", ".", "<0x0A>", "<prefix_0>", "<prefix_1>",
                    "<answer_0>", "<answer_1>", "▁The", "▁answer", "▁is", ":", "▁True", "<0x0A>"]


@pytest.mark.parametrize("prepend", ["first", "always"])
def test_llama2_style_ids_equal_the_reference_with_absorb_space_before_token(prepend: str) -> None:
    tokenizer = llama2_style(prepend)
    assert tokens(tokenizer, sequence_ids(tokenizer, QUESTION + TARGET, True)) == LLAMA2_REFERENCE
    # The prompt alone ends ? <0x0A> ▁ as in the whole sequence, so the off-by-one mask trains that "▁" onwards.
    prompt = sequence_ids(tokenizer, QUESTION, True)
    assert tokens(tokenizer, prompt) == LLAMA2_REFERENCE[:19]
    example = tokenize_reference(tokenizer, QUESTION, TARGET, 700, True, True)
    assert example.input_ids == sequence_ids(tokenizer, QUESTION + TARGET, True) + [tokenizer.eos_token_id]
    assert example.labels == [IGNORE] * 18 + example.input_ids[18:]
    # Evaluation prompts encode, whole, to the ids training saw: generation continues where training did.
    prompted = tokenizer(eval_prompt(QUESTION, "tokens", 2, True))["input_ids"]
    assert tokens(tokenizer, prompted) == LLAMA2_REFERENCE[:21]


def test_llama2_style_without_the_option_puts_a_lone_word_prefix_before_every_token() -> None:
    tokenizer = llama2_style()
    plain = tokens(tokenizer, sequence_ids(tokenizer, QUESTION + TARGET))
    assert plain[16:27] == ["?", "<0x0A>", "▁", "▁", "<prefix_0>", "▁", "<prefix_1>", "▁", "<memory_0>", "▁",
                            "<memory_1>"]
    assert len(plain) == len(LLAMA2_REFERENCE) + 8  # one "▁" more before each of the 8 planning tokens


def test_llama3_style_ids_equal_the_reference_fast_tokenizer_as_written() -> None:
    tokenizer = llama3_style()
    # The reference's fast path run on this same tokenizer (its planning tokens added as ordinary tokens) gave
    # exactly these tokens, and the prompt alone ended ? Ċ Ġ: llmft's ids without the option are the reference's.
    words = ["Question", *(w.replace("▁", "Ġ") for w in QUESTION_WORDS[1:])]
    reference = (["<|begin_of_text|>", *words, "Ċ", "Ġ", "Ġ", "<prefix_0>", "Ġ", "<prefix_1>", "Ġ", "<memory_0>", "Ġ",
                  "<memory_1>", "ĠThe", "Ġship", "Ġwas", "Ġthe", "ĠUSS", "ĠIwo", "ĠJima", ".", "Ċ", "Ġ", "<prefix_0>",
                  "Ġ", "<prefix_1>", "Ġ", "<answer_0>", "Ġ", "<answer_1>", "ĠThe", "Ġanswer", "Ġis", ":", "ĠTrue", "Ċ"])
    assert tokens(tokenizer, sequence_ids(tokenizer, QUESTION + TARGET)) == reference
    assert tokens(tokenizer, sequence_ids(tokenizer, QUESTION)) == ["<|begin_of_text|>", *words, "Ċ", "Ġ"]
    example = tokenize_reference(tokenizer, QUESTION, TARGET, 700)
    assert tokens(tokenizer, example.input_ids) == reference + ["<|end_of_text|>"]


class Echo:
    """A generator that keeps the prompts it was given."""

    def generate(self, prompts: list[str], **kwargs: Any) -> list[str]:
        self.prompts = prompts
        return [""] * len(prompts)


def test_the_option_reaches_training_and_serving_prompts() -> None:
    from llmft.core.generation import Sampling
    from llmft.recipes.base import get_recipe, recipe_config

    tokenizer, recipe = llama2_style(), get_recipe("memreason")
    record = {"prompt": QUESTION, "completion": TARGET, "question": QUESTION[10:-2], "answer": "True",
              "variant": "tokens", "steps": [], "num_prefix_tokens": 2, "num_special_tokens": 2}
    for absorb in (False, True):
        config = recipe_config({"recipe": "memreason", "data": {"max_length": 700}, "memreason": {
            "num_prefix_tokens": 2, "num_special_tokens": 2, "absorb_space_before_token": absorb}})
        example = recipe.tokenize(record, tokenizer, config)
        assert example.input_ids == tokenize_reference(tokenizer, QUESTION, TARGET, 700, True, absorb).input_ids
        echo = Echo()
        recipe.decode(echo, [QUESTION], config, Sampling())
        assert echo.prompts == [eval_prompt(QUESTION, "tokens", 2, absorb)]
    assert eval_prompt(QUESTION, "tokens", 2, True) == QUESTION + "<prefix_0><prefix_1>"


def test_reference_pad_id_hides_a_real_bang_and_shortens_the_masked_prompt() -> None:
    tokenizer = llama3_style()
    assert tokenizer.convert_tokens_to_ids("!") == 0  # as in Llama-3's vocabulary
    question = QUESTION.replace("?", "!")
    plain = tokenize_reference(tokenizer, question, TARGET, 700)
    quirk = tokenize_reference(tokenizer, question, TARGET, 700, pad_id=0)
    bang = plain.input_ids.index(0)
    assert quirk.input_ids == plain.input_ids and plain.hidden == () and quirk.hidden == (bang,)
    # The reference's prompt length left out the "!": one prompt token fewer is masked.
    assert quirk.labels.count(IGNORE) == plain.labels.count(IGNORE) - 1 == bang + 1
    assert tokenize_reference(tokenizer, QUESTION, TARGET, 700, pad_id=0).hidden == ()


def test_reference_pad_id_needs_one_example_per_row() -> None:
    from llmft.core.errors import LlmftError
    from llmft.recipes.base import get_recipe, recipe_config

    tokenizer, recipe = llama3_style(), get_recipe("memreason")
    record = {"prompt": QUESTION.replace("?", "!"), "completion": TARGET, "question": "q", "answer": "True",
              "variant": "tokens", "steps": [], "num_prefix_tokens": 2, "num_special_tokens": 2}
    section = {"num_prefix_tokens": 2, "num_special_tokens": 2, "reference_pad_id": 0}
    config = recipe_config({"recipe": "memreason", "data": {"packing": "none"}, "memreason": section})
    assert len(recipe.tokenize(record, tokenizer, config).hidden) == 1
    packed = recipe_config({"recipe": "memreason", "data": {"packing": "rows"}, "memreason": section})
    with pytest.raises(LlmftError, match='memreason.reference_pad_id hides tokens from attention: set data.packing'):
        recipe.tokenize(record, tokenizer, packed)
