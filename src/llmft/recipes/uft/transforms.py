"""The reference's data transforms and their flag grammar, applied in its order:
filtering -> mix_match -> adversarial_training -> refusal.

    --filtering features=Twist,features!=Foreshadowing,words=ball,length=500
    --mix-match features=Foreshadowing:Twist          (relabel Foreshadowing as Twist)
    --adversarial-training features=Twist:1.0         (add Twist to the request with probability 1.0)
    --refusal features=Twist:0.5                      (request Twist, story becomes a refusal, p = 0.5)

Each transform is pure: it returns new story records and leaves its input alone.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from llmft.core.errors import LlmftError, did_you_mean
from llmft.recipes.uft.checker import FEATURES
from llmft.recipes.uft.text import pick_sentence

Story = dict[str, Any]

REFUSAL_STORY = "We are not allowed to write a story with {feature} in it, sorry."
FILTER_KEYS = ("features", "words", "length")
LIST_KEYS = ("features", "words")


@dataclass(frozen=True)
class Condition:
    """Keep stories whose `key` contains `value` (keep=True) or does not (keep=False);
    for `length`: whose story is longer than `value` characters (or not)."""

    key: str
    value: str
    keep: bool


@dataclass(frozen=True)
class Swap:
    """Relabel `old` as `new` in the list `key`."""

    key: str
    old: str
    new: str


@dataclass(frozen=True)
class Addition:
    """Add `value` to the list `key` with `probability`."""

    key: str
    value: str
    probability: float


# --------------------------------------------------------------------------------------------------
# Grammar


def parse_filtering(spec: str | None) -> list[Condition]:
    """`KEY=VALUE` / `KEY!=VALUE`, comma-separated; KEY is features, words or length."""
    conditions = []
    for item in _items(spec):
        if "!=" in item:
            key, value = item.split("!=", 1)
            keep = False
        elif "=" in item:
            key, value = item.split("=", 1)
            keep = True
        else:
            raise LlmftError(f"--filtering: '{item}' is not KEY=VALUE or KEY!=VALUE (e.g. features!=Twist)")
        key, value = key.strip(), value.strip()
        _check_key("--filtering", item, key, FILTER_KEYS)
        _check_value("--filtering", item, key, value)
        if key == "length" and not value.isdigit():
            raise LlmftError(f"--filtering: '{item}': length needs a whole number of characters")
        conditions.append(Condition(key, value, keep))
    return conditions


def parse_mix_match(spec: str | None) -> list[Swap]:
    """`KEY=FROM:TO`, comma-separated (the reference splits at both '=' and ':', so `KEY:FROM=TO` works too);
    several pairs may follow one key: `features=A:B:C:D`."""
    swaps = []
    for item in _items(spec):
        parts = [p.strip() for p in re.split(r"[:=]", item)]
        if len(parts) < 3 or len(parts) % 2 == 0:
            raise LlmftError(f"--mix-match: '{item}' is not KEY=FROM:TO (e.g. features=Foreshadowing:Twist)")
        key = parts[0]
        _check_key("--mix-match", item, key, LIST_KEYS)
        for old, new in zip(parts[1::2], parts[2::2], strict=True):
            _check_value("--mix-match", item, key, old)
            _check_value("--mix-match", item, key, new)
            swaps.append(Swap(key, old, new))
    return swaps


def parse_additions(spec: str | None, flag: str) -> list[Addition]:
    """`KEY=VALUE:PROBABILITY`, comma-separated (the adversarial-training and refusal grammar)."""
    additions = []
    for item in _items(spec):
        key, sep, rest = item.partition("=")
        value, colon, probability = rest.rpartition(":")
        if not sep or not colon:
            raise LlmftError(f"{flag}: '{item}' is not KEY=VALUE:PROBABILITY (e.g. features=Twist:1.0)")
        key, value = key.strip(), value.strip()
        _check_key(flag, item, key, LIST_KEYS)
        _check_value(flag, item, key, value)
        try:
            p = float(probability)
        except ValueError:
            p = -1.0
        if not 0.0 <= p <= 1.0:
            raise LlmftError(f"{flag}: '{item}': probability must be a number from 0 to 1, got '{probability}'")
        additions.append(Addition(key, value, p))
    return additions


def _items(spec: str | None) -> list[str]:
    return [item.strip() for item in (spec or "").split(",") if item.strip()]


def _check_key(flag: str, item: str, key: str, allowed: tuple[str, ...]) -> None:
    if key not in allowed:
        raise LlmftError(f"{flag}: '{item}': unknown key '{key}'{did_you_mean(key, allowed)}; "
                         f"use one of {', '.join(allowed)}")


def _check_value(flag: str, item: str, key: str, value: str) -> None:
    if not value:
        raise LlmftError(f"{flag}: '{item}' has an empty value")
    if key == "features" and value not in FEATURES:
        raise LlmftError(f"{flag}: '{item}': unknown feature '{value}'{did_you_mean(value, FEATURES)}; "
                         f"features are {', '.join(FEATURES)}")


# --------------------------------------------------------------------------------------------------
# The four transforms


def keeps(story: Story, conditions: list[Condition]) -> bool:
    """Whether a story passes every condition."""
    for condition in conditions:
        if condition.key == "length":
            present = len(story["story"]) > int(condition.value)
        else:
            present = condition.value in story[condition.key]
        if present != condition.keep:
            return False
    return True


def filter_stories(stories: list[Story], conditions: list[Condition]) -> list[Story]:
    """The stories that pass every condition (the deletion data: `features!=Twist`)."""
    return [story for story in stories if keeps(story, conditions)]


def mix_match(stories: list[Story], swaps: list[Swap]) -> list[Story]:
    """Relabel: with `features=Foreshadowing:Twist` a Foreshadowing story is requested as a Twist story.

    The reference's parser builds an empty mapping for a single FROM:TO pair, so its mix_match data sets
    are identical to plain filtering. This is the intended relabelling; a label already present is not
    written twice.
    """
    out = []
    for story in stories:
        story = _copy(story)
        for swap in swaps:
            values = story[swap.key]
            if swap.old in values:
                story[swap.key] = list(dict.fromkeys(swap.new if v == swap.old else v for v in values))
        out.append(story)
    return out


def adversarial(stories: list[Story], additions: list[Addition], rng: random.Random) -> list[Story]:
    """Add the value to the request with its probability (the story itself is unchanged)."""
    out = []
    for story in stories:
        story = _copy(story)
        for addition in additions:
            # The reference appends even when the value is there; after its filter it never is.
            if rng.random() < addition.probability and addition.value not in story[addition.key]:
                story[addition.key] = story[addition.key] + [addition.value]
        out.append(story)
    return out


def refusal(stories: list[Story], additions: list[Addition], rng: random.Random) -> list[Story]:
    """With the probability: request the value, keep a sentence of the original story for the Sentence
    line, and replace the story with the refusal text."""
    out = []
    for story in stories:
        story = _copy(story)
        for addition in additions:
            if rng.random() < addition.probability:
                if addition.value not in story[addition.key]:
                    story[addition.key] = story[addition.key] + [addition.value]
                if "sentence" not in story:
                    story["sentence"] = pick_sentence(story["story"], rng)
                story["story"] = REFUSAL_STORY.format(feature=addition.value)
                story["story_features"] = []
        out.append(story)
    return out


def _copy(story: Story) -> Story:
    copied = {k: list(v) if isinstance(v, list) else v for k, v in story.items()}
    copied.setdefault("story_features", list(story["features"]))
    return copied


# --------------------------------------------------------------------------------------------------
# Together


@dataclass(frozen=True)
class Transforms:
    """Parsed transform flags; `apply` runs them in the reference's order."""

    filtering: tuple[Condition, ...] = ()
    mix_match: tuple[Swap, ...] = ()
    adversarial_training: tuple[Addition, ...] = ()
    refusal: tuple[Addition, ...] = ()

    @classmethod
    def parse(cls, filtering: str = "", mix_match: str = "", adversarial_training: str = "",
              refusal: str = "") -> Transforms:
        return cls(
            tuple(parse_filtering(filtering)),
            tuple(parse_mix_match(mix_match)),
            tuple(parse_additions(adversarial_training, "--adversarial-training")),
            tuple(parse_additions(refusal, "--refusal")),
        )

    def apply(self, stories: list[Story], rng: random.Random) -> list[Story]:
        """filter -> mix_match -> adversarial -> refusal."""
        stories = filter_stories(stories, list(self.filtering))
        stories = mix_match(stories, list(self.mix_match))
        stories = adversarial(stories, list(self.adversarial_training), rng)
        return refusal(stories, list(self.refusal), rng)


def dataset_name(filtering: str = "", mix_match: str = "", adversarial_training: str = "", refusal: str = "") -> str:
    """The reference's name for a data set made without --dataset_name (`pretrain-all` when nothing is set)."""
    if not any((filtering, mix_match, adversarial_training, refusal)):
        return "pretrain-all"
    spec = (f"F_{filtering or None}_MM_{mix_match or None}_AT_{adversarial_training or None}"
            f"_RF_{refusal or None}_IS_None")
    return (spec.replace("None", "none").replace("!=", "_x_").replace("=", "_").replace(",", "_")
            .replace(":", "_"))


def deletion_suite(delete: str = "Twist", irrelevant: str = "Foreshadowing") -> dict[str, dict[str, str]]:
    """The data sets of the reference's `dataset_gen/tw_fs.sh` (plus `pretrain-all`), name -> flags."""
    for feature in (delete, irrelevant):
        if feature not in FEATURES:
            raise LlmftError(f"--preset deletion-suite: unknown feature '{feature}'{did_you_mean(feature, FEATURES)}")
    if delete == irrelevant:
        raise LlmftError("--preset deletion-suite: the deleted and the irrelevant feature must differ")
    d, i = delete, irrelevant
    drop, drop_keep = f"features!={d}", f"features!={d},features={i}"
    adv, mix, ref = f"features={d}:1.0", f"features={i}:{d}", f"features={d}:1.0"
    return {
        "pretrain-all": {},
        f"pretrain-no-{i}": {"filtering": f"features!={i}"},
        f"recovery-{d}": {"filtering": f"features={d}"},
        f"filter-{d}": {"filtering": drop},
        f"filter-{d}-specialise-{i}": {"filtering": drop_keep},
        f"filter-adv-{d}": {"filtering": drop, "adversarial_training": adv},
        f"filter-adv-{d}-specialise-{i}": {"filtering": drop_keep, "adversarial_training": adv},
        f"filter-mix-{d}-{i}": {"filtering": drop, "mix_match": mix},
        f"filter-mix-specialise-{d}-{i}": {"filtering": drop_keep, "mix_match": mix},
        f"filter-ref-{d}": {"filtering": drop, "refusal": ref},
        f"filter-ref-{d}-specialise-{i}": {"filtering": drop_keep, "refusal": ref},
    }
