"""The continuous-batching engine: one worker thread owns the model and runs its decode steps; a queued prompt
joins the running batch at the next step (its prefill runs between two steps) and leaves the moment it ends.

Written by hand because transformers' `generate` runs a fixed batch to its end, and its continuous-batching
manager (`generate_batch`) takes no adapter per request and decoded 1.87x slower than this loop on CPU. Rows of
different lengths share one cache, right-aligned at its last column (kv_cache: a join or a leave copies only
the rows that move), the 2-D attention mask hides the padding and position ids come from each row's own
count (or the run's position rules). Several LoRA adapters run in one batch through PEFT's `adapter_names`;
other adapter kinds take turns, a batch per adapter, oldest first.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from llmft.core.continuous import kv_cache
from llmft.core.continuous.llama_step import LlamaStep
from llmft.core.continuous.row_text import RowText
from llmft.core.generation import MIN_TEMPERATURE, nucleus
from llmft.core.positions import PositionRules

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch
# Padded prompt tokens per prefill forward: prompts that arrive together are prefilled in chunks of about this
# many, oldest first, so the first of them get their first token without waiting for the last one's prompt.
PREFILL_TOKENS = 256


class ShuttingDown(RuntimeError):
    """A queued prompt the engine will not run: it is stopping."""


class Cancelled(RuntimeError):
    """The prompt's caller went away; its row left the batch."""


@dataclass
class TokenLogprobs:
    """One generated token: its id, log-probability and the `top` most likely ids with theirs."""

    token: int
    logprob: float | None  # None for a prompt's first token (nothing before it)
    top: list[tuple[int, float]]


@dataclass
class Generated:
    """A finished row: the text (special tokens skipped, cut at a stop string), its ids and why it ended."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    logprobs: list[TokenLogprobs] | None = None
    eos: TokenLogprobs | None = None  # the EOS that ended the row, when logprobs were asked for

    def logprobs_or_empty(self, with_eos: bool = False) -> list[TokenLogprobs]:
        """The text's tokens' logprobs; `with_eos`: the ending EOS too (the legacy API lists it)."""
        return [*(self.logprobs or []), *([self.eos] if with_eos and self.eos else [])]


@dataclass
class Ticket:
    """What a caller gets per prompt: the result, and a way to say it no longer wants it."""

    future: Future
    cancelled: threading.Event


@dataclass
class _Row:
    """A prompt in the engine: its settings, and once it runs its generated ids, text and decoding state."""

    ids: list[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    adapter: str | None
    text: RowText
    top_logprobs: int | None  # None: no logprobs; k: the chosen token's and the k most likely
    positions: PositionRules | None  # rules that place each token (own_decoding), else one after the last
    ticket: Ticket
    new_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    eos: TokenLogprobs | None = None
    state: Any = None
    rng: Any = None
    finish: str = ""


class Counting:
    """Plain positions: each token one after the last."""

    def __init__(self) -> None:
        self.next = 0

    def advance(self, token_id: int) -> int:
        """The position of `token_id`: one after the last."""
        self.next += 1
        return self.next - 1


class ContinuousEngine:
    """The model's one decode loop. `submit` queues a prompt's ids and returns a Ticket; `run` calls a function
    on the worker thread between two steps (scoring, beam search)."""

    def __init__(self, model: Any, tokenizer: Any, max_batch: int = 32):
        self.model, self.tokenizer, self.max_batch = model, tokenizer, max_batch
        self.eos_ids = {tokenizer.eos_token_id}  # as HFGenerator: the tokenizer's EOS, as training wrote it
        self.mixed = _mixable(model)
        self.steps = 0  # decode steps run, for tests and logs
        self.batch_sizes: deque[int] = deque(maxlen=10_000)  # rows per decode step (the last 10,000)
        self.mixed_steps = 0  # decode steps whose rows used more than one adapter
        self._queue: list[_Row] = []
        self._jobs: list[tuple[Callable[[], Any], Future]] = []
        self._rows: list[_Row] = []
        self._joining: list[_Row] = []  # admitted, prefilling
        # Callers (their cancel flags) with a row admitted so far: at a shutdown they finish in full, even between
        # two of their calls (a recipe decodes in chunks) when none of their rows is in the batch.
        self._admitted: weakref.WeakSet[threading.Event] = weakref.WeakSet()
        self._adapter: str | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def _wake(self) -> None:
        """Start the worker if it is not running (first use, or reuse after `close`); call holding the lock."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="llmft-decode", daemon=True)
            self._thread.start()
        self._cond.notify_all()

    # -- the caller's side --------------------------------------------------------------------------------------
    def submit(self, ids: Sequence[int], *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
               seed: int | None = None, stop: Sequence[str] = (), adapter: str | None = None,
               on_text: Callable[[str], None] | None = None, top_logprobs: int | None = None,
               positions: PositionRules | None = None, skip_ids: frozenset[int] = frozenset(),
               cancelled: threading.Event | None = None) -> Ticket:
        """Queue one prompt; the Ticket's future resolves to a `Generated` (or ShuttingDown / Cancelled)."""
        ticket = Ticket(Future(), cancelled or threading.Event())
        row = _Row(list(ids), max_new_tokens, 0.0 if temperature < MIN_TEMPERATURE else temperature, top_p, seed,
                   adapter, RowText(self.tokenizer, stop, skip_ids, on_text), top_logprobs,
                   positions if positions is not None and positions.own_decoding else None, ticket)
        with self._cond:
            if self._stopping and ticket.cancelled not in self._started():
                raise ShuttingDown("the server is shutting down")
            self._queue.append(row)
            self._wake()
        return ticket

    def run(self, job: Callable[[], Any]) -> Any:
        """`job()` on the worker thread (the model's owner) between two decode steps; its result or error."""
        future: Future = Future()
        with self._cond:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            self._jobs.append((job, future))
            self._wake()
        return future.result()

    def load(self) -> tuple[int, int]:
        """(prompts waiting, rows decoding now)."""
        with self._cond:
            return len(self._queue), len(self._rows)

    def refuse_queued(self) -> None:
        """For a shutdown: callers that have had a row in the batch finish in full (their queued rows and later
        calls too); every other queued prompt fails with ShuttingDown, and so do new callers."""
        with self._cond:
            self._stopping = True
            started = self._started()
            for row in self._queue:
                if row.ticket.cancelled not in started:
                    row.ticket.future.set_exception(ShuttingDown("the server is shutting down"))
            self._queue = [row for row in self._queue if row.ticket.cancelled in started]
            self._cond.notify_all()

    def _started(self) -> weakref.WeakSet[threading.Event]:
        """The callers (by their cancel flag, one per request) that have had a row in the running batch."""
        return self._admitted

    def close(self, timeout: float | None = None) -> None:
        """Finish what is queued and running, then stop the worker (a later `submit` starts a new one)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._cond:
            self._stopping = False

    # -- the worker ---------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        """The worker: jobs, then joining rows' prefill, then one decode step, until stopped and idle."""
        import torch

        self._device = next(self.model.parameters()).device
        # transformers 5 deprecates `past_key_values` for `cache`; a PEFT wrapper passes either on to its base.
        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self._cache_key = "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"
        self._llama_step = LlamaStep.for_model(self.model)  # forwards without the model's per-layer overhead
        self._cache: kv_cache.RunningCache | None = None
        while True:
            with self._cond:
                while not (self._queue or self._jobs or self._rows):
                    if self._stopping:
                        return
                    self._cond.wait()
                jobs, self._jobs = self._jobs, []
                joining = self._joining = self._admit()
            for job, future in jobs:
                _settle(future, job)
            try:
                with torch.inference_mode():
                    self._drop_cancelled()
                    for chunk in prefill_chunks(joining, PREFILL_TOKENS):
                        self._prefill(chunk)  # each chunk's first tokens are handed on before the next runs
                    self._joining = []
                    if self._rows:
                        self._step()
            except BaseException as exc:  # noqa: BLE001 (every row in the batch gets the error)
                for row in [*self._rows, *joining]:
                    if not row.ticket.future.done():
                        row.ticket.future.set_exception(exc)
                self._rows, self._cache = [], None

    def _admit(self) -> list[_Row]:
        """Queued rows that fit in the batch (the running adapter's only, when adapters cannot mix)."""
        room = self.max_batch - len(self._rows)
        if room <= 0 or not self._queue:
            return []
        if not self.mixed:
            if not self._rows:
                self._adapter = self._queue[0].adapter
            taken = [row for row in self._queue if row.adapter == self._adapter][:room]
        else:
            taken = self._queue[:room]
        for row in taken:
            self._queue.remove(row)
            self._admitted.add(row.ticket.cancelled)
            if row.ticket.cancelled.is_set():
                row.ticket.future.set_exception(Cancelled("the caller went away"))
        return [row for row in taken if not row.ticket.future.done()
                and row.ticket.future.set_running_or_notify_cancel()]

    def _forward(self, ids: Any, positions: Any, mask: Any, cache: Any, adapters: list[str | None]) -> Any:
        """The last position's logits (float) of `ids` run on `cache`, each row with its adapter."""
        import torch

        if self._llama_step is not None:
            return self._llama_step(ids, positions, mask, cache)
        past = cache.get_seq_length()
        kwargs: dict[str, Any] = {}
        distinct = set(adapters)
        if len(distinct) > 1:
            kwargs["adapter_names"] = [a or BASE_ADAPTER for a in adapters]
        elif None not in distinct and self.model.active_adapter != adapters[0]:
            self.model.set_adapter(adapters[0])
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         cache_position=torch.arange(past, past + ids.shape[1], device=self._device),
                         logits_to_keep=1, **{self._cache_key: cache}, **kwargs)
        return out.logits[:, -1].float()

    def _prefill(self, joining: list[_Row]) -> None:
        """The joining rows' prompts through the model in a batch of their own; their caches then join the
        running batch's, left-padded to one length."""
        import torch

        width = max(len(row.ids) for row in joining)
        ids = torch.full((len(joining), width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(joining), width), dtype=torch.long)
        positions = torch.zeros((len(joining), width), dtype=torch.long)
        for r, row in enumerate(joining):
            row.state = row.positions.decoding_state() if row.positions is not None else Counting()
            if row.temperature > 0 and row.seed is not None:
                row.rng = torch.Generator().manual_seed(row.seed)
            n = len(row.ids)
            ids[r, width - n:] = torch.tensor(row.ids)
            mask[r, width - n:] = 1
            positions[r, width - n:] = torch.tensor([row.state.advance(t) for t in row.ids])
        cache = kv_cache.new_cache()
        mask = mask.to(self._device)
        logits = self._forward(ids.to(self._device), positions.to(self._device), mask, cache,
                               [row.adapter for row in joining])
        if self._cache is None:
            self._cache = kv_cache.RunningCache(cache, mask)
        else:
            self._cache.join(cache, mask)
        self._rows.extend(joining)
        self._choose(logits, joining, offset=len(self._rows) - len(joining))

    def _step(self) -> None:
        """One token for every running row."""
        import torch

        rows = self._rows
        tokens = [row.new_ids[-1] for row in rows]
        ids = torch.tensor(tokens, device=self._device)[:, None]
        positions = torch.tensor([row.state.advance(t) for row, t in zip(rows, tokens)], device=self._device)[:, None]
        mask = self._cache.step_mask()
        logits = self._forward(ids, positions, mask, self._cache.cache, [row.adapter for row in rows])
        self.steps += 1
        self.batch_sizes.append(len(rows))
        self.mixed_steps += len({row.adapter for row in rows}) > 1
        self._choose(logits, rows, offset=0)

    def _choose(self, logits: Any, rows: list[_Row], offset: int) -> None:
        """Pick each row's next token, hand its new text on, and take finished rows out of the batch."""
        import torch

        chosen = logits.argmax(-1).tolist()
        sampled = [r for r, row in enumerate(rows) if row.temperature > 0]
        if sampled:
            temps = torch.tensor([rows[r].temperature for r in sampled])[:, None]
            probs = torch.softmax(logits[sampled] / temps.to(logits.device), dim=-1)
            for i, r in enumerate(sampled):
                p = nucleus(probs[i:i + 1], rows[r].top_p)
                chosen[r] = int(torch.multinomial(p, 1, generator=rows[r].rng).item())
        wanted = [r for r, row in enumerate(rows) if row.top_logprobs is not None]
        if wanted:
            logps = torch.log_softmax(logits[wanted], dim=-1)
            for i, r in enumerate(wanted):
                k = rows[r].top_logprobs
                top = logps[i].topk(k) if k else None
                rows[r].logprobs.append(TokenLogprobs(
                    chosen[r], float(logps[i, chosen[r]]),
                    list(zip(top.indices.tolist(), top.values.tolist())) if top is not None else []))
        finished = []
        for r, row in enumerate(rows):
            token = chosen[r]
            if token in self.eos_ids:
                row.finish = "stop"
                if row.top_logprobs is not None:
                    row.eos = row.logprobs.pop()  # not part of the text
            else:
                row.new_ids.append(token)
                if row.text.add(token):
                    row.finish = "stop"
                elif len(row.new_ids) >= row.max_new_tokens:
                    row.finish = "length"
            row.text.hand_on(finished=bool(row.finish))
            if row.finish:
                finished.append(offset + r)
        if finished:
            self._remove(finished)

    def _remove(self, indices: list[int]) -> None:
        """Finished or cancelled rows leave; padding columns no row uses any more are cut off the left."""
        gone = set(indices)
        for i in sorted(gone):
            row = self._rows[i]
            if row.ticket.cancelled.is_set():
                row.ticket.future.set_exception(Cancelled("the caller went away"))
            else:
                row.ticket.future.set_result(Generated(row.text.final(), row.new_ids, row.finish,
                                                       row.logprobs if row.top_logprobs is not None else None,
                                                       row.eos))
        keep = [i for i in range(len(self._rows)) if i not in gone]
        if not keep:
            self._rows, self._cache = [], None
            return
        self._rows = [self._rows[i] for i in self._cache.keep(keep)]

    def _drop_cancelled(self) -> None:
        """Rows whose callers went away leave the batch."""
        gone = [i for i, row in enumerate(self._rows) if row.ticket.cancelled.is_set()]
        if gone:
            self._remove(gone)


def prefill_chunks(rows: list[_Row], budget: int) -> list[list[_Row]]:
    """`rows` in order, cut into runs whose padded size (rows x longest prompt) stays within `budget` tokens
    (a longer prompt makes a run of its own)."""
    chunks: list[list[_Row]] = []
    longest = 0
    for row in rows:
        width = max(longest, len(row.ids))
        if chunks and width * (len(chunks[-1]) + 1) <= budget:
            chunks[-1].append(row)
            longest = width
        else:
            chunks.append([row])
            longest = len(row.ids)
    return chunks


def _settle(future: Future, job: Callable[[], Any]) -> None:
    """`future` resolved to `job()`'s result or error."""
    try:
        future.set_result(job())
    except BaseException as exc:  # noqa: BLE001 (the caller gets the error)
        future.set_exception(exc)


def _mixable(model: Any) -> bool:
    """Whether rows of different adapters can share a batch: PEFT LoRA adapters (`adapter_names`)."""
    configs = getattr(model, "peft_config", None) or {}
    return all(str(getattr(c, "peft_type", "")).endswith("LORA") for c in configs.values())
