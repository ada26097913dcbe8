"""Procedural samples for offline use, in the question/answer format of the reference's datasets: Last Letter
Concatenation and Coin Flip (the shapes of Kojima et al.'s files) and MultiArith-style two-step word problems.

Each sample also carries a worked `rationale` (our wording), used to train a tiny teacher and as few-shot exemplars.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

NAMES = (
    "Alice Bruno Carla Derek Elena Felix Grace Hugo Irene Jonas Kara Liam Maya Nolan Olga Peter Quinn Rosa Simon "
    "Tara Umar Vera Wes Xena Yusuf Zoe Amber Brian Chloe Dylan Emma Frank Gina Henry Isla Jack Kylie Logan Mia "
    "Nathan Opal Paula Reid Sara Tobias Uma Victor Wendy Yara Zack Abby Colin Daisy Ethan Fiona Glen Holly Ian"
).split()


def last_letter_sample(rng: random.Random, words: int = 4) -> dict[str, Any]:
    """'Take the last letters of each words in "A B C D" and concatenate them.' -> the letters joined."""
    names = [rng.choice(NAMES) for _ in range(words)]
    answer = "".join(name[-1] for name in names)
    steps = ", ".join(f'"{name}" ends in "{name[-1]}"' for name in names)
    return {
        "question": f'Take the last letters of each words in "{" ".join(names)}" and concatenate them.',
        "answer": answer,
        "rationale": f'{steps}. Together: "{answer}".',
    }


def coin_flip_sample(rng: random.Random, people: int = 4) -> dict[str, Any]:
    """'A coin is heads up. X flips the coin. Y does not flip the coin. ... Is the coin still heads up?' -> yes/no."""
    names = rng.sample(NAMES, people)
    flips = [rng.random() < 0.5 for _ in names]
    actions = " ".join(f"{n} flips the coin." if f else f"{n} does not flip the coin." for n, f in zip(names, flips))
    count = sum(flips)
    flippers = [n for n, f in zip(names, flips) if f]
    who = "nobody" if not flippers else ", ".join(flippers)
    parity = "even" if count % 2 == 0 else "odd"
    ending = "heads up" if count % 2 == 0 else "tails up"
    return {
        "question": f'A coin is heads up. {actions} Is the coin still heads up? '
                    f'Note that "flip" here means "reverse".',
        "answer": "yes" if count % 2 == 0 else "no",
        "rationale": f"Flipped by {who}: {count} flips, {parity}, so {ending}.",
    }


# MultiArith-style templates: (question, rationale, answer) from a name, an item and three numbers.
_ARITH: list[Callable[[str, str, int, int, int], tuple[str, str, int] | None]] = [
    lambda n, i, a, b, c: (
        f"{n} had {a} {i}. {n} bought {b} more and then gave away {c}. How many {i} does {n} have now?",
        f"{n} started with {a} {i}. After buying {b} more there were {a} + {b} = {a + b}. "
        f"After giving away {c} there were {a + b} - {c} = {a + b - c}.", a + b - c) if a + b >= c else None,
    lambda n, i, a, b, c: (
        f"{n} picked {a} {i} in the morning and {b} in the afternoon, then shared them equally among {c} friends. "
        f"How many {i} did each friend get?",
        f"{n} picked {a} + {b} = {a + b} {i}. Shared among {c} friends that is {a + b} / {c} = {(a + b) // c}.",
        (a + b) // c) if c > 0 and (a + b) % c == 0 else None,
    lambda n, i, a, b, c: (
        f"{n} has {a} boxes with {b} {i} in each box. {n} uses {c} of the {i}. How many {i} are left?",
        f"{n} has {a} x {b} = {a * b} {i}. After using {c} there are {a * b} - {c} = {a * b - c} left.",
        a * b - c) if a * b >= c else None,
    lambda n, i, a, b, c: (
        f"There were {a} {i} on the table. {n} ate {b} of them and then put {c} more on the table. "
        f"How many {i} are on the table now?",
        f"After {n} ate {b} there were {a} - {b} = {a - b}. With {c} more there are {a - b} + {c} = {a - b + c}.",
        a - b + c) if a >= b else None,
]
ITEMS = "apples cookies marbles pencils stickers books cupcakes shells cards flowers".split()


def arithmetic_sample(rng: random.Random, max_number: int = 20) -> dict[str, Any]:
    """A two-operation word problem with a whole, non-negative answer (MultiArith's shape)."""
    while True:
        template = rng.choice(_ARITH)
        a, b, c = (rng.randint(2, max_number) for _ in range(3))
        made = template(rng.choice(NAMES), rng.choice(ITEMS), a, b, c)
        if made is not None:
            question, rationale, answer = made
            return {"question": question, "answer": str(answer), "rationale": rationale}


GENERATORS: dict[str, Callable[..., dict[str, Any]]] = {
    "last_letter_concatenation": last_letter_sample,
    "coin_flip": coin_flip_sample,
    "multiarith": arithmetic_sample,
}


def generate_samples(task: str, n: int, seed: int, size: int = 0) -> list[dict[str, Any]]:
    """n samples of a procedural task (size: words, people or largest number; 0 = the reference's 4/4/20)."""
    rng = random.Random(f"cot-teacher-{task}-{seed}")
    make = GENERATORS[task]
    return [make(rng, size) if size else make(rng) for _ in range(n)]


def few_shot_prompt(samples: list[dict[str, Any]]) -> str:
    """Few-shot-CoT exemplars in the reference's layout: 'Q: {q}\\nA: {rationale} The answer is {a}.' joined by
    newlines (the student input then appends '\\nQ: {q}\\nA:')."""
    return "\n".join(f"Q: {s['question'].strip()}\nA: {s['rationale'].strip()} The answer is {s['answer'].strip()}."
                     for s in samples)
