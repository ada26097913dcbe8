"""`llmft serve`'s wiring of a recipe's decode: request options reach only a decode that reads them."""

import pytest

from llmft.commands.serve import recipe_decoder
from llmft.core.config import Config
from llmft.core.errors import LlmftError
from llmft.core.generation import Sampling
from llmft.recipes.base import get_recipe


class Echo:
    """A Generator that returns each prompt reversed."""

    def generate(self, prompts, **kwargs):
        return [p[::-1] for p in prompts]


def test_options_sent_to_a_recipe_that_reads_none_are_one_error_line():
    decode = recipe_decoder(get_recipe("sft"), Echo(), Config())
    assert [d.text for d in decode(["ab"], Sampling(), {})] == ["ba"]
    with pytest.raises(LlmftError, match=r"^the sft recipe reads no llmft options, got: depth, recursion$"):
        decode(["ab"], Sampling(), {"recursion": False, "depth": 1})


def test_only_retuning_declares_decode_options():
    assert {name for name in ("sft", "uft", "squad", "memreason", "cot-teacher", "retuning")
            if get_recipe(name).decode_options} == {"retuning"}
