"""SQuAD v2-shaped rows about invented towns and companies, for offline runs and tests.

Each context states three of an entity's five facts. About two thirds of the questions ask for a stated
fact (gold spans verbatim in the context, sometimes two acceptable spans); the rest are unanswerable the
way SQuAD v2's are: they ask about the context's own entity for a fact the context leaves out, or
(`stranger_share` of them, none by default) about an entity it never mentions for a fact it does state.

Questions about another entity are off by default: only comparing invented names letter by letter tells
them from answerable ones, which the tiny preset's model (recipes/squad-tiny.toml) does not learn in its
ten CPU minutes (it answers them all; no-answer accuracy falls to about 50% with half the unanswerable
questions of that kind).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SYLLABLES = ["bal", "dor", "fen", "gar", "hol", "ka", "lum", "mir", "nor", "os", "pel", "quin", "ras", "sel",
             "tav", "ul", "ven", "wyn", "zor", "ett"]
FIRST_NAMES = ["Ada", "Bruno", "Clara", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Keiko",
               "Luca", "Mara", "Nils", "Olga", "Pavel"]
GOODS = ["glass beads", "copper kettles", "wool blankets", "apple cider", "paper lanterns", "salt cod",
         "clay pipes", "silk ribbons", "oak barrels", "honey cakes"]
PRODUCTS = ["bicycles", "pocket watches", "radio sets", "ink pens", "sewing machines", "umbrellas", "typewriters",
            "telescopes", "pianos", "lamps"]
UNANSWERABLE_SHARE = 1 / 3


@dataclass(frozen=True)
class Fact:
    """One fact: the sentence stating it, the question asking it, and its gold spans (verbatim in the sentence)."""

    sentence: str
    question: str
    answers: tuple[str, ...]


def invented_name(rng: random.Random) -> str:
    """A pronounceable made-up proper name of two or three syllables."""
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {invented_name(rng)}"


def town_facts(name: str, rng: random.Random) -> list[Fact]:
    year, founder, river = rng.randint(1100, 1899), person(rng), invented_name(rng)
    population, good = f"{rng.randint(2, 95)},{rng.randint(0, 999):03d}", rng.choice(GOODS)
    return [
        Fact(f"{name} was founded in {year} by {founder}.", f"When was {name} founded?", (str(year), f"in {year}")),
        Fact(f"The founder of {name}, {founder}, had been a ferryman.", f"Who founded {name}?", (founder,)),
        Fact(f"{name} lies on the {river} river.", f"Which river does {name} lie on?", (river, f"the {river} river")),
        Fact(f"Today {name} has a population of {population}.", f"How many people live in {name}?", (population,)),
        Fact(f"{name} is known for its {good}.", f"What is {name} known for?", (good, f"its {good}")),
    ]


def company_facts(name: str, rng: random.Random) -> list[Fact]:
    year, founder, city = rng.randint(1850, 2019), person(rng), invented_name(rng)
    staff, product = f"{rng.randint(20, 900)}", rng.choice(PRODUCTS)
    return [
        Fact(f"{name} was established in {year}.", f"In what year was {name} established?", (str(year),)),
        Fact(f"The first director of {name} was {founder}.", f"Who was the first director of {name}?", (founder,)),
        Fact(f"{name} has its headquarters in {city}.", f"Where is {name} headquartered?", (city,)),
        Fact(f"{name} employs {staff} people.", f"How many people does {name} employ?", (staff,)),
        Fact(f"{name} makes {product}.", f"What does {name} make?", (product,)),
    ]


KINDS: list[tuple[str, Callable[[str, random.Random], list[Fact]]]] = [("town", town_facts),
                                                                      ("company", company_facts)]


def synthetic_row(rng: random.Random, row_id: str, stranger_share: float = 0.0) -> dict[str, Any]:
    """One row in the hub's SQuAD v2 schema; stranger_share of the unanswerable questions are about
    another entity."""
    kind, make_facts = rng.choice(KINDS)
    name = invented_name(rng)
    facts = make_facts(name, rng)
    shown = sorted(rng.sample(range(len(facts)), 3))
    context = " ".join(facts[i].sentence for i in shown)
    if rng.random() < UNANSWERABLE_SHARE:
        # A left-out sentence may share its answer with a shown one (a town's founder is named twice).
        left_out = [f for i, f in enumerate(facts) if i not in shown and f.answers[0] not in context]
        if left_out and rng.random() >= stranger_share:
            question = rng.choice(left_out).question
        else:
            question = _stranger_question(rng, kind, context, shown)
        answers: tuple[str, ...] = ()
    else:
        fact = facts[rng.choice(shown)]
        question, answers = fact.question, tuple(a for a in fact.answers if a in context)
    return {
        "id": row_id,
        "title": f"{name} ({kind})",
        "context": context,
        "question": question,
        "answers": {"text": list(answers), "answer_start": [context.index(a) for a in answers]},
    }


def _stranger_question(rng: random.Random, kind: str, context: str, shown: list[int]) -> str:
    """A question about an entity of the same kind that the context never mentions, asking for a fact the
    context does state about its own entity: a plausible answer is there, as in SQuAD v2, and only the name
    tells the question apart from an answerable one."""
    other = invented_name(rng)
    while other in context:
        other = invented_name(rng)
    facts = dict(KINDS)[kind](other, rng)
    return facts[rng.choice(shown)].question


def synthetic_splits(n_train: int, rng: random.Random, stranger_share: float = 0.0) -> dict[str, list[dict[str, Any]]]:
    """train (n_train rows), val and test (a tenth of that each, at least 10) as SQuAD rows."""
    n_held = max(10, n_train // 10)
    sizes = {"train": n_train, "val": n_held, "test": n_held}
    return {split: [synthetic_row(rng, f"synthetic-{split}-{i:06d}", stranger_share) for i in range(n)]
            for split, n in sizes.items()}
