"""Re-Tuning data (PAPERS.md 1.1): addition, parity and DP as recursive, scratchpad and baseline examples,
the reference's problem samplers, and its resampling toward short base cases.

A recursive problem becomes one example per recursion level and step: the call (`prompt -> "Call: ...\\n"`)
and the answer after the return (`prompt + call + "Return: ...\\nAnswer: " -> answer`); the base case is one
example. Records are {prompt, completion, task, size}; eval records carry {prompt, task, format, size,
answer, train_max_size}.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Iterable
from typing import Any

from llmft.recipes.retuning.dp import (
    dp_answer,
    dp_baseline_example,
    dp_baseline_prompt,
    dp_prompt,
    dp_recursive_examples,
    dp_scratchpad_example,
    dp_scratchpad_prompt,
)

Record = dict[str, Any]
TASKS = ("addition", "parity", "dp")
FORMATS = ("recursive", "scratchpad", "baseline")
# The reference's training ranges: digits per operand, list length, array length.
TRAIN_SIZES = {"addition": (1, 15), "parity": (1, 21), "dp": (2, 5)}


# --------------------------------------------------------------------------------------------------
# Addition


def pad_operands(a: int, b: int) -> tuple[str, str]:
    """Both numbers zero-padded to the longer one's length."""
    width = max(len(str(a)), len(str(b)))
    return str(a).zfill(width), str(b).zfill(width)


def addition_prompt(a: str, b: str) -> str:
    return f"{a} + {b}\nSolution: "


def addition_state(a: str, b: str) -> str:
    """`Carry c, Output d` for equal-length digit strings; d keeps all len(a) digits (9999+0001 -> 0000)."""
    total, width = int(a) + int(b), len(a)
    return f"Carry {total // 10 ** width}, Output {str(total % 10 ** width).zfill(width)}"


def addition_recursive_examples(a: int, b: int) -> list[Record]:
    """Base case first, then per longer suffix: its call on the suffix one digit shorter, and its answer."""
    x, y = pad_operands(a, b)
    records = [_record(addition_prompt(x[-1:], y[-1:]), addition_state(x[-1:], y[-1:]), "addition", 1)]
    for k in range(2, len(x) + 1):
        prompt = addition_prompt(x[-k:], y[-k:])
        sub_x, sub_y = x[-(k - 1):], y[-(k - 1):]
        call = f"Call: {sub_x} + {sub_y}\n"
        resumed = prompt + call + f"Return: {addition_state(sub_x, sub_y)}\nAnswer: "
        records.append(_record(prompt, call, "addition", k))
        records.append(_record(resumed, addition_state(x[-k:], y[-k:]), "addition", k))
    return records


def addition_scratchpad_example(a: int, b: int) -> Record:
    """One `Carry c, Output d` line per suffix, right to left; the last line is the answer."""
    x, y = pad_operands(a, b)
    lines = [addition_state(x[-k:], y[-k:]) for k in range(1, len(x) + 1)]
    return _record(addition_prompt(x, y), "\n".join(lines), "addition", len(x))


def addition_baseline_prompt(a: str, b: str) -> str:
    return f"{a} + {b}\nAnswer: "


def addition_baseline_example(a: int, b: int) -> Record:
    x, y = pad_operands(a, b)
    return _record(addition_baseline_prompt(x, y), str(a + b), "addition", len(x))


# Pairs are drawn per cell (i digits, j >= i digits); the bands starting at 3, 6, 9 and 12 digits repeat
# the longer cells, so long numbers are over-weighted (1000 pairs per cell: 304,000 pairs for 1..15).
ADDITION_BANDS = (1, 3, 6, 9, 12)
ADDITION_PAIRS_PER_CELL = 1000


def addition_cells(min_size: int, max_size: int) -> list[tuple[int, int]]:
    """The (digits of a, digits of b) cells of the reference sampler, one entry per band a cell is in."""
    return [(i, j) for start in ADDITION_BANDS for i in range(max(start, min_size), max_size + 1)
            for j in range(i, max_size + 1)]


def sample_addition_pairs(rng: random.Random, min_size: int, max_size: int,
                          n: int = 0) -> list[tuple[int, int]]:
    """`n` pairs spread evenly over the cells (0 = 1000 per cell, as the reference).

    `randint` is inclusive as in the reference, so an (i+1)-digit value 10**i occasionally appears.
    """
    cells = addition_cells(min_size, max_size)
    if n <= 0:
        counts = [ADDITION_PAIRS_PER_CELL] * len(cells)
    else:
        base, extra = divmod(n, len(cells))
        counts = [base] * len(cells)
        for index in rng.sample(range(len(cells)), extra):
            counts[index] += 1
    return [(rng.randint(10 ** (i - 1), 10 ** i), rng.randint(10 ** (j - 1), 10 ** j))
            for (i, j), count in zip(cells, counts, strict=True) for _ in range(count)]


def resample_addition(records: Iterable[Record], rng: random.Random) -> list[Record]:
    """Deduplicate by prompt, drop most long equal-length pairs, replicate short ones (the reference's rule).

    The drop step reads the operands' lengths without leading zeros; the replicate step reads them as
    printed (zero-padded, so always equal): in effect 1-digit prompts x1000 and 2-digit prompts x5, as in the
    reference notebook (PAPERS.md 1.1 describes both steps with the stripped lengths).
    """
    out: list[Record] = []
    for record in _unique(records):
        x, y = re.findall(r"\d+", record["prompt"])[:2]
        len_x, len_y = len(str(int(x))), len(str(int(y)))
        if len_x == len_y and 3 <= len_x <= 7 and rng.random() < 0.85:
            continue
        if len_x == len_y and 8 <= len_x <= 11 and rng.random() < 0.65:
            continue
        if len(x) == 1 and len(y) == 1:
            copies = 1000
        elif len(x) + len(y) <= 3:
            copies = 100
        elif len(x) <= 2 or len(y) <= 2:
            copies = 5
        else:
            copies = 1
        out.extend([record] * copies)
    return out


# --------------------------------------------------------------------------------------------------
# Parity


def parity_prompt(bits: list[int]) -> str:
    return f"What is the parity of {bits}?\nSolution: "


def parity_recursive_examples(bits: list[int]) -> list[Record]:
    """Per list: its call on the tail `bits[1:]` and its answer; the 1-element list is the base case."""
    records = []
    for i in range(len(bits) - 1):
        prompt, tail = parity_prompt(bits[i:]), bits[i + 1:]
        call = f"Call: What is the parity of {tail}?\n"
        # The reference trains "?\n\nReturn:" (the call's newline, then another); its inference drops one
        # (PAPERS.md 1.6). We use the training string everywhere.
        resumed = prompt + call + f"\nReturn: {sum(tail) % 2}\nAnswer: "
        records.append(_record(prompt, call, "parity", len(bits) - i))
        records.append(_record(resumed, str(sum(bits[i:]) % 2), "parity", len(bits) - i))
    records.append(_record(parity_prompt(bits[-1:]), str(bits[-1] % 2), "parity", 1))
    return records


def parity_scratchpad_example(bits: list[int]) -> Record:
    """The running parity of each prefix, e.g. `Compute one element at a time. 1 1 0` for [1, 0, 1]."""
    running = " ".join(str(sum(bits[:i + 1]) % 2) for i in range(len(bits)))
    return _record(parity_prompt(bits), f"Compute one element at a time. {running}", "parity", len(bits))


def parity_baseline_prompt(bits: list[int]) -> str:
    return f"What is the parity of {bits}?\nAnswer: "


def parity_baseline_example(bits: list[int]) -> Record:
    return _record(parity_baseline_prompt(bits), str(sum(bits) % 2), "parity", len(bits))


PARITY_RECURSIVE_LISTS = 250_000


def sample_bit_lists(rng: random.Random, length: int, count: int) -> list[list[int]]:
    """`count` distinct lists of `length` bits drawn without replacement (all of them if there are fewer)."""
    count = min(count, 2 ** length)
    return [[int(c) for c in format(k, f"0{length}b")] for k in rng.sample(range(2 ** length), count)]


def parity_flat_counts(min_size: int, max_size: int, n: int = 0) -> dict[int, int]:
    """Lists per length for scratchpad and baseline: min(15000, max(300, 0.2 * 2^n)), scaled down to `n`."""
    counts = {size: min(15000, max(300, int(2 ** size * 0.2)), 2 ** size)
              for size in range(min_size, max_size + 1)}
    total = sum(counts.values())
    if 0 < n < total:
        counts = {size: max(1, count * n // total) for size, count in counts.items()}
    return counts


def resample_parity(records: Iterable[Record], rng: random.Random) -> list[Record]:
    """Recursive parity: deduplicate, drop 90% of lists over 10 long (more past 16), replicate short ones."""
    copies = {1: 900, 2: 240, 3: 100, 4: 50, 5: 24, 6: 12, 7: 6, 8: 4, 11: 4}
    out: list[Record] = []
    for record in _unique(records):
        size = record["size"]
        if size > 10 and rng.random() < 0.9:
            continue
        if size > 16 and rng.random() < (size - 16) / 10 + 0.25:
            continue
        out.extend([record] * copies.get(size, 1))
    return out


def resample_parity_flat(records: Iterable[Record]) -> list[Record]:
    """Scratchpad and baseline parity: lengths 1-3 x60, 4 x20, under 10 x10, under 15 x4."""
    out: list[Record] = []
    for record in records:
        size = record["size"]
        copies = 60 if size <= 3 else 20 if size == 4 else 10 if size < 10 else 4 if size < 15 else 1
        out.extend([record] * copies)
    return out


# --------------------------------------------------------------------------------------------------
# DP (strings and solver in dp.py)

DP_VALUES = range(-5, 6)
DP_ENUMERATE_LIMIT = 5_000_000


def sample_dp_arrays(rng: random.Random, min_size: int, max_size: int, n: int = 0) -> list[list[int]]:
    """Every array of the lengths with elements in [-5, 5] (the reference: 177,144 for 2..5), or `n` distinct
    ones drawn uniformly from them."""
    sizes = range(min_size, max_size + 1)
    total = sum(len(DP_VALUES) ** size for size in sizes)
    if 0 < n < total:
        return [_dp_array(index, sizes) for index in rng.sample(range(total), n)]
    if total > DP_ENUMERATE_LIMIT:
        raise ValueError(f"{total:,} arrays of length {min_size}..{max_size}: pass n to draw a sample")
    return [list(arr) for size in sizes for arr in itertools.product(DP_VALUES, repeat=size)]


def _dp_array(index: int, sizes: range) -> list[int]:
    """The index-th array when all arrays of the given lengths are listed shortest first."""
    base = len(DP_VALUES)
    for size in sizes:
        if index < base ** size:
            digits = [(index // base ** (size - 1 - p)) % base for p in range(size)]
            return [DP_VALUES[d] for d in digits]
        index -= base ** size
    raise IndexError(index)


def resample_dp(records: Iterable[Record], rng: random.Random) -> list[Record]:
    """Recursive DP: deduplicate, drop 85% of length-5 prompts, replicate length 1 x250, 2 x30, 3 x4."""
    copies = {1: 250, 2: 30, 3: 4}
    out: list[Record] = []
    for record in _unique(records):
        if record["size"] == 5 and rng.random() < 0.85:
            continue
        out.extend([record] * copies.get(record["size"], 1))
    return out


def resample_dp_flat(records: Iterable[Record]) -> list[Record]:
    """Scratchpad and baseline DP: length 2 x100, 3 x10, 4 x3."""
    copies = {2: 100, 3: 10, 4: 3}
    return [record for record in records for _ in range(copies.get(record["size"], 1))]


# --------------------------------------------------------------------------------------------------
# Assembly: problems -> training records, and evaluation records

Problem = tuple[Any, ...]  # (a, b) for addition, (list,) for parity and DP

EXAMPLES: dict[tuple[str, str], Callable[..., list[Record]]] = {
    ("addition", "recursive"): addition_recursive_examples,
    ("addition", "scratchpad"): lambda a, b: [addition_scratchpad_example(a, b)],
    ("addition", "baseline"): lambda a, b: [addition_baseline_example(a, b)],
    ("parity", "recursive"): parity_recursive_examples,
    ("parity", "scratchpad"): lambda bits: [parity_scratchpad_example(bits)],
    ("parity", "baseline"): lambda bits: [parity_baseline_example(bits)],
    ("dp", "recursive"): dp_recursive_examples,
    ("dp", "scratchpad"): lambda arr: [dp_scratchpad_example(arr)],
    ("dp", "baseline"): lambda arr: [dp_baseline_example(arr)],
}


def sample_problems(task: str, fmt: str, rng: random.Random, min_size: int, max_size: int,
                    n: int = 0) -> list[Problem]:
    """The reference's training problems for a task and format; `n` caps their number (0 = its count)."""
    if task == "addition":
        pairs = sample_addition_pairs(rng, min_size, max_size, n)
        if fmt != "baseline":  # the reference swaps operands for Re-Tuning and scratchpad, not for baseline
            pairs = [(b, a) if rng.random() < 0.5 else (a, b) for a, b in pairs]
        return pairs
    if task == "parity":
        if fmt == "recursive":
            # Lists of the longest length only: their recursion levels cover every shorter length.
            return [(bits,) for bits in sample_bit_lists(rng, max_size, n or PARITY_RECURSIVE_LISTS)]
        counts = parity_flat_counts(min_size, max_size, n)
        return [(bits,) for size, count in counts.items() for bits in sample_bit_lists(rng, size, count)]
    return [(arr,) for arr in sample_dp_arrays(rng, min_size, max_size, n)]


def resample(task: str, fmt: str, records: Iterable[Record], rng: random.Random) -> list[Record]:
    """The reference's resampling for this task and format (addition scratchpad and baseline have none)."""
    if fmt == "recursive":
        resample_recursive = {"addition": resample_addition, "parity": resample_parity, "dp": resample_dp}
        return resample_recursive[task](records, rng)
    if task == "parity":
        return resample_parity_flat(records)
    if task == "dp":
        return resample_dp_flat(records)
    return list(records)


def training_records(task: str, fmt: str, rng: random.Random, min_size: int, max_size: int, n: int = 0,
                     resampling: bool = True) -> list[Record]:
    """Sampled problems -> examples -> (resampled) -> shuffled training records."""
    make = EXAMPLES[(task, fmt)]
    examples = (record for problem in sample_problems(task, fmt, rng, min_size, max_size, n)
                for record in make(*problem))
    records = resample(task, fmt, examples, rng) if resampling else list(examples)
    rng.shuffle(records)
    return records


def eval_problem(task: str, size: int, rng: random.Random) -> Problem:
    """A random problem of one size: two size-digit numbers, a list of size bits, an array of size values."""
    if task == "addition":
        return rng.randint(10 ** (size - 1), 10 ** size - 1), rng.randint(10 ** (size - 1), 10 ** size - 1)
    if task == "parity":
        return ([rng.randint(0, 1) for _ in range(size)],)
    return ([rng.randint(-5, 5) for _ in range(size)],)


def eval_prompt(task: str, fmt: str, problem: Problem) -> str:
    """The top-level prompt the model trained on for this task and format."""
    if task == "addition":
        x, y = pad_operands(*problem)
        return addition_baseline_prompt(x, y) if fmt == "baseline" else addition_prompt(x, y)
    (values,) = problem
    if task == "parity":
        return parity_baseline_prompt(values) if fmt == "baseline" else parity_prompt(values)
    prompts = {"recursive": dp_prompt, "scratchpad": dp_scratchpad_prompt, "baseline": dp_baseline_prompt}
    return prompts[fmt](values)


def problem_answer(task: str, problem: Problem) -> str:
    """The exact final answer: the decimal sum, "0"/"1", or the chosen-indices list like `[1, 2, 1]`."""
    if task == "addition":
        return str(problem[0] + problem[1])
    if task == "parity":
        return str(sum(problem[0]) % 2)
    return dp_answer(problem[0])


def eval_records(task: str, fmt: str, rng: random.Random, sizes: Iterable[int], per_size: int,
                 train_max_size: int) -> list[Record]:
    """`per_size` problems of each size, interleaved by size so that any prefix covers every size."""
    sizes = list(sizes)
    columns = [[eval_problem(task, size, rng) for _ in range(per_size)] for size in sizes]
    records = []
    for k in range(per_size):
        for size, column in zip(sizes, columns, strict=True):
            problem = column[k]
            records.append({"prompt": eval_prompt(task, fmt, problem), "task": task, "format": fmt,
                            "size": size, "answer": problem_answer(task, problem),
                            "train_max_size": train_max_size})
    return records


def _record(prompt: str, completion: str, task: str, size: int) -> Record:
    return {"prompt": prompt, "completion": completion, "task": task, "size": size}


def _unique(records: Iterable[Record]) -> Iterable[Record]:
    """Records with a prompt not seen before, in order (the reference deduplicates by prompt)."""
    seen: set[str] = set()
    for record in records:
        if record["prompt"] not in seen:
            seen.add(record["prompt"])
            yield record
