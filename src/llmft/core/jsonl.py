"""JSONL reading and writing: errors name the file and line; writes are atomic.

Writing goes through `jsonlines` (the design card's library). Reading does not: llmft needs the line number
of every record for its one-line errors and must drop a torn last line (a killed run), which jsonlines'
Reader does not expose; the stdlib `json` per line does both in a few lines.
"""

from __future__ import annotations

import functools
import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonlines

from llmft.core.errors import LlmftError
from llmft.core.writes import write_text_guarded

Record = dict[str, Any]


def iter_jsonl(path: str | Path, *, what: str = "") -> Iterator[Record]:
    """Yield the JSON objects of a JSONL file; a bad line raises LlmftError naming file and line."""
    for _, record in iter_numbered(path, what=what):
        yield record


def iter_numbered(path: str | Path, *, what: str = "") -> Iterator[tuple[int, Record]]:
    """(line number, record) for each non-blank line of a JSONL file."""
    path = Path(path)
    label = f"{what}: " if what else ""
    if not path.is_file():
        raise LlmftError(f"{label}file not found: {path}")
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise LlmftError(f"{label}{path}: line {number} is not UTF-8 (byte {exc.start}: {exc.reason})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LlmftError(f"{label}{path}: line {number} is not JSON: {exc.msg}") from None
            if not isinstance(record, dict):
                raise LlmftError(f"{label}{path}: line {number} is not a JSON object")
            yield number, record


def read_jsonl(path: str | Path, *, what: str = "") -> list[Record]:
    """All records of a JSONL file."""
    return list(iter_jsonl(path, what=what))


def read_json(path: str | Path, *, what: str) -> Any:
    """One JSON document; a missing, non-UTF-8 or malformed file is a one-line LlmftError naming `what`."""
    path = Path(path)
    if not path.is_file():
        raise LlmftError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise LlmftError(f"{path}: not UTF-8 (byte {exc.start}: {exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise LlmftError(f"{path}: not JSON: {exc.msg} (line {exc.lineno})") from None


def write_jsonl(path: str | Path, records: Iterable[Record]) -> Path:
    """Write records as JSONL atomically (temp file + rename)."""
    buffer = io.StringIO()
    with jsonlines.Writer(buffer, compact=True, dumps=functools.partial(json.dumps, ensure_ascii=False)) as writer:
        writer.write_all(records)
    return write_text_guarded(path, buffer.getvalue())  # inside make-data: published once every target is checked


class AppendLog:
    """An append-only JSONL file that survives a kill: each line is flushed and fsynced as written.

    A torn last line (killed mid-write) is dropped on reopen, so a resumed run sees only whole records.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[Record] = self._read_whole_lines()
        self._handle = self.path.open("a", encoding="utf-8")

    def _read_whole_lines(self) -> list[Record]:
        if not self.path.exists():
            return []
        records, good_bytes = [], 0
        with self.path.open("rb") as handle:
            for raw in handle:
                try:
                    records.append(json.loads(raw))
                except json.JSONDecodeError:
                    break
                if not raw.endswith(b"\n"):
                    records.pop()
                    break
                good_bytes += len(raw)
        if good_bytes != self.path.stat().st_size:
            with self.path.open("r+b") as handle:
                handle.truncate(good_bytes)
        return records

    def append(self, record: Record) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.records.append(record)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> AppendLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
