"""sft's evaluation: exact match through the shared batched loop, resumed without asking twice."""

import json

from llmft.core.config import Config
from llmft.core.jsonl import write_jsonl
from llmft.recipes.base import get_recipe


class Table:
    """A Generator that answers from a table and records each batch."""

    def __init__(self, answers):
        self.answers, self.batches = answers, []

    def generate(self, prompts, *, max_new_tokens=64, stop=(), num_beams=1, temperature=0.0, seed=0, top_p=1.0):
        self.batches.append(list(prompts))
        return [self.answers[p] for p in prompts]


def test_exact_match_rows_and_resume(tmp_path):
    records = [{"prompt": f"q{i}", "completion": f" a{i}"} for i in range(5)]
    config = Config()
    config.data.eval = str(write_jsonl(tmp_path / "eval.jsonl", records))
    config.eval.batch_size = 2
    answers = {f"q{i}": f"a{i}" if i != 3 else "wrong" for i in range(5)}
    generator = Table(answers)
    metrics = get_recipe("sft").evaluate(generator, config, tmp_path)
    assert metrics == {"exact_match": 0.8, "n": 5}
    assert generator.batches == [["q0", "q1"], ["q2", "q3"], ["q4"]]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["index"], r["output"], r["correct"]) for r in rows] == [
        (0, "a0", True), (1, "a1", True), (2, "a2", True), (3, "wrong", False), (4, "a4", True)]
    again = Table({})  # every row is done: nothing is asked
    assert get_recipe("sft").evaluate(again, config, tmp_path) == metrics and again.batches == []


def test_max_examples_limits_the_rows(tmp_path):
    records = [{"prompt": f"q{i}", "completion": "x"} for i in range(4)]
    config = Config()
    config.data.eval = str(write_jsonl(tmp_path / "eval.jsonl", records))
    config.eval.max_examples = 3
    metrics = get_recipe("sft").evaluate(Table({f"q{i}": "x" for i in range(4)}), config, tmp_path)
    assert metrics == {"exact_match": 1.0, "n": 3}
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 3
