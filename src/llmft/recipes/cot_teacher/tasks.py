"""The 12 reference tasks: their keys and sizes, the `Dataset` JSON format, and the default train/test splits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmft.core.errors import LlmftError
from llmft.core.jsonl import read_json
from llmft.core.writes import write_text_guarded

# Samples per task in the reference's compiled datasets (the unified `Dataset` JSON files).
DATASET_SIZES = {
    "single_eq": 508,
    "addsub": 395,
    "multiarith": 600,
    "gsm8k": 8792,
    "aqua": 97721,
    "svamp": 1000,
    "tracking_shuffled_objects": 750,
    "date_understanding": 369,
    "coin_flip": 500,
    "last_letter_concatenation": 500,
    "commonsense_qa": 10962,
    "strategy_qa": 2290,
}
TASK_KEYS = list(DATASET_SIZES)
# Tasks whose samples llmft can also draw procedurally (offline); see generators.py.
PROCEDURAL = ("last_letter_concatenation", "coin_flip", "multiarith")


def check_task(task: str) -> str:
    """The task key, or a one-line user error listing the known ones."""
    if task not in DATASET_SIZES:
        raise LlmftError(f"unknown task '{task}'; known tasks: {', '.join(TASK_KEYS)}")
    return task


def make_dataset(task: str, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A `Dataset` JSON object: metadata.dataset_key and data[] numbered by sample_index."""
    data = []
    for index, sample in enumerate(samples):
        row = {"sample_index": index, "question": sample["question"], "answer": sample["answer"]}
        if sample.get("rationale") is not None:
            row["rationale"] = sample["rationale"]
        data.append(row)
    return {"metadata": {"dataset_key": task}, "data": data}


def load_dataset(path: str | Path, task: str | None = None) -> dict[str, Any]:
    """Read and check a `Dataset` JSON file (the reference's `dataset/<task>.json`)."""
    path = Path(path)
    raw = read_json(path, what="dataset file")
    if not isinstance(raw, dict) or "metadata" not in raw or not isinstance(raw.get("data"), list):
        raise LlmftError(f"{path}: a Dataset file needs 'metadata' and a 'data' list")
    key = raw["metadata"].get("dataset_key")
    if task is not None and key != task:
        raise LlmftError(f"{path}: metadata.dataset_key is '{key}', expected '{task}'")
    check_task(key)
    for position, sample in enumerate(raw["data"]):
        missing = [k for k in ("sample_index", "question", "answer") if k not in sample]
        if missing:
            raise LlmftError(f"{path}: data[{position}] has no '{missing[0]}'")
        if sample["sample_index"] != position:
            raise LlmftError(f"{path}: data[{position}] has sample_index {sample['sample_index']}")
    return raw


def save_dataset(dataset: dict[str, Any], path: str | Path) -> Path:
    """Write a `Dataset` JSON file atomically (with make-data's other files, when inside guarded_writes)."""
    return write_text_guarded(path, json.dumps(dataset, indent=4, ensure_ascii=False) + "\n")


def default_split(task: str, size: int | None = None) -> tuple[list[int], list[int]]:
    """The reference's `__default` split: official splits for GSM8K, CommonsenseQA (dev as test) and AQUA
    (train subsampled to 10,000 with seed 0); otherwise 70/30 of a `RandomState(0)` permutation.

    `size` other than the reference's (a generated dataset) permutes that many samples the same way.
    """
    import numpy as np

    check_task(task)
    if task == "gsm8k" and size in (None, DATASET_SIZES[task]):
        return list(range(7473)), list(range(7473, 7473 + 1319))
    if task == "commonsense_qa" and size in (None, DATASET_SIZES[task]):
        return list(range(9741)), list(range(9741, 9741 + 1221))
    if task == "aqua" and size in (None, DATASET_SIZES[task]):
        train = np.random.RandomState(0).permutation(list(range(97467)))[:10000]
        return sorted(train.tolist()), list(range(97467, 97467 + 254))
    size = DATASET_SIZES[task] if size is None else size
    order = np.random.RandomState(0).permutation(list(range(size)))
    cut = round(size * 0.7)
    return sorted(order[:cut].tolist()), sorted(order[cut:].tolist())


def load_split(path: str | Path) -> tuple[list[int], list[int]]:
    """A reference split file (`data/split/<task>__<split>.json`: {"train": [...], "test": [...]}), its two
    index lists disjoint (a test question trained on would score the student on what it saw)."""
    raw = read_json(path, what="split file")
    if not isinstance(raw, dict) or not {"train", "test"} <= set(raw):
        raise LlmftError(f"{path}: a split file needs 'train' and 'test' index lists")
    for key in ("train", "test"):
        if not isinstance(raw[key], list) or not all(type(i) is int for i in raw[key]):
            raise LlmftError(f"{path}: '{key}' must be a list of integer sample indices")
    both = sorted(set(raw["train"]) & set(raw["test"]))
    if both:
        raise LlmftError(f"{path}: {len(both)} test indices are also in train (first: {both[0]})")
    return list(raw["train"]), list(raw["test"])


def select(dataset: dict[str, Any], indices: Sequence[int]) -> list[dict[str, Any]]:
    """The samples at `indices`; an index past the end is a user error."""
    data = dataset["data"]
    for index in indices:
        if not 0 <= index < len(data):
            raise LlmftError(f"split index {index} is out of range for {len(data)} samples "
                             f"of '{dataset['metadata']['dataset_key']}'")
    return [data[i] for i in indices]
