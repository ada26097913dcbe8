"""Each paper's `llmft reproduce PAPER --quick` over seeds 0-2, as a user runs it (make test-slow): the report is
written with its plots, and every claim its committed quick report (docs/reports/<paper>/quick/) states as shown
is shown again.

These replace the per-paper miniature tests: the README links the reports, the reports state the claims, and
this test asserts them, so the three cannot drift apart. Up to ten minutes each on two cores, the stages run as
`--jobs` defaults, in the precision of the committed report (a CPU whose `train.bf16 = auto` picks the other one
runs it pinned, slower where bf16 is emulated). With LLMFT_QUICK_OUT=DIR the runs stay in DIR/<paper>: a rerun
after an interruption redoes no finished stage.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmft.core.models import bf16_supported
from llmft.reproduce.claims import claim_lines, judge
from llmft.reproduce.papers import build_plan
from llmft.reproduce.plan import Settings

REPO = Path(__file__).resolve().parents[2]

PAPERS = ("cot-teacher", "estimate", "memreason", "retuning", "squad", "uft")


def committed_line(paper: str, start: str) -> str:
    """The line that begins with `start` in the committed quick report (docs/reports/<paper>/quick/report.md)."""
    report = (REPO / "docs" / "reports" / paper / "quick" / "report.md").read_text(encoding="utf-8")
    return next(line for line in report.splitlines() if line.startswith(start))


def committed_shown_line(paper: str) -> str:
    """The "Claims shown" line of the committed quick report."""
    return committed_line(paper, "**Claims shown:**")


def committed_quick_shows(paper: str) -> list[str]:
    """The claims the committed quick report states as shown."""
    line = committed_shown_line(paper)
    claims = build_plan(paper, Settings(out=REPO / "reproduce" / paper, quick=True)).claims
    return [claim.text for claim in claims if f"{claim.text};" in line or line.endswith(f"{claim.text}.")]


def precision_overrides(paper: str, fast_bf16: bool) -> list[str]:
    """`train.bf16=...` where `auto` would pick another precision here than in the committed quick report's run
    (the claims are asserted in the precision they were made in; docs/reports/precision.md has the other one)."""
    line = committed_line(paper, "- Precision: ")
    ran_bf16 = line.startswith("- Precision: bf16 autocast")
    if "(train.bf16 = auto)" not in line or ran_bf16 == fast_bf16:
        return []
    return [f"train.bf16={'true' if ran_bf16 else 'false'}"]


def test_a_quick_run_keeps_the_precision_of_its_committed_report() -> None:
    """uft's quick report ran `auto` as bf16: a CPU without fast bf16 pins it; squad's ran fp32 by its preset."""
    assert precision_overrides("uft", fast_bf16=True) == []
    assert precision_overrides("uft", fast_bf16=False) == ["train.bf16=true"]
    assert precision_overrides("squad", fast_bf16=True) == precision_overrides("squad", fast_bf16=False) == []


def test_committed_quick_reports_state_claims_of_their_paper() -> None:
    """Every committed quick report's "Claims shown" line is made of its paper's claim texts, none of them empty."""
    for paper in PAPERS:
        shown = committed_quick_shows(paper)
        assert shown, paper
        assert committed_shown_line(paper) == f"**Claims shown:** {'; '.join(shown)}.", paper


def quick_run(paper: str, out: Path) -> tuple[list[str], str]:
    """Run `llmft reproduce PAPER --quick` into `out`; the claims shown and the report's text."""
    overrides = precision_overrides(paper, bf16_supported())
    done = subprocess.run([sys.executable, "-m", "llmft", "reproduce", paper, "--quick", "--out", str(out),
                           *overrides], cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    plan = build_plan(paper, Settings(out=out, quick=True))
    tables = plan.collect(out)
    report = (out / "report.md").read_text(encoding="utf-8")
    for line in claim_lines(plan.claims, tables):
        assert line in report
    for png in out.glob("plots/*.png"):
        assert f"](plots/{png.name})" in report
    assert list(out.glob("plots/*.png")), "the report has its plots"
    return judge(plan.claims, tables)[0], report


@pytest.mark.slow
@pytest.mark.parametrize("paper", PAPERS)
def test_quick_run_shows_the_claims_its_report_states(paper: str, tmp_path: Path) -> None:
    # LLMFT_QUICK_OUT keeps the runs in DIR/<paper>, so a rerun after an interruption (or over a user's own
    # quick runs) redoes no finished stage.
    shown, report = quick_run(paper, Path(os.environ.get("LLMFT_QUICK_OUT", tmp_path)) / paper)
    assert set(committed_quick_shows(paper)) <= set(shown), (paper, shown)
    assert "seeds 0, 1, 2" in report
