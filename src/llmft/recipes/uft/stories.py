"""Feature-tagged stories: the TinyStories instruct data (hub, tarball or JSON shards) and a procedural
generator of short stories for offline runs and tests.

A story record is flat: {"story", "summary", "words": [...], "features": [...]} (the instruct data nests
words and features under "instruction"; the loader lifts them out).
"""

from __future__ import annotations

import json
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmft.core.errors import LlmftError
from llmft.recipes.uft.checker import FEATURES

Story = dict[str, Any]

HUB_REPO = "roneneldan/TinyStories"
HUB_FILE = "TinyStories_all_data.tar.gz"


# --------------------------------------------------------------------------------------------------
# The instruct data


def load_stories(source: str | Path, limit: int = 0) -> list[Story]:
    """Stories from `hub`, a TinyStories_all_data.tar.gz, or a folder of its JSON shards (sorted by name,
    so shard 0 comes first). `limit` > 0 stops after that many stories."""
    stories: list[Story] = []
    for shard, records in _shards(source):
        if not isinstance(records, list):
            raise LlmftError(f"{shard}: expected a JSON list of TinyStories records")
        for raw in records:
            story = from_instruct(raw)
            # Like the reference (which skips records make_text cannot format): records without a story or
            # an instruction are left out.
            if story is not None:
                stories.append(story)
                if limit and len(stories) >= limit:
                    return stories
    if not stories:
        raise LlmftError(f"no TinyStories instruct records found in {source}")
    return stories


def from_instruct(raw: Any) -> Story | None:
    """A flat story record from one instruct record, or None when it lacks story or instruction."""
    if not isinstance(raw, dict) or not isinstance(raw.get("story"), str):
        return None
    instruction = raw.get("instruction")
    if not isinstance(instruction, dict):
        return None
    return {
        "story": raw["story"],
        "summary": str(raw.get("summary") or ""),
        "words": [str(w) for w in instruction.get("words") or []],
        "features": [str(f) for f in instruction.get("features") or []],
    }


def _shards(source: str | Path) -> Iterator[tuple[str, Any]]:
    if str(source) == "hub":
        from huggingface_hub import hf_hub_download

        source = hf_hub_download(HUB_REPO, HUB_FILE, repo_type="dataset")
    path = Path(source)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise LlmftError(f"{path}: no *.json shards (expected the unpacked {HUB_FILE})")
        for file in files:
            yield str(file), _load_json(file.read_bytes(), str(file))
    elif path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(path) as archive:
            members = sorted((m for m in archive.getmembers() if m.isfile() and m.name.endswith(".json")),
                             key=lambda m: m.name)
            for member in members:
                handle = archive.extractfile(member)
                if handle is not None:
                    yield f"{path}:{member.name}", _load_json(handle.read(), f"{path}:{member.name}")
    elif path.is_file() and path.suffix == ".json":
        yield str(path), _load_json(path.read_bytes(), str(path))
    else:
        raise LlmftError(f"stories source not found: {source} (use 'procedural', 'hub', a folder of JSON shards "
                         f"or {HUB_FILE})")


def _load_json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise LlmftError(f"{where}: not JSON: {exc.msg} (line {exc.lineno})") from None


# --------------------------------------------------------------------------------------------------
# The procedural generator. Each feature's templates carry a cue phrase of checker.CUES; nothing else does.

NAMES = ("Lily", "Tom", "Ben", "Mia", "Sam", "Anna", "Max", "Lucy", "Tim", "Sue", "Jack", "Zoe", "Leo", "Emma",
         "Sara", "Bob")
KINDS = ("girl", "boy", "dog", "cat", "bunny", "bird", "bear", "frog", "duck", "mouse")
VERBS = ("jump", "dance", "sing", "run", "swim", "paint", "build", "climb", "hop", "explore", "bake", "draw",
         "play", "hide", "skip", "count", "read", "dig", "race", "whistle")
NOUNS = ("ball", "kite", "box", "stick", "boat", "hat", "cake", "flower", "rock", "shell", "drum", "book", "car",
         "toy", "apple", "key", "bell", "swing", "cup", "leaf")
ADJECTIVES = ("shiny", "big", "tiny", "red", "blue", "soft", "funny", "bright", "fluffy", "brave", "kind",
              "colorful", "smooth", "warm", "fast", "tall", "round", "sparkly", "gentle", "curious")
# (place, preposition for being there)
PLACES = (("park", "in"), ("garden", "in"), ("forest", "in"), ("beach", "on"), ("yard", "in"),
          ("meadow", "in"), ("pond", "by"), ("hill", "on"))
SURPRISES = ("tiny dragon", "friendly ghost", "sleepy kitten", "talking bird", "little fairy", "baby owl",
             "magic frog", "lost puppy")
BULLIES = ("dog", "boy", "crow", "goose", "raccoon")
MORALS = ("share with others", "be kind", "tell the truth", "be patient", "help a friend", "listen to your mom",
          "say sorry", "be brave")

INTRO = (
    "Once upon a time, there was {a_adj} {kind} named {name}.",
    "One day, {a_adj} {kind} named {name} went to the {place}.",
    "There was once {a_adj} little {kind} called {name}.",
    "{name} was {a_adj} {kind} who lived near the {place}.",
)
LIKES = (
    "{name} loved to {verb} every day.",
    "{He} liked to {verb} with {his} friend {friend}.",
    "Every morning, {name} would {verb} {in_place}.",
    "More than anything, {name} wanted to {verb}.",
)
FINDS = (
    "One day, {name} found {a_noun} {in_place}.",
    "{He} had a favorite {noun} that {he} took everywhere.",
    "{name} and {friend} saw {a_noun} near the {place}.",
    "On a sunny morning, {friend} gave {name} {a_noun}.",
)
PLAYS = (
    "{name} and {friend} played with the {noun} {in_place}.",
    "{He} held the {noun} close and looked at it for a long time.",
    "They took the {noun} to the {place} and had lots of fun.",
)
FORESHADOWING = (
    "{name} had a funny feeling that this day would be different.",
    "{name} did not know yet that the {noun} would change everything.",
    "The wind began to blow harder, a sign of what was to come.",
    "Little did {name} know that the {noun} was special.",
    "Far away, dark clouds were slowly coming closer, and {name} would soon see why.",
)
DIALOGUE = (
    '"Look at this {noun}!" said {name}. "It is so {adj}!"',
    '{friend} asked, "Can I play with the {noun} too?" {name} said, "Yes, of course!"',
    '"Let\'s {verb} together," said {name}. "That sounds like fun," said {friend}.',
    '"Wow!" said {friend}. "I have never seen {a_noun} like this."',
    '{name} smiled and said, "Thank you, {friend}."',
)
CONFLICT = (
    "{friend} wanted the {noun} too, and the two friends started to fight over it.",
    "{friend} wanted to keep the {noun}, and they argued for a long time.",
    "A big {bully} came and tried to take the {noun}. {name} got angry and pulled it back.",
    "{name} and {friend} did not agree about who should play with the {noun} first.",
    "{friend} pushed {name} and grabbed the {noun}.",
)
MAKE_UP = (
    "After a while, they said sorry and took turns.",
    "Soon they calmed down and shared the {noun}.",
)
TWIST = (
    "But then, something unexpected happened. The {noun} began to glow and turned into {a_surprise}!",
    "To everyone's surprise, the {noun} was really {a_surprise}.",
    "To {name}'s surprise, {friend} had hidden {a_surprise} inside the {noun} all along.",
    "It turned out that the {noun} belonged to {a_surprise}.",
    "The {noun} was not really a normal {noun}. It was {a_surprise} in disguise!",
    "In a surprising turn, the {noun} opened and {a_surprise} jumped out.",
)
# Endings speak of {thing}: the toy, or after a twist what it turned out to be, so the end of a story
# still shows its twist (the probes read the last tokens of the story).
HAPPY_ENDING = (
    "In the end, {name} and {friend} played with the {thing} all day. They were very happy.",
    "{name} smiled and went home with the {thing}.",
    "They all had a wonderful day with the {thing} at the {place}.",
    "From then on, {name} and {friend} took the {thing} everywhere.",
    "That night, {name} went to bed thinking about the {thing}.",
)
BAD_ENDING = (
    "The {thing} fell into the pond and floated away. {name} never saw it again.",
    "Then the {thing} slipped away and could not be found. {name} was very sad.",
    "A strong wind took the {thing} far away, and it was lost forever.",
    "{friend} took the {thing} home and never came back. {name} was left all alone.",
    "In the end, nobody could find the {thing}, and {name} cried and cried.",
)
MORAL = (
    "{name} learned that it is important to {moral}.",
    "The lesson is that we should always {moral}.",
    "This taught {him} that it is good to {moral}.",
    "{name} will always remember to {moral}.",
)


def generate_stories(n: int, rng: random.Random, feature_rate: float = 0.3) -> list[Story]:
    """`n` procedural stories; each of the six features is present independently with `feature_rate`."""
    return [generate_story(rng, [f for f in FEATURES if rng.random() < feature_rate]) for _ in range(n)]


def generate_story(rng: random.Random, features: list[str]) -> Story:
    """One short story realising exactly `features` (a subset of FEATURES), with words and a summary."""
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise ValueError(f"unknown features {unknown}")
    name, friend = rng.sample(NAMES, 2)
    kind = rng.choice(KINDS)
    she = kind == "girl" or (kind != "boy" and rng.random() < 0.5)
    verb, noun, adj = rng.choice(VERBS), rng.choice(NOUNS), rng.choice(ADJECTIVES)
    moral, surprise = rng.choice(MORALS), rng.choice(SURPRISES)
    place, preposition = rng.choice(PLACES)
    slots = {
        "name": name, "friend": friend, "kind": kind, "verb": verb, "noun": noun, "adj": adj,
        "a_adj": _article(adj), "a_noun": _article(noun), "a_surprise": _article(surprise),
        "place": place, "in_place": f"{preposition} the {place}", "bully": rng.choice(BULLIES), "moral": moral,
        "he": "she" if she else "he", "He": "She" if she else "He", "him": "her" if she else "him",
        "his": "her" if she else "his",
    }
    has = set(features)
    slots["thing"] = surprise if "Twist" in has else noun
    parts = [INTRO, LIKES, FINDS]
    if "Foreshadowing" in has:
        parts.append(FORESHADOWING)
    parts.append(PLAYS)
    if "Dialogue" in has:
        parts.append(DIALOGUE)
    if "Conflict" in has:
        parts.append(CONFLICT)
        if "BadEnding" not in has:
            parts.append(MAKE_UP)
    if "Twist" in has:
        parts.append(TWIST)
    parts.append(BAD_ENDING if "BadEnding" in has else HAPPY_ENDING)
    if "MoralValue" in has:
        parts.append(MORAL)
    sentences = [rng.choice(bank).format(**slots) for bank in parts]
    story = " ".join(s[0].upper() + s[1:] for s in sentences)
    return {
        "story": story,
        "summary": _summary(slots),
        "words": [verb, noun, adj],
        "features": [f for f in FEATURES if f in has],
    }


def _summary(slots: dict[str, str]) -> str:
    # Names no feature: the generation score's prompts (the adversarial set) request the feature in the
    # Features line only, so a summary that gave it away would be a second, contradicting request.
    return f"{slots['a_adj'].capitalize()} {slots['kind']} named {slots['name']} and {slots['his']} friend " \
           f"{slots['friend']} have an adventure with {slots['a_noun']}."


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase
