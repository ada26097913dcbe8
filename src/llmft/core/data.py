"""Training data: JSONL records -> token ids with a loss mask, then packed rows or padded batches.

Record kinds: {"prompt", "completion"} trains the completion and the EOS after it; {"text"} trains every
token (pretraining). A recipe may tokenise its own records (see Recipe.tokenize) and return the same type.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmft.core.errors import LlmftError
from llmft.core.jsonl import iter_jsonl

IGNORE = -100


@dataclass
class TokenizedExample:
    """One example: token ids and labels of equal length; labels are IGNORE where nothing is trained."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trained(self) -> int:
        """Tokens that carry a loss (the first token is never predicted, so never counts)."""
        return sum(1 for label in self.labels[1:] if label != IGNORE)


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Prompt ids the way training and generation both see them: BOS when the tokenizer adds one,
    unless the text already begins with it (chat templates write their own)."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and text.startswith(bos))
    return tokenizer(text, add_special_tokens=add_special)["input_ids"]


def tokenize_record(record: dict[str, Any], tokenizer: Any, max_length: int) -> TokenizedExample:
    """Core rule: prompt/completion -> loss on completion + EOS; text -> loss on everything + EOS."""
    eos = tokenizer.eos_token_id
    if "prompt" in record and "completion" in record:
        prompt = encode_prompt(tokenizer, str(record["prompt"]))
        completion = tokenizer(str(record["completion"]), add_special_tokens=False)["input_ids"] + [eos]
        if len(prompt) + len(completion) > max_length:
            # Keep the completion whole where possible: cut the prompt from the left first.
            keep = max(max_length - len(completion), 0)
            prompt = prompt[len(prompt) - keep:] if keep else []
            completion = completion[:max_length - len(prompt)]
        return TokenizedExample(prompt + completion, [IGNORE] * len(prompt) + completion)
    if "text" in record:
        ids = encode_prompt(tokenizer, str(record["text"])) + [eos]
        ids = ids[:max_length]
        return TokenizedExample(ids, [IGNORE] + ids[1:])
    raise KeyError("record has neither prompt/completion nor text")


def load_examples(
    path: str | Path,
    tokenize: Callable[[dict[str, Any]], TokenizedExample],
    *,
    what: str = "data.train",
) -> list[TokenizedExample]:
    """Tokenise every record of a JSONL file; bad records are user errors naming file and line."""
    examples = []
    for line, record in enumerate(iter_jsonl(path, what=what), start=1):
        try:
            example = tokenize(record)
        except KeyError:
            raise LlmftError(f"{what}: {path}: line {line} needs 'prompt' and 'completion', or 'text'") from None
        if example.trained == 0:
            raise LlmftError(f"{what}: {path}: line {line} has no trained tokens (empty or truncated completion)")
        examples.append(example)
    if not examples:
        raise LlmftError(f"{what}: {path} has no records")
    return examples


# --------------------------------------------------------------------------------------------------
# Packing and batching


@dataclass
class Row:
    """A training row: one or more examples back to back; position_ids restart at 0 for each."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    examples: int = 1


def pack_rows(examples: Sequence[TokenizedExample], row_length: int) -> list[Row]:
    """Best-fit-decreasing packing into rows of at most row_length tokens; every example lands whole.

    An example longer than row_length gets a row of its own. Deterministic for a given input order.
    """
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]), i))
    bins: list[list[int]] = []
    space: list[int] = []
    for index in order:
        size = len(examples[index])
        best, best_left = -1, row_length + 1
        for b, left in enumerate(space):
            if size <= left < best_left:
                best, best_left = b, left
                if left == size:
                    break
        if best < 0:
            bins.append([index])
            space.append(row_length - size)
        else:
            bins[best].append(index)
            space[best] -= size
    return [_join([examples[i] for i in members]) for members in bins]


def single_rows(examples: Sequence[TokenizedExample]) -> list[Row]:
    """One example per row (no packing)."""
    return [_join([example]) for example in examples]


def _join(members: Sequence[TokenizedExample]) -> Row:
    input_ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for example in members:
        input_ids += example.input_ids
        # The first token of each example is never a target: no loss leaks across packed examples.
        labels += [IGNORE] + example.labels[1:]
        positions += list(range(len(example)))
    return Row(input_ids, labels, positions, examples=len(members))


def batch_order(rows: Sequence[Row], batch_size: int, seed: int, epoch: int, strategy: str) -> list[list[int]]:
    """Row indices for each micro-batch of one epoch, fixed by (seed, epoch) so a resumed run sees the same order.

    "group" sorts rows by length inside shuffled windows of 50 batches so padding stays small.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    indices = list(range(len(rows)))
    rng.shuffle(indices)
    if strategy == "group":
        window = batch_size * 50
        grouped = []
        for start in range(0, len(indices), window):
            chunk = sorted(indices[start:start + window], key=lambda i: len(rows[i].input_ids))
            grouped += chunk
        batches = [grouped[i:i + batch_size] for i in range(0, len(grouped), batch_size)]
        rng.shuffle(batches)
        return batches
    return [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]


def collate(rows: Sequence[Row], pad_id: int, packed: bool) -> dict[str, Any]:
    """Right-pad rows into tensors. Packed rows pass position_ids and no attention mask (transformers then
    keeps attention inside each example); unpacked rows pass an attention mask."""
    import torch

    width = max(len(row.input_ids) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        ids[i, :n] = torch.tensor(row.input_ids)
        labels[i, :n] = torch.tensor(row.labels)
        positions[i, :n] = torch.tensor(row.position_ids)
        # Padding forms its own "example" starting at position 0, so it never joins a real one.
        positions[i, n:] = torch.arange(width - n)
        mask[i, :n] = 1
    batch = {"input_ids": ids, "labels": labels}
    if packed:
        batch["position_ids"] = positions
    else:
        batch["attention_mask"] = mask
    return batch


def iter_batches(order: list[list[int]], rows: Sequence[Row]) -> Iterator[list[Row]]:
    """The rows of each micro-batch in order."""
    for indices in order:
        yield [rows[i] for i in indices]
