"""memreason evaluation: the reference's extraction on hand-made outputs, step types, metrics by hand."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmft.core.errors import LlmftError
from llmft.recipes.memreason.data import Report, build_records
from llmft.recipes.memreason.evaluate import (
    INVALID,
    compare_table,
    evaluate_memreason,
    extract_answer,
    parse_steps,
    score_row,
    select,
    summarize,
    type_agreement,
)
from llmft.recipes.memreason.recipe import MemreasonConfig


@pytest.mark.parametrize(("text", "expected"), [
    (" The answer is: True\n", "True"),
    ("x The answer is: false", "false"),  # kept as written: "false" != "False" is wrong, as the reference
    ("The answer is: 1,234.5", "1234.5"),
    ("The answer is:True", INVALID),  # the space after the colon is required
    ("the answer is: TRUE and The answer is: False", "TRUE"),  # the first match counts
    ("True", INVALID),
])
def test_strategyqa_extraction(text: str, expected: str) -> None:
    assert extract_answer(text, "strategyqa") == expected


@pytest.mark.parametrize(("text", "dataset", "expected"), [
    (" The answer is: C\n", "commonsenseqa", "C"),
    ("The answer is: A then The answer is: d.", "commonsenseqa", "D"),  # after the LAST phrase, upper-cased
    ("The answer is: bank", "commonsenseqa", "B"),  # any A-E letter, even inside a word
    ("The answer is: xyz", "commonsenseqa", INVALID),
    ("no phrase, maybe b or c", "commonsenseqa", "C"),  # no phrase: the last letter anywhere
    ("The answer is: K", "commonsenseqa", INVALID),
    ("The answer is: K", "truthfulqa", "K"),
    ("", "truthfulqa", INVALID),
])
def test_letter_extraction(text: str, dataset: str, expected: str) -> None:
    assert extract_answer(text, dataset) == expected


def test_parse_steps_reads_the_types_from_the_tokens() -> None:
    text = (" <prefix_0> <prefix_1> <memory_0> <memory_1> Ab is 3.\n <prefix_0> <prefix_1> <reason_0> <reason_1> "
            "3 < 4.\n <prefix_0> <prefix_1> <answer_0> <answer_1> The answer is: False\n")
    assert parse_steps(text, "tokens") == [{"type": "memory", "text": "Ab is 3."}, {"type": "reason", "text": "3 < 4."}]
    assert parse_steps(" <prefix_0> oops\n", "tokens") == [{"type": "untyped", "text": "oops"}]
    cot = "[rag]: Ab is 3. \n[reason]: 3 < 4.\n The answer is: False\n "
    assert parse_steps(cot, "cot") == [{"type": "memory", "text": "Ab is 3."}, {"type": "reason", "text": "3 < 4."}]
    assert parse_steps(" The answer is: True", "answer-only") == []


def test_type_agreement_counts_positions_over_the_longer_list() -> None:
    assert type_agreement(["memory", "reason"], ["memory", "reason"]) == (2, 2)
    assert type_agreement(["memory", "memory", "reason"], ["memory", "reason"]) == (1, 3)
    assert type_agreement([], ["memory"]) == (0, 1)
    assert type_agreement(["memory"], ["memory", None]) is None  # an untagged reference step: not compared


def records(variant: str = "tokens") -> list[dict]:
    raw = [("s#0", {"question": "Is Ab older than Cd?", "answer": "False", "split": "test",
                    "cot_steps": ["[rag]: Ab is 3.", "[rag]: Cd is 4.", "[reason]: 3 < 4."]}),
           ("s#1", {"question": "Who is the oldest? Options: A.Ab B.Cd C.Ef", "answer": "C", "split": "test",
                    "cot_steps": ["[rag]: Ef is 9.", "[reason]: 9 is the largest."]})]
    return build_records(raw, "synthetic", variant, 1, 1, Report())


def test_score_by_hand() -> None:
    chosen = records()
    prompts = [r["prompt"] + " <prefix_0>" for r in chosen]
    outputs = [" <memory_0> Ab is 3.\n <prefix_0> <reason_0> 3 < 4.\n <prefix_0> <answer_0> The answer is: False\n",
               " <memory_0> Ef is 9.\n <prefix_0> <memory_0> guess\n <prefix_0> <answer_0> The answer is: B\n"]
    rows = [score_row(r, p, o) for r, p, o in zip(chosen, prompts, outputs)]
    metrics = summarize(json.loads(json.dumps(rows)))  # as read back from results.jsonl
    assert [r["prediction"] for r in rows] == ["False", "B"]
    assert metrics["accuracy"] == 0.5 and metrics["invalid"] == 0
    assert metrics["chance"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    # Row 1: memory, reason vs memory, memory, reason -> 1 of 3; row 2: memory, memory vs memory, reason -> 1 of 2.
    assert metrics["step_type_agreement"] == pytest.approx(2 / 5)
    assert metrics["step_types_exact"] == 0.0
    assert rows[0]["steps"] == [{"type": "memory", "text": "Ab is 3."}, {"type": "reason", "text": "3 < 4."}]
    assert rows[0]["reference_steps"][2] == {"type": "reason", "text": "3 < 4."}


def test_prompt_and_generation_reading_is_reported_beside_the_generation() -> None:
    # The reference read the letter from the decoded prompt + generation: an empty output on a CommonsenseQA
    # question reads "E" (the last A-E letter of "...<PREFIX_1>"), right when the gold answer is E.
    raw = [("c#0", {"question": "Question: Where? Options: A.bank B.shop C.park D.road E.yard", "answer": "E",
                    "split": "test", "cot_steps": []}),
           ("c#1", {"question": "Question: Who? Options: A.me B.you C.us D.them E.all", "answer": "B",
                    "split": "test", "cot_steps": []})]
    chosen = build_records(raw, "commonsenseqa", "tokens", 2, 1, Report())
    prompts = [r["prompt"] + " <prefix_0> <prefix_1>" for r in chosen]
    rows = [score_row(r, p, o) for r, p, o in zip(chosen, prompts, ["", " The answer is: B"])]
    assert [(r["prediction"], r["prediction_with_prompt"]) for r in rows] == [(INVALID, "E"), ("B", "B")]
    generation = summarize(rows)
    assert (generation["accuracy"], generation["accuracy_generation"], generation["accuracy_prompt_and_generation"],
            generation["scored_on"]) == (0.5, 0.5, 1.0, "generation")
    reference = summarize(rows, score_with_prompt=True)
    assert (reference["accuracy"], reference["accuracy_generation"], reference["scored_on"]) == (
        1.0, 0.5, "prompt+generation")
    assert reference["accuracy_by_kind"] == {"commonsenseqa": 1.0}
    assert "| 1.000 | prompt+generation |" in compare_table({"run": reference})


def test_select_never_repeats_an_item() -> None:
    chosen = select(list(range(1221)), 1200, seed=42)
    assert len(chosen) == len(set(chosen)) == 1200
    assert select(list(range(5)), 0, 0) == [0, 1, 2, 3, 4]


class Echo:
    """A generator that answers every prompt with a fixed text and records what it was asked."""

    def __init__(self, text: str):
        self.text, self.calls = text, []

    def generate(self, prompts: list[str], **kwargs: object) -> list[str]:
        self.calls.append((list(prompts), kwargs))
        return [self.text] * len(prompts)


def test_evaluate_is_greedy_and_checks_the_tokens(tmp_path: Path, saved_figures: dict) -> None:
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records()))
    config = SimpleNamespace(data=SimpleNamespace(eval=str(path)),
                             eval=SimpleNamespace(max_examples=0, seed=0, max_new_tokens=32, num_beams=1,
                                                  temperature=0.0))
    section = MemreasonConfig(num_prefix_tokens=1, num_special_tokens=1)
    generator = Echo(" <memory_0> x\n <prefix_0> <answer_0> The answer is: False\n")
    metrics = evaluate_memreason(generator, config, section, tmp_path)
    (prompts, kwargs), = generator.calls
    assert prompts[0].endswith("\n  <prefix_0>") and kwargs["temperature"] == 0.0
    assert metrics["accuracy"] == 0.5 and metrics["n"] == 2
    assert metrics["accuracy_prompt_and_generation"] == 0.5 and metrics["scored_on"] == "generation"
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert saved_figures["accuracy.png"]["title"] == f"memreason (tokens) on {path}"
    assert evaluate_memreason(Echo("never asked"), config, section, tmp_path) == metrics  # resumed from results
    reference = MemreasonConfig(num_prefix_tokens=1, num_special_tokens=1, score_with_prompt=True)
    assert evaluate_memreason(Echo("never asked"), config, reference, tmp_path)["scored_on"] == "prompt+generation"
    with pytest.raises(LlmftError, match="made with --num-prefix-tokens 1 --num-special-tokens 1"):
        evaluate_memreason(generator, config, MemreasonConfig(num_prefix_tokens=2, num_special_tokens=1), tmp_path)


def test_the_comparison_plot_names_the_eval_sets(tmp_path: Path, saved_figures: dict) -> None:
    from llmft.recipes.base import get_recipe

    recipe = get_recipe("memreason")
    same = {name: {"accuracy": 0.5, "chance": 0.5, "data_eval": "data/m/test.jsonl"} for name in ("a", "b")}
    assert recipe.compare(same, tmp_path / "same").name == "accuracy.png"
    assert saved_figures["accuracy.png"]["title"] == "memreason on data/m/test.jsonl"
    assert (tmp_path / "same" / "table.md").is_file()
    mixed = {"a": {"accuracy": 0.5, "data_eval": "d/x.jsonl"}, "b": {"accuracy": 0.7, "data_eval": "d/y.jsonl"}}
    recipe.compare(mixed, tmp_path / "mixed")
    assert saved_figures["accuracy.png"]["title"] == "memreason on 2 different eval sets (d/x.jsonl, d/y.jsonl)"


def test_best_on_test_only_behind_the_flag() -> None:
    runs = {"run/checkpoint-1": {"accuracy": 0.6, "variant": "tokens", "chance": 0.5, "n": 10},
            "run/checkpoint-2": {"accuracy": 0.7, "variant": "tokens", "chance": 0.5, "n": 10}}
    assert "BEST" not in compare_table(runs)
    flagged = {k: {**v, "report_best_on_test": True} for k, v in runs.items()}
    assert "SELECTED ON THE TEST SPLIT" in compare_table(flagged) and "run/checkpoint-2 = 0.700" in compare_table(flagged)


def test_decode_appends_the_prefix_tokens_and_types_the_steps() -> None:
    from llmft.core.generation import Sampling
    from llmft.recipes.base import get_recipe, recipe_config

    config = recipe_config({"recipe": "memreason", "memreason": {"num_prefix_tokens": 2, "num_special_tokens": 1}})
    generator = Echo(" <memory_0> Ab is 3.\n <prefix_0> <prefix_1> <answer_0> The answer is: True\n")
    (decoded,) = get_recipe("memreason").decode(generator, ["Question: Is Ab 3?\n "], config, Sampling())
    (prompts, kwargs), = generator.calls
    assert prompts == ["Question: Is Ab 3?\n  <prefix_0> <prefix_1>"] and kwargs["temperature"] == 0.0
    assert decoded.text.startswith(" <memory_0> Ab is 3.")  # the planning tokens stay in the served text
    assert decoded.extra["steps"] == [{"type": "memory", "text": "Ab is 3."}]
