"""An offline task that needs memory and reasoning: invented people with an age and a home town.

Every question must recall facts the question does not state (tagged `[rag]:`, as the reference tags memory
steps) and combine them (tagged `[reason]:`): "Is X older than Y?" and "Do X and Y live in the same town?"
(True/False, StrategyQA-style) and "Who is the oldest? Options: A.X B.Y C.Z" (a letter, CommonsenseQA-style).
A test question's set of people is never asked about together in training, but each of their facts is stated
in training steps: held-out questions recombine seen facts. Records use the reference's JSON schema.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

# Invented names with distinct initials: a from-scratch model tells them apart by the first letter, so a
# miss is a recall or reasoning error rather than a spelling slip between look-alike names.
NAMES = ["Adro", "Belk", "Cimo", "Duva", "Elst", "Fenn", "Gorp", "Hask", "Ilva", "Jorn", "Kesh", "Lumo", "Mirt",
         "Nolo", "Ovan", "Pell", "Quin", "Rask", "Sulo", "Tavi", "Ulme", "Vorn", "Wexa", "Yarl", "Zeph"]
TOWNS = ["Pelt", "Dax", "Mur", "Kiv", "Sorn", "Vade"]
LETTERS = "ABC"


@dataclass(frozen=True)
class World:
    """The invented facts: each person's age (distinct, so comparisons never tie) and home town."""

    ages: dict[str, int]
    towns: dict[str, str]

    @property
    def people(self) -> list[str]:
        return list(self.ages)


def make_world(rng: random.Random, people: int = 20, towns: int = 3) -> World:
    """`people` invented names (at most 25) with distinct ages 10..99 and one of `towns` towns each."""
    names = rng.sample(NAMES, people)
    ages = rng.sample(range(10, 100), people)
    return World(dict(zip(names, ages)), {name: rng.choice(TOWNS[:towns]) for name in names})


def age_step(world: World, name: str) -> str:
    return f"[rag]: {name} is {world.ages[name]} years old."


def town_step(world: World, name: str) -> str:
    return f"[rag]: {name} lives in {world.towns[name]}."


def older(world: World, a: str, b: str) -> dict:
    """True/False: is a older than b? Two recalls and a comparison."""
    x, y = world.ages[a], world.ages[b]
    relation = "greater" if x > y else "less"
    return {"question": f"Is {a} older than {b}?", "answer": str(x > y),
            "cot_steps": [age_step(world, a), age_step(world, b), f"[reason]: {x} is {relation} than {y}."]}


def same_town(world: World, a: str, b: str) -> dict:
    """True/False: do a and b live in the same town? Two recalls and an equality check."""
    s, t = world.towns[a], world.towns[b]
    verdict = "the same town" if s == t else "different towns"
    return {"question": f"Do {a} and {b} live in the same town?", "answer": str(s == t),
            "cot_steps": [town_step(world, a), town_step(world, b), f"[reason]: {s} and {t} are {verdict}."]}


def oldest(world: World, names: tuple[str, ...]) -> dict:
    """Multiple choice: who of three is the oldest? Three recalls and a maximum."""
    options = " ".join(f"{letter}.{name}" for letter, name in zip(LETTERS, names))
    ages = [world.ages[n] for n in names]
    best = max(range(len(names)), key=lambda i: ages[i])
    listed = ", ".join(str(a) for a in ages)
    return {"question": f"Who is the oldest? Options: {options}", "answer": LETTERS[best],
            "cot_steps": [*(age_step(world, n) for n in names),
                          f"[reason]: {ages[best]} is the largest of {listed}, so {LETTERS[best]}."]}


def question(world: World, kind: str, names: tuple[str, ...]) -> dict:
    """One record; `kind` (not in the reference's schema) lets evaluation report accuracy per question type."""
    if kind == "older":
        return {**older(world, *names), "kind": kind}
    if kind == "same_town":
        return {**same_town(world, *names), "kind": kind}
    return {**oldest(world, names), "kind": kind}


def candidates(people: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """Every distinct question: (kind, ordered names)."""
    pairs = list(itertools.permutations(people, 2))
    return ([("older", p) for p in pairs] + [("same_town", p) for p in pairs]
            + [("oldest", t) for t in itertools.permutations(people, 3)])


def stratum(world: World, kind: str, names: tuple[str, ...]) -> tuple:
    """Sampling cell: same-town questions split by their answer, so True and False are equally common."""
    return (kind, world.towns[names[0]] == world.towns[names[1]]) if kind == "same_town" else (kind,)


# Each kind a third of the questions; within same-town, half True. Chance accuracy is then 4/9.
WEIGHTS = {("older",): 2, ("same_town", True): 1, ("same_town", False): 1, ("oldest",): 2}


def synthetic_splits(n_train: int, n_test: int, rng: random.Random, people: int = 20,
                     towns: int = 3, held_out: float = 0.2) -> dict[str, list[dict]]:
    """Reference-schema records {question, answer, cot_steps, split}; the test questions' people sets
    (a `held_out` share of all pairs and triples) never appear together in a training question."""
    world = make_world(rng, people, towns)
    pool = candidates(world.people)
    groups = sorted({frozenset(names) for _, names in pool}, key=sorted)
    test_groups = set(rng.sample(groups, max(1, round(held_out * len(groups)))))
    cells: dict[str, dict[tuple, list]] = {"train": {}, "test": {}}
    for kind, names in pool:
        split = "test" if frozenset(names) in test_groups else "train"
        cells[split].setdefault(stratum(world, kind, names), []).append((kind, names))
    keys = list(WEIGHTS)
    weights = [WEIGHTS[k] for k in keys]
    train = []
    for _ in range(n_train):
        cell = cells["train"].get(rng.choices(keys, weights)[0])
        if cell:
            train.append(rng.choice(cell))
    for cell in cells["test"].values():
        rng.shuffle(cell)
    test: list = []
    while len(test) < n_test and any(cells["test"].values()):
        cell = cells["test"].get(rng.choices(keys, weights)[0])
        if cell:
            test.append(cell.pop())  # without replacement
    return {
        "train": [{**question(world, kind, names), "split": "train"} for kind, names in train],
        "test": [{**question(world, kind, names), "split": "test"} for kind, names in test],
    }
