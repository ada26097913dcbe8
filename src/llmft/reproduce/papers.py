"""Where each paper's plan lives: a plain registry (the plans themselves sit in their recipe packages)."""

from __future__ import annotations

import importlib

from llmft.core.errors import LlmftError, did_you_mean
from llmft.reproduce.plan import Plan, Settings

PAPERS = {
    "retuning": "llmft.recipes.retuning.reproduce",
    "cot-teacher": "llmft.recipes.cot_teacher.reproduce",
    "squad": "llmft.recipes.squad.reproduce",
    "uft": "llmft.recipes.uft.reproduce",
    "memreason": "llmft.recipes.memreason.reproduce",
    "estimate": "llmft.recipes.sft.reproduce",  # GradEx, on the sft recipe's toy tasks
}


def build_plan(paper: str, settings: Settings) -> Plan:
    """The paper's plan for these settings; an unknown paper is a one-line error."""
    if paper not in PAPERS:
        raise LlmftError(f"unknown paper '{paper}'{did_you_mean(paper, PAPERS)}; known: {', '.join(PAPERS)}")
    return importlib.import_module(PAPERS[paper]).plan(settings)
