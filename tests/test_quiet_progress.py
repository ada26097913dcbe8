"""Quiet, short logs: interval lines off a terminal, no third-party bars or warnings unless --verbose."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmft.core.config import config_to_toml
from llmft.core.jsonl import write_jsonl
from llmft.core.progress import Progress
from llmft.recipes.sft.toys import toy_split

from .conftest import REPO, tiny_config

NOISE = ("Loading weights", "Writing model shards", "Warning", "it/s]", "Traceback", "kernels-community")


def test_progress_off_a_terminal_prints_at_most_one_line_per_interval() -> None:
    stream = io.StringIO()
    bar = Progress(300, "train", unit="steps", stream=stream, lines=20, min_seconds=0)
    for step in range(300):
        bar.update(1, loss=1.0 / (step + 1))
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 20
    assert lines[0].startswith("train: 15/300 steps (5%) | loss 0.0667")
    assert lines[-1].startswith("train: 300/300 steps (100%)")


def test_progress_resumed_and_short_runs() -> None:
    stream = io.StringIO()
    bar = Progress(10, "eval", initial=7, unit="examples", stream=stream, min_seconds=3600)
    bar.update(1)  # within the minimum interval: no line yet
    assert stream.getvalue() == ""
    bar.update(2)  # the end always prints
    assert stream.getvalue().splitlines() == [stream.getvalue().splitlines()[0]]
    assert stream.getvalue().startswith("eval: 10/10 examples (100%)")
    bar.close()
    assert len(stream.getvalue().splitlines()) == 1


def _config(tmp_path: Path) -> Path:
    train, held_out = toy_split("caesar", 400, 40, seed=3)
    config = tiny_config(
        tmp_path, write_jsonl(tmp_path / "train.jsonl", train), write_jsonl(tmp_path / "eval.jsonl", held_out),
        model={"tiny": {"hidden_size": 16, "num_layers": 1}}, adapter={"method": "lora"}, data={"pack_length": 48},
        train={"max_steps": 300, "batch_size": 1, "learning_rate": 1e-2, "save_steps": 100, "logging_steps": 10,
               "threads": 1, "eval_examples": 8},
        eval={"max_examples": 8, "max_new_tokens": 8})
    toml = tmp_path / "run.toml"
    toml.write_text(config_to_toml(config))
    return toml


def _llmft(*args: str, cwd: Path) -> tuple[int, str]:
    """Run llmft with stdout and stderr captured together (not a terminal), as a log file would be."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_DISABLE", "TRANSFORMERS_", "LLMFT_"))}
    done = subprocess.run([sys.executable, "-m", "llmft", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, cwd=cwd, env={**env, "PYTHONPATH": str(REPO / "src")}, timeout=600)
    return done.returncode, done.stdout


def test_captured_300_step_train_and_eval_logs_are_short_and_quiet(tmp_path: Path) -> None:
    toml = _config(tmp_path)
    code, train_log = _llmft("train", str(toml), cwd=tmp_path)
    assert code == 0, train_log
    redraws = re.split(r"[\r\n]", train_log.strip())
    assert len(redraws) < 50, train_log
    assert not [noise for noise in NOISE if noise in train_log], train_log
    assert train_log.strip().splitlines()[-1].startswith("trained 300 steps, final loss ")
    assert "held-out loss" in train_log.strip().splitlines()[-1]
    assert (tmp_path / "run/summary.md").is_file() and (tmp_path / "run/loss.png").is_file()

    code, eval_log = _llmft("eval", "--adapter", str(tmp_path / "run/final"), cwd=tmp_path)
    assert code == 0 and not [noise for noise in NOISE if noise in eval_log], eval_log
    assert "exact_match" in eval_log


@pytest.mark.slow
def test_export_is_quiet_and_verbose_brings_library_output_back(tmp_path: Path) -> None:
    toml = _config(tmp_path)
    code, log = _llmft("train", str(toml), "train.max_steps=2", "train.save_steps=0", cwd=tmp_path)
    assert code == 0, log
    code, export_log = _llmft("export", "--adapter", str(tmp_path / "run/final"), "--out", str(tmp_path / "x"),
                              cwd=tmp_path)
    assert code == 0 and not [noise for noise in NOISE if noise in export_log], export_log
    assert len(export_log.strip().splitlines()) == 1, export_log
    # --verbose brings the libraries' own output back (so the checks above can fail).
    code, verbose_log = _llmft("--verbose", "export", "--adapter", str(tmp_path / "run/final"), "--out",
                               str(tmp_path / "y"), cwd=tmp_path)
    assert code == 0 and "Loading weights" in verbose_log, verbose_log


def test_a_large_training_file_is_announced(tmp_path, capsys) -> None:
    from llmft.core.progress import note_large_file

    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    small.write_text("{}\n")
    big.write_bytes(b"{}\n" * 400_000)  # 1.1 MB
    note_large_file(str(small), "data.train", threshold_mb=1)
    assert capsys.readouterr().err == ""
    note_large_file(str(big), "data.train", threshold_mb=1)
    assert capsys.readouterr().err == f"llmft: reading and tokenising data.train {big} (1 MB); this takes a while\n"
