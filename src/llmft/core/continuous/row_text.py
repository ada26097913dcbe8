"""A row's generated text as its tokens arrive: whether a stop string ended it, the new text to stream (held
back while it may end in a stop string's start or an incomplete UTF-8 character), and the final text."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from llmft.core.generation import cut_at_stop


class RowText:
    """One row's text: special tokens in `skip_ids` left out, cut at the earliest of `stop`.

    Text is decoded incrementally (as vLLM's and transformers' incremental detokenizers): each new token is read
    against the tokens of the last piece (`prefix`..`read`), so a step decodes a few tokens, not the whole answer,
    and a piece is taken only when its text ends in a complete character. Stop strings are looked for in what
    was read last and the few characters before it."""

    def __init__(self, tokenizer: Any, stop: Sequence[str], skip_ids: frozenset[int],
                 on_text: Callable[[str], None] | None = None):
        self.tokenizer, self.skip_ids, self.on_text = tokenizer, skip_ids, on_text
        self.stop = tuple(s for s in stop if s)
        self.longest = max(map(len, self.stop), default=0)
        self.ids: list[int] = []  # every token added (skipped ones too)
        self.kept: list[int] = []  # the tokens whose text counts
        self.prefix = 0  # kept[prefix:read]: the context a new token's text is read against
        self.read = 0  # kept[:read]: text read, complete characters
        self.unsent = ""  # text read and not yet handed on
        self.recent = ""  # the last characters read, fewer than the longest stop string's
        self.sent: list[str] = []  # the pieces handed on
        self._final: str | None = None

    def add(self, token: int) -> bool:
        """Take the next generated token (not EOS); whether the text now holds a stop string."""
        self.ids.append(token)
        self._final = None
        if token in self.skip_ids or not (self.stop or self.on_text):
            return False
        self.kept.append(token)
        new = self._read()
        if not (new and self.stop):
            return False
        recent = self.recent + new
        self.recent = recent[max(0, len(recent) - self.longest + 1):]
        return cut_at_stop(recent, self.stop)[1]

    def hand_on(self, finished: bool) -> None:
        """Give on_text the text new since the last call; `finished`: the row ended, nothing is held back."""
        if self.on_text is None:
            return
        if finished:
            text, sent = self.final(), "".join(self.sent)
            if len(text) > len(sent) and text.startswith(sent):
                self._send(text[len(sent):])
            return
        text = self.unsent
        if self.stop:
            # No stop string starts in the text handed on: it was held back by the longest stop's length less one.
            text, _ = cut_at_stop(text, self.stop)
            text = text[:max(0, len(text) - self.longest + 1)]
        if text:
            self.unsent = self.unsent[len(text):]
            self._send(text)

    def final(self) -> str:
        """The whole text, cut at the earliest stop string (decoded in full once, when the row has ended)."""
        if self._final is None:
            self._final = cut_at_stop(self._decode(self.ids), self.stop)[0]
        return self._final

    def _read(self) -> str:
        """The text of the tokens past `read` (added to `unsent`) once it ends in a complete character, else ""."""
        context = self.tokenizer.decode(self.kept[self.prefix:self.read])
        text = self.tokenizer.decode(self.kept[self.prefix:])
        # "\ufffd" last: an incomplete UTF-8 character (its next bytes are in tokens to come).
        if len(text) > len(context) and text.startswith(context) and not text.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.kept)
            new = text[len(context):]
            self.unsent += new if self.on_text is not None else ""
            return new
        return ""

    def _send(self, piece: str) -> None:
        self.sent.append(piece)
        self.on_text(piece)  # type: ignore[misc]

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
