"""A retuning run served: the recursion engine answers `1234 + 578` with 1812, the trace comes back in `llmft`."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from llmft.commands.serve import recipe_decoder
from llmft.core.generation import Sampling
from llmft.core.tokenizers import train_tokenizer
from llmft.recipes.base import get_recipe, recipe_config
from llmft.recipes.retuning.data import addition_recursive_examples
from llmft.recipes.retuning.decode import serving_prompt
from llmft.serve.app import create_app
from llmft.serve.served import ServedModel

from .conftest import client, serving

PROBLEMS = [(1234, 578), (99, 1), (5, 7), (40213, 9)]


class Teacher:
    """A Generator that knows every training example of PROBLEMS (all recursion levels) and nothing else."""

    def __init__(self):
        self.table = {r["prompt"]: r["completion"] for a, b in PROBLEMS for r in addition_recursive_examples(a, b)}
        self.tokenizer = train_tokenizer(["0123456789 +\nSolutionCalRetrnAswyOpu:,"], "char")
        self.batches: list[list[str]] = []

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 64, stop: Sequence[str] = (),
                 num_beams: int = 1, temperature: float = 0.0, seed: int = 0, top_p: float = 1.0) -> list[str]:
        self.batches.append(list(prompts))
        return [self.table.get(p, "no idea") for p in prompts]


@pytest.fixture
def adder():
    teacher = Teacher()
    config = recipe_config({"recipe": "retuning", "retuning": {"task": "addition", "format": "recursive"},
                               "eval": {"max_new_tokens": 40}})
    model = ServedModel("adder", recipe_decoder(get_recipe("retuning"), teacher, config), teacher.tokenizer, 256,
                        Sampling(max_new_tokens=40), {"recipe": "retuning"})
    return teacher, model


def test_recursion_answers_multi_digit_addition_with_its_trace(adder):
    teacher, model = adder
    with serving(create_app([model])) as url:
        api = client(url)
        done = api.completions.create(model="adder", prompt="1234 + 578")
        choice = done.choices[0]
        assert choice.text == "1812" and choice.finish_reason == "stop"
        trace = choice.model_extra["llmft"]
        assert trace["recursion"] is True and trace["answer"] == "1812" and trace["error"] == ""
        assert (trace["calls"], trace["depth"]) == (3, 3)
        assert trace["prompt"] == "1234 + 0578\nSolution: "
        assert trace["transcript"] == "Call: 234 + 578\nReturn: Carry 0, Output 812\nAnswer: Carry 0, Output 1812"
        assert [s["depth"] for s in trace["steps"]] == [0, 1, 2, 3, 2, 1, 0]
        assert done.usage.completion_tokens == trace["generated_tokens"] > 0

        plain = api.completions.create(model="adder", prompt="1234 + 578", extra_body={"llmft": {"recursion": False}})
        assert plain.choices[0].text == "Call: 234 + 578\n"
        assert plain.choices[0].model_extra["llmft"] == {"recursion": False, "prompt": "1234 + 0578\nSolution: "}

        teacher.batches.clear()
        many = api.completions.create(model="adder", prompt=[f"{a} + {b}" for a, b in PROBLEMS])
        assert [c.text for c in many.choices] == [str(a + b) for a, b in PROBLEMS]
        # Waves: every ready context of every problem in one generate call, so 5 levels -> 9 calls, not 23.
        assert len(teacher.batches) == 9 and len(teacher.batches[0]) == 4

        with pytest.raises(Exception, match="unknown llmft option"):
            api.completions.create(model="adder", prompt="5 + 7", extra_body={"llmft": {"recursive": False}})
        with pytest.raises(Exception, match="must be true or false"):
            api.completions.create(model="adder", prompt="5 + 7", extra_body={"llmft": {"recursion": "no"}})


def test_serving_prompt_uses_the_training_format():
    assert serving_prompt("addition", "1234 + 578") == "1234 + 0578\nSolution: "
    assert serving_prompt("addition", " 12+3 = ") == "12 + 03\nSolution: "
    assert serving_prompt("addition", "12 + 03\nSolution: ") == "12 + 03\nSolution: "
    assert serving_prompt("parity", "What is the parity of [1, 0]?") == "What is the parity of [1, 0]?\nSolution: "
