"""Resumable evaluation rows: one JSONL row per example, keyed by the example's index, kept across kills.

Every recipe's evaluation writes through `ResultsLog`, so a killed `llmft eval` resumes where it stopped,
and results written under other settings (weights, data, decoding) are never reported as current.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from llmft.core import runs
from llmft.core.jsonl import AppendLog, read_jsonl

KEY = "index"


def settings_path(results: Path) -> Path:
    """Where the settings that produced `results` are kept (beside it)."""
    return results.with_name(results.stem + ".settings.json")


class ResultsLog:
    """Rows by key (`row["index"]`); rows from other `settings` than the stored ones are dropped on open."""

    def __init__(self, path: str | Path, settings: dict[str, Any] | None = None, *, quiet: bool = False):
        self.path = Path(path)
        self.quiet = quiet
        if settings is not None:
            discard_if_changed(self.path, settings)
        self._log = AppendLog(self.path)
        self._rows: dict[Hashable, dict] = {}
        self._progress: Any = None
        self._tracked: set = set()
        for row in self._log.records:
            key = _key(row.get(KEY))
            if key is not None:
                self._rows[key] = row

    def __enter__(self) -> ResultsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.close()
        self._log.close()

    def __contains__(self, key: Hashable) -> bool:
        return _key(key) in self._rows

    def get(self, key: Hashable) -> dict | None:
        return self._rows.get(_key(key))

    def todo(self, keys: Iterable[Hashable], desc: str = "eval") -> list:
        """The keys without a row yet, in the given order; says what a resumed run picks up, and shows
        progress over these keys as their rows are added (a bar, or interval lines off a terminal)."""
        from llmft.core.progress import Progress

        keys = list(keys)
        left = [k for k in keys if _key(k) not in self._rows]
        if len(left) < len(keys) and not self.quiet:
            print(f"resuming: {len(keys) - len(left)} of {len(keys)} done ({self.path})", file=sys.stderr)
        if self._progress is not None:
            self._progress.close()
        self._tracked = {_key(k) for k in left}
        self._progress = Progress(len(keys), desc, initial=len(keys) - len(left), unit="examples",
                                  enabled=bool(left) and not self.quiet)
        return left

    def add(self, key: Hashable, row: dict[str, Any]) -> dict[str, Any]:
        """Append a row under `key` (written and fsynced before returning)."""
        return self.add_all([(key, row)])[0]

    def add_all(self, pairs: Iterable[tuple[Hashable, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Append the rows of a finished batch, then count them in the progress at once (a line printed
        midway through a batch would time the whole batch's wait against its first row)."""
        added, counted = [], 0
        for key, row in pairs:
            row = {KEY: key, **{k: v for k, v in row.items() if k != KEY}}
            self._log.append(row)
            self._rows[_key(key)] = row
            if _key(key) in self._tracked:
                self._tracked.discard(_key(key))
                counted += 1
            added.append(row)
        if counted and self._progress is not None:
            self._progress.update(counted)
        return added

    def items(self) -> list[tuple[Hashable, dict]]:
        """Every (key, row) written so far, in the order written."""
        return list(self._rows.items())

    def rows(self, keys: Iterable[Hashable]) -> list[dict]:
        """The rows of `keys`, in that order (each must be done)."""
        return [self._rows[_key(k)] for k in keys]


def batches(keys: Sequence[Hashable], size: int) -> Iterator[tuple[int, list]]:
    """(offset, keys) of consecutive chunks of at most `size` keys."""
    step = max(size, 1)
    for start in range(0, len(keys), step):
        yield start, list(keys[start:start + step])


def eval_records(config: Any) -> list[dict]:
    """data.eval's records, the first eval.max_examples of them when that is set."""
    records = read_jsonl(config.data.eval, what="data.eval")
    return records[:config.eval.max_examples] if config.eval.max_examples else records


def evaluate_batched(results: str | Path, keys: Iterable[Hashable], batch_size: int,
                     answer: Callable[[list], Sequence[Any]], row: Callable[[Any, Any], dict[str, Any]]) -> list[dict]:
    """The one evaluation loop: the keys without a row in `results` answered `batch_size` at a time
    (`answer(keys)` -> one output per key), each `row(key, output)` kept as its batch ends; all rows, in order."""
    keys = list(keys)
    with ResultsLog(results) as log:
        for _, chunk in batches(log.todo(keys), batch_size):
            log.add_all((key, row(key, output)) for key, output in zip(chunk, answer(chunk), strict=True))
        return log.rows(keys)


def _key(value: Any) -> Hashable:
    """JSON turns tuples into lists: compare keys as tuples so a reloaded key equals the original."""
    return tuple(_key(v) for v in value) if isinstance(value, (list, tuple)) else value


def discard_if_changed(results: Path, settings: dict[str, Any]) -> None:
    """Drop results made under other settings (naming what changed); record the current settings."""
    stored_path = settings_path(results)
    current = json.loads(json.dumps(settings, default=str))
    stored = None
    if stored_path.is_file():
        try:
            stored = json.loads(stored_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
    if results.exists() and stored != current:
        changed = sorted(k for k in set(current) | set(stored or {}) if (stored or {}).get(k) != current.get(k))
        print(f"results in {results} came from other settings ({', '.join(changed) or 'unknown'}); "
              "starting afresh", file=sys.stderr)
        results.unlink()
    if stored != current or not stored_path.exists():
        runs.atomic_write_json(stored_path, current)
