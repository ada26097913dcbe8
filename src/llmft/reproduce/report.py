"""DIR/report.md: the tables (mean and min-max over seeds) beside the paper's figures, the claims shown and
not shown, every stage's command, the machine, the precision and the wall time."""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path

from llmft.core.runs import atomic_write_text
from llmft.reproduce.claims import claim_lines
from llmft.reproduce.plan import Plan, Settings, Table
from llmft.reproduce.runner import StageRecord, elapsed

PRECISION = re.compile(r"^llmft: precision (.+)$", re.MULTILINE)  # the training's first line


def cell(values: Sequence[float], digits: int) -> str:
    """`mean (min-max)` over seeds (`min to max` when one is negative); one value alone; `-` when missing."""
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    low, high = min(values), max(values)
    joint = " to " if low < 0 or high < 0 else "-"  # "-4.6 to 4.2", never "-4.6-4.2"
    return f"{mean:.{digits}f} ({low:.{digits}f}{joint}{high:.{digits}f})"


def table_markdown(table: Table) -> str:
    """The table as markdown: one row per `table.cells` row, the paper's figures in the last column."""
    paper = bool(table.paper)
    header = ["", *table.columns] + ([table.paper_header] if paper else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, columns in table.cells.items():
        cells = [cell(columns.get(column, []), table.digits) for column in table.columns]
        lines.append("| " + " | ".join([row, *cells] + ([table.paper.get(row, "")] if paper else [])) + " |")
    return "\n".join(lines)


def machine() -> str:
    """CPU model and cores, GPU if any, Python and torch versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"{platform.system()}")


def precisions(out: Path) -> str:
    """The precisions the training stages reported in their logs (their first line names it), e.g.
    "bf16 autocast, float32 weights (train.bf16 = auto)"."""
    found = set()
    for log in sorted((out / "logs").glob("*.log")):
        found.update(PRECISION.findall(log.read_text(encoding="utf-8", errors="replace")))
    return ", ".join(sorted(found)) or "not reported by the logs"


def write_report(plan: Plan, settings: Settings, tables: list[Table], plots: list[Path],
                 records: list[StageRecord], command: str) -> Path:
    """Write DIR/report.md and return its path."""
    out = settings.out
    seeds = ", ".join(str(s) for s in settings.seeds)
    wall, busy = elapsed(records), sum(r.seconds for r in records)
    at_once = "one stage at a time" if settings.jobs == 1 else f"up to {settings.jobs} stages at once"
    kind = "quick run (`--quick`: fewer steps; the shape of each claim, not its size)" if settings.quick else "full run"
    parts = [f"# {plan.title}: the miniature, reproduced", "", plan.summary, "",
             f"- Command: `{command}`",
             f"- Run: {kind}, seeds {seeds}, presets: {settings.preset}",
             f"- Wall time: {_minutes(wall)} of real elapsed time, {at_once}; the stages' own wall times sum to "
             f"{_minutes(busy)}",
             f"- Machine: {machine()}",
             f"- Precision: {precisions(out)}",
             f"- Extra settings: {' '.join(settings.overrides) or 'none'}", "",
             "Cells are the mean over the seeds and, in brackets, the lowest and highest seed.", ""]
    parts += claim_lines(plan.claims, tables) + [""]
    for table in tables:
        parts += [f"## {table.title}", "", table_markdown(table), ""]
        if table.note:
            parts += [table.note, ""]
    for plot in plots:
        parts += [f"![{plot.stem}]({plot.relative_to(out).as_posix()})", ""]
    if plan.notes:
        parts += ["## What the miniature is, and is not", "", plan.notes, ""]
    parts += ["## Commands", "", "Every stage, in order (run from the folder `llmft reproduce` ran in):", "", "```bash"]
    parts += [f"{r.command}    # {r.seconds:.0f} s" for r in records] + ["```", ""]
    return atomic_write_text(out / "report.md", "\n".join(parts))


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest} s"
