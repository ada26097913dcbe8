"""Each paper's `llmft reproduce PAPER --quick` over seeds 0-2, as a user runs it (make test-slow): the report is
written with its plots, and the claims the committed quick report states as shown are shown again.

These replace the per-paper miniature tests: the README links the reports, the reports state the claims, and
this test asserts them, so the three cannot drift apart. Up to ten minutes each on two cores, the stages run as
`--jobs` defaults (docs/reports/<paper>/). With LLMFT_QUICK_OUT=DIR the runs stay in DIR/<paper>: a rerun
after an interruption redoes no finished stage.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmft.recipes.uft.reproduce import CLAIMS as UFT_CLAIMS
from llmft.reproduce.claims import claim_lines, judge
from llmft.reproduce.papers import build_plan
from llmft.reproduce.plan import Settings

REPO = Path(__file__).resolve().parents[2]

# What each committed quick report (docs/reports/<paper>/report.md) shows, claim by claim.
QUICK_SHOWS = {
    "retuning": ["Re-Tuning beats the baseline on average over the three tasks, on every seed",
                 "Re-Tuning beats the scratchpad on average over the three tasks, on every seed"],
    "cot-teacher": [
        "the teachers err (5-98% of training questions right, every task and seed): students learn from an "
        "imperfect teacher's filtered rationales",
        "Last Letter: diverse reasoning K=4 beats vanilla fine-tune by 10 points on every seed",
        "Coin Flip: every student above 75% on every seed",
        "arithmetic: diverse reasoning K=4 beats K=1 on every seed",
    ],
    "memreason": ["the generated steps carry the right token: <memory> for recalled facts, <reason> for reasoning "
                  "(step types agree with the tags > 0.95, every seed)"],
    "squad": ["fine-tuning makes the answers valid JSON (>= 95%, every seed)",
              "it learns to abstain: the unanswerable questions above 70% (every seed)"],
    "uft": [claim.text for claim in UFT_CLAIMS],  # all five
    "estimate": ["estimating every subset takes less time than fine-tuning every subset (every seed)"],
}


def quick_run(paper: str, out: Path) -> tuple[list[str], str]:
    """Run `llmft reproduce PAPER --quick` into `out`; the claims shown and the report's text."""
    done = subprocess.run([sys.executable, "-m", "llmft", "reproduce", paper, "--quick", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=3600)
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
@pytest.mark.parametrize("paper", sorted(QUICK_SHOWS))
def test_quick_run_shows_the_claims_its_report_states(paper: str, tmp_path: Path) -> None:
    # LLMFT_QUICK_OUT keeps the runs in DIR/<paper>, so a rerun after an interruption (or over a user's own
    # quick runs) redoes no finished stage.
    shown, report = quick_run(paper, Path(os.environ.get("LLMFT_QUICK_OUT", tmp_path)) / paper)
    assert set(QUICK_SHOWS[paper]) <= set(shown), (paper, shown)
    assert "seeds 0, 1, 2" in report
