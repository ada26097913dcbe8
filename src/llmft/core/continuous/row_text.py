"""A row's generated text as its tokens arrive: whether a stop string ended it, the new text to stream (held
back while it may end in a stop string's start or an incomplete UTF-8 character), and the final text."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from llmft.core.generation import cut_at_stop


class RowText:
    """One row's text: special tokens in `skip_ids` left out, cut at the earliest of `stop`."""

    def __init__(self, tokenizer: Any, stop: Sequence[str], skip_ids: frozenset[int],
                 on_text: Callable[[str], None] | None = None):
        self.tokenizer, self.skip_ids, self.on_text = tokenizer, skip_ids, on_text
        self.stop = tuple(s for s in stop if s)
        self.longest = max(map(len, self.stop), default=0)
        self.ids: list[int] = []
        self.sent = ""  # text handed to on_text so far

    def add(self, token: int) -> bool:
        """Take the next generated token (not EOS); whether the text now holds a stop string."""
        self.ids.append(token)
        return bool(self.stop) and cut_at_stop(self._decode(self.ids[-2 * self.longest:]), self.stop)[1]

    def hand_on(self, finished: bool) -> None:
        """Give on_text the text new since the last call; `finished`: the row ended, nothing is held back."""
        if self.on_text is None:
            return
        text = self._decode(self.ids)
        if self.stop:
            text, _ = cut_at_stop(text, self.stop)
            if not finished:
                text = text[:max(len(self.sent), len(text) - self.longest + 1)]
        if not finished and text.endswith("\ufffd"):
            return
        if len(text) > len(self.sent) and text.startswith(self.sent):
            piece, self.sent = text[len(self.sent):], text
            self.on_text(piece)

    def final(self) -> str:
        """The whole text, cut at the earliest stop string."""
        return cut_at_stop(self._decode(self.ids), self.stop)[0]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([t for t in ids if t not in self.skip_ids])


def skipped_ids(tokenizer: Any, kept: Sequence[str] = ()) -> frozenset[int]:
    """The special tokens left out of generated text (as vLLM's skip_special_tokens): BOS, EOS, PAD, UNK,
    chat-template markers and every added special token, except `kept` (tokens a recipe trained to mean
    something, e.g. planning tokens)."""
    special = set(tokenizer.all_special_ids)
    special |= {i for i, added in tokenizer.added_tokens_decoder.items() if added.special}
    keep = {tokenizer.convert_tokens_to_ids(t) for t in kept}
    return frozenset(special - keep)
