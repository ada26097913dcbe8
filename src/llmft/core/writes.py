"""Writes that never destroy the user's files: make-data's output is staged, checked, then published together.

Inside `guarded_writes`, `write_jsonl` stages each file beside its target. On leaving the block every
target is checked: an input of the same command, or an existing file llmft did not write (or that was
edited since), stops the whole command with nothing replaced, unless `overwrite` allows it. Which files
llmft wrote is kept per folder in `.llmft-written.json` (name -> size and modification time).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llmft.core.errors import LlmftError

MANIFEST = ".llmft-written.json"


@dataclass
class _Transaction:
    inputs: set[Path]
    overwrite: bool
    staged: list[tuple[Path, Path]] = field(default_factory=list)  # (temp file, target)
    created: list[Path] = field(default_factory=list)  # folders staging made, removed again if left empty


_CURRENT: contextvars.ContextVar[_Transaction | None] = contextvars.ContextVar("llmft_writes", default=None)


@contextlib.contextmanager
def guarded_writes(inputs: Iterable[str | Path] = (), overwrite: bool = False) -> Iterator[None]:
    """Stage every `write_jsonl` in the block; publish all of them only if none would destroy a user file."""
    transaction = _Transaction({Path(p).resolve() for p in inputs}, overwrite)
    token = _CURRENT.set(transaction)
    try:
        yield
        for _, target in transaction.staged:
            check_target(target, transaction.inputs, transaction.overwrite)
        for temp, target in transaction.staged:
            os.replace(temp, target)
            record_written(target)
    finally:
        _CURRENT.reset(token)
        for temp, _ in transaction.staged:
            temp.unlink(missing_ok=True)
        for folder in reversed(transaction.created):  # a failed command leaves no empty output folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()


def staging_for(target: Path) -> Path | None:
    """Inside guarded_writes: the temp path to write instead of `target` (registered for publishing)."""
    transaction = _CURRENT.get()
    if transaction is None:
        return None
    target = Path(target)
    if target.resolve() in transaction.inputs:
        raise LlmftError(f"refusing to write {target}: it is an input of this command (choose another --out)")
    missing = [folder for folder in (target.parent, *target.parent.parents) if not folder.exists()]
    transaction.created += reversed(missing)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.staged")
    transaction.staged.append((temp, target))
    return temp


def write_text_guarded(path: str | Path, text: str) -> Path:
    """Write `text` to `path`: staged inside guarded_writes (published with the rest), else atomically."""
    from llmft.core.runs import atomic_write_text

    staged = staging_for(Path(path))
    if staged is None:
        return atomic_write_text(path, text)
    staged.write_text(text, encoding="utf-8")
    return Path(path)


def check_target(target: Path, inputs: set[Path], overwrite: bool) -> None:
    """One-line error when writing `target` would destroy something the user owns."""
    resolved = target.resolve()
    if resolved in inputs:
        raise LlmftError(f"refusing to write {target}: it is an input of this command (choose another --out)")
    if target.is_dir():
        raise LlmftError(f"refusing to write {target}: a folder of that name exists")
    if target.exists() and not overwrite and not written_by_llmft(target):
        raise LlmftError(f"refusing to replace {target}: llmft did not write it (or it was edited since); "
                         "pass --overwrite to replace it")


def written_by_llmft(path: Path) -> bool:
    """Whether llmft wrote `path` and it is unchanged since (size and modification time)."""
    entry = _manifest(path.parent).get(path.name)
    if not entry or not path.is_file():
        return False
    stat = path.stat()
    return entry == [stat.st_size, stat.st_mtime_ns]


def record_written(path: Path) -> None:
    """Remember that llmft wrote `path` as it is now."""
    from llmft.core.runs import atomic_write_json

    manifest = _manifest(path.parent)
    stat = path.stat()
    manifest[path.name] = [stat.st_size, stat.st_mtime_ns]
    atomic_write_json(path.parent / MANIFEST, manifest)


def _manifest(folder: Path) -> dict[str, list[int]]:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
