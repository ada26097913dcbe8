"""Rule-based feature detection for procedurally generated stories (the `rules` judge).

Each feature has cue phrases that the story generator uses only when it realises that feature, so the
checker is exact on generated stories. On real TinyStories it is a rough heuristic: use an endpoint judge.
"""

from __future__ import annotations

import re

FEATURES = ("Dialogue", "Twist", "BadEnding", "MoralValue", "Foreshadowing", "Conflict")

CUES: dict[str, re.Pattern[str]] = {
    "Dialogue": re.compile(r'"[^"]+"'),
    "Twist": re.compile(
        r"\bto \w+'s surprise\b|\bsomething unexpected happened\b|\bit turned out\b|\bwas not really\b"
        r"|\bin a surprising turn\b",
        re.IGNORECASE,
    ),
    "BadEnding": re.compile(
        r"\bnever saw (?:it|him|her|them) again\b|\blost forever\b|\bnever came back\b|\bwas very sad\b"
        r"|\bcried and cried\b|\bcould not be fixed\b|\bleft all alone\b",
        re.IGNORECASE,
    ),
    "MoralValue": re.compile(
        r"\blearned that\b|\bthe lesson\b|\btaught (?:him|her|them|us)\b|\balways remember\b",
        re.IGNORECASE,
    ),
    "Foreshadowing": re.compile(
        r"\bfunny feeling\b|\bdid not know yet\b|\bwould soon\b|\bwhat was to come\b|\blittle did\b",
        re.IGNORECASE,
    ),
    "Conflict": re.compile(
        r"\b(?:argued|fight|fought|angry|yelled|pushed|did not agree)\b",
        re.IGNORECASE,
    ),
}

# A bad ending must be at the end: only the last few sentences are read for it.
ENDING_SENTENCES = 3


def sentences(story: str) -> list[str]:
    """Non-empty sentences, split at . ! ? (closing quotes stay with their sentence)."""
    return [s.strip() for s in re.split(r'(?:(?<=[.!?])|(?<=[.!?]"))\s+', story) if s.strip()]


def has_feature(story: str, feature: str) -> bool:
    """Whether the story realises the feature, by its cue phrases."""
    if feature not in CUES:
        raise ValueError(f"unknown feature {feature!r}")
    if feature == "BadEnding":
        story = " ".join(sentences(story)[-ENDING_SENTENCES:])
    return CUES[feature].search(story) is not None


def detect_features(story: str) -> list[str]:
    """All features the story realises, in the canonical order."""
    return [feature for feature in FEATURES if has_feature(story, feature)]
