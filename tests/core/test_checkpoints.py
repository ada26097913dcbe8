"""Which checkpoint a run starts from, what counts as damaged, and which config changes a resume refuses."""

import json

import pytest

from llmft.core import runs
from llmft.core.checkpoints import changed_keys, damage, resolve_start
from llmft.core.config import Config
from llmft.core.errors import LlmftError


def test_a_finished_run_needs_resume_or_overwrite_and_overwrite_clears_it(tmp_path):
    (tmp_path / runs.FINAL_NAME).mkdir()
    (tmp_path / f"{runs.CHECKPOINT_PREFIX}5").mkdir()
    (tmp_path / runs.METRICS_NAME).write_text("{}\n")
    with pytest.raises(LlmftError, match="already holds a run; pass --resume or --overwrite$"):
        resolve_start(tmp_path, resume=False, overwrite=False, main=True)
    assert resolve_start(tmp_path, resume=False, overwrite=True, main=True) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_resume_skips_a_damaged_newest_checkpoint(tmp_path, capsys):
    for step in (2, 4):
        (tmp_path / f"{runs.CHECKPOINT_PREFIX}{step}").mkdir()
    newest = tmp_path / f"{runs.CHECKPOINT_PREFIX}4"
    assert damage(newest) == f"{runs.TRAINER_STATE_NAME} is missing or unreadable"
    with pytest.raises(LlmftError, match="no complete checkpoint"):
        resolve_start(tmp_path, resume=True, overwrite=False, main=True)
    assert capsys.readouterr().err.count("is damaged") == 2
    (newest / runs.TRAINER_STATE_NAME).write_text(json.dumps({"step": 4}))
    assert damage(newest).startswith(runs.TRAINABLE_NAME)


def test_changed_keys_ignore_what_a_resume_may_change():
    saved, new = Config(), Config()
    new.train.max_steps, new.eval.max_examples, new.train.learning_rate = 99, 5, 0.5
    assert changed_keys(saved, new) == ["train.learning_rate"]
