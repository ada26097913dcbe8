"""Continuous batching over llmft's own KV-cached decode loop: one worker thread owns the model, a prompt joins
the running batch at the next decode step (its prefill runs between two steps) and leaves the moment it ends.

Written by hand because transformers' `generate` runs a fixed batch to its end, and its continuous-batching
manager (`generate_batch`) takes no adapter per request and decoded 1.87x slower than this loop on CPU. Rows of
different lengths share one cache, left-aligned: a joining row's keys are left-padded to the batch's length (or
the batch's to the row's), the 2-D attention mask hides the padding and position ids come from each row's own
count (or the run's position rules). Several LoRA adapters run in one batch through PEFT's `adapter_names`;
other adapter kinds take turns, a batch per adapter, oldest first.
"""

from __future__ import annotations

import inspect
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from llmft.core.generation import MIN_TEMPERATURE, cut_at_stop, nucleus
from llmft.core.positions import PositionRules

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch


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
    ids: list[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    adapter: str | None
    on_text: Callable[[str], None] | None
    top_logprobs: int | None  # None: no logprobs; k: the chosen token's and the k most likely
    positions: PositionRules | None  # rules that place each token (own_decoding), else one after the last
    skip_ids: frozenset[int]  # ids left out of the text (special tokens no recipe declared)
    ticket: Ticket
    new_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    eos: TokenLogprobs | None = None
    sent: str = ""  # text handed to on_text so far
    state: Any = None
    rng: Any = None
    finish: str = ""


class _Counting:
    """Plain positions: each token one after the last."""

    def __init__(self) -> None:
        self.next = 0

    def advance(self, token_id: int) -> int:
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
                   tuple(stop), adapter, on_text, top_logprobs,
                   positions if positions is not None and positions.own_decoding else None, skip_ids, ticket)
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
        """For a shutdown: callers with a row in the batch finish in full (their queued rows and later calls
        too); every other queued prompt fails with ShuttingDown, and so do new callers."""
        with self._cond:
            self._stopping = True
            started = self._started()
            for row in self._queue:
                if row.ticket.cancelled not in started:
                    row.ticket.future.set_exception(ShuttingDown("the server is shutting down"))
            self._queue = [row for row in self._queue if row.ticket.cancelled in started]
            self._cond.notify_all()

    def _started(self) -> list[threading.Event]:
        """The callers (by their cancel flag, one per request) with a row in the running batch."""
        return [row.ticket.cancelled for row in [*self._rows, *self._joining]]

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
        import torch

        self._device = next(self.model.parameters()).device
        # transformers 5 deprecates `past_key_values` for `cache`; a PEFT wrapper passes either on to its base.
        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self._cache_key = "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"
        self._cache: Any = None
        self._mask: Any = None
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
                    if joining:
                        self._prefill(joining)
                    self._joining = []
                    if self._rows:
                        self._step()
            except BaseException as exc:  # noqa: BLE001 (every row in the batch gets the error)
                for row in [*self._rows, *joining]:
                    if not row.ticket.future.done():
                        row.ticket.future.set_exception(exc)
                self._rows, self._cache, self._mask = [], None, None

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
            if row.ticket.cancelled.is_set():
                row.ticket.future.set_exception(Cancelled("the caller went away"))
        return [row for row in taken if not row.ticket.future.done()
                and row.ticket.future.set_running_or_notify_cancel()]

    def _forward(self, ids: Any, positions: Any, mask: Any, cache: Any, adapters: list[str | None]) -> Any:
        import torch

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
        from transformers import DynamicCache

        width = max(len(row.ids) for row in joining)
        ids = torch.full((len(joining), width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(joining), width), dtype=torch.long)
        positions = torch.zeros((len(joining), width), dtype=torch.long)
        for r, row in enumerate(joining):
            row.state = row.positions.decoding_state() if row.positions is not None else _Counting()
            if row.temperature > 0 and row.seed is not None:
                row.rng = torch.Generator().manual_seed(row.seed)
            n = len(row.ids)
            ids[r, width - n:] = torch.tensor(row.ids)
            mask[r, width - n:] = 1
            positions[r, width - n:] = torch.tensor([row.state.advance(t) for t in row.ids])
        cache = DynamicCache()
        cache.layer_class_to_replicate = spare_layer()
        mask = mask.to(self._device)
        logits = self._forward(ids.to(self._device), positions.to(self._device), mask, cache,
                               [row.adapter for row in joining])
        self._merge(cache, mask)
        self._rows.extend(joining)
        self._choose(logits, joining, offset=len(self._rows) - len(joining))

    def _merge(self, cache: Any, mask: Any) -> None:
        """Append a prefilled cache's rows to the running one, left-padding the shorter side."""
        import torch.nn.functional as F

        if self._cache is None:
            self._cache, self._mask = cache, mask
            return
        old, new = self._mask.shape[1], mask.shape[1]
        for mine, theirs in zip(self._cache.layers, cache.layers):
            for name in ("keys", "values"):
                a, b = getattr(mine, name), getattr(theirs, name)
                a = F.pad(a, (0, 0, new - old, 0)) if new > old else a
                b = F.pad(b, (0, 0, old - new, 0)) if old > new else b
                setattr(mine, name, torch_cat([a, b]))
        a = F.pad(self._mask, (new - old, 0)) if new > old else self._mask
        b = F.pad(mask, (old - new, 0)) if old > new else mask
        self._mask = torch_cat([a, b])

    def _step(self) -> None:
        """One token for every running row."""
        import torch

        rows = self._rows
        tokens = [row.new_ids[-1] for row in rows]
        ids = torch.tensor(tokens, device=self._device)[:, None]
        positions = torch.tensor([row.state.advance(t) for row, t in zip(rows, tokens)], device=self._device)[:, None]
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(rows), 1))], dim=1)
        logits = self._forward(ids, positions, self._mask, self._cache, [row.adapter for row in rows])
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
                tail = row.new_ids[-2 * max(map(len, row.stop)):] if row.stop else []
                if row.stop and cut_at_stop(_text(self.tokenizer, row, tail), row.stop)[1]:
                    row.finish = "stop"
                elif len(row.new_ids) >= row.max_new_tokens:
                    row.finish = "length"
            if row.on_text is not None:
                self._hand_on(row)
            if row.finish:
                finished.append(offset + r)
        if finished:
            self._remove(finished)

    def _hand_on(self, row: _Row) -> None:
        """The row's new text since the last call, held back while it may end in a stop string's start or in
        an incomplete UTF-8 character."""
        text = _text(self.tokenizer, row, row.new_ids)
        if row.stop:
            text, _ = cut_at_stop(text, row.stop)
            if not row.finish:
                text = text[:max(len(row.sent), len(text) - max(map(len, row.stop)) + 1)]
        if not row.finish and text.endswith("\ufffd"):
            return
        if len(text) > len(row.sent) and text.startswith(row.sent):
            piece, row.sent = text[len(row.sent):], text
            row.on_text(piece)  # type: ignore[misc]

    def _remove(self, indices: list[int]) -> None:
        """Finished or cancelled rows leave; padding columns no row uses any more are cut off the left."""
        import torch

        gone = set(indices)
        for i in sorted(gone):
            row = self._rows[i]
            if row.ticket.cancelled.is_set():
                row.ticket.future.set_exception(Cancelled("the caller went away"))
            else:
                text = cut_at_stop(_text(self.tokenizer, row, row.new_ids), row.stop)[0]
                row.ticket.future.set_result(Generated(text, row.new_ids, row.finish,
                                                       row.logprobs if row.top_logprobs is not None else None,
                                                       row.eos))
        keep = [i for i in range(len(self._rows)) if i not in gone]
        self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._cache, self._mask = None, None
            return
        index = torch.tensor(keep, device=self._device)
        mask = self._mask.index_select(0, index)
        start = int(mask.any(0).long().argmax())  # the first column a remaining row uses
        self._mask = mask[:, start:]
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, start:]
            layer.values = layer.values.index_select(0, index)[:, :, start:]

    def _drop_cancelled(self) -> None:
        gone = [i for i, row in enumerate(self._rows) if row.ticket.cancelled.is_set()]
        if gone:
            self._remove(gone)


def _text(tokenizer: Any, row: _Row, ids: list[int]) -> str:
    return tokenizer.decode([t for t in ids if t not in row.skip_ids])


def skipped_ids(tokenizer: Any, kept: Sequence[str] = ()) -> frozenset[int]:
    """The special tokens left out of generated text (as vLLM's skip_special_tokens): BOS, EOS, PAD, UNK,
    chat-template markers and every added special token, except `kept` (tokens a recipe trained to mean
    something, e.g. planning tokens)."""
    special = set(tokenizer.all_special_ids)
    special |= {i for i, added in tokenizer.added_tokens_decoder.items() if added.special}
    keep = {tokenizer.convert_tokens_to_ids(t) for t in kept}
    return frozenset(special - keep)


_SPARE_LAYER: Any = None


def spare_layer() -> Any:
    """A DynamicLayer whose keys and values sit in buffers with spare columns: a decode step writes its column in
    place, where DynamicLayer's torch.cat copies the whole cache every step (at 64 rows, as much memory traffic
    as the step's matmuls). Keys handed out are views of the buffer's filled columns."""
    global _SPARE_LAYER
    if _SPARE_LAYER is None:
        from transformers.cache_utils import DynamicLayer

        class SpareLayer(DynamicLayer):
            buffers: Any = None

            def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
                if not self.is_initialized:
                    self.lazy_initialization(key_states, value_states)
                    self.keys, self.values = key_states, value_states
                    return self.keys, self.values
                filled, new = self.keys.shape[-2], key_states.shape[-2]
                if self.buffers is None or self.buffers[0].shape[-2] < filled + new \
                        or self.buffers[0].data_ptr() != self.keys.data_ptr() \
                        or self.buffers[0].shape[0] != self.keys.shape[0]:
                    # First step, a full buffer, or the batch's rows changed (keys replaced): a new buffer.
                    spare = max(64, filled // 2)
                    self.buffers = tuple(t.new_empty((*t.shape[:2], filled + new + spare, t.shape[3]))
                                         for t in (self.keys, self.values))
                    self.buffers[0][:, :, :filled] = self.keys
                    self.buffers[1][:, :, :filled] = self.values
                self.buffers[0][:, :, filled:filled + new] = key_states
                self.buffers[1][:, :, filled:filled + new] = value_states
                self.keys = self.buffers[0][:, :, :filled + new]
                self.values = self.buffers[1][:, :, :filled + new]
                return self.keys, self.values

        _SPARE_LAYER = SpareLayer
    return _SPARE_LAYER


def torch_cat(parts: list[Any]) -> Any:
    import torch

    return torch.cat(parts, dim=0)


def _settle(future: Future, job: Callable[[], Any]) -> None:
    try:
        future.set_result(job())
    except BaseException as exc:  # noqa: BLE001 (the caller gets the error)
        future.set_exception(exc)


def _mixable(model: Any) -> bool:
    """Whether rows of different adapters can share a batch: PEFT LoRA adapters (`adapter_names`)."""
    configs = getattr(model, "peft_config", None) or {}
    return all(str(getattr(c, "peft_type", "")).endswith("LORA") for c in configs.values())


@dataclass
class DecodeContext:
    """What a server attaches to the thread that runs a recipe's decode: per-prompt text callbacks (streaming),
    logprobs wanted, a cancel flag, and the finished rows of the last `generate` (token ids, logprobs)."""

    on_text: list[Callable[[str], None]] | None = None
    top_logprobs: int | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    results: list[Generated] = field(default_factory=list)


_local = threading.local()


class decode_context:  # noqa: N801 (used as a `with` statement)
    """`with decode_context(ctx):` makes `ctx` the calling thread's context for ContinuousGenerator."""

    def __init__(self, context: DecodeContext):
        self.context = context

    def __enter__(self) -> DecodeContext:
        self.previous = getattr(_local, "context", None)
        _local.context = self.context
        return self.context

    def __exit__(self, *exc: Any) -> None:
        _local.context = self.previous


class ContinuousGenerator:
    """The Generator protocol over a ContinuousEngine: each prompt a row of the shared running batch, so
    concurrent callers (requests, recursion waves) batch together. Beam search runs `fallback` on the worker."""

    def __init__(self, engine: ContinuousEngine, fallback: Any, adapter: str | None = None,
                 positions: PositionRules | None = None, skip_ids: frozenset[int] = frozenset()):
        self.engine, self.fallback, self.adapter = engine, fallback, adapter
        self.positions, self.skip_ids = positions, skip_ids
        self.model, self.tokenizer = engine.model, fallback.tokenizer

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 64, stop: Sequence[str] = (),
                 num_beams: int = 1, temperature: float = 0.0, seed: int = 0, top_p: float = 1.0) -> list[str]:
        from llmft.core.data import encode_prompt

        if num_beams > 1:
            def beams() -> list[str]:
                if self.adapter is not None:
                    self.model.set_adapter(self.adapter)
                return self.fallback.generate(prompts, max_new_tokens=max_new_tokens, stop=stop,
                                              num_beams=num_beams, temperature=temperature, seed=seed,
                                              top_p=top_p)
            return self.engine.run(beams)
        context = getattr(_local, "context", None) or DecodeContext()
        streams = context.on_text if context.on_text is not None and len(context.on_text) == len(prompts) else None
        tickets = [self.engine.submit(encode_prompt(self.tokenizer, p), max_new_tokens=max_new_tokens,
                                      temperature=temperature, top_p=top_p, seed=seed + i, stop=stop,
                                      adapter=self.adapter, on_text=streams[i] if streams else None,
                                      top_logprobs=context.top_logprobs, positions=self.positions,
                                      skip_ids=self.skip_ids, cancelled=context.cancelled)
                   for i, p in enumerate(prompts)]
        results = [wait_for(ticket) for ticket in tickets]
        context.results = results
        return [r.text for r in results]

    def generate_ids(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float = 0.0,
                     seed: int = 0, top_p: float = 1.0, stop: Sequence[str] = ()) -> list[Generated]:
        """Completions of prompts given as token ids (no recipe formatting), with the context's streams and
        logprobs."""
        context = getattr(_local, "context", None) or DecodeContext()
        streams = context.on_text if context.on_text is not None and len(context.on_text) == len(prompts) else None
        tickets = [self.engine.submit(ids, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                      seed=seed + i, stop=stop, adapter=self.adapter,
                                      on_text=streams[i] if streams else None, top_logprobs=context.top_logprobs,
                                      positions=self.positions, skip_ids=self.skip_ids, cancelled=context.cancelled)
                   for i, ids in enumerate(prompts)]
        context.results = [wait_for(ticket) for ticket in tickets]
        return context.results

    def score(self, prompts: Sequence[Sequence[int]], top: int = 0) -> list[list[TokenLogprobs]]:
        """Each prompt token's log-probability given the tokens before it (None for the first) and the `top`
        most likely ids there: one forward per prompt, on the engine's thread."""
        import torch

        def job() -> list[list[TokenLogprobs]]:
            if self.adapter is not None and getattr(self.model, "active_adapter", None) != self.adapter:
                self.model.set_adapter(self.adapter)
            device = next(self.model.parameters()).device
            scored = []
            for ids in prompts:
                state = self.positions.decoding_state() if self.positions is not None \
                    and self.positions.own_decoding else _Counting()
                positions = torch.tensor([[state.advance(t) for t in ids]], device=device)
                with torch.inference_mode():
                    logits = self.model(input_ids=torch.tensor([list(ids)], device=device), position_ids=positions,
                                        use_cache=False).logits[0].float()
                logps = torch.log_softmax(logits, dim=-1)
                rows = [TokenLogprobs(int(ids[0]), None, [])]
                for i in range(1, len(ids)):
                    best = logps[i - 1].topk(top) if top else None
                    rows.append(TokenLogprobs(int(ids[i]), float(logps[i - 1, ids[i]]),
                                              list(zip(best.indices.tolist(), best.values.tolist())) if best else []))
                scored.append(rows)
            return scored

        return self.engine.run(job)


def wait_for(ticket: Ticket) -> Generated:
    """The row's result; a cancelled caller stops waiting within a quarter second."""
    from concurrent.futures import TimeoutError as FutureTimeout

    while True:
        try:
            return ticket.future.result(timeout=0.25)
        except FutureTimeout:
            if ticket.cancelled.is_set():
                raise Cancelled("the caller went away") from None
