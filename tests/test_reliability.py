"""Bad input and faults: each gets exit code 2 and one `error:` line, and no file the user had is changed.

The battery runs the CLI in-process (click's CliRunner) so 50+ cases take seconds, not minutes; the run lock
is tested with two real processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmft.cli import cli
from llmft.core.jsonl import write_jsonl
from llmft.recipes.sft.toys import toy_split
from tests.conftest import REPO, eval_run, tiny_config, train_run

TOML = """# llmft train good.toml
recipe = "sft"
[model.tiny]
hidden_size = 32
num_heads = 2
[adapter]
method = "full"
[data]
train = "{train}"
eval = "{eval}"
pack_length = 128
[train]
output_dir = "{out}"
max_steps = 2
batch_size = 4
bf16 = "false"
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A folder with data, a good config and a finished tiny run (2 steps, checkpoint at 1)."""
    root = tmp_path_factory.mktemp("world")
    train, held_out = toy_split("caesar", 200, 20, seed=3)
    data = {"train": write_jsonl(root / "data" / "train.jsonl", train),
            "eval": write_jsonl(root / "data" / "eval.jsonl", held_out)}
    good = root / "good.toml"
    good.write_text(TOML.format(train=data["train"], eval=data["eval"], out=root / "run"))
    result = CliRunner().invoke(cli, ["train", str(good), "train.save_steps=1", "--no-progress"])
    assert result.exit_code == 0, result.output
    (root / "notes").mkdir()
    (root / "notes" / "mine.txt").write_text("the user's own file\n")
    (root / "a-file").write_text("not a folder\n")
    (root / "latin1.toml").write_bytes('recipe = "sft"\n# caf\xe9\n'.encode("latin-1"))
    (root / "latin1.jsonl").write_bytes('{"prompt": "caf\xe9", "completion": "x"}\n'.encode("latin-1"))
    bad = {"null.jsonl": '{"prompt": "a", "completion": null}\n',
           "number.jsonl": '{"prompt": "a", "completion": 7}\n',
           "empty-completions.jsonl": '{"prompt": "a", "completion": ""}\n{"prompt": "b", "completion": ""}\n',
           "no-fields.jsonl": '{"question": "a"}\n',
           "not-json.jsonl": '{"prompt": "a", "completion": "b"}\n{"prompt": oops}\n',
           "empty.jsonl": "",
           "list.jsonl": '[1, 2]\n'}
    for name, text in bad.items():
        (root / "data" / name).write_text(text)
    return {"root": root, "good": good, "run": root / "run", "final": root / "run" / "final", **data}


def snapshot(root: Path) -> dict[str, str]:
    """Hashes of the user's files (not of `fresh/`, the run folder the failing trainings themselves create)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).parts[0] != "fresh"}


def cases(w: dict[str, Path]) -> list[tuple[list[str], str]]:
    r, good, final = w["root"], str(w["good"]), str(w["final"])
    d = r / "data"
    train = ["train", good, "--no-progress"]
    fresh = [*train, f"train.output_dir={r / 'fresh'}"]
    return [
        (["train", str(r / "missing.toml")], "config file not found"),
        (["train", str(r / "latin1.toml")], "not UTF-8"),
        ([*fresh, "recipe=nope"], "unknown recipe 'nope'"),
        ([*fresh, "train.max_step=3"], "did you mean 'train.max_steps'"),
        ([*fresh, "train.max_steps=many"], "must be an integer"),
        ([*fresh, "train.batch_size=0"], "train.batch_size' must be >= 1"),
        ([*fresh, "train.batch_size=-1"], "train.batch_size' must be >= 1"),
        ([*fresh, "train.grad_accum=0"], "train.grad_accum' must be >= 1"),
        ([*fresh, "train.learning_rate=0"], "train.learning_rate' must be > 0"),
        ([*fresh, "train.learning_rate=-1e-3"], "train.learning_rate' must be > 0"),
        ([*fresh, "train.max_steps=-5"], "train.max_steps' must be >= 0"),
        ([*fresh, "train.epochs=0"], "train.epochs' must be > 0"),
        ([*fresh, "train.save_steps=-1"], "train.save_steps' must be >= 0"),
        ([*fresh, "train.threads=-2"], "train.threads' must be >= 0"),
        ([*fresh, "eval.batch_size=0"], "eval.batch_size' must be >= 1"),
        ([*fresh, "eval.max_new_tokens=0"], "eval.max_new_tokens' must be >= 1"),
        ([*fresh, "eval.num_beams=0"], "eval.num_beams' must be >= 1"),
        ([*fresh, "model.tiny.num_heads=3"], "must divide model.tiny.hidden_size"),
        ([*fresh, "model.tiny.digit_stride=0"], "model.tiny.digit_stride' must be >= 1"),
        ([*fresh, "model.tiny.rope_factor=0"], "model.tiny.rope_factor' must be > 0"),
        ([*fresh, "model.tiny.digit_joiners=, 1"], "model.tiny.digit_joiners' must not hold digits"),
        ([*fresh, "model.tiny.digit_layout=rows"], "model.tiny.digit_layout"),
        ([*fresh, "model.tiny.positions=digits", "train.random_positions=64"], "exclude each other"),
        ([*fresh, 'train.output_dir=""'], "train.output_dir' must not be empty"),
        ([*train, f"train.output_dir={r / 'a-file'}"], "is a file, not a folder"),
        ([*fresh, "adapter.method=lorra"], "adapter.method' must be one of"),
        ([*fresh, "data.packing=tight"], "data.packing' must be one of"),
        ([*fresh, "adapter.dropout=1.5"], "adapter.dropout' must be in [0, 1)"),
        ([*fresh, "train.max_steps"], "is not key=value"),
        ([*fresh, f"data.train={d / 'missing.jsonl'}"], "file not found"),
        ([*fresh, f"data.train={r / 'latin1.jsonl'}"], "line 1 is not UTF-8"),
        ([*fresh, f"data.train={d / 'not-json.jsonl'}"], "line 2 is not JSON"),
        ([*fresh, f"data.train={d / 'null.jsonl'}"], "'completion' must be a string, got null"),
        ([*fresh, f"data.train={d / 'number.jsonl'}"], "'completion' must be a string, got 7"),
        ([*fresh, f"data.train={d / 'empty-completions.jsonl'}"], "every completion is empty"),
        ([*fresh, f"data.train={d / 'no-fields.jsonl'}"], "needs 'prompt' and 'completion', or 'text'"),
        ([*fresh, f"data.train={d / 'empty.jsonl'}"], "has no records"),
        ([*fresh, f"data.train={d / 'list.jsonl'}"], "line 1 is not a JSON object"),
        ([*fresh, "--resume"], "no complete checkpoint"),
        ([*train, "--resume", "--overwrite"], "contradict"),
        (train, "already holds a run"),
        ([*train, "--resume", "train.learning_rate=0.5"], "started with other train.learning_rate"),
        ([*train, "--resume", f"data.train={d / 'null.jsonl'}"], "started with other data.train"),
        (["eval", "--adapter", str(r / "nowhere")], "folder not found"),
        (["eval", "--adapter", str(w["run"])], "is a run's root folder"),
        (["eval", "--adapter", str(r / "notes")], "has no llmft.toml"),
        (["eval", "--adapter", final, f"data.eval={d / 'missing.jsonl'}"], "data.eval: file not found"),
        (["eval", "--adapter", final, "eval.beams=2"], "did you mean 'eval.num_beams'"),
        (["eval", "--adapter", final, "--backend", "vllm"], "vLLM"),
        (["eval", "--adapter", final, f"data.eval={d / 'not-json.jsonl'}"], "line 2 is not JSON"),
        (["export", "--adapter", final, "--out", str(r / "notes")], "not empty; pass --overwrite"),
        (["export", "--adapter", final, "--out", str(r / "a-file")], "a file of that name exists"),
        (["export", "--adapter", final, "--out", str(w["run"])], "the run being exported or holds it"),
        (["export", "--adapter", final, "--out", final], "the run being exported or holds it"),
        (["export", "--adapter", final, "--out", str(r)], "the run being exported or holds it"),
        (["export", "--adapter", final, "--out", str(r), "--overwrite"], "the run being exported or holds it"),
        (["export", "--adapter", str(w["run"]), "--out", str(r / "exp")], "is a run's root folder"),
        (["make-data", "sft", "--input", str(w["train"]), "--out", str(d)], "it is an input of this command"),
        (["make-data", "sft", "--toy", "caesar", "--out", str(d)], "llmft did not write it"),
        (["make-data", "sft", "--toy", "caesar", "--n", "0", "--out", str(r / "m")], "--n must be >= 1, got 0"),
        (["make-data", "sft", "--toy", "caesar", "--eval-n", "-1", "--out", str(r / "m")], "must be >= 1"),
        (["make-data", "sft", "--input", str(w["train"]), "--eval-fraction", "1.5", "--out", str(r / "m")],
         "--eval-fraction must be in (0, 1), got 1.5"),
        (["make-data", "sft", "--out", str(r / "m")], "exactly one of --input FILE or --toy TASK"),
        (["make-data", "sft", "--input", str(d / "missing.jsonl"), "--out", str(r / "m")], "file not found"),
        (["make-data", "sft", "--input", str(r / "latin1.jsonl"), "--out", str(r / "m")], "not UTF-8"),
        (["make-data", "sft", "--input", str(d / "null.jsonl"), "--out", str(r / "m")], "record(s); need 2"),
        (["make-data", "retuning", "--min-size", "3", "--max-size", "2", "--out", str(r / "m")],
         "need 1 <= --min-size <= --max-size"),
        (["make-data", "squad", "--out", str(r / "m")], "cannot load 'rajpurkar/squad_v2' from the hub"),
    ]


def test_battery_of_bad_inputs(world, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(world["root"])
    battery = cases(world)
    assert len(battery) >= 50
    runner = CliRunner()
    for args, needle in battery:
        before = snapshot(world["root"])
        result = runner.invoke(cli, args)
        label = " ".join(args)
        assert result.exit_code == 2, (label, result.exit_code, result.output, result.exception)
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: "), (label, result.stderr)
        assert needle in errors[0], (label, errors[0])
        assert "Traceback" not in result.output + result.stderr, label
        after = snapshot(world["root"])
        assert {k: v for k, v in after.items() if k in before} == before, label


def test_export_overwrites_only_when_asked_and_never_the_run(world, tmp_path):
    final = world["final"]
    out = tmp_path / "exported"
    runner = CliRunner()
    assert runner.invoke(cli, ["export", "--adapter", str(final), "--out", str(out)]).exit_code == 0
    assert runner.invoke(cli, ["export", "--adapter", str(final), "--out", str(out)]).exit_code == 2
    result = runner.invoke(cli, ["export", "--adapter", str(final), "--out", str(out), "--overwrite"])
    assert result.exit_code == 0 and (out / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    assert (final / "model.safetensors").is_file() and (world["run"] / "checkpoint-1").is_dir()


def test_make_data_rewrites_its_own_files_but_not_the_users(tmp_path):
    runner = CliRunner()
    out = tmp_path / "d"
    args = ["make-data", "sft", "--toy", "caesar", "--n", "20", "--eval-n", "5", "--out", str(out)]
    assert runner.invoke(cli, args).exit_code == 0
    first = (out / "train.jsonl").read_bytes()
    assert runner.invoke(cli, [*args, "--seed", "1"]).exit_code == 0  # llmft's own files: replaced
    assert (out / "train.jsonl").read_bytes() != first
    (out / "eval.jsonl").write_text("edited by hand\n")
    result = runner.invoke(cli, [*args, "--seed", "2"])
    assert result.exit_code == 2 and "eval.jsonl" in result.stderr
    assert (out / "eval.jsonl").read_text() == "edited by hand\n"
    assert runner.invoke(cli, [*args, "--seed", "2", "--overwrite"]).exit_code == 0
    assert (out / "eval.jsonl").read_text() != "edited by hand\n"
    assert not [p for p in out.iterdir() if p.name.endswith(".staged")]
    assert oct((out / "train.jsonl").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_eval_never_reports_stale_results(tmp_path, caesar_data):
    train_file, eval_file = caesar_data
    config = tiny_config(tmp_path, train_file, eval_file, train={"max_steps": 2})
    train_run(config, progress=False)
    final = tmp_path / "run" / "final"
    metrics, eval_dir = eval_run(final, ["eval.max_examples=20"])
    assert metrics["n"] == 20 and metrics["settings"]["eval"]["max_examples"] == 20
    assert eval_run(final, ["eval.max_examples=10"])[0]["n"] == 10  # not the 20 old rows
    first = (eval_dir / "results.jsonl").read_text()
    assert len(first.splitlines()) == 10
    beams, _ = eval_run(final, ["eval.max_examples=10", "eval.num_beams=2"])
    assert beams["settings"]["eval"]["num_beams"] == 2
    train_run(tiny_config(tmp_path, train_file, eval_file, train={"max_steps": 3, "seed": 5}), overwrite=True,
              progress=False)
    assert not eval_dir.exists()  # a retrain with --overwrite clears the old run's evaluations
    again, _ = eval_run(final, ["eval.max_examples=10"])
    assert again["n"] == 10 and again["settings"]["weights"] != metrics["settings"]["weights"]


def test_resume_uses_the_saved_config_and_accepts_changes_only_when_asked(tmp_path, caesar_data):
    train_file, eval_file = caesar_data
    toml = tmp_path / "run.toml"
    toml.write_text(TOML.format(train=train_file, eval=eval_file, out=tmp_path / "run"))
    runner = CliRunner()
    first = runner.invoke(cli, ["train", str(toml), "train.max_steps=4", "train.save_steps=2",
                                "train.learning_rate=0.01", "--no-progress"])
    assert first.exit_code == 0, first.output
    # No overrides retyped: the run's saved config (learning rate 0.01, 4 steps) is what resumes.
    dry = runner.invoke(cli, ["train", str(toml), "--resume", "--dry-run"])
    assert dry.exit_code == 0 and "learning_rate = 0.01" in dry.output and "max_steps = 4" in dry.output
    changed = runner.invoke(cli, ["train", str(toml), "--resume", "train.batch_size=2", "--dry-run"])
    assert changed.exit_code == 2 and "train.batch_size" in changed.stderr
    allowed = runner.invoke(cli, ["train", str(toml), "--resume", "train.batch_size=2", "--allow-changes",
                                  "--dry-run"])
    assert allowed.exit_code == 0 and "batch_size = 2" in allowed.output
    longer = runner.invoke(cli, ["train", str(toml), "--resume", "train.max_steps=6", "--no-progress"])
    assert longer.exit_code == 0, longer.output
    assert "trained 6 steps" in longer.output


def test_damaged_last_checkpoint_falls_back_and_torn_metrics_line_is_dropped(tmp_path, caesar_data, capsys):
    train_file, _ = caesar_data
    config = tiny_config(tmp_path, train_file, train={"max_steps": 6, "save_steps": 2, "save_total_limit": 3})
    train_run(config, stop_after_step=4, progress=False)
    run = tmp_path / "run"
    trainable = run / "checkpoint-4" / "trainable.safetensors"
    trainable.write_bytes(trainable.read_bytes()[:100])  # truncated by a full disk
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 5, "lo')  # torn by a kill
    result = train_run(config, resume=True, progress=False)
    assert "checkpoint-4 is damaged" in capsys.readouterr().err
    assert result.steps == 6 and len(result.losses) == 4  # resumed from step 2
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))


def test_a_pickle_payload_in_optimizer_pt_does_not_run(tmp_path, caesar_data):
    train_file, _ = caesar_data
    config = tiny_config(tmp_path, train_file, train={"max_steps": 4, "save_steps": 2})
    train_run(config, stop_after_step=2, progress=False)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import torch

    torch.save({"optimizer": Payload(), "scheduler": {}}, tmp_path / "run" / "checkpoint-2" / "optimizer.pt")
    from llmft.core.errors import LlmftError

    with pytest.raises(LlmftError, match="refusing to load it"):
        train_run(config, resume=True, progress=False)
    assert not marker.exists()
    pickle.loads(pickle.dumps(Payload()))  # the same payload, unpickled plainly, does run: the test is live
    assert marker.exists()


def test_two_trainings_on_one_folder_the_second_exits_2(tmp_path, caesar_data):
    train_file, eval_file = caesar_data
    toml = tmp_path / "run.toml"
    toml.write_text(TOML.format(train=train_file, eval=eval_file, out=tmp_path / "run").replace(
        "max_steps = 2", "max_steps = 400"))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    first = subprocess.Popen([sys.executable, "-m", "llmft", "train", str(toml), "--no-progress"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lock = tmp_path / "run" / ".llmft.lock"
    try:
        for _ in range(600):
            if lock.exists() and lock.read_text():
                break
            if first.poll() is not None:
                pytest.fail(f"the first training ended early: {first.communicate()[1][-2000:]}")
            __import__("time").sleep(0.1)
        second = subprocess.run([sys.executable, "-m", "llmft", "train", str(toml), "--overwrite", "--no-progress"],
                                capture_output=True, text=True, env=env, timeout=300)
        assert second.returncode == 2, second.stderr
        assert f"in use by process {first.pid}" in second.stderr and "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()
    # The holder is dead now (killed): its lock is taken over by the next training.
    third = subprocess.run([sys.executable, "-m", "llmft", "train", str(toml), "--overwrite", "--no-progress",
                            "train.max_steps=1"], capture_output=True, text=True, env=env, timeout=300)
    assert third.returncode == 0, third.stderr
    assert not lock.exists()


def test_truncated_examples_keep_their_eos_and_are_counted(capsys):
    from llmft.core.data import load_examples
    from llmft.core.tokenizers import train_tokenizer

    tokenizer = train_tokenizer(["abcdefghij xyz"], "char")
    path = write_jsonl(Path(os.environ.get("TMPDIR", "/tmp")) / f"trunc-{os.getpid()}.jsonl", [
        {"prompt": "ab", "completion": "cdefghij"}, {"text": "abcdefghij"}, {"prompt": "a", "completion": "b"}])
    examples = load_examples(path, tokenizer, max_length=6)
    eos = tokenizer.eos_token_id
    assert [len(e) for e in examples[:2]] == [6, 6] and all(e.input_ids[-1] == eos for e in examples)
    assert [e.truncated for e in examples] == [True, True, False]
    assert examples[0].labels[-1] == eos
    assert "2 of 3 examples are longer than data.max_length (6)" in capsys.readouterr().err
    path.unlink()


def test_scripts_run_from_a_fresh_process_see_no_stale_tokenizer(tmp_path, caesar_data):
    """A tokenizer left by a failed run is rebuilt for the new data, not reused."""
    train_file, _ = caesar_data
    (tmp_path / "run" / "tokenizer").mkdir(parents=True)
    (tmp_path / "run" / "tokenizer" / "tokenizer.json").write_text("{}")  # left by a crash, for other data
    result = train_run(tiny_config(tmp_path, train_file, train={"max_steps": 1}), progress=False)
    assert result.steps == 1
    assert json.loads((tmp_path / "run" / "tokenizer" / "tokenizer.json").read_text()) != {}


def test_accelerate_style_entry_point_keeps_one_line(tmp_path):
    script = textwrap.dedent("""
        import sys
        from llmft.cli import main
        sys.argv = ["llmft", "train", "/nonexistent.toml"]
        main()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 2 and done.stderr.strip() == "error: config file not found: /nonexistent.toml"


def test_a_full_disk_is_one_line_and_leaves_no_staging(tmp_path, monkeypatch):
    import errno

    from llmft.core import writes

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(writes.Path, "write_text", full)
    result = CliRunner().invoke(cli, ["make-data", "sft", "--toy", "caesar", "--n", "20", "--eval-n", "5",
                                      "--out", str(tmp_path / "d")])
    monkeypatch.undo()
    assert result.exit_code == 2 and result.stderr.startswith("error: No space left on device writing ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list((tmp_path / "d").glob(".*"))
