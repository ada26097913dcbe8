"""Digit-aligned position ids: every number on one scale, the text around it on a coarser one.

Text tokens (anything but a digit token) take positions 0, S, 2S, ... in order (S = the stride); the k-th
digit of a number takes the position of the text token before it plus k. So the text sits at the same
positions whatever the numbers' lengths, numbers never share a position while they have fewer than S
digits, and the k-th digit of any number is S-multiples away from the k-th digit of any other: copying or
aligning digits is one fixed relative offset under RoPE at every length (the idea of position coupling,
Cho et al., NeurIPS 2024, here for numbers written left to right). With joiners (e.g. "," and " "), a number
goes on through them, so a whole list such as "1, 0, 1" is one number: its k-th token sits k after the text
before it, whatever the list's length. Training and generation must use the same rule: llmft applies it in
its trainer, its held-out loss and `HFGenerator`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class DigitAlignment:
    """The rule for one tokenizer: which ids are digits, and the stride between text tokens."""

    digits: frozenset[int]  # the ids that start or continue a number: digits, and signs when configured
    stride: int
    # The text token right after a number takes the position after its last digit (where a copy of the number
    # reading one digit ahead finds it) instead of its place on the text grid.
    attach_ends: bool = False
    # Ids that continue a number once a digit has started it (a list's separators); text anywhere else.
    joiners: frozenset[int] = frozenset()
    # "grid": text tokens `stride` apart; "slots": text tokens one apart and every number takes `stride`
    # positions, so the same offsets hold with far shorter distances between text tokens.
    layout: Literal["grid", "slots"] = "grid"

    def positions(self, token_ids: Iterable[int], offset: int = 0) -> list[int]:
        """The position ids of one example; `offset` moves every number that far from the text before it."""
        state = DigitPositionState(self, offset)
        return [state.advance(int(t)) for t in token_ids]


class DigitPositionState:
    """Where the rule stands after a prefix, so a decoder can place each new token as it comes."""

    def __init__(self, rule: DigitAlignment, offset: int = 0):
        self.rule, self.offset = rule, offset
        self.next_text, self.last_text, self.run = 0, 0, 0

    def advance(self, token_id: int) -> int:
        """The position of `token_id` appended to the prefix (the state moves past it)."""
        if token_id in self.rule.digits or (self.run and token_id in self.rule.joiners):
            self.run += 1
            return self.last_text + self.offset + self.run
        after_number = self.last_text + self.offset + self.run + 1 if self.rule.attach_ends and self.run else None
        if self.rule.layout == "slots":
            self.last_text = self.next_text + (self.rule.stride if self.run else 0)
            self.next_text = self.last_text + 1
        else:
            self.last_text = self.next_text
            self.next_text += self.rule.stride
        self.run = 0
        return self.last_text if after_number is None else after_number


def uses_digit_positions(config: Any) -> bool:
    """Whether a run's model takes digit-aligned positions (`model.tiny.positions = "digits"`)."""
    from llmft.core.models import is_tiny

    return is_tiny(config) and config.model.tiny.positions == "digits"


def digit_alignment(config: Any, tokenizer: Any) -> DigitAlignment | None:
    """The run's rule over its tokenizer when its model takes digit-aligned positions, else None."""
    if not uses_digit_positions(config):
        return None
    tiny = config.model.tiny
    starts = digit_token_ids(tokenizer) | joiner_token_ids(tokenizer, tiny.digit_signs)
    return DigitAlignment(starts, tiny.digit_stride, tiny.digit_ends,
                          joiner_token_ids(tokenizer, tiny.digit_joiners), tiny.digit_layout)


def digit_token_ids(tokenizer: Any) -> frozenset[int]:
    """The ids whose text is made of ASCII digits only (one per digit for a char tokenizer; more for BPE)."""
    return frozenset(i for i, text in enumerate(token_texts(tokenizer)) if text.isascii() and text.isdigit())


def joiner_token_ids(tokenizer: Any, joiners: str) -> frozenset[int]:
    """The ids whose text is made of the characters in `joiners` only ("" = none)."""
    if not joiners:
        return frozenset()
    return frozenset(i for i, text in enumerate(token_texts(tokenizer)) if text and set(text) <= set(joiners))


def token_texts(tokenizer: Any) -> list[str]:
    """Every id's text as one token ("" for ids that decode to nothing, such as special tokens)."""
    return [tokenizer.decode([token_id]) for token_id in range(len(tokenizer))]
