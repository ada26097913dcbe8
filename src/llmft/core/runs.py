"""Run-folder layout and atomic writes: a killed run never leaves a half-written artefact."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

# Every file and folder name of a run folder, defined once.
#   runs/<name>/ {llmft.toml, metrics.jsonl, tokenizer/, base-model/, tb/, checkpoint-N/, final/, eval/, estimate/}
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
ESTIMATE_DIR = "estimate"  # llmft estimate's reports and gradient caches
TRAINABLE_NAME = "trainable.safetensors"
OPTIMIZER_NAME = "optimizer.pt"
TRAINER_STATE_NAME = "trainer_state.json"
RESULTS_NAME = "results.jsonl"
EVAL_METRICS_NAME = "metrics.json"
LOCK_NAME = ".llmft.lock"  # one training per run folder
_CHECKPOINT = re.compile(rf"{CHECKPOINT_PREFIX}(\d+)")


def rng_name(rank: int) -> str:
    """Each rank's RNG state file inside a checkpoint."""
    return f"rng-{rank}.pt"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create 0600/0700; what llmft writes gets the permissions any program's files get (umask).
FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text to path via a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, FILE_MODE)
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
    staged = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    staged.chmod(DIR_MODE)
    return staged


def remove_stale_staging(folder: Path) -> None:
    """Drop temp files and staging folders a killed or failed write left in `folder` (llmft's own names)."""
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        if child.name.startswith(".") and child.name.endswith((".tmp", ".staging", ".staged", ".old")):
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


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
        match = _CHECKPOINT.fullmatch(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def run_of_saved_config(path: str | Path) -> Path | None:
    """The run folder a saved llmft.toml belongs to (the root's own, or the copy in final/ or checkpoint-N/),
    wherever the run has been moved since; None for any other TOML (a preset)."""
    path = Path(path)
    if path.name != CONFIG_NAME:
        return None
    folder = path.parent
    if folder.name == FINAL_NAME or _CHECKPOINT.fullmatch(folder.name):
        return folder.parent
    if (folder / METRICS_NAME).is_file() or (folder / FINAL_NAME).is_dir() or checkpoint_dirs(folder):
        return folder
    return None


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = checkpoint_dirs(output_dir)
    return found[-1] if found else None


class RunLock:
    """An exclusive lock on a run folder: a second training exits naming the holder; a dead holder's lock
    (same machine, process gone) is taken over."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self.held = False

    def __enter__(self) -> RunLock:
        import socket

        from llmft.core.errors import LlmftError

        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
            except FileExistsError:
                holder = _read_holder(self.path)
                if holder is None:  # just created and not written yet, or torn: look once more
                    time.sleep(0.5)
                    holder = _read_holder(self.path)
                if holder is not None and _alive(holder, me["host"]):
                    raise LlmftError(f"train.output_dir {self.path.parent} is in use by process {holder.get('pid')} "
                                     f"on {holder.get('host')}; wait for it to finish or choose another "
                                     "output_dir") from None
                self.path.unlink(missing_ok=True)  # the holder died: take the lock over
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(me, handle)
            self.held = True
            return self
        raise LlmftError(f"train.output_dir {self.path.parent}: could not take the lock {self.path}")

    def __exit__(self, *exc: object) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _read_holder(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # torn or vanished: treat as dead
    return holder if isinstance(holder, dict) else None


def _alive(holder: dict, host: str) -> bool:
    if holder.get("host") != host:
        return True  # another machine's process: cannot tell, so assume it runs
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True
    return True
