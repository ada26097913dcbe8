"""A row's streamed text: decoded incrementally, its pieces join to the full decoding cut at the stop string, with
characters split across tokens and stop strings split across tokens held back until they are whole."""

from __future__ import annotations

import pytest

from llmft.core.continuous.row_text import RowText
from llmft.core.generation import cut_at_stop
from llmft.core.tokenizers import train_tokenizer

TEXT = "héllo 中文 wörld 🙂 <END> done"


def byte_level() -> object:
    """The project's byte-level BPE trained on ASCII only: every accented letter, CJK character and emoji is
    split into byte tokens, each decoding to an incomplete character alone."""
    return train_tokenizer(["hello world the end of it", "stop here please"] * 20, kind="bpe", vocab_size=300)


def byte_fallback() -> object:
    """A Llama-style SentencePiece tokenizer (Metaspace, byte fallback, leading space stripped): an unknown
    character becomes one <0xNN> token per byte, and a lone "▁" decodes to nothing at the start of a text."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for piece in ["▁", "h", "e", "l", "o", "▁h", "ll", "▁d", "n", "<", ">", "E", "N", "D", "d", "r"]:
        vocab.setdefault(piece, len(vocab))
    model = models.BPE(vocab=vocab, merges=[("▁", "h"), ("l", "l"), ("▁", "d")], byte_fallback=True,
                       unk_token="<unk>", fuse_unk=True)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                           decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


TOKENIZERS = {"byte_level": byte_level(), "byte_fallback": byte_fallback()}


def stream(tokenizer, ids: list[int], stop: tuple[str, ...], skip: frozenset[int]) -> tuple[list[str], RowText, int]:
    """The engine's use of a RowText: add each token, hand on after each, the last (or a stop) finishes it."""
    pieces: list[str] = []
    text = RowText(tokenizer, stop, skip, pieces.append)
    for n, token in enumerate(ids, 1):
        finished = text.add(token) or n == len(ids)
        text.hand_on(finished)
        if finished:
            return pieces, text, n
    raise AssertionError("never finished")


@pytest.mark.parametrize("name", TOKENIZERS)
@pytest.mark.parametrize("stop", [(), ("<END>",), ("文 w",), ("zz", "🙂"), ("é",)])
def test_streamed_pieces_join_to_the_full_decoding_cut_at_the_stop(name, stop):
    tokenizer = TOKENIZERS[name]
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    bos = tokenizer.bos_token_id
    ids = [*ids[:8], bos, *ids[8:]]  # a special token mid-answer, left out of the text
    assert tokenizer.decode(ids[1:2]).endswith("\ufffd")  # "é" is split across tokens
    pieces, text, used = stream(tokenizer, ids, stop, frozenset({bos}))
    expected = cut_at_stop(TEXT, stop)[0]
    assert "".join(pieces) == text.final() == expected
    assert used < len(ids) if stop else used == len(ids)  # a stop string ends the row when it is whole
    assert all("\ufffd" not in piece for piece in pieces)  # no incomplete character ever streamed
    assert len(pieces) >= min(3, len(expected))  # streamed as it came, not in one burst
    assert stop or pieces[0] == "h"  # without stop strings nothing is held back but incomplete characters


@pytest.mark.parametrize("name", TOKENIZERS)
def test_a_stop_string_split_across_tokens_is_held_back_until_whole(name):
    tokenizer = TOKENIZERS[name]
    ids = tokenizer.encode("say <EN then <END> more", add_special_tokens=False)
    pieces: list[str] = []
    text = RowText(tokenizer, ("<END>",), frozenset(), pieces.append)
    seen = []
    for token in ids:
        if text.add(token):
            text.hand_on(True)
            break
        text.hand_on(False)
        seen.append("".join(pieces))
    assert "".join(pieces) == "say <EN then "
    assert all("<" not in sent[len("say <EN"):] for sent in seen)  # "<END"'s start never sent before the stop


def test_each_step_decodes_a_few_tokens_not_the_whole_answer():
    tokenizer = TOKENIZERS["byte_level"]
    ids = tokenizer.encode(TEXT * 20, add_special_tokens=False)

    class Counted:
        lengths: list[int] = []

        def decode(self, part: list[int]) -> str:
            self.lengths.append(len(part))
            return tokenizer.decode(part)

    counted = Counted()
    pieces, text, _ = stream(counted, ids, ("never",), frozenset())
    assert "".join(pieces) == TEXT * 20
    assert counted.lengths[-1] == len(ids) and max(counted.lengths[:-1]) <= 12  # the final text: one full decode
