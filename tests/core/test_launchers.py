"""Under torchrun and accelerate launch: one final line, one progress, one error line (from rank 0)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import REPO


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


@pytest.mark.slow
def test_torchrun_prints_once_and_shards_the_heldout_loss(tmp_path, caesar_data):
    train_file, eval_file = caesar_data
    toml = tmp_path / "run.toml"
    toml.write_text(f"""recipe = "sft"
[model]
name = "tiny"
[model.tiny]
hidden_size = 32
num_layers = 1
num_heads = 2
[adapter]
method = "full"
[data]
train = "{train_file}"
eval = "{eval_file}"
pack_length = 64
[train]
output_dir = "{tmp_path / 'run'}"
max_steps = 6
batch_size = 2
eval_steps = 3
eval_examples = 9
bf16 = "false"
threads = 1
""")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
                "-m", "llmft"]
    done = _run([*torchrun, "train", str(toml)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    finals = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("trained 6 steps")]
    assert len(finals) == 1, done.stdout + done.stderr
    assert "held-out loss" in finals[0]
    assert (tmp_path / "run/summary.md").is_file()

    # The 2-process held-out loss (9 examples split 5 + 4, reduced) equals one process scoring them all.
    from llmft.core.data import load_examples
    from llmft.core.inference import load_for_inference
    from llmft.core.scoring import example_losses

    _, tokenizer, model = load_for_inference(tmp_path / "run/final")
    examples = load_examples(eval_file, tokenizer, 1024, what="data.eval", limit=9)
    expected = sum(example_losses(model, examples, tokenizer.pad_token_id, reduction="sum")) / sum(
        e.trained for e in examples)
    assert f"held-out loss {expected:.4f}" in finals[0]

    bad = _run([*torchrun, "train", str(toml), "train.learnin_rate=1"], tmp_path)
    errors = [line for line in (bad.stdout + bad.stderr).splitlines() if line.startswith("error: ")]
    assert bad.returncode != 0 and len(errors) == 1, bad.stderr
    assert "did you mean 'train.learning_rate'" in errors[0]
    assert "Traceback" not in bad.stderr.split("error: ")[0]  # llmft's own part has no traceback
    # torchrun's failure summary names the error too (torch elastic's error file), not "To enable traceback".
    root_cause = bad.stderr.split("Root Cause")[1]
    assert "traceback : error: " in root_cause and "did you mean 'train.learning_rate'" in root_cause, bad.stderr
