import random

from llmft.recipes.uft.text import (
    cut_story,
    instruction_value,
    make_text,
    pick_sentence,
    split_text,
    story_prompt,
    text_record,
)

RECORD = {
    "story": "Tom had a red ball. \"Look!\" he said. It rolled away!\n",
    "summary": "Tom loses\na ball.",
    "words": ["roll", "ball", "red"],
    "features": ["Dialogue", "BadEnding", "MoralValue"],
}
LINES = {
    "Words: roll, ball, red",
    "Features: Dialogue, Badending, Moralvalue",  # str.capitalize(), as the reference
    "Summary: Tom losesa ball.",  # newlines removed, not replaced
}


def test_layout_is_shuffled_instruction_lines_then_story():
    text = make_text(RECORD, random.Random(0))
    lines = text.split("\n")
    assert lines[-1] == 'Story: Tom had a red ball. "Look!" he said. It rolled away!'
    assert LINES <= set(lines[:4])
    sentence = next(line for line in lines[:4] if line.startswith("Sentence: "))
    assert sentence in {"Sentence: Tom had a red ball", "Sentence: It rolled away", "Sentence: "}
    assert len(lines) == 5
    orders = {tuple(line.split(":")[0] for line in make_text(RECORD, random.Random(s)).split("\n")[:4])
              for s in range(30)}
    assert len(orders) > 5  # the order is shuffled per example


def test_golden_text_at_a_fixed_seed():
    record = {"story": "A cat sat. It slept.", "summary": "A cat.", "words": ["sit", "cat", "soft"],
              "features": [], "sentence": "A cat sat"}
    # random.Random(0).shuffle of [Words, Features, Summary, Sentence] gives [Summary, Words, Features, Sentence].
    assert make_text(record, random.Random(0)) == (
        "Summary: A cat.\nWords: sit, cat, soft\nFeatures: \nSentence: A cat sat\nStory: A cat sat. It slept.")


def test_pick_sentence_reproduces_the_reference_split():
    picked = {pick_sentence('A dog ran. "Hi!" said Sam? The end.', random.Random(s)) for s in range(100)}
    # Pieces: 'A dog ran', ' "Hi', '" said Sam', ' The end', '' -- both quote halves are excluded.
    assert picked == {"A dog ran", "The end", ""}
    assert pick_sentence('He said "hi."', random.Random(0)) == ""  # every piece quoted


def test_split_and_prompt_invert_make_text():
    record = text_record(RECORD, random.Random(1))
    assert record["features"] == record["story_features"] == RECORD["features"]
    lines, story = split_text(record["text"])
    assert story == RECORD["story"].strip()
    prompt = story_prompt(record["text"])
    assert prompt.endswith("\nStory:") and prompt.split("\n")[:4] == lines
    assert record["text"].startswith(prompt)
    assert instruction_value(record["text"], "Words") == "roll, ball, red"


def test_generation_is_cut_at_the_next_instruction_line():
    assert cut_story(" Once upon a time.\nWords: a, b\nStory: x") == "Once upon a time."
    assert cut_story(" The end. Features: Twist") == "The end."
