"""Digit-aligned position ids: every number on one scale, the text around it on a coarser one.

Text tokens (anything but a digit token) take positions 0, S, 2S, ... in order (S = the stride); the k-th
digit of a number takes the position of the text token before it plus k. So the text sits at the same
positions whatever the numbers' lengths, numbers never share a position while they have fewer than S
digits, and the k-th digit of any number is S-multiples away from the k-th digit of any other: copying or
aligning digits is one fixed relative offset under RoPE at every length (the idea of position coupling,
Cho et al., NeurIPS 2024, here for numbers written left to right). With joiners (e.g. "," and " "), a number
goes on through them, so a whole list such as "1, 0, 1" is one number: its k-th token sits k after the text
before it, whatever the list's length. Training and generation must use the same rule.

`PositionRules` holds a run's rules (this one, training's random position draws, the numbers' offsets);
the trainer, scoring, held-out loss, `HFGenerator`, eval, serve and export ask it and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from llmft.core.data import example_segments
from llmft.core.errors import LlmftError

# How messages name a model that needs llmft's own decoding.
OWN_POSITIONS = "digit-aligned positions (model.tiny.positions = 'digits')"


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


@dataclass(frozen=True)
class PositionRules:
    """A run's position ids beyond 0..n-1 per example: the aligned rule (training, scoring, decoding), with
    its numbers' random offsets, and training's random draws (`train.random_positions`)."""

    aligned: DigitAlignment | None = None
    random_span: int = 0  # training only: positions drawn from range(random_span)
    max_offset: int = 0  # training only: each example's numbers moved by a draw from 0..max_offset

    @property
    def own_decoding(self) -> bool:
        """Whether decoding must place each new token itself (transformers' `generate` cannot)."""
        return self.aligned is not None

    def training(self, batches: list[dict[str, Any]], draw: Any, additive: bool) -> list[dict[str, Any]]:
        """Training batches with their position ids; `draw` (a torch.Generator seeded by step) makes every
        random choice, the random positions of all batches first."""
        if self.random_span:
            batches = [randomize_positions(b, self.random_span, draw, additive) for b in batches]
        if self.aligned is not None:
            batches = [align_digit_positions(b, self.aligned, additive, self.max_offset, draw) for b in batches]
        return batches

    def scoring(self, batch: dict[str, Any], additive: bool) -> dict[str, Any]:
        """A batch scored (losses) as the model reads text at inference: the aligned rule, no offsets."""
        return batch if self.aligned is None else align_digit_positions(batch, self.aligned, additive)

    def decoding_state(self) -> DigitPositionState:
        """A fresh per-sequence state whose `advance(token)` gives each token's position (own_decoding only)."""
        return DigitPositionState(self.aligned)  # type: ignore[arg-type]


def run_positions(config: Any, tokenizer: Any, seq2seq: bool = False) -> PositionRules:
    """The run's rules over its tokenizer; an encoder-decoder keeps plain positions."""
    if seq2seq:
        return PositionRules()
    return PositionRules(digit_alignment(config, tokenizer), config.train.random_positions,
                         config.model.tiny.digit_offset if uses_digit_positions(config) else 0)


def own_decoding(config: Any) -> bool:
    """Whether a run's model needs llmft's own decoding (its positions are not 0..n-1), from its config."""
    return uses_digit_positions(config)


def position_settings(config: Any) -> dict[str, Any] | None:
    """What decoded outputs depend on beyond the weights: the aligned rule's settings (None = plain)."""
    if not uses_digit_positions(config):
        return None
    tiny = config.model.tiny
    return {"rule": "digits", "digit_stride": tiny.digit_stride, "digit_ends": tiny.digit_ends,
            "digit_joiners": tiny.digit_joiners, "digit_layout": tiny.digit_layout,
            **({"digit_signs": tiny.digit_signs} if tiny.digit_signs else {})}


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


def randomize_positions(batch: dict[str, Any], span: int, generator: Any, additive: bool) -> dict[str, Any]:
    """The batch with each example's position ids replaced by a sorted random sample of range(span).
    `additive`: a float mask (eager attention) instead of a boolean one."""
    import torch

    def draw(ids: Any) -> Any:
        n = len(ids)
        if n > span:
            raise LlmftError(f"train.random_positions ({span}) is shorter than a {n}-token training row; "
                             "raise it above data.max_length")
        return torch.randperm(span, generator=generator)[:n].sort().values

    return replace_positions(batch, draw, additive)


def align_digit_positions(batch: dict[str, Any], rule: Any, additive: bool, max_offset: int = 0,
                          generator: Any = None) -> dict[str, Any]:
    """The batch with each example's position ids from a `DigitAlignment`; with
    `max_offset`, each example's numbers moved by its own random draw from 0..max_offset (`generator`)."""
    import torch

    def aligned(ids: Any) -> Any:
        offset = int(torch.randint(max_offset + 1, (), generator=generator)) if max_offset else 0
        return torch.tensor(rule.positions(ids.tolist(), offset))

    return replace_positions(batch, aligned, additive)


def replace_positions(batch: dict[str, Any], per_example: Callable[[Any], Any], additive: bool) -> dict[str, Any]:
    """The batch with each packed example's position ids replaced by `per_example(its input ids)`, and an
    explicit block-causal mask (transformers finds packed examples from position steps of 1, which the new
    positions no longer have). `additive`: a float mask (eager attention) instead of a boolean one."""
    import torch

    ids = batch["input_ids"]
    rows, width = ids.shape
    positions = batch.get("position_ids")
    if positions is None:  # unpacked rows: one example per row, then its padding
        positions = torch.arange(width).expand(rows, width)
    starts = positions == 0
    segment = example_segments(positions)
    new_positions = torch.empty_like(positions)
    for r in range(rows):
        bounds = starts[r].nonzero().flatten().tolist() + [width]
        for begin, end in zip(bounds, bounds[1:]):
            new_positions[r, begin:end] = per_example(ids[r, begin:end])
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = (segment[:, :, None] == segment[:, None, :]) & causal
    mask = allowed[:, None]
    if additive:
        mask = torch.zeros(allowed.shape, dtype=torch.float32)[:, None].masked_fill(~mask, torch.finfo(torch.float32).min)
    return {**batch, "position_ids": new_positions, "attention_mask": mask}
