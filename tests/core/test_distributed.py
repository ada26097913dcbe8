"""Two CPU processes (torchrun + gloo, picked up by accelerate) split the data between them."""

import json
import subprocess
import sys
import textwrap

import pytest

from ..conftest import REPO


@pytest.mark.slow
def test_two_process_cpu_run_splits_the_data(tmp_path, caesar_data):
    train_file, _ = caesar_data
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, sys
        sys.path.insert(0, {str(REPO)!r})
        import torch
        torch.set_num_threads(1)
        from tests.conftest import tiny_config
        from tests.conftest import train_run
        from pathlib import Path
        config = tiny_config(Path({str(tmp_path)!r}), Path({str(train_file)!r}),
                             train={{"max_steps": 6, "batch_size": 2, "save_steps": 3}})
        result = train_run(config, progress=False)
        rank = int(os.environ["RANK"])
        Path({str(tmp_path)!r}, f"seen-{{rank}}.json").write_text(json.dumps(
            {{"rows": result.trained_on, "loss": result.final_loss, "world": int(os.environ["WORLD_SIZE"])}}))
    """))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29533", str(script)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = (json.loads((tmp_path / f"seen-{r}.json").read_text()) for r in (0, 1))
    assert a["world"] == b["world"] == 2
    assert len(a["rows"]) == len(b["rows"]) == 12  # 6 steps x batch 2 each
    assert not set(a["rows"]) & set(b["rows"])  # different halves of the data
    assert a["loss"] == pytest.approx(b["loss"])  # the reported loss is reduced over both ranks
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "checkpoint-3" / "rng-1.pt").is_file()
