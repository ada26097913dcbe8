"""Progress of a long step: a tqdm bar on a terminal, one plain line per interval anywhere else.

A log file or CI console gets a line each `1/lines` of the work, but at most one per `min_seconds` and at
least one per `max_seconds` (never carriage-return redraws), so a captured 300-step training log stays short.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, TextIO

# LLMFT_PROGRESS=lines forces interval lines (e.g. a terminal that records), =bar forces tqdm, =off disables.
ENV = "LLMFT_PROGRESS"


class Progress:
    """`update(n, **postfix)` as work is done, `close()` at the end; a no-op when disabled."""

    def __init__(self, total: int, desc: str, *, initial: int = 0, unit: str = "it", enabled: bool = True,
                 stream: TextIO | None = None, lines: int = 20, min_seconds: float = 5.0,
                 max_seconds: float = 120.0):
        self.total, self.desc, self.unit, self.done = max(int(total), 0), desc, unit, int(initial)
        self.stream = stream or sys.stderr
        mode = os.environ.get(ENV, "")
        self.enabled = enabled and mode != "off" and self.total > 0
        self.bar: Any = None
        self.postfix: dict[str, Any] = {}
        self.started = time.monotonic()
        self.start_count = self.done
        self.every = max(1, math.ceil(self.total / max(lines, 1)))
        self.printed = self.done
        self.min_seconds, self.max_seconds = min_seconds, max_seconds
        self.last_line = self.started
        if not self.enabled:
            return
        tty = mode == "bar" or (mode != "lines" and _isatty(self.stream))
        if tty:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.done, desc=desc, unit=unit, dynamic_ncols=True,
                            file=self.stream)

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Count `n` more units done; `postfix` (e.g. loss=0.5) shows beside the count."""
        self.done += n
        self.postfix.update(postfix)
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: _fmt(v) for k, v in self.postfix.items() if v is not None}, refresh=False)
        elif self.done >= self.total > self.printed:
            self._line()
        elif self.done > self.printed:
            since = time.monotonic() - self.last_line
            if (self.done - self.printed >= self.every and since >= self.min_seconds) or since >= self.max_seconds:
                self._line()

    def close(self) -> None:
        """End the bar (a last line if the last interval was not printed)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.done > self.printed:
            self._line()
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self) -> None:
        self.printed = self.done
        self.last_line = time.monotonic()
        elapsed = time.monotonic() - self.started
        rate = (self.done - self.start_count) / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else None
        parts = [f"{self.desc}: {self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%)"]
        parts += [f"{k} {_fmt(v)}" for k, v in self.postfix.items() if v is not None]
        parts.append(f"elapsed {_clock(elapsed)}" + (f", left ~{_clock(left)}" if left is not None and left > 0 else ""))
        print(" | ".join(parts), file=self.stream, flush=True)


def note_large_file(path: str, what: str, threshold_mb: float = 50.0) -> None:
    """Say before a long silent read (tokenising a big JSONL) what is being read and how big it is."""
    try:
        size = os.path.getsize(path) / 2**20
    except OSError:
        return
    if size >= threshold_mb:
        print(f"llmft: reading and tokenising {what} {path} ({size:,.0f} MB); this takes a while", file=sys.stderr,
              flush=True)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value else (f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4f}")
    return str(value)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
