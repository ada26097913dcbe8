"""The 12 tasks from their original releases into the reference's `Dataset` form, as its data-preparation
notebook compiled them (question text, answer string, optional rationale; the order decides sample_index).

`--source` is the task's file or folder in its original layout (e.g. GSM8K's folder with train.jsonl and
test.jsonl, BIG-bench's task.json for Date, Shuffled Objects and StrategyQA, Kojima et al.'s coin_flip.json).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmft.core.errors import LlmftError

Sample = dict[str, Any]


def _json(path: Path) -> Any:
    if not path.is_file():
        raise LlmftError(f"--source: file not found: {path}")
    return json.loads(path.read_text(encoding="utf-8"))


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise LlmftError(f"--source: file not found: {path}")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def verbalize_choices(question: str, choices: list[str], answer_index: int) -> tuple[str, str]:
    """'<question> Answer choices: (A) x, (B) y.' and the answer letter."""
    listed = ", ".join(f"({chr(ord('A') + i)}) {c.strip()}" for i, c in enumerate(choices))
    return f"{question} Answer choices: {listed}.", chr(ord("A") + answer_index)


def _equations(path: Path, strip: bool, integer: bool) -> list[Sample]:
    """SingleEq / AddSub / MultiArith: [{sQuestion, lSolutions: [x]}]."""
    samples = []
    for row in _json(path):
        solution = row["lSolutions"][0]
        samples.append({"question": row["sQuestion"].strip() if strip else row["sQuestion"],
                        "answer": str(int(solution)) if integer else str(solution)})
    return samples


def _gsm8k(folder: Path) -> list[Sample]:
    samples = []
    for name in ("train.jsonl", "test.jsonl"):  # 7,473 + 1,319: the official split
        for row in _jsonl(folder / name):
            at = row["answer"].find("####")
            samples.append({"question": row["question"], "answer": row["answer"][at + 5:],
                            "rationale": row["answer"][:at].strip()})
    return samples


def _aqua(folder: Path) -> list[Sample]:
    samples = []
    for name in ("train.json", "test.json"):  # JSON lines despite the name; 97,467 + 254
        for row in _jsonl(folder / name):
            choices = [option[2:] for option in row["options"]]  # "A)12" -> "12"
            question, answer = verbalize_choices(row["question"].strip(), choices, ord(row["correct"]) - ord("A"))
            samples.append({"question": question, "answer": answer, "rationale": row["rationale"].strip()})
    return samples


def _svamp(path: Path) -> list[Sample]:
    return [{"question": f"{row['Body'].strip()} {row['Question'].strip()}", "answer": str(row["Answer"])}
            for row in _json(path)]


def _commonsense_qa(folder: Path) -> list[Sample]:
    samples = []
    for name in ("train_rand_split.jsonl", "dev_rand_split.jsonl"):  # dev is the test set: 9,741 + 1,221
        for row in _jsonl(folder / name):
            choices = [c["text"] for c in row["question"]["choices"]]
            question, answer = verbalize_choices(row["question"]["stem"].strip(), choices,
                                                 ord(row["answerKey"]) - ord("A"))
            samples.append({"question": question, "answer": answer})
    return samples


def _strategy_qa(path: Path) -> list[Sample]:
    samples = []
    for row in _json(path)["examples"]:
        answer = "Yes" if row["target_scores"]["Yes"] == 1 else "No"
        samples.append({"question": row["input"].strip(), "answer": answer,
                        "rationale": row["target"][len(answer) + 2:].strip()})  # "Yes. <rationale>"
    return samples


def _bigbench_choice(path: Path, shuffle: bool) -> list[Sample]:
    """BIG-bench multiple choice: 'Which choice is true?' appended, options lettered in file order, or (Date)
    permuted with one RandomState(0) across the file, as the reference compiled them."""
    import numpy as np

    state = np.random.RandomState(0)
    samples = []
    for row in _json(path)["examples"]:
        options = list(row["target_scores"].items())
        order = state.permutation(len(options)).tolist() if shuffle else list(range(len(options)))
        choices: list[str] = [""] * len(options)
        answer_index = 0
        for j, (choice, score) in enumerate(options):
            choices[order[j]] = choice[:-1] if choice.endswith(".") else choice
            if score:
                answer_index = order[j]
        question, answer = verbalize_choices(row["input"].strip() + "\nWhich choice is true?", choices, answer_index)
        samples.append({"question": question, "answer": answer})
    return samples


def _kojima(path: Path) -> list[Sample]:
    """Coin Flip / Last Letter Concatenation (Kojima et al.): {"examples": [{question, answer}]}."""
    return [{"question": row["question"], "answer": row["answer"]} for row in _json(path)["examples"]]


SOURCES: dict[str, Callable[[Path], list[Sample]]] = {
    "single_eq": lambda p: _equations(p, strip=False, integer=False),
    "addsub": lambda p: _equations(p, strip=True, integer=False),
    "multiarith": lambda p: _equations(p, strip=True, integer=True),
    "gsm8k": _gsm8k,
    "aqua": _aqua,
    "svamp": _svamp,
    "tracking_shuffled_objects": lambda p: _bigbench_choice(p, shuffle=False),
    "date_understanding": lambda p: _bigbench_choice(p, shuffle=True),
    "coin_flip": _kojima,
    "last_letter_concatenation": _kojima,
    "commonsense_qa": _commonsense_qa,
    "strategy_qa": _strategy_qa,
}


def load_source(task: str, path: str | Path) -> list[Sample]:
    """The task's samples from its original release at `path` (a file or a folder, per task)."""
    try:
        return SOURCES[task](Path(path))
    except (KeyError, IndexError, TypeError, json.JSONDecodeError) as exc:
        raise LlmftError(f"--source {path}: not in the original {task} layout ({type(exc).__name__}: {exc})") from None
