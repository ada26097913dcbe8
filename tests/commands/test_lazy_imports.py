"""Verbs answer --help, config errors and --dry-run without importing torch (which takes seconds to load)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from ..conftest import REPO

# Each call runs in one fresh process, in order; after each, whether torch (or transformers) got imported.
PROBE = """
import json, sys
from llmft.cli import cli
seen = []
for args in json.loads(sys.argv[1]):
    try:
        cli.main(args=args, prog_name="llmft")
        code = 0
    except SystemExit as exc:
        code = exc.code
    seen.append([args, code, "torch" in sys.modules or "transformers" in sys.modules])
print(json.dumps(seen))
"""


def test_help_config_errors_and_dry_run_load_no_torch(tmp_path: Path) -> None:
    final = tmp_path / "run" / "final"
    final.mkdir(parents=True)
    shutil.copy(REPO / "recipes" / "sft-tiny.toml", final / "llmft.toml")
    (final / "adapter_config.json").write_text("{}")
    (tmp_path / "train.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    preset = str(REPO / "recipes" / "sft-tiny.toml")
    verbs = ["make-data", "train", "eval", "export", "estimate", "serve", "recipes", "reproduce"]
    recipes = ["cot-teacher", "memreason", "retuning", "sft", "squad", "uft"]
    calls = [[verb, "--help"] for verb in verbs] + [["make-data", name, "--help"] for name in recipes] + [
        ["recipes"],
        ["train", preset, "--dry-run"],
        ["train", preset, "train.bogus=1"],
        ["train", preset, "data.train=missing.jsonl"],
        ["train", preset, "data.train=train.jsonl", f"train.output_dir={tmp_path / 'new'}", "--resume"],
        ["eval", "--adapter", str(final), "eval.bogus=1"],
        ["eval", "--adapter", str(final), "data.eval=missing.jsonl"],
        ["export", "--adapter", str(final), "--out", str(final.parent)],
        ["serve", "--adapter", str(tmp_path / "missing")],
        ["make-data", "cot-teacher", "--task", "coin_flip", "--teacher", "http://127.0.0.1:9/v1"],
    ]
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(calls)], capture_output=True, text=True,
                          cwd=tmp_path, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert [code for _, code, _ in seen] == [0] * (len(verbs) + len(recipes) + 2) + [2] * 8, done.stderr
    assert [args for args, _, torch in seen if torch] == []
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 8 and errors[1] == "error: data.train: file not found: missing.jsonl"
    assert errors[2].startswith("error: --resume: no complete checkpoint in ")
