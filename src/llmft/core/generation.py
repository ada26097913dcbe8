"""The Generator protocol every evaluation, recursion engine and server talks to, and its backends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Generator(Protocol):
    """Batched text generation: one completion (without the prompt) per prompt, in order."""

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 64,
        stop: Sequence[str] = (),
        num_beams: int = 1,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> list[str]:
        """Complete each prompt; text stops before the first stop string or at EOS. temperature 0 = greedy."""
        ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Text up to (not including) the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
