"""train.eval_steps: held-out loss on data.eval during training, and the run's summary.md + loss.png."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmft.core.errors import LlmftError
from llmft.core.heldout import eval_interval
from llmft.core.jsonl import write_jsonl
from llmft.core.run_summary import read_metrics

from ..conftest import tiny_config, train_run


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_heldout_loss_is_logged_and_equals_the_final_models_loss(tmp_path, caesar_data):
    train_file, eval_file = caesar_data
    config = tiny_config(tmp_path, train_file, eval_file, train={"max_steps": 12, "eval_steps": 5, "logging_steps": 4})
    result = train_run(config, progress=False)
    run = tmp_path / "run"
    held_out = [r for r in _records(run / "metrics.jsonl") if "eval_loss" in r]
    assert [r["step"] for r in held_out] == [5, 10, 12]  # every 5 steps and at the end
    assert result.eval_losses == {r["step"]: r["eval_loss"] for r in held_out}
    assert held_out[-1]["eval_loss"] < held_out[0]["eval_loss"]  # the model learns the held-out words

    # The last held-out loss is the trained model's token-weighted loss on data.eval (its first 256 records),
    # computed again here from the saved final folder.
    from llmft.core.data import load_examples
    from llmft.core.inference import load_for_inference
    from llmft.core.scoring import example_losses

    _, tokenizer, model = load_for_inference(run / "final")
    examples = load_examples(eval_file, tokenizer, config.data.max_length, what="data.eval", limit=256)
    sums = example_losses(model, examples, tokenizer.pad_token_id, reduction="sum")
    expected = sum(sums) / sum(e.trained for e in examples)
    assert held_out[-1]["eval_loss"] == pytest.approx(expected, rel=1e-4)

    # TensorBoard has it too; the summary and the plot are written.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/loss")] == [5, 10, 12]
    summary = (run / "summary.md").read_text()
    assert f"| held-out loss | {held_out[0]['eval_loss']:.4f} (step 5) | {held_out[-1]['eval_loss']:.4f} (step 12)" in summary
    assert "| train loss |" in summary and "12 steps of batch 4" in summary
    assert (run / "loss.png").stat().st_size > 10_000


def test_heldout_loss_is_on_by_default_and_off_with_zero(tmp_path, caesar_data):
    train_file, eval_file = caesar_data
    config = tiny_config(tmp_path, train_file, eval_file, train={"max_steps": 20})
    train_run(config, progress=False)
    steps = [r["step"] for r in _records(tmp_path / "run/metrics.jsonl") if "eval_loss" in r]
    assert steps == list(range(2, 21, 2))  # -1 = about ten times a run
    off = tiny_config(tmp_path, train_file, eval_file, train={"max_steps": 4, "eval_steps": 0,
                                                            "output_dir": str(tmp_path / "off")})
    assert train_run(off, progress=False).eval_losses == {}
    assert read_metrics(tmp_path / "off")[1] == []


def test_eval_records_without_a_target_are_skipped_unless_asked_for(tmp_path, caesar_data):
    train_file, _ = caesar_data
    problems = write_jsonl(tmp_path / "problems.jsonl", [{"prompt": "shift abc =", "answer": "bcd"}] * 4)
    config = tiny_config(tmp_path, train_file, problems, train={"max_steps": 2})
    assert train_run(config, progress=False).eval_losses == {}  # like retuning's eval problems: skipped
    asked = tiny_config(tmp_path, train_file, problems, train={"max_steps": 2, "eval_steps": 1,
                                                               "output_dir": str(tmp_path / "asked")})
    with pytest.raises(LlmftError, match="train.eval_steps: data.eval .* has no prompt/completion or text"):
        train_run(asked, progress=False)
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"prompt": "shift abc =", "completion": " bcd"},
                                                   {"prompt": "shift abc =", "answer": "bcd"}])
    config = tiny_config(tmp_path, train_file, mixed, train={"max_steps": 2, "output_dir": str(tmp_path / "mixed")})
    assert train_run(config, progress=False).eval_losses == {}  # auto: a bad later record turns it off, no error
    no_eval = tiny_config(tmp_path, train_file, None, train={"max_steps": 2, "eval_steps": 1,
                                                             "output_dir": str(tmp_path / "none")})
    with pytest.raises(LlmftError, match="train.eval_steps = 1 needs data.eval"):
        train_run(no_eval, progress=False)


def test_eval_interval(tmp_path, caesar_data):
    train_file, eval_file = caesar_data
    auto = tiny_config(tmp_path, train_file, eval_file)
    assert eval_interval(auto, 300, [object()]) == 30
    assert eval_interval(auto, 5, [object()]) == 1
    assert eval_interval(auto, 300, []) == 0
    fixed = tiny_config(tmp_path, train_file, eval_file, train={"eval_steps": 7})
    assert eval_interval(fixed, 300, [object()]) == 7



def test_data_heldout_names_another_file_than_data_eval(tmp_path, caesar_data):
    train_file, eval_file = caesar_data
    problems = write_jsonl(tmp_path / "problems.jsonl", [{"prompt": "shift abc =", "answer": "bcd"}] * 4)
    config = tiny_config(tmp_path, train_file, problems, data={"heldout": str(eval_file)}, train={"max_steps": 2})
    assert list(train_run(config, progress=False).eval_losses) == [1, 2]
    assert "held-out `" + str(eval_file) in (tmp_path / "run/summary.md").read_text()


def test_progress_marks_a_held_out_loss_from_an_earlier_step(tmp_path, capsys, monkeypatch):
    from llmft.core.train_log import TrainLog

    monkeypatch.setenv("LLMFT_PROGRESS", "lines")
    log = TrainLog(tmp_path, main=True, progress=True, total=3, start=0)
    log.bar.min_seconds = 0  # a line per step
    log.log(1, 2.0, 1e-3, 100.0, every=1)
    log.log_eval(2, 1.25)
    log.log(2, 1.5, 1e-3, 100.0, every=1)
    log.log(3, 1.0, 1e-3, 100.0, every=1)
    log.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and "eval_loss" not in lines[0]
    assert "| eval_loss 1.2500 |" in lines[1] and "| eval_loss 1.2500 (step 2) |" in lines[2]


def test_loss_plot_has_a_log_axis_and_the_summary_names_no_unused_held_out_file(tmp_path, caesar_data,
                                                                                saved_figures):
    train_file, eval_file = caesar_data
    config = tiny_config(tmp_path, train_file, eval_file, train={"max_steps": 3, "eval_steps": 0})
    train_run(config, progress=False)
    assert list(saved_figures) == ["loss.png"] and saved_figures["loss.png"]["yscale"] == "log"
    summary = (tmp_path / "run/summary.md").read_text()
    assert "no held-out loss" in summary and str(eval_file) not in summary and "held-out `" not in summary
