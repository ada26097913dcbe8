"""The Generator protocol over a ContinuousEngine, and the per-thread context a server attaches to a recipe's
decode (streams, logprobs, a cancel flag, the finished rows)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmft.core.continuous.engine import (
    Cancelled,
    ContinuousEngine,
    Counting,
    Generated,
    Ticket,
    TokenLogprobs,
)
from llmft.core.positions import PositionRules


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
                    and self.positions.own_decoding else Counting()
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
