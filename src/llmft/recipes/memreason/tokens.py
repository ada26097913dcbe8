"""The planning tokens: `<prefix_i>` and S each of `<answer_i>`, `<assignment_i>`, `<reason_i>`, `<memory_i>`.

Names, order and text layout are the reference's (train.py): each kind's text is its tokens, each preceded by
one space. New rows start as copies of the rows of the literal word ("prefix", "memory", ...).
"""

from __future__ import annotations

import re
from typing import Any

# The reference's order: prefix, then answer, assignment, then the step-type predictor's vocabulary.
KINDS = ("prefix", "answer", "assignment", "reason", "memory")
# Reference tag -> step type (its StepType.predict: "[rag]" is memory).
TAGS = {"rag": "memory", "reason": "reason"}
PLANNING_TOKEN = re.compile(r"(<(?:" + "|".join(KINDS) + r")_\d+>)")


def kinds(num_special: int) -> tuple[str, ...]:
    """With S = 0 the reference keeps only the prefix tokens."""
    return KINDS if num_special > 0 else ("prefix",)


def token_names(num_prefix: int, num_special: int) -> dict[str, list[str]]:
    """{kind: ["<kind_0>", ...]}: P prefix tokens, S of every other kind."""
    return {k: [f"<{k}_{i}>" for i in range(num_prefix if k == "prefix" else num_special)]
            for k in kinds(num_special)}


def token_text(num_prefix: int, num_special: int) -> dict[str, str]:
    """{kind: " <kind_0> <kind_1> ..."}: the strings the reference's sequences are built from."""
    return {k: "".join(" " + name for name in names) for k, names in token_names(num_prefix, num_special).items()}


def all_tokens(num_prefix: int, num_special: int) -> list[str]:
    """Every new token, in the order the reference adds them."""
    return [name for names in token_names(num_prefix, num_special).values() for name in names]


def init_sources(tokenizer: Any, num_prefix: int, num_special: int) -> dict[str, list[int]]:
    """{new token: [source id]}: the id of the literal word as one token (`convert_tokens_to_ids(kind)`, as the
    reference), the unk id when there is none; without an unk token, the word's own sub-tokens (averaged)."""
    sources: dict[str, list[int]] = {}
    unk = tokenizer.unk_token_id
    for kind, names in token_names(num_prefix, num_special).items():
        word = tokenizer.convert_tokens_to_ids(kind)
        if word is None or (word == unk and kind not in tokenizer.get_vocab()):
            word = unk
        ids = [word] if word is not None else tokenizer(kind, add_special_tokens=False)["input_ids"]
        for name in names:
            sources[name] = ids
    return sources


def absorb_space_before_tokens(text: str) -> str:
    """The text without the one space before each planning token, which the reference's Llama-2 tokenizer
    matched as part of the token (a prompt ending in planning tokens then encodes to the reference's ids)."""
    return re.sub(" " + PLANNING_TOKEN.pattern, r"\1", text)
