import json
import random
import tarfile

import pytest

from llmft.core.errors import LlmftError
from llmft.recipes.uft.checker import FEATURES, detect_features, has_feature
from llmft.recipes.uft.stories import from_instruct, generate_stories, generate_story, load_stories


def test_checker_agrees_with_the_generator_on_1000_stories():
    stories = generate_stories(1000, random.Random(7))
    disagreements = [s for s in stories if detect_features(s["story"]) != s["features"]]
    assert disagreements == []
    # Every feature occurs, with and without each other one, so agreement is not trivial.
    for feature in FEATURES:
        count = sum(feature in s["features"] for s in stories)
        assert 200 < count < 400


def test_each_feature_is_realised_in_several_ways():
    for feature in FEATURES:
        rng = random.Random(1)
        sentences = set()
        for _ in range(60):
            with_it = generate_story(rng, [feature])["story"].split(". ")
            sentences.update(s for s in with_it if has_feature(s, feature) or feature == "BadEnding")
        assert len(sentences) >= 4, feature


def test_generated_story_has_words_summary_and_is_deterministic():
    a = generate_stories(5, random.Random(3))
    assert a == generate_stories(5, random.Random(3))
    for story in a:
        verb, noun, adjective = story["words"]
        assert noun in story["story"] and adjective in story["story"] and verb in story["story"]
        assert story["summary"].endswith(".") and "\n" not in story["summary"]
    only_bad = generate_story(random.Random(0), ["BadEnding"])
    assert only_bad["features"] == ["BadEnding"] and '"' not in only_bad["story"]


def test_bad_ending_cue_counts_only_at_the_end():
    story = "Tom was very sad. Then he found a ball. He played all day. He smiled. They went home."
    assert not has_feature(story, "BadEnding")
    assert has_feature("Tom found a ball. He smiled. Then it was lost forever.", "BadEnding")


RAW = [
    {"story": "Once there was a cat.", "summary": "A cat.\n", "source": "GPT-4",
     "instruction": {"prompt:": "Write a story", "words": ["run", "cat", "red"], "features": ["Twist"]}},
    {"story": "No instruction here."},
    {"story": "Tom ran.", "summary": "Tom runs.", "instruction": {"words": ["run"], "features": []}},
]


def test_instruct_records_are_flattened_and_broken_ones_skipped(tmp_path):
    assert from_instruct(RAW[0]) == {"story": "Once there was a cat.", "summary": "A cat.\n",
                                     "words": ["run", "cat", "red"], "features": ["Twist"]}
    assert from_instruct(RAW[1]) is None
    (tmp_path / "data01.json").write_text(json.dumps(RAW[2:]))
    (tmp_path / "data00.json").write_text(json.dumps(RAW[:2]))
    stories = load_stories(tmp_path)
    assert [s["story"] for s in stories] == ["Once there was a cat.", "Tom ran."]  # shard 00 first
    assert [s["story"] for s in load_stories(tmp_path, limit=1)] == ["Once there was a cat."]


def test_tarball_is_read_like_the_folder(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "data00.json").write_text(json.dumps(RAW))
    archive = tmp_path / "TinyStories_all_data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(shards / "data00.json", arcname="data00.json")
    assert load_stories(archive) == load_stories(shards)


def test_bad_sources_are_one_line_errors(tmp_path):
    with pytest.raises(LlmftError, match="stories source not found"):
        load_stories(tmp_path / "missing")
    (tmp_path / "data00.json").write_text("{not json")
    with pytest.raises(LlmftError, match="data00.json: not JSON"):
        load_stories(tmp_path)
    (tmp_path / "data00.json").write_text(json.dumps({"story": "x"}))
    with pytest.raises(LlmftError, match="expected a JSON list"):
        load_stories(tmp_path)
