"""The reference's `CompletionDataset` JSON (teacher and student outputs): read, write, select, filter.

{"metadata": {base_model, dataset_key, completion_key, finetune_key, train_key, epoch, prediction_template, ...},
 "data": {"<sample_index>": [{sample_index, completion_index, question, answer, reasoning_prompt,
                               reasoning_completion, prompt, completion, finish_reason, ...}, ...]}}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmft.core.errors import LlmftError
from llmft.core.jsonl import read_json
from llmft.core.runs import atomic_write_text
from llmft.recipes.cot_teacher.parsing import is_correct

METADATA_KEYS = ("base_model", "dataset_key", "completion_key", "finetune_key", "train_key", "epoch",
                 "prediction_template")


def new_completions(base_model: str, completion_key: str, dataset_key: str, prediction_template: str | None,
                    finetune_key: str | None = None, train_key: str | None = None, epoch: int | None = None,
                    **extra: Any) -> dict[str, Any]:
    """An empty CompletionDataset (data keyed by int sample index in memory)."""
    metadata = {"base_model": base_model, "dataset_key": dataset_key, "completion_key": completion_key,
                "finetune_key": finetune_key, "train_key": train_key, "epoch": epoch,
                "prediction_template": prediction_template, **extra}
    return {"metadata": metadata, "data": {}}


def completion_path(root: str | Path, base_model: str, completion_key: str, dataset_key: str,
                    train_key: str | None = None, epoch: int | None = None) -> Path:
    """The reference's file layout: `B_<base>__C_<completion_key>/D_<dataset>[__T_<train>][__E_<epoch:03d>].json`."""
    tags = [f"D_{dataset_key}"]
    if train_key is not None:
        tags.append(f"T_{train_key}")
    if epoch is not None:
        tags.append(f"E_{epoch:03d}")
    return Path(root) / f"B_{base_model}__C_{completion_key}" / ("__".join(tags) + ".json")


def load_completions(path: str | Path) -> dict[str, Any]:
    """Read a CompletionDataset file (the reference's released files load as they are)."""
    path = Path(path)
    raw = read_json(path, what="completion file")
    if not isinstance(raw, dict) or not isinstance(raw.get("metadata"), dict) or not isinstance(raw.get("data"), dict):
        raise LlmftError(f"{path}: a CompletionDataset needs a 'metadata' object and a 'data' object")
    if "dataset_key" not in raw["metadata"]:
        raise LlmftError(f"{path}: metadata has no 'dataset_key'")
    try:
        data = {int(k): v for k, v in raw["data"].items()}
    except ValueError:
        raise LlmftError(f"{path}: data keys must be sample indices") from None
    return {"metadata": raw["metadata"], "data": data}


def save_completions(completions: dict[str, Any], path: str | Path) -> Path:
    """Write atomically (a killed teacher run never leaves half a file); keys sorted by sample index."""
    data = {str(k): completions["data"][k] for k in sorted(completions["data"])}
    text = json.dumps({"metadata": completions["metadata"], "data": data}, indent=4, ensure_ascii=False)
    return atomic_write_text(path, text + "\n")


def select_samples(completions: dict[str, Any], sample_indices: Sequence[int] | None = None,
                   completion_indices: Sequence[int] | None = None, only_correct: bool = False) -> list[dict]:
    """Completion samples for `sample_indices` (all when None), `completion_indices` of each (all when None);
    `only_correct` keeps those whose `completion` answers right under the file's prediction_template."""
    data = completions["data"]
    indices = list(data) if sample_indices is None else list(sample_indices)
    missing = [i for i in indices if i not in data]
    if missing:
        raise LlmftError(f"completions have no sample {missing[0]} ({len(missing)} of {len(indices)} missing)")
    task = completions["metadata"]["dataset_key"]
    template = completions["metadata"].get("prediction_template")
    selected = []
    for index in indices:
        samples = data[index]
        if completion_indices is not None:
            short = [c for c in completion_indices if c >= len(samples)]
            if short:
                raise LlmftError(f"sample {index} has {len(samples)} completions; completion {short[0]} is missing")
            samples = [samples[c] for c in completion_indices]
        for sample in samples:
            if not only_correct or is_correct(task, sample.get("completion", ""), sample["answer"], template):
                selected.append(sample)
    return selected
