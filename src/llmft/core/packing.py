"""Rows the trainer steps over: examples packed into rows (best-fit decreasing, per width class), examples
that share a prefix folded into one, and each epoch's seeded batch order."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass

from llmft.core.data import IGNORE, TokenizedExample


def merge_shared_prefixes(examples: Sequence[TokenizedExample], scan: int = 256) -> list[TokenizedExample]:
    """Fold each example whose tokens, less the last, begin a longer example into that one (its trained labels
    copied there, the last token's label included): every target keeps exactly its own context, so the loss
    is unchanged while the shared prefix is computed once. Multi-step records (a context's call, then its
    answer) repeat their prefix; the host must not train those positions itself. Order kept, hosts in place."""
    keys = [tuple(example.input_ids) for example in examples]
    order = sorted(range(len(examples)), key=keys.__getitem__)
    sorted_keys = [keys[i] for i in order]
    labels = [list(example.labels) for example in examples]
    records = [example.records for example in examples]
    absorbed = [False] * len(examples)
    for guest in sorted(range(len(examples)), key=lambda i: -len(keys[i])):
        example = examples[guest]
        if example.truncated or len(example) < 2 or labels[guest][-1] == IGNORE:
            continue
        prefix = keys[guest][:-1]
        trained = [p for p, label in enumerate(labels[guest]) if label != IGNORE and p > 0]
        host = None
        start = bisect.bisect_left(sorted_keys, prefix)
        for candidate in itertools.islice(range(start, len(order)), scan):
            if sorted_keys[candidate][:len(prefix)] != prefix:
                break
            other = order[candidate]
            if (other == guest or absorbed[other] or examples[other].truncated or len(keys[other]) <= len(prefix)
                    or any(labels[other][p] != IGNORE for p in trained)):
                continue
            if host is None or len(keys[other]) > len(keys[host]):
                host = other
        if host is None:
            continue
        for p in trained:
            labels[host][p] = labels[guest][p]
        records[host] += records[guest]
        absorbed[guest] = True
    return [TokenizedExample(list(example.input_ids), labels[i], example.truncated, records[i])
            for i, example in enumerate(examples) if not absorbed[i]]


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
    # Open bins as a sorted list of (space left, bin id): best fit = the first entry with enough space.
    open_bins: list[tuple[int, int]] = []
    for index in order:
        size = len(examples[index])
        at = bisect.bisect_left(open_bins, (size, -1))
        if at == len(open_bins):
            bins.append([index])
            left, chosen = row_length - size, len(bins) - 1
        else:
            left, chosen = open_bins.pop(at)
            bins[chosen].append(index)
            left -= size
        if left > 0:
            bisect.insort(open_bins, (left, chosen))
    return [_join([examples[i] for i in members]) for members in bins]


def pack_rows_by_width(examples: Sequence[TokenizedExample], widths: Sequence[int]) -> list[Row]:
    """Rows of a few fixed widths: each example joins the narrowest width that holds it (the widest when none
    does) and is best-fit packed with its peers there. Narrow rows waste less attention on masked pairs (the
    block-diagonal mask of a packed row costs width^2 whatever it holds)."""
    widths = sorted(set(widths))
    groups: dict[int, list[TokenizedExample]] = {w: [] for w in widths}
    for example in examples:
        groups[width_class(len(example), widths)].append(example)
    rows: list[Row] = []
    for width in widths:
        rows += pack_rows(groups[width], width)
    return rows


def width_class(length: int, widths: Sequence[int]) -> int:
    """The narrowest of `widths` (sorted) that holds `length` tokens; the widest when none does."""
    return next((w for w in widths if length <= w), widths[-1])


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
    return Row(input_ids, labels, positions, examples=sum(example.records for example in members))


def batch_order(rows: Sequence[Row], batch_size: int, seed: int, epoch: int, strategy: str,
                widths: Sequence[int] = ()) -> list[list[int]]:
    """Row indices for each micro-batch of one epoch, fixed by (seed, epoch) so a resumed run sees the same order.

    "group" sorts rows by length inside shuffled windows of 50 batches so padding stays small. With `widths`
    (rows packed by width), a batch holds rows of one width only, as many as make the tokens of `batch_size`
    rows of the widest width; the number of batches is the same in every epoch.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    indices = list(range(len(rows)))
    rng.shuffle(indices)
    if widths:
        widths = sorted(set(widths))
        by_width: dict[int, list[int]] = {}
        for i in indices:
            by_width.setdefault(width_class(len(rows[i].input_ids), widths), []).append(i)
        batches = []
        for width in sorted(by_width):
            per = max(1, batch_size * widths[-1] // width)
            batches += [by_width[width][j:j + per] for j in range(0, len(by_width[width]), per)]
        rng.shuffle(batches)
        return batches
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
