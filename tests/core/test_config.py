from pathlib import Path

import pytest

from llmft.core.config import config_to_toml, load_config
from llmft.core.errors import LlmftError
from llmft.recipes.base import load_recipe_config

from ..conftest import REPO


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path):
    config = load_config(write(tmp_path, 'recipe = "sft"\n[train]\nmax_steps = 5\n'),
                         ["train.learning_rate=1e-4", "adapter.target_modules=['q_proj']", "train.output_dir=runs/x"])
    assert config.train.max_steps == 5
    assert config.train.learning_rate == pytest.approx(1e-4)
    assert config.adapter.target_modules == ["q_proj"]
    assert config.train.output_dir == "runs/x"  # a bare word is read as a string


def test_unknown_key_suggests_nearest_and_all_errors_at_once(tmp_path):
    path = write(tmp_path, 'recipe = "sft"\n[train]\nlearning_rat = 1e-3\nmax_steps = "ten"\n[modle]\nname = "x"\n')
    with pytest.raises(LlmftError) as info:
        load_config(path)
    message = str(info.value)
    assert "unknown key 'train.learning_rat' (did you mean 'train.learning_rate'?)" in message
    assert "key 'train.max_steps' must be an integer, got 'ten'" in message
    assert "unknown key 'modle' (did you mean 'model'?)" in message
    assert "\n" not in message


def test_literal_values_are_checked(tmp_path):
    with pytest.raises(LlmftError, match="adapter.method' must be one of 'full', 'lora'"):
        load_config(write(tmp_path, '[adapter]\nmethod = "lorra"\n'))


def test_true_and_false_fill_a_true_false_auto_choice(tmp_path):
    config = load_config(write(tmp_path, '[train]\nbf16 = true\n'), [])
    assert config.train.bf16 == "true"
    assert load_config(write(tmp_path, '[train]\nbf16 = true\n'), ["train.bf16=false"]).train.bf16 == "false"
    with pytest.raises(LlmftError, match="adapter.method' must be one of"):
        load_config(write(tmp_path, '[adapter]\nmethod = true\n'))


def test_malformed_toml_and_missing_file(tmp_path):
    with pytest.raises(LlmftError, match="malformed TOML"):
        load_config(write(tmp_path, "[train\n"))
    with pytest.raises(LlmftError, match="config file not found"):
        load_config(tmp_path / "none.toml")


def test_unknown_recipe(tmp_path):
    with pytest.raises(LlmftError, match="unknown recipe 'stf' \\(did you mean 'sft'\\?\\)"):
        load_recipe_config(write(tmp_path, 'recipe = "stf"\n'))


def test_resolved_config_round_trips(tmp_path):
    config = load_config(write(tmp_path, '[train]\nmax_steps = 7\n[model.tiny]\nhidden_size = 48\n'))
    again = load_config(write(tmp_path, config_to_toml(config)))
    assert again.to_dict() == config.to_dict()


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_toml_validates_and_says_how_to_run_it(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "llmft" in first, f"{path.name} must open with the command that runs it"
    load_recipe_config(path)
