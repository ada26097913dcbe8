import copy
import random
import re

import pytest

from llmft.core.errors import LlmftError
from llmft.recipes.uft.transforms import (
    REFUSAL_STORY,
    Addition,
    Condition,
    Swap,
    Transforms,
    adversarial,
    dataset_name,
    deletion_suite,
    filter_stories,
    mix_match,
    parse_additions,
    parse_filtering,
    parse_mix_match,
    refusal,
)

TWIST = {"story": "Tom found a box. To everyone's surprise, it was a dragon.", "summary": "s1",
         "words": ["find", "box", "big"], "features": ["Dialogue", "Twist"]}
FORE = {"story": "Sue had a funny feeling. She went home.", "summary": "s2",
        "words": ["go", "ball", "red"], "features": ["Foreshadowing"]}
PLAIN = {"story": "Sam ran.", "summary": "s3", "words": ["run", "ball", "tall"], "features": []}
STORIES = [TWIST, FORE, PLAIN]


def test_filtering_keeps_or_drops_by_feature_word_and_length():
    assert filter_stories(STORIES, parse_filtering("features!=Twist")) == [FORE, PLAIN]
    assert filter_stories(STORIES, parse_filtering("features=Twist")) == [TWIST]
    assert filter_stories(STORIES, parse_filtering("features!=Twist,features=Foreshadowing")) == [FORE]
    assert filter_stories(STORIES, parse_filtering("words=ball")) == [FORE, PLAIN]
    assert filter_stories(STORIES, parse_filtering("length=10")) == [TWIST, FORE]  # longer than 10 chars
    assert filter_stories(STORIES, parse_filtering("length!=10")) == [PLAIN]
    assert filter_stories(STORIES, parse_filtering("")) == STORIES


def test_mix_match_relabels_and_keeps_what_the_story_has():
    before = copy.deepcopy(STORIES)
    out = mix_match(STORIES, parse_mix_match("features=Foreshadowing:Twist"))
    assert STORIES == before  # inputs untouched
    assert out[1]["features"] == ["Twist"] and out[1]["story_features"] == ["Foreshadowing"]
    assert out[1]["story"] == FORE["story"]
    assert out[0]["features"] == ["Dialogue", "Twist"] and out[2]["features"] == []
    both = {**PLAIN, "features": ["Foreshadowing", "Twist"]}
    assert mix_match([both], [Swap("features", "Foreshadowing", "Twist")])[0]["features"] == ["Twist"]


def test_the_reference_mix_match_parser_is_a_no_op_and_ours_is_not():
    spec = "features=Foreshadowing:Twist"
    match = re.split(r"[:=]", spec)
    reference = {match[0]: {match[i]: match[i + 1] for i in range(1, len(match[1:]) - 1, 2)}}
    assert reference == {"features": {}}
    assert parse_mix_match(spec) == [Swap("features", "Foreshadowing", "Twist")]
    assert parse_mix_match("features:Foreshadowing=Twist") == parse_mix_match(spec)  # the README's form
    assert parse_mix_match("features=Conflict:Twist:Dialogue:MoralValue") == [
        Swap("features", "Conflict", "Twist"), Swap("features", "Dialogue", "MoralValue")]


def test_adversarial_requests_the_feature_with_its_probability():
    twist_free = [FORE, PLAIN]
    out = adversarial(twist_free, parse_additions("features=Twist:1.0", "--adversarial-training"), random.Random(0))
    assert [s["features"] for s in out] == [["Foreshadowing", "Twist"], ["Twist"]]
    assert [s["story_features"] for s in out] == [["Foreshadowing"], []]
    assert [s["story"] for s in out] == [FORE["story"], PLAIN["story"]]
    assert adversarial(twist_free, [Addition("features", "Twist", 0.0)], random.Random(0))[0]["features"] == [
        "Foreshadowing"]
    half = adversarial([PLAIN] * 400, [Addition("features", "Twist", 0.5)], random.Random(0))
    assert 160 < sum("Twist" in s["features"] for s in half) < 240
    assert PLAIN["features"] == []


def test_refusal_replaces_the_story_and_keeps_a_sentence_of_the_original():
    out = refusal([FORE], parse_additions("features=Twist:1.0", "--refusal"), random.Random(0))[0]
    assert out["story"] == "We are not allowed to write a story with Twist in it, sorry."
    assert out["story"] == REFUSAL_STORY.format(feature="Twist")
    assert out["features"] == ["Foreshadowing", "Twist"] and out["story_features"] == []
    assert out["sentence"] in {"Sue had a funny feeling", "She went home", ""}
    untouched = refusal([FORE], [Addition("features", "Twist", 0.0)], random.Random(0))[0]
    assert untouched["story"] == FORE["story"] and "sentence" not in untouched


def test_transforms_run_in_the_reference_order():
    # Filtering runs first: the Foreshadowing story relabelled as Twist by mix_match survives features!=Twist.
    transforms = Transforms.parse(filtering="features!=Twist", mix_match="features=Foreshadowing:Twist",
                                  refusal="features=Conflict:1.0")
    out = transforms.apply(STORIES, random.Random(0))
    assert [s["features"] for s in out] == [["Twist", "Conflict"], ["Conflict"]]
    assert all(s["story"] == REFUSAL_STORY.format(feature="Conflict") for s in out)
    assert Transforms.parse(filtering="features!=Twist").filtering == (Condition("features", "Twist", False),)


@pytest.mark.parametrize(("parse", "spec", "message"), [
    (parse_filtering, "featuresTwist", "--filtering: 'featuresTwist' is not KEY=VALUE or KEY!=VALUE"),
    (parse_filtering, "feature=Twist", "unknown key 'feature' (did you mean 'features'?)"),
    (parse_filtering, "features=twist", "unknown feature 'twist' (did you mean 'Twist'?)"),
    (parse_filtering, "features=", "has an empty value"),
    (parse_filtering, "length=long", "length needs a whole number"),
    (parse_mix_match, "features=Foreshadowing", "is not KEY=FROM:TO"),
    (parse_mix_match, "length=1:2", "unknown key 'length'"),
    (lambda s: parse_additions(s, "--adversarial-training"), "features=Twist", "is not KEY=VALUE:PROBABILITY"),
    (lambda s: parse_additions(s, "--refusal"), "features=Twist:2", "probability must be a number from 0 to 1"),
    (lambda s: parse_additions(s, "--refusal"), "features=Twist:often", "got 'often'"),
])
def test_grammar_errors_are_one_line(parse, spec, message):
    with pytest.raises(LlmftError) as error:
        parse(spec)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_dataset_names_follow_the_reference():
    assert dataset_name() == "pretrain-all"
    assert dataset_name(filtering="features!=Twist", adversarial_training="features=Twist:1.0") == (
        "F_features_x_Twist_MM_none_AT_features_Twist_1.0_RF_none_IS_none")
    suite = deletion_suite("Twist", "Foreshadowing")
    assert list(suite) == [
        "pretrain-all", "pretrain-no-Foreshadowing", "recovery-Twist", "filter-Twist",
        "filter-Twist-specialise-Foreshadowing", "filter-adv-Twist", "filter-adv-Twist-specialise-Foreshadowing",
        "filter-mix-Twist-Foreshadowing", "filter-mix-specialise-Twist-Foreshadowing", "filter-ref-Twist",
        "filter-ref-Twist-specialise-Foreshadowing"]
    assert suite["filter-mix-Twist-Foreshadowing"] == {"filtering": "features!=Twist",
                                                      "mix_match": "features=Foreshadowing:Twist"}
    with pytest.raises(LlmftError, match="must differ"):
        deletion_suite("Twist", "Twist")
