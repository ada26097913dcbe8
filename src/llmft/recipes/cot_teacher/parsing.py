"""Answer parsing and scoring exactly as the reference's `Evaluator`: a prefix per prediction template, candidate
answers per task, and the first (after the prefix) or last (no prefix found) candidate compared to the gold."""

from __future__ import annotations

import re
from typing import Any

# The text that announces the answer, per prediction template (None: take the first candidate in the text).
PREDICTION_PREFIXES: dict[str | None, str | None] = {
    None: None,
    "zs": None,
    "ft_natural": None,
    "ft_token": None,
    "fs_cot": "The answer is",
    "zs_cot": None,
    "ft_cot_natural": "Therefore, the answer is",
    "ft_cot_token": "-->",
    "ft_cot_token_gpt3": "-->",  # ours: the GPT-3 strings announce the answer with the same arrow
}
MATH = ("gsm8k", "addsub", "multiarith", "svamp", "single_eq")
# Compared as floats (tolerance 1e-6); GSM8K and MultiArith stay strings, so "18.0" != "18" (as the reference).
FLOAT_TASKS = ("addsub", "svamp", "single_eq")


def prediction_prefix(template: str | None) -> str | None:
    if template not in PREDICTION_PREFIXES:
        raise ValueError(f"unknown prediction template: {template}")
    return PREDICTION_PREFIXES[template]


def candidates(task: str, text: str) -> list[Any]:
    """Every substring of `text` that has the task's answer format, in order."""
    if task in ("aqua", "commonsense_qa"):
        return re.findall(r"[ABCDE]", text)
    if task == "date_understanding":
        return re.findall(r"[ABCDEF]", text)
    if task == "tracking_shuffled_objects":
        return re.findall(r"[ABC]", text)
    if task in MATH:
        found = re.findall(r"-?\d+(?:\.\d+)?", text.replace(",", ""))
        return [float(s) for s in found] if task in FLOAT_TASKS else found
    if task in ("strategy_qa", "coin_flip"):
        # Only these characters become spaces (not all punctuation): "yes!" is no candidate, as in the reference.
        words = re.sub(r"\"|'|\n|\.|\s|:|,", " ", text.lower()).split(" ")
        return [w for w in words if w in ("yes", "no")]
    if task == "last_letter_concatenation":
        return [re.sub(r"\"|'|\n|\.|\s", "", text)]
    raise ValueError(f"unknown task: {task}")


def parse_prediction(task: str, completion: str, template: str | None) -> Any:
    """The predicted answer: the first candidate after the prefix; the last candidate anywhere when the prefix is
    missing; the first candidate when the template has no prefix. None when there is no candidate."""
    prefix = prediction_prefix(template)
    first = True
    if prefix is not None:
        at = completion.find(prefix)
        if at == -1:
            first = False
        else:
            completion = completion[at + len(prefix):]
    found = candidates(task, completion)
    if not found:
        return None
    return found[0] if first else found[-1]


def clean_answer(task: str, answer: str) -> Any:
    """The gold answer as the reference compares it: commas dropped for math, lower-case for StrategyQA,
    a float for AddSub, SVAMP and SingleEq."""
    if task in MATH:
        answer = answer.replace(",", "")
    if task == "strategy_qa":
        answer = answer.lower()
    if task in FLOAT_TASKS:
        return float(answer)
    return answer


def matches(task: str, prediction: Any, gold: Any) -> bool:
    """A parsed prediction against a cleaned gold answer."""
    if prediction is None:
        return False
    if task in FLOAT_TASKS:
        return abs(prediction - gold) <= 1e-6
    return prediction == gold


def is_correct(task: str, completion: str, answer: str, template: str | None) -> bool:
    """Whether `completion` answers `answer` under the task's parsing rules."""
    return matches(task, parse_prediction(task, completion, template), clean_answer(task, answer))


def score_completion(task: str, completion: str, answer: str, template: str | None) -> dict[str, Any]:
    """The reference's per-completion evaluation fields: prediction, correct, contains_answer, correct_format."""
    prefix = prediction_prefix(template)
    gold = clean_answer(task, answer)
    prediction = parse_prediction(task, completion, template)
    text = completion
    if prefix is not None and completion.find(prefix) != -1:
        text = completion[completion.find(prefix) + len(prefix):]
    return {
        "prediction": prediction,
        "correct": matches(task, prediction, gold),
        "contains_answer": any(matches(task, c, gold) for c in candidates(task, text)),
        "correct_format": prefix is None or prefix in completion,
    }
