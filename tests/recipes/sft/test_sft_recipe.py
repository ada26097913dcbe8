"""sft evaluation: exact match, its plot, and a comparison plot titled by the eval sets the runs used."""

from __future__ import annotations

from pathlib import Path

from llmft.core.jsonl import write_jsonl
from llmft.recipes.base import get_recipe, recipe_config


class Parrot:
    """Answers each prompt with the completion a table gives it (or "?")."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers

    def generate(self, prompts: list[str], **kwargs: object) -> list[str]:
        return [self.answers.get(prompt, "?") for prompt in prompts]


def test_eval_scores_exact_match_and_draws_it(tmp_path: Path, saved_figures: dict) -> None:
    records = [{"prompt": f"q{i}", "completion": f" a{i}"} for i in range(4)]
    eval_file = write_jsonl(tmp_path / "eval.jsonl", records)
    config = recipe_config({"recipe": "sft", "data": {"train": str(eval_file), "eval": str(eval_file)}})
    metrics = get_recipe("sft").evaluate(Parrot({"q0": "a0", "q1": " a1 ", "q2": "b"}), config, tmp_path / "eval")
    assert metrics == {"exact_match": 0.5, "n": 4}
    assert (tmp_path / "eval" / "exact_match.png").read_bytes()[:4] == b"\x89PNG"
    assert saved_figures["exact_match.png"]["title"] == f"sft: exact match on {eval_file}"


def test_the_comparison_plot_names_the_eval_sets(tmp_path: Path, saved_figures: dict) -> None:
    recipe = get_recipe("sft")
    same = {run: {"exact_match": 0.5, "data_eval": "data/sft/eval.jsonl"} for run in ("a/final", "b/final")}
    assert recipe.compare(same, tmp_path).name == "exact_match.png"
    assert saved_figures["exact_match.png"]["title"] == "sft: exact match on data/sft/eval.jsonl"
    mixed = {f"{name}/final": {"exact_match": 0.5, "data_eval": f"data/{name}.jsonl"} for name in "cab"}
    recipe.compare(mixed, tmp_path)
    assert saved_figures["exact_match.png"]["title"] == (
        "sft: exact match on 3 different eval sets (data/a.jsonl, data/b.jsonl, data/c.jsonl)")
