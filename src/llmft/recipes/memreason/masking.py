"""Token ids and loss mask the way the reference's supervised_dataset.prepare_data makes them.

ids = tokenizer(x + y) (with BOS, cut to max_length) + [EOS]; the first len(tokenizer(x)) - 1 labels are
masked, so the prompt's last token is trained too (an off-by-one; `loss_on_last_prompt_token = false` masks
the whole prompt instead). Labels are ids at their own positions (the loss shifts them), as in transformers.

`strip_token_spaces` gives the ids of the reference's Llama-2 path: transformers 4.31's slow LlamaTokenizer
cut the text at every added token, stripped the whitespace (newlines too) on the side facing the token, and
encoded each remaining piece on its own, so every piece starts a new word ("▁The") and no "▁" or newline
sits between or before the planning tokens. Its fast-tokenizer path (Llama-3, Qwen) kept the whitespace,
which is what the tokenizer gives here without the option.
"""

from __future__ import annotations

from typing import Any

from llmft.core.data import IGNORE, TokenizedExample
from llmft.recipes.memreason.tokens import stripped_pieces


def sequence_ids(tokenizer: Any, text: str, strip_spaces: bool = False) -> list[int]:
    """tokenizer(text) ids (with BOS); with `strip_spaces` the reference's Llama-2 ids (see the module docstring)."""
    if not strip_spaces:
        return tokenizer(text)["input_ids"]
    ids = tokenizer("")["input_ids"]  # BOS, when the tokenizer adds one
    for i, piece in enumerate(stripped_pieces(text)):
        if i % 2:
            ids.append(tokenizer.convert_tokens_to_ids(piece))
        elif piece:
            ids += tokenizer(piece, add_special_tokens=False)["input_ids"]
    return ids


def tokenize_reference(tokenizer: Any, prompt: str, completion: str, max_length: int,
                       loss_on_last_prompt_token: bool = True, strip_spaces: bool = False) -> TokenizedExample:
    """One training example from prompt x and completion y (see the module docstring)."""
    ids = sequence_ids(tokenizer, prompt + completion, strip_spaces)[:max_length] + [tokenizer.eos_token_id]
    source = len(sequence_ids(tokenizer, prompt, strip_spaces)[:max_length])
    masked = min(source - 1 if loss_on_last_prompt_token else source, len(ids))
    return TokenizedExample(ids, [IGNORE] * masked + ids[masked:])
