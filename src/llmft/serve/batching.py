"""Dynamic batching: requests that arrive while the model is busy (or within a short window) and share a
key (adapter, sampling settings) run as one batch of up to `max_batch` rows, on one worker thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from llmft.core.continuous.engine import ShuttingDown

# run(key, prompts) -> one result per prompt, in order.
RunBatch = Callable[[Hashable, list[str]], Sequence[Any]]


@dataclass
class _Item:
    key: Hashable
    prompts: list[str]
    future: Future = field(default_factory=Future)


class Batcher:
    """One worker thread owns the model; `submit` queues prompts and returns a Future of their results.

    The worker takes the oldest queued item, then every queued item with the same key (oldest first) while
    the batch holds at most `max_batch` prompts, waiting up to `window_s` for more when the batch is not
    full. Items with other keys wait their turn. A cancelled Future (a client that went away) is skipped.
    """

    def __init__(self, run: RunBatch, max_batch: int = 32, window_s: float = 0.005):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.run = run
        self.max_batch = max_batch
        self.window_s = window_s
        self.batches: list[int] = []  # prompts per batch run, for tests and logs
        self.running = 0  # prompts in the batch being generated now
        self._queue: list[_Item] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="llmft-batcher", daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, prompts: Sequence[str]) -> Future:
        """Queue prompts under `key`; the Future resolves to their results (or the batch's exception)."""
        item = _Item(key, list(prompts))
        with self._cond:
            if self._stopping:
                raise RuntimeError("the batcher is shutting down")
            self._queue.append(item)
            self._cond.notify_all()
        return item.future

    def pending(self) -> int:
        """Items queued and not yet taken by the worker."""
        with self._cond:
            return len(self._queue)

    def close(self, cancel_pending: bool = False, timeout: float | None = None) -> None:
        """Stop the worker after the queue drains (or cancel what is queued); join it."""
        with self._cond:
            self._stopping = True
            if cancel_pending:
                for item in self._queue:
                    item.future.cancel()
                self._queue.clear()
            self._cond.notify_all()
        self._thread.join(timeout)

    def refuse_queued(self) -> None:
        """For a shutdown: the batch running finishes, queued items fail with ShuttingDown, new ones are refused."""
        with self._cond:
            self._stopping = True
            for item in self._queue:
                if item.future.set_running_or_notify_cancel():
                    item.future.set_exception(ShuttingDown("the server is shutting down"))
            self._queue.clear()
            self._cond.notify_all()

    def _take(self) -> list[_Item] | None:
        """The next batch, or None once stopping with an empty queue."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            key = self._queue[0].key
            deadline = time.monotonic() + self.window_s
            while True:
                batch, size = [], 0
                for item in self._queue:
                    if item.key == key and (not batch or size + len(item.prompts) <= self.max_batch):
                        batch.append(item)
                        size += len(item.prompts)
                left = deadline - time.monotonic()
                if size >= self.max_batch or left <= 0 or self._stopping:
                    break
                self._cond.wait(left)
            for item in batch:
                self._queue.remove(item)
        return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            live = [item for item in batch if item.future.set_running_or_notify_cancel()]
            if not live:
                continue
            prompts = [p for item in live for p in item.prompts]
            self.batches.append(len(prompts))
            self.running = len(prompts)
            try:
                results = list(self.run(live[0].key, prompts))
                if len(results) != len(prompts):
                    raise RuntimeError(f"batch returned {len(results)} results for {len(prompts)} prompts")
            except BaseException as exc:  # noqa: BLE001 (every waiting request gets the error)
                for item in live:
                    item.future.set_exception(exc)
                continue
            finally:
                self.running = 0
            start = 0
            for item in live:
                item.future.set_result(results[start:start + len(item.prompts)])
                start += len(item.prompts)
