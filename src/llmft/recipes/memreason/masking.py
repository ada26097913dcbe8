"""Token ids and loss mask the way the reference's supervised_dataset.prepare_data makes them.

ids = tokenizer(x + y) (with BOS, cut to max_length) + [EOS]; the first len(tokenizer(x)) - 1 labels are
masked, so the prompt's last token is trained too (an off-by-one; `loss_on_last_prompt_token = false` masks
the whole prompt instead). Labels are ids at their own positions (the loss shifts them), as in transformers.

`absorb_space` gives the ids of the reference's Llama-2 runs (transformers 4.31 with tokenizers 0.13.3, whose
Llama normalizer turned spaces into "▁" and whose ordinary added tokens were matched after normalisation, as
"▁<prefix_0>"): the space before each planning token belongs to the token, so no lone "▁" precedes one, and
the newlines stay. A byte-level tokenizer (Llama-3, Qwen) has no such normaliser and kept every space as a
token of its own: the tokenizer's own ids, without the option.
"""

from __future__ import annotations

from typing import Any

from llmft.core.data import IGNORE, TokenizedExample
from llmft.recipes.memreason.tokens import PLANNING_TOKEN


def sequence_ids(tokenizer: Any, text: str, absorb_space: bool = False) -> list[int]:
    """tokenizer(text) ids (with BOS); with `absorb_space` the reference's Llama-2 ids (module docstring) from a
    sentencepiece-style tokenizer, each text piece encoded on its own so no piece gets a second word prefix."""
    if not absorb_space:
        return tokenizer(text)["input_ids"]
    ids = tokenizer("")["input_ids"]  # BOS, when the tokenizer adds one
    pieces = PLANNING_TOKEN.split(text)
    for i, piece in enumerate(pieces):
        if i % 2:
            ids.append(tokenizer.convert_tokens_to_ids(piece))
            continue
        if i < len(pieces) - 1 and piece.endswith(" "):
            piece = piece[:-1]  # the space the next planning token takes
        if i > 0 and piece.startswith(" "):
            piece = piece[1:]  # given back as the word prefix the tokenizer puts before a text it encodes alone
        if piece:
            ids += tokenizer(piece, add_special_tokens=False)["input_ids"]
    return ids


def tokenize_reference(tokenizer: Any, prompt: str, completion: str, max_length: int,
                       loss_on_last_prompt_token: bool = True, absorb_space: bool = False,
                       pad_id: int = -1) -> TokenizedExample:
    """One training example from prompt x and completion y (see the module docstring). With `pad_id` >= 0 the
    reference's padding quirk: it counted the prompt's length as its ids other than the pad id and its collator
    hid every token with that id from attention (pad id 0 is a real token, "!", on Llama-3)."""
    ids = sequence_ids(tokenizer, prompt + completion, absorb_space)[:max_length] + [tokenizer.eos_token_id]
    source = sum(1 for i in sequence_ids(tokenizer, prompt, absorb_space)[:max_length] if i != pad_id)
    masked = min(source - 1 if loss_on_last_prompt_token else source, len(ids))
    hidden = tuple(at for at, i in enumerate(ids) if i == pad_id)
    return TokenizedExample(ids, [IGNORE] * masked + ids[masked:], hidden=hidden)
