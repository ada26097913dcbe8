"""Run-folder layout and atomic writes: a killed run never leaves a half-written artefact."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

# Every file and folder name of a run folder, defined once.
#   runs/<name>/ {llmft.toml, metrics.jsonl, tokenizer/, base-model/, tb/, checkpoint-N/, final/, eval/}
#   checkpoint-N/ {adapter or model files, tokenizer, llmft.toml, trainable.safetensors, optimizer.pt,
#                  trainer_state.json, rng-<rank>.pt}
CONFIG_NAME = "llmft.toml"
METRICS_NAME = "metrics.jsonl"
FINAL_NAME = "final"
CHECKPOINT_PREFIX = "checkpoint-"
TOKENIZER_DIR = "tokenizer"  # the run's tokenizer, built once and reused on --resume
BASE_MODEL_DIR = "base-model"  # the random-init (tiny) or init_from-merged base an adapter sits on
TENSORBOARD_DIR = "tb"
EVAL_DIR = "eval"
TRAINABLE_NAME = "trainable.safetensors"
OPTIMIZER_NAME = "optimizer.pt"
TRAINER_STATE_NAME = "trainer_state.json"
RESULTS_NAME = "results.jsonl"
EVAL_METRICS_NAME = "metrics.json"


def rng_name(rank: int) -> str:
    """Each rank's RNG state file inside a checkpoint."""
    return f"rng-{rank}.pt"


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text to path via a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically, indented for people."""
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def staging_dir(final: Path) -> Path:
    """A fresh temp folder beside `final`, to fill and then `publish_dir` into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))


def publish_dir(staged: Path, final: Path) -> Path:
    """Move a filled staging folder to `final` atomically, replacing an older one."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, final)
    return final


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest step first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for child in output_dir.iterdir():
        match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = checkpoint_dirs(output_dir)
    return found[-1] if found else None
