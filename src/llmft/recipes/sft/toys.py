"""Small learnable prompt/completion tasks for demos and tests (pure functions, explicit RNG)."""

from __future__ import annotations

import random
import string
from collections.abc import Callable

from llmft.core.errors import LlmftError

LETTERS = string.ascii_lowercase[:12]


def caesar(rng: random.Random) -> dict:
    """Shift each letter one step along the alphabet: `abc` -> `bcd`."""
    word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 8)))
    return {"prompt": f"shift {word} =", "completion": " " + "".join(chr(ord(c) + 1) for c in word)}


def reverse(rng: random.Random) -> dict:
    """Reverse a short word: `abc` -> `cba`."""
    word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 6)))
    return {"prompt": f"reverse {word} =", "completion": " " + word[::-1]}


def add(rng: random.Random) -> dict:
    """Two-digit addition: `12+34=` -> `46`."""
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return {"prompt": f"{a}+{b}=", "completion": str(a + b)}


TOYS: dict[str, Callable[[random.Random], dict]] = {"caesar": caesar, "reverse": reverse, "add": add}


def toy_split(task: str, n: int, eval_n: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Train and held-out eval records; no eval prompt appears in train."""
    rng = random.Random(seed)
    make = TOYS[task]
    seen: set[str] = set()
    records: list[dict] = []
    attempts = 0
    while len(records) < n + eval_n and attempts < 50 * (n + eval_n):
        attempts += 1
        record = make(rng)
        if record["prompt"] not in seen:
            seen.add(record["prompt"])
            records.append(record)
    return records[:n], records[n:]


def toy_mixture(tasks: str, n: int, eval_n: int, seed: int) -> tuple[list[dict], list[dict]]:
    """`toy_split` of each comma-separated task with the same seed, concatenated; with several tasks each record
    carries its `task` (so a subset of the tasks is exactly the mixture's records of those tasks)."""
    names = [name.strip() for name in tasks.split(",") if name.strip()]
    unknown = [name for name in names if name not in TOYS]
    if unknown or not names or len(set(names)) != len(names):
        raise LlmftError(f"--toy: expected distinct tasks from {', '.join(sorted(TOYS))}, comma-separated; got "
                         f"'{tasks}'")
    train: list[dict] = []
    held_out: list[dict] = []
    for name in names:
        a, b = toy_split(name, n, eval_n, seed)
        tag = {"task": name} if len(names) > 1 else {}
        train += [{**r, **tag} for r in a]
        held_out += [{**r, **tag} for r in b]
    return train, held_out
