"""Token ids and loss mask the way the reference's supervised_dataset.prepare_data makes them.

ids = tokenizer(x + y) (with BOS, cut to max_length) + [EOS]; the first len(tokenizer(x)) - 1 labels are
masked, so the prompt's last token is trained too (an off-by-one; `loss_on_last_prompt_token = false` masks
the whole prompt instead). Labels are ids at their own positions (the loss shifts them), as in transformers.
"""

from __future__ import annotations

from typing import Any

from llmft.core.data import IGNORE, TokenizedExample


def tokenize_reference(tokenizer: Any, prompt: str, completion: str, max_length: int,
                       loss_on_last_prompt_token: bool = True) -> TokenizedExample:
    """One training example from prompt x and completion y (see the module docstring)."""
    ids = tokenizer(prompt + completion)["input_ids"][:max_length] + [tokenizer.eos_token_id]
    source = len(tokenizer(prompt)["input_ids"][:max_length])
    masked = min(source - 1 if loss_on_last_prompt_token else source, len(ids))
    return TokenizedExample(ids, [IGNORE] * masked + ids[masked:])
