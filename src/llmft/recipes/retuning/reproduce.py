"""`make reproduce-retuning`'s table: each task's three formats in and beyond the trained sizes, and Re-Tuning's
gains beside the paper's averaged claim (PAPERS.md 1.5).

    python -m llmft.recipes.retuning.reproduce runs      # reads runs/retuning-<task>-<format>/eval/final/metrics.json
"""

from __future__ import annotations

import sys
from pathlib import Path

from llmft.core.jsonl import read_json
from llmft.recipes.retuning.data import FORMATS, TASKS

# Pasewark et al. 2024, LLaMA-7B, averaged over addition, parity and DP (Re-Tuning minus the other format).
PAPER_GAIN = {"baseline": 37.4, "scratchpad": 34.5}


def mean_accuracy(metrics: dict, beyond: bool) -> float | None:
    """Unweighted mean of accuracy_by_size over the trained sizes, or over the sizes beyond them."""
    train_max = int(metrics["train_max_size"])
    values = [acc for size, acc in metrics["accuracy_by_size"].items() if (int(size) > train_max) == beyond]
    return sum(values) / len(values) if values else None


def claim_table(metrics: dict[tuple[str, str], dict]) -> str:
    """A markdown table: per task and format, mean accuracy in range and beyond; then Re-Tuning's gains."""
    lines = ["| task | format | trained sizes | mean acc. trained | mean acc. beyond |", "|---|---|---|---|---|"]
    gains: dict[str, list[float]] = {"baseline": [], "scratchpad": []}
    for task in TASKS:
        for fmt in FORMATS:
            m = metrics.get((task, fmt))
            if m is None:
                continue
            inside, outside = mean_accuracy(m, False), mean_accuracy(m, True)
            lines.append(f"| {task} | {fmt} | <= {m['train_max_size']} | {_cell(inside)} | {_cell(outside)} |")
        recursive = metrics.get((task, "recursive"))
        for other in gains:
            if recursive and (task, other) in metrics:
                gains[other].append(100 * (recursive["accuracy"] - metrics[(task, other)]["accuracy"]))
    lines += ["", "| Re-Tuning's gain, points (mean over tasks of all-size accuracy) | this run | paper, LLaMA-7B |",
              "|---|---|---|"]
    for other, values in gains.items():
        ours = f"{sum(values) / len(values):+.1f} ({len(values)} task{'s' * (len(values) > 1)})" if values else "-"
        lines.append(f"| over {other} | {ours} | +{PAPER_GAIN[other]} |")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def read_runs(folder: Path) -> dict[tuple[str, str], dict]:
    """metrics.json of every runs/retuning-<task>-<format>/eval/final that exists."""
    found = {}
    for task in TASKS:
        for fmt in FORMATS:
            path = folder / f"retuning-{task}-{fmt}" / "eval" / "final" / "metrics.json"
            if path.exists():
                found[(task, fmt)] = read_json(path, what="metrics file")
    return found


if __name__ == "__main__":
    runs_folder = Path(sys.argv[1] if len(sys.argv) > 1 else "runs")
    found = read_runs(runs_folder)
    if not found:
        sys.exit(f"no {runs_folder}/retuning-<task>-<format>/eval/final/metrics.json: run make reproduce-retuning")
    print(claim_table(found))
