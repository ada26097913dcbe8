import json

import pytest

from llmft.core.errors import LlmftError
from llmft.recipes.base import get_recipe
from llmft.recipes.uft.checker import has_feature
from llmft.recipes.uft.recipe import UftConfig, UftRecipe
from llmft.recipes.uft.text import split_text
from llmft.recipes.uft.transforms import REFUSAL_STORY


def read(path):
    return [json.loads(line) for line in path.open()]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    return out, UftRecipe().make_data(out, seed=0, n_stories=300, n_eval=50, preset="deletion-suite",
                                      vocab_size=300)


def test_recipe_is_registered_with_its_section():
    recipe = get_recipe("uft")
    assert recipe.config_section is UftConfig
    assert {p.name for p in recipe.make_data_params()} >= {"filtering", "mix_match", "adversarial_training",
                                                         "refusal", "preset", "vocab_size"}


def test_deletion_suite_writes_the_reference_sets(suite):
    out, paths = suite
    assert paths["train"] == out / "pretrain-all" / "train.jsonl"
    assert paths["filter-adv-Twist/eval"] == out / "filter-adv-Twist" / "eval.jsonl"
    assert len(paths) == 22
    everything = read(out / "pretrain-all" / "train.jsonl")
    assert len(everything) == 300

    def stories(name):
        return [(r, split_text(r["text"])[1]) for r in read(out / name / "train.jsonl")]

    assert all("Twist" in r["features"] and has_feature(s, "Twist") for r, s in stories("recovery-Twist"))
    assert all("Twist" not in r["features"] and not has_feature(s, "Twist") for r, s in stories("filter-Twist"))
    adversarial = stories("filter-adv-Twist")
    assert len(adversarial) == len(stories("filter-Twist"))
    assert all("Twist" in r["features"] and "Twist" not in r["story_features"] and not has_feature(s, "Twist")
               for r, s in adversarial)
    assert all(r["features"] == ["Foreshadowing", "Twist"] or r["features"][-1] == "Twist"
               for r, _ in stories("filter-adv-Twist-specialise-Foreshadowing"))
    mixed = stories("filter-mix-Twist-Foreshadowing")
    relabelled = [r for r, _ in mixed if "Foreshadowing" in r["story_features"]]
    assert relabelled and all("Twist" in r["features"] and "Foreshadowing" not in r["features"]
                              for r in relabelled)
    refused = stories("filter-ref-Twist")
    assert all(s == REFUSAL_STORY.format(feature="Twist") and "Twist" in r["features"] for r, s in refused)
    assert all("Foreshadowing" not in r["features"] for r, _ in stories("pretrain-no-Foreshadowing"))


def test_a_tokenizer_is_trained_on_the_training_texts(suite):
    from transformers import AutoTokenizer

    out, _ = suite
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer-300")
    text = read(out / "pretrain-all" / "train.jsonl")[0]["text"]
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and tokenizer.decode(ids[1:]) == text
    assert len(tokenizer) < 320


def test_single_set_from_flags_and_its_errors(tmp_path):
    paths = UftRecipe().make_data(tmp_path, seed=1, n_stories=100, n_eval=10, filtering="features!=Twist",
                                  adversarial_training="features=Twist:1.0")
    name = "F_features_x_Twist_MM_none_AT_features_Twist_1.0_RF_none_IS_none"
    assert paths == {"train": tmp_path / name / "train.jsonl", "eval": tmp_path / name / "eval.jsonl"}
    again = UftRecipe().make_data(tmp_path / "again", seed=1, n_stories=100, n_eval=10, name="adv",
                                  filtering="features!=Twist", adversarial_training="features=Twist:1.0")
    assert read(again["train"]) == read(paths["train"])  # same seed, same records
    with pytest.raises(LlmftError, match="drop --filtering"):
        UftRecipe().make_data(tmp_path, seed=0, preset="deletion-suite", filtering="features=Twist")
    with pytest.raises(LlmftError, match="unknown feature 'Twists'"):
        UftRecipe().make_data(tmp_path, seed=0, filtering="features=Twists")
    with pytest.raises(LlmftError, match="no training stories left"):
        UftRecipe().make_data(tmp_path, seed=0, n_stories=20, filtering="features=Twist,features!=Twist")
    with pytest.raises(LlmftError, match="stories source not found"):
        UftRecipe().make_data(tmp_path, seed=0, stories=str(tmp_path / "nowhere"))
