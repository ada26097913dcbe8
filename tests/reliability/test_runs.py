"""Run folders: a moved run trains on, evaluates, serves and exports from where it lives now, never from its
past path; a bottleneck run serves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmft.cli import cli
from tests.conftest import tiny_config, train_run
from tests.test_reliability import TOML as SFT

# The battery's sft preset as a cot-teacher run that keeps a checkpoint per step.
TOML = SFT.replace('recipe = "sft"', 'recipe = "cot-teacher"').replace(
    "max_steps = 2", "max_steps = 2\nsave_steps = 1\nsave_total_limit = 5").replace("pack_length = 128", "pack_length = 512")



def invoke(*args: object) -> object:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def moved(tmp_path_factory) -> dict[str, Path]:
    """A 2-step cot-teacher run trained into runs/a, then moved to runs/b; runs/a now holds another run's
    evaluation of checkpoint-1 (accuracy 0.97)."""
    root = tmp_path_factory.mktemp("moved")
    invoke("make-data", "cot-teacher", "--task", "coin_flip", "--n", "20", "--format", "ft_token", "--out",
           root / "data")
    preset = root / "preset.toml"
    preset.write_text(TOML.format(train=root / "data" / "train.jsonl", eval=root / "data" / "eval.jsonl",
                                  out=root / "runs" / "a"))
    invoke("train", preset, "--no-progress")
    shutil.move(root / "runs" / "a", root / "runs" / "b")
    planted = root / "runs" / "a" / "eval" / "checkpoint-1"
    planted.mkdir(parents=True)
    (planted / "metrics.json").write_text(json.dumps({"accuracy": 0.97}))
    return {"root": root, "preset": preset, "a": root / "runs" / "a", "b": root / "runs" / "b"}


def test_a_moved_run_evaluates_its_own_checkpoints(moved):
    before = files(moved["a"])
    invoke("eval", "--adapter", moved["b"] / "checkpoint-1", "eval.max_examples=3", "eval.max_new_tokens=4")
    invoke("eval", "--adapter", moved["b"] / "final", "eval.max_examples=3", "eval.max_new_tokens=4",
           "cot-teacher.best_epoch_on_test=true")
    metrics = json.loads((moved["b"] / "eval" / "final" / "metrics.json").read_text())
    own = json.loads((moved["b"] / "eval" / "checkpoint-1" / "metrics.json").read_text())["accuracy"]
    assert metrics["checkpoints_evaluated"] == 2
    assert metrics["best_epoch_on_test_accuracy"] == max(own, metrics["accuracy"]) < 0.97
    assert files(moved["a"]) == before  # nothing read from or written to the past path


def test_a_moved_run_resumes_where_it_lives(moved):
    before = files(moved["a"])
    result = invoke("train", moved["b"] / "llmft.toml", "--resume", "train.max_steps=3", "--no-progress")
    assert "trained 3 steps" in result.output
    result = invoke("train", moved["preset"], f"train.output_dir={moved['b']}", "--resume", "train.max_steps=4",
                    "--no-progress")
    assert "trained 4 steps" in result.output
    assert files(moved["a"]) == before
    saved = (moved["b"] / "llmft.toml").read_text()
    assert f'output_dir = "{moved["b"]}"' in saved and str(moved["a"]) not in saved


def test_a_moved_run_exports_and_serves(moved, tmp_path):
    from fastapi.testclient import TestClient

    from llmft.commands.serve import served_models
    from llmft.serve.app import create_app

    invoke("export", "--adapter", moved["b"] / "final", "--out", tmp_path / "exported")
    assert (tmp_path / "exported" / "config.json").is_file()
    app = create_app(served_models([f"m={moved['b'] / 'final'}"]))
    with TestClient(app) as http:
        reply = http.post("/v1/completions", json={"model": "m", "prompt": "Q: x", "max_tokens": 3})
    assert reply.status_code == 200 and len(reply.json()["choices"]) == 1


def test_a_bottleneck_run_serves_as_it_evaluates(tmp_path, caesar_data):
    from fastapi.testclient import TestClient

    from llmft.commands.serve import served_models
    from llmft.core.generation import HFGenerator
    from llmft.core.inference import load_for_inference
    from llmft.serve.app import create_app

    train_file, _ = caesar_data
    train_run(tiny_config(tmp_path, train_file, adapter={"method": "bottleneck", "reduction_factor": 4},
                          train={"max_steps": 3}), progress=False)
    final = tmp_path / "run" / "final"
    prompts = ["shift abc =", "shift xyz ="]
    _, tokenizer, model = load_for_inference(final)
    alone = HFGenerator(model, tokenizer, batch_size=2).generate(prompts, max_new_tokens=6)
    app = create_app(served_models([f"b={final}"]))
    with TestClient(app) as http:
        reply = http.post("/v1/completions", json={"model": "b", "prompt": prompts, "max_tokens": 6,
                                                   "temperature": 0})
    assert reply.status_code == 200, reply.text
    assert [c["text"] for c in reply.json()["choices"]] == alone
    result = CliRunner().invoke(cli, ["serve", "--adapter", str(final), "--adapter", f"x={final}", "--port", "0"])
    assert result.exit_code == 2 and result.stderr.startswith("error: --adapter: a bottleneck run is served alone")


def test_a_full_disk_while_saving_a_checkpoint_is_one_line(tmp_path, caesar_data, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    from tests.reliability.battery import one_error

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')

    train_file, eval_file = caesar_data
    preset = tmp_path / "sft.toml"
    preset.write_text(SFT.format(train=train_file, eval=eval_file, out=tmp_path / "run"))
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    one_error(["train", preset, "train.save_steps=1", "--no-progress"], "No space left on device writing a tensor file")
    assert not (tmp_path / "run" / "checkpoint-1").exists()
