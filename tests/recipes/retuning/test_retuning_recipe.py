"""The retuning recipe without a model: make-data, evaluation by size (resumable), plots, presets."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from llmft.core.errors import LlmftError
from llmft.core.generation import Sampling
from llmft.core.jsonl import read_jsonl
from llmft.recipes.base import get_recipe, load_recipe_config
from llmft.recipes.base import recipe_config as config_from_dict
from llmft.recipes.retuning.data import EXAMPLES
from llmft.recipes.retuning.evaluate import PLOT, RESULTS, compare

REPO = Path(__file__).resolve().parents[3]


class Teacher:
    """A Generator that knows the training examples of the eval problems up to one size, and nothing else."""

    def __init__(self, records: Sequence[dict], up_to: int):
        self.table: dict[str, str] = {}
        self.batches: list[list[str]] = []
        for record in records:
            if record["size"] <= up_to:
                for example in EXAMPLES[(record["task"], record["format"])](*problem_of(record)):
                    self.table[example["prompt"]] = example["completion"]

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 64,
        stop: Sequence[str] = (),
        num_beams: int = 1,
        temperature: float = 0.0,
        seed: int = 0,
        top_p: float = 1.0,
    ) -> list[str]:
        self.batches.append(list(prompts))
        return [self.table.get(prompt, "no idea") for prompt in prompts]


def problem_of(record: dict) -> tuple:
    if record["task"] == "addition":
        return tuple(int(x) for x in re.match(r"(\d+) \+ (\d+)", record["prompt"]).groups())
    return (json.loads(re.search(r"\[[^\]]*\]", record["prompt"]).group(0)),)


def make(tmp_path: Path, task: str, fmt: str, max_size: int, eval_n: int, n: int = 30) -> dict[str, Path]:
    return get_recipe("retuning").make_data(
        tmp_path / f"{task}-{fmt}", 0, task=task, fmt=fmt, max_size=max_size, n=n, eval_n=eval_n
    )


def config(paths: dict[str, Path], task: str, fmt: str, **extra: dict) -> object:
    return config_from_dict(
        {
            "recipe": "retuning",
            "data": {"train": str(paths["train"]), "eval": str(paths["eval"])},
            "eval": {"batch_size": 4},
            "retuning": {"task": task, "format": fmt},
            **extra,
        }
    )


def test_make_data_writes_training_and_eval_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    paths = get_recipe("retuning").make_data(
        None, 0, task="parity", fmt="recursive", max_size=4, n=6, eval_n=3
    )
    assert paths["train"] == Path("data/retuning/parity-recursive/train.jsonl")
    train, held_out = read_jsonl(paths["train"]), read_jsonl(paths["eval"])
    assert all(set(r) == {"prompt", "completion", "task", "size"} for r in train)
    assert (
        sum(r["prompt"] == "What is the parity of [1]?\nSolution: " for r in train) == 900
    )  # resampled x900
    assert [r["size"] for r in held_out[:8]] == list(range(1, 9)) and len(held_out) == 24
    assert set(held_out[0]) == {"prompt", "task", "format", "size", "answer", "train_max_size"}
    assert all(r["train_max_size"] == 4 and r["format"] == "recursive" for r in held_out)
    plain = get_recipe("retuning").make_data(
        tmp_path / "plain", 0, task="parity", fmt="recursive", max_size=4, n=6, eval_n=3, resample=False
    )
    assert len(read_jsonl(plain["train"])) == 6 * 7  # 6 lists of 4 bits, 2 x 3 + 1 examples each


def test_make_data_rejects_bad_sizes(tmp_path: Path):
    with pytest.raises(LlmftError, match="min-size"):
        get_recipe("retuning").make_data(
            tmp_path, 0, task="addition", fmt="recursive", min_size=6, max_size=3
        )
    with pytest.raises(LlmftError, match="--eval-max-size"):
        get_recipe("retuning").make_data(tmp_path, 0, task="addition", max_size=3, n=5, eval_max_size=2)


def test_eval_sizes_reach_eval_max_size(tmp_path: Path):
    paths = get_recipe("retuning").make_data(tmp_path, 0, task="addition", max_size=3, n=5, eval_n=2,
                                             eval_max_size=4)
    assert sorted({r["size"] for r in read_jsonl(paths["eval"])}) == [1, 2, 3, 4]


def test_accuracy_by_size_in_and_beyond_the_training_range(tmp_path: Path):
    paths = make(tmp_path, "addition", "recursive", max_size=3, eval_n=5)
    records = read_jsonl(paths["eval"])
    teacher = Teacher(records, up_to=3)
    metrics = get_recipe("retuning").evaluate(
        teacher, config(paths, "addition", "recursive"), tmp_path / "eval"
    )
    assert metrics["accuracy_by_size"] == {"1": 1.0, "2": 1.0, "3": 1.0, "4": 0.0, "5": 0.0, "6": 0.0}
    assert (metrics["accuracy_in_range"], metrics["accuracy_beyond"], metrics["accuracy"]) == (1.0, 0.0, 0.5)
    assert metrics["n"] == 30 and metrics["train_max_size"] == 3 and metrics["errors"] == 0
    assert metrics["mean_calls"] == pytest.approx((0 + 1 + 2) * 5 / 30)
    rows = read_jsonl(tmp_path / "eval" / RESULTS)
    assert len(rows) == 30 and {r["index"] for r in rows} == set(range(30))
    three = next(r for r in rows if r["size"] == 3)
    assert three["correct"] and three["calls"] == 2 and len(three["steps"]) == 5
    assert three["prediction"] == three["answer"]
    # Every wave holds the ready contexts of every problem: 5 waves for 3 digits, 30 problems in the first.
    assert len(teacher.batches) == 5 and len(teacher.batches[0]) == 30
    assert (tmp_path / "eval" / PLOT).read_bytes()[:4] == b"\x89PNG"


def test_evaluation_resumes_past_finished_problems(tmp_path: Path):
    paths = make(tmp_path, "parity", "recursive", max_size=2, eval_n=5)
    records = read_jsonl(paths["eval"])
    run = config(paths, "parity", "recursive")
    first = get_recipe("retuning").evaluate(Teacher(records, 2), run, tmp_path / "eval")
    results = tmp_path / "eval" / RESULTS
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(lines[:12]) + lines[12][:20])  # killed while writing line 13
    again = Teacher(records, 2)
    second = get_recipe("retuning").evaluate(again, run, tmp_path / "eval")
    assert len(again.batches[0]) == 20 - 12
    assert {k: v for k, v in second.items() if k != "plot"} == {k: v for k, v in first.items() if k != "plot"}
    idle = Teacher(records, 2)
    get_recipe("retuning").evaluate(idle, run, tmp_path / "eval")
    assert idle.batches == []


def test_stale_results_and_mismatched_section_are_user_errors(tmp_path: Path):
    paths = make(tmp_path, "dp", "recursive", max_size=2, eval_n=1)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / RESULTS).write_text(json.dumps({"index": 0, "prompt": "something else"}) + "\n")
    recipe = get_recipe("retuning")
    with pytest.raises(LlmftError, match="other problems"):
        recipe.evaluate(Teacher([], 0), config(paths, "dp", "recursive"), tmp_path / "eval")
    with pytest.raises(LlmftError, match="task = 'parity'"):
        recipe.evaluate(Teacher([], 0), config(paths, "parity", "recursive"), tmp_path / "other")


def test_baseline_and_scratchpad_generate_directly_in_batches(tmp_path: Path):
    for fmt in ("baseline", "scratchpad"):
        paths = make(tmp_path, "dp", fmt, max_size=2, eval_n=3)
        teacher = Teacher(read_jsonl(paths["eval"]), up_to=2)
        metrics = get_recipe("retuning").evaluate(teacher, config(paths, "dp", fmt), tmp_path / f"eval-{fmt}")
        assert metrics["accuracy_by_size"] == {"1": 1.0, "2": 1.0, "3": 0.0, "4": 0.0}
        assert [len(batch) for batch in teacher.batches] == [4, 4, 4]
        assert metrics["mean_calls"] == 0


def test_compare_draws_several_runs_on_one_plot(tmp_path: Path):
    runs = {}
    for fmt, up_to in (("recursive", 4), ("baseline", 2)):
        paths = make(tmp_path, "addition", fmt, max_size=2, eval_n=2)
        runs[f"run-{fmt}"] = get_recipe("retuning").evaluate(
            Teacher(read_jsonl(paths["eval"]), up_to),
            config(paths, "addition", fmt),
            tmp_path / f"eval-{fmt}",
        )
    assert runs["run-recursive"]["accuracy_beyond"] == 1.0 and runs["run-baseline"]["accuracy_beyond"] == 0.0
    plot = compare(runs, tmp_path / "compare")
    assert plot == tmp_path / "compare" / PLOT and plot.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(LlmftError, match="accuracy_by_size"):
        compare({"sft-run": {"exact_match": 1.0}}, tmp_path / "compare")


def test_decode_returns_the_root_transcript(tmp_path: Path):
    record = {"task": "addition", "format": "recursive", "size": 4, "prompt": "1234 + 0578\nSolution: "}
    run = config_from_dict({"recipe": "retuning", "retuning": {"task": "addition"}})
    (decoded,) = get_recipe("retuning").decode(Teacher([record], 4), ["1234 + 0578\nSolution: "], run, Sampling())
    assert decoded.text == decoded.extra["answer"] == "1812" and decoded.extra["calls"] >= 1
    assert decoded.extra["transcript"] == "Call: 234 + 578\nReturn: Carry 0, Output 812\nAnswer: Carry 0, Output 1812"


def test_config_section_and_presets():
    run = config_from_dict(
        {"recipe": "retuning", "retuning": {"task": "dp", "format": "baseline", "max_size": 5}}
    )
    assert (run.section.task, run.section.format, run.section.max_size, run.section.max_depth) == (
        "dp",
        "baseline",
        5,
        0,
    )
    with pytest.raises(LlmftError, match="retuning.task"):
        config_from_dict({"recipe": "retuning", "retuning": {"task": "sorting"}})
    for task, max_size in (("addition", 15), ("parity", 21), ("dp", 5)):
        path = REPO / "recipes" / f"retuning-{task}-llama.toml"
        assert path.read_text().startswith(
            f"# llmft make-data retuning --task {task} --format recursive && "
            f"llmft train recipes/retuning-{task}-llama.toml"
        )
        preset, _ = load_recipe_config(path)
        assert (preset.section.task, preset.section.format, preset.section.max_size) == (
            task,
            "recursive",
            max_size,
        )
        assert preset.model.name == "huggyllama/llama-7b"
        assert (preset.adapter.method, preset.adapter.r, preset.adapter.alpha, preset.adapter.dropout) == (
            "lora",
            64,
            64,
            0.05,
        )
        assert preset.adapter.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
        assert (preset.train.learning_rate, preset.train.lr_scheduler) == (2e-4, "constant")
        assert preset.train.batch_size * preset.train.grad_accum == 128 and preset.train.max_steps == 3906
        assert preset.data.train == f"data/retuning/{task}-recursive/train.jsonl"


def test_report_marks_trained_and_extrapolated_sizes():
    from llmft.recipes.retuning.evaluate import report_table

    metrics = {"runs/a/final": {"task": "addition", "format": "recursive", "train_max_size": 2,
                                "accuracy_by_size": {"1": 1.0, "2": 0.5, "3": 0.25}, "n_by_size": {"1": 4, "2": 4, "3": 4}},
               "runs/b/final": {"task": "addition", "format": "baseline", "train_max_size": 2,
                                "accuracy_by_size": {"1": 0.75, "2": 0.0, "3": 0.0}, "n_by_size": {"1": 4, "2": 4, "3": 4}}}
    lines = report_table(metrics).splitlines()
    assert lines[0] == "accuracy by digits per operand (trained: sizes <= 2)"
    assert lines[1].split() == ["size", "recursive", "baseline", "problems"]
    assert lines[2].split() == ["1", "trained", "1.000", "0.750", "4"]
    assert lines[3].split() == ["2", "trained", "0.500", "0.000", "4"]
    assert lines[4].split() == ["3", "extrapolated", "0.250", "0.000", "4"]
    assert get_recipe("retuning").report({"x": {"accuracy": 1.0}}) == ""

