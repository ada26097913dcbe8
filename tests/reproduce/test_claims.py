"""The report's "claims shown / not shown" lines follow from the table: retuning and cot-teacher wording."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmft.recipes.cot_teacher import reproduce as cot
from llmft.recipes.retuning import reproduce as retuning
from llmft.reproduce.claims import claim_lines, judge
from llmft.reproduce.plan import Table
from llmft.reproduce.report import cell, table_markdown


def _retuning_metrics(out: Path, task: str, fmt: str, seed: int, by_size: dict[int, float], train_max: int) -> None:
    folder = retuning.run_folder(out, task, fmt, seed) / "eval" / "final"
    folder.mkdir(parents=True)
    accuracy = sum(by_size.values()) / len(by_size)
    (folder / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "train_max_size": train_max,
                                                     "accuracy_by_size": {str(k): v for k, v in by_size.items()}}))


def test_retuning_claims_follow_from_the_metrics_of_two_seeds(tmp_path: Path) -> None:
    # Parity: recursive perfect in and beyond; addition: recursive perfect inside, nothing beyond; DP: the
    # scratchpad best inside on seed 1 only.
    runs = {
        ("parity", "recursive"): ({1: 1.0, 2: 1.0, 3: 0.9, 4: 0.8}, {1: 1.0, 2: 1.0, 3: 1.0, 4: 0.6}),
        ("parity", "scratchpad"): ({1: 1.0, 2: 0.5, 3: 0.5, 4: 0.5}, {1: 1.0, 2: 0.6, 3: 0.4, 4: 0.5}),
        ("parity", "baseline"): ({1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5}, {1: 0.5, 2: 0.5, 3: 0.6, 4: 0.4}),
        ("addition", "recursive"): ({1: 1.0, 2: 1.0, 3: 0.0, 4: 0.0}, {1: 1.0, 2: 0.9, 3: 0.0, 4: 0.0}),
        ("addition", "scratchpad"): ({1: 0.2, 2: 0.6, 3: 0.0, 4: 0.0}, {1: 0.0, 2: 0.8, 3: 0.0, 4: 0.0}),
        ("addition", "baseline"): ({1: 0.1, 2: 0.0, 3: 0.0, 4: 0.0}, {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0}),
        ("dp", "recursive"): ({1: 0.4, 2: 0.2, 3: 0.0, 4: 0.0}, {1: 0.2, 2: 0.2, 3: 0.0, 4: 0.0}),
        ("dp", "scratchpad"): ({1: 0.2, 2: 0.2, 3: 0.0, 4: 0.0}, {1: 0.4, 2: 0.2, 3: 0.0, 4: 0.0}),
        ("dp", "baseline"): ({1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0}, {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0}),
    }
    for (task, fmt), per_seed in runs.items():
        for seed, by_size in enumerate(per_seed):
            _retuning_metrics(tmp_path, task, fmt, seed, by_size, train_max=2)
    tables = retuning.collect(tmp_path, [0, 1])
    by_name = {t.name: t for t in tables}
    # Parity seed 0: recursive 0.925 vs scratchpad 0.625 and baseline 0.5 (all sizes) -> +30.0 and +42.5 points.
    assert by_name["gains"].values("over scratchpad", "parity")[0] == pytest.approx(30.0)
    assert by_name["formats"].values("parity recursive", "beyond") == pytest.approx([0.85, 0.8])
    assert by_name["parity-by-size"].values("3 (beyond)", "recursive") == [0.9, 1.0]
    assert cell(by_name["formats"].values("parity recursive", "beyond"), 2) == "0.83 (0.80-0.85)"
    lines = claim_lines(retuning.CLAIMS, tables)
    assert lines == [
        "**Claims shown:** Re-Tuning beats the baseline on average over the three tasks, on every seed; Re-Tuning "
        "beats the scratchpad on average over the three tasks, on every seed; parity: the recursive model "
        "extrapolates past its trained sizes (mean beyond them 0.2 above both other formats, on every seed); "
        "addition: inside the trained sizes the recursive model is above both other formats on every seed.",
        "**Claims not shown:** addition: the recursive model extrapolates past its trained sizes (0.2 above both "
        "other formats beyond them, on every seed); DP: inside the trained sizes the recursive model is above both "
        "other formats on every seed; the gains reach the paper's size (mean within 10 points of +37.4 over "
        "baseline and +34.5 over scratchpad).",
    ]
    # Without DP's runs nothing averaged over the three tasks can be said: those claims are "not measured".
    tables = retuning.collect(tmp_path, [0, 1, 2])  # seed 2 has no runs at all
    shown, not_shown, missing = judge(retuning.CLAIMS, tables)
    assert shown == not_shown == [] and missing == [claim.text for claim in retuning.CLAIMS]


def test_cot_teacher_claims_follow_from_the_table() -> None:
    table = Table("accuracy", "", ["teacher (train split, T=0)", *cot.STUDENTS.values()])
    rows = {  # label: teacher, vanilla, K=1, K=4 for seeds 0 and 1
        "Last Letter": [(58, 9, 35, 41), (60, 12, 30, 28)],
        "Coin Flip": [(84, 100, 86, 93), (80, 100, 90, 94)],
        "arithmetic": [(26, 6, 4, 9), (30, 8, 10, 12)],
    }
    for label, seeds in rows.items():
        for values in seeds:
            for column, value in zip(table.columns, values):
                table.add(label, column, value)
    assert table_markdown(table).splitlines()[2] == \
        "| Last Letter | 59.00 (58.00-60.00) | 10.50 (9.00-12.00) | 32.50 (30.00-35.00) | 34.50 (28.00-41.00) |"
    shown, not_shown, missing = judge(cot.CLAIMS, [table])
    assert missing == []
    assert shown == [
        "the teachers err (5-98% of training questions right, every task and seed): students learn from an "
        "imperfect teacher's filtered rationales",
        "Last Letter: Fine-tune-CoT K=1 beats vanilla fine-tune by 10 points on every seed",
        "Last Letter: diverse reasoning K=4 beats vanilla fine-tune by 10 points on every seed",
        "Coin Flip: every student above 75% on every seed",
        "Coin Flip: diverse reasoning K=4 beats K=1 on every seed",
        "arithmetic: diverse reasoning K=4 beats K=1 on every seed",
        "arithmetic: diverse reasoning K=4 beats vanilla fine-tune on every seed",
    ]
    assert not_shown == [
        "Last Letter: diverse reasoning K=4 beats K=1 on every seed",  # 41 > 35 on seed 0, 28 < 30 on seed 1
        "Coin Flip: Fine-tune-CoT K=1 beats vanilla fine-tune on every seed (the reference's GPT-2 students)",
    ]
    # One seed's vanilla Last Letter student 10 points closer: K=1 no longer beats it by 10 on every seed.
    table.cells["Last Letter"]["vanilla fine-tune"][1] = 21
    assert "Last Letter: Fine-tune-CoT K=1 beats vanilla fine-tune by 10 points on every seed" in judge(
        cot.CLAIMS, [table])[1]
