"""Every verb answers --help with an example; every user mistake exits 2 with one line and no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from llmft.core.jsonl import write_jsonl

from .conftest import REPO


def llmft(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmft", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.mark.parametrize("verb", ["make-data", "train", "eval", "export", "estimate"])
def test_help_shows_an_example(verb):
    done = llmft(verb, "--help")
    assert done.returncode == 0 and "llmft " + verb.split()[0] in done.stdout


def test_make_data_help_lists_recipes():
    done = llmft("make-data", "--help")
    listed = done.stdout.split("Commands:")[1].split()
    for name in ("sft", "retuning", "squad", "uft", "memreason", "cot-teacher"):
        assert name in listed


def one_line_error(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0]


def test_user_mistakes_exit_2_with_one_line(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(f'recipe = "sft"\n[data]\ntrain = "{tmp_path / "train.jsonl"}"\n[train]\n'
                    f'output_dir = "{tmp_path / "run"}"\n')
    one_line_error(llmft("train", str(tmp_path / "missing.toml")), "config file not found", "missing.toml")
    (tmp_path / "bad.toml").write_text("[train\n")
    one_line_error(llmft("train", str(tmp_path / "bad.toml")), "malformed TOML")
    one_line_error(llmft("train", str(good), "recipe=nope"), "unknown recipe 'nope'")
    one_line_error(llmft("train", str(good), "train.max_step=3"), "did you mean 'train.max_steps'")
    one_line_error(llmft("train", str(good), "train.max_steps=many"), "'train.max_steps' must be an integer")
    (tmp_path / "train.jsonl").write_text('{"prompt": "a", "completion": "b"}\n{"prompt": oops}\n')
    one_line_error(llmft("train", str(good), "--no-progress"), "train.jsonl: line 2 is not JSON")
    one_line_error(llmft("eval", "--adapter", str(tmp_path / "nowhere")), "folder not found")
    one_line_error(llmft("export", "--adapter", str(tmp_path), "--out", str(tmp_path / "o")), "has no llmft.toml")
    one_line_error(llmft("make-data", "sft", "--input", str(tmp_path / "none.jsonl")), "file not found")


def test_gpu_only_option_on_cpu(tmp_path, caesar_data):
    """eval.backend = vllm on a machine without vLLM/CUDA: one line saying what to do."""
    from tests.conftest import train_run

    from .conftest import tiny_config

    train_file, eval_file = caesar_data
    train_run(tiny_config(tmp_path, train_file, eval_file, train={"max_steps": 1}), progress=False)
    done = llmft("eval", "--adapter", str(tmp_path / "run" / "final"), "--backend", "vllm")
    one_line_error(done, "vLLM")


def test_dry_run_prints_the_resolved_config(tmp_path):
    done = llmft("train", str(REPO / "recipes" / "sft-tiny.toml"), "train.max_steps=7", "--dry-run")
    assert done.returncode == 0 and "max_steps = 7" in done.stdout and 'recipe = "sft"' in done.stdout


def test_make_data_show_marks_completion(tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"q{i} =", "completion": f" a{i}"} for i in range(20)])
    done = llmft("make-data", "sft", "--input", str(data), "--out", str(tmp_path / "out"), "--show", "1")
    assert done.returncode == 0, done.stderr
    shown = [line for line in done.stdout.splitlines() if line.startswith("<s>")]
    assert len(shown) == 1 and shown[0].endswith("=[[ a" + shown[0].split("[[ a")[1]) and shown[0].endswith("</s>]]")


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_entry_point_sets_a_passive_openmp_wait_unless_the_user_chose(given, expected):
    """Spinning OpenMP threads collapse beside another job (bench/threads.py): the CLI asks for passive waits."""
    import os

    script = ("import os, sys\nfrom llmft.cli import main\nsys.argv = ['llmft', '--version']\n"
              "try:\n    main()\nexcept SystemExit:\n    pass\nprint(os.environ['OMP_WAIT_POLICY'])")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == expected
