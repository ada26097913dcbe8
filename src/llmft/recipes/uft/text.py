"""What the model sees: the reference's text layout (`make_text`), and its inverse for evaluation.

    <Words / Features / Summary / Sentence lines, shuffled per example>
    Story: <story>

Training records are {"text"} (the core trains every token, as the reference does) plus metadata that
evaluation reads: "features" and "words" (as the instruction states them) and "story_features" (what the
story really has: differs after adversarial, mix-and-match or refusal transforms).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from typing import Any

STORY_PREFIX = "Story: "
# Where a generated story ends: the reference cuts a generation at the first of these.
STOP_STRINGS = ("Sentence: ", "Features: ", "Words: ", "Summary: ")


def pick_sentence(story: str, rng: random.Random) -> str:
    """A random sentence of the story without a double quote, split at . ! ? like the reference.

    Reproduced quirk: the empty piece after the final full stop is a candidate, so the result may be ''.
    """
    candidates = [s for s in re.split(r"\.|!|\?", story) if '"' not in s]
    # The reference raises (and skips the story) when every piece has a quote; we keep the story.
    if not candidates:
        return ""
    return rng.choice(candidates).strip().replace("\n", "")


def instruction_lines(record: dict[str, Any], rng: random.Random) -> list[str]:
    """The four instruction lines in the reference's order (Words, Features, Summary, Sentence)."""
    sentence = record.get("sentence")
    if sentence is None:
        sentence = pick_sentence(record["story"], rng)
    return [
        "Words: " + ", ".join(record["words"]),
        # str.capitalize() as in the reference, so "BadEnding" is written "Badending".
        "Features: " + ", ".join(f.capitalize() for f in record["features"]),
        "Summary: " + record["summary"].strip().replace("\n", ""),
        "Sentence: " + sentence,
    ]


def make_text(record: dict[str, Any], rng: random.Random) -> str:
    """The training text of a story record: shuffled instruction lines, then `Story: <story>`."""
    lines = instruction_lines(record, rng)
    rng.shuffle(lines)
    return "\n".join(lines + [STORY_PREFIX + record["story"].strip()]).strip()


def text_record(record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A training/eval record: the text plus the metadata evaluation reads."""
    return {
        "text": make_text(record, rng),
        "features": list(record["features"]),
        "words": list(record["words"]),
        "story_features": list(record.get("story_features", record["features"])),
    }


def split_text(text: str) -> tuple[list[str], str]:
    """(instruction lines, story) of a text written by make_text; no Story line -> ([lines], '')."""
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if line.startswith(STORY_PREFIX.strip()):
            story = "\n".join([line[len(STORY_PREFIX.strip()):].lstrip(" ")] + lines[index + 1:])
            return lines[:index], story
    return lines, ""


def story_prompt(text: str) -> str:
    """The generation prompt of a text: its instruction lines, then `Story:` for the model to continue."""
    lines, _ = split_text(text)
    return "\n".join(lines + [STORY_PREFIX.strip()])


def instruction_value(text: str, name: str) -> str:
    """The value of one instruction line (`Summary`, `Words`, ...) of a text, or ''."""
    lines, _ = split_text(text)
    for line in lines:
        if line.startswith(name + ": "):
            return line[len(name) + 2:]
    return ""


def cut_story(generation: str) -> str:
    """The story part of a generation: up to the first instruction line name (as the reference splits)."""
    return re.split("|".join(re.escape(s) for s in STOP_STRINGS), generation)[0].strip()


def train_story_tokenizer(texts: Iterable[str], vocab_size: int = 8192) -> Any:
    """A byte-level BPE tokenizer for from-scratch runs (the reference trains 8192 SentencePiece BPE)."""
    from llmft.core.tokenizers import train_tokenizer

    return train_tokenizer(texts, kind="bpe", vocab_size=vocab_size)
