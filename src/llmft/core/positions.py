"""Digit-aligned position ids: every number on one scale, the text around it on a coarser one.

Text tokens (anything but a digit token) take positions 0, S, 2S, ... in order (S = the stride); the k-th
digit of a number takes the position of the text token before it plus k. So the text sits at the same
positions whatever the numbers' lengths, numbers never share a position while they have fewer than S
digits, and the k-th digit of any number is S-multiples away from the k-th digit of any other: copying or
aligning digits is one fixed relative offset under RoPE at every length (the idea of position coupling,
Cho et al., NeurIPS 2024, here for numbers written left to right). Training and generation must use the same
rule: llmft applies it in its trainer, its held-out loss and `HFGenerator`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DigitAlignment:
    """The rule for one tokenizer: which ids are digits, and the stride between text tokens."""

    digits: frozenset[int]
    stride: int
    # The text token right after a number takes the position after its last digit (where a copy of the number
    # reading one digit ahead finds it) instead of its place on the text grid.
    attach_ends: bool = False

    def positions(self, token_ids: Iterable[int]) -> list[int]:
        """The position ids of one example."""
        state = DigitPositionState(self)
        return [state.advance(int(t)) for t in token_ids]


class DigitPositionState:
    """Where the rule stands after a prefix, so a decoder can place each new token as it comes."""

    def __init__(self, rule: DigitAlignment):
        self.rule = rule
        self.next_text, self.last_text, self.run = 0, 0, 0

    def advance(self, token_id: int) -> int:
        """The position of `token_id` appended to the prefix (the state moves past it)."""
        if token_id in self.rule.digits:
            self.run += 1
            return self.last_text + self.run
        after_number = self.last_text + self.run + 1 if self.rule.attach_ends and self.run else None
        self.run = 0
        self.last_text = self.next_text
        self.next_text += self.rule.stride
        return self.last_text if after_number is None else after_number


def uses_digit_positions(config: Any) -> bool:
    """Whether a run's model takes digit-aligned positions (`model.tiny.positions = "digits"`)."""
    from llmft.core.models import is_tiny

    return is_tiny(config) and config.model.tiny.positions == "digits"


def digit_alignment(config: Any, tokenizer: Any) -> DigitAlignment | None:
    """The run's rule over its tokenizer when its model takes digit-aligned positions, else None."""
    if not uses_digit_positions(config):
        return None
    return DigitAlignment(digit_token_ids(tokenizer), config.model.tiny.digit_stride, config.model.tiny.digit_ends)


def digit_token_ids(tokenizer: Any) -> frozenset[int]:
    """The ids whose text is made of ASCII digits only (one per digit for a char tokenizer; more for BPE)."""
    ids = set()
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        if text and text.isascii() and text.isdigit():
            ids.add(token_id)
    return frozenset(ids)
