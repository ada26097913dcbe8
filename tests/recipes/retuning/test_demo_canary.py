"""The demo's canary: its preset, scaled down (1-2 digit problems, 150 steps of 16 rows), must get under a loss
the demo passes through on its way to 1.00, in fp32 and in bf16, so a change to numerics (attention, logits
selection, init, packing, positions) or to the preset's optimiser that stalls `make demo` fails CI first."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import fresh_accelerate, train_run

from llmft.recipes.base import get_recipe, load_recipe_config

REPO = Path(__file__).resolve().parents[3]
DEMO_PRESET = REPO / "recipes" / "retuning-addition-tiny.toml"
# The demo's model, positions, learning rate, schedule and decay; fewer sizes, steps and rows.
SCALED_DOWN = ["train.max_steps=150", "train.batch_size=16", "train.warmup_steps=8", "train.save_steps=0",
               "train.eval_steps=0", "train.logging_steps=1"]
# The mean of the last 20 losses: the preset ends at 0.23 (fp32) and 0.24 (bf16); with its learning rate 10x off
# either way it stays above 0.30 (1e-2) and 1.2 (1e-4).
THRESHOLD = 0.27


def scaled_down_losses(tmp_path: Path, overrides: list[str]) -> list[float]:
    """The training losses of the scaled-down demo with `overrides` on top."""
    paths = get_recipe("retuning").make_data(tmp_path / "data", 0, task="addition", fmt="recursive",
                                             min_size=1, max_size=2, n=3000, resample=False)
    config, _ = load_recipe_config(DEMO_PRESET, [
        *SCALED_DOWN, f"data.train={paths['train']}", f"data.eval={paths['eval']}",
        f"train.output_dir={tmp_path / 'run'}", *overrides])
    fresh_accelerate()  # accelerate keeps one precision per process: start this one's, leave none behind
    try:
        return train_run(config).losses
    finally:
        fresh_accelerate()


@pytest.mark.parametrize("bf16", ["false", "true"])
def test_the_demo_preset_learns_in_both_precisions(tmp_path: Path, bf16: str):
    losses = scaled_down_losses(tmp_path, [f"train.bf16={bf16}"])
    tail = sum(losses[-20:]) / 20
    assert losses[0] > 1.0 and tail < THRESHOLD, f"train.bf16={bf16}: last 20 losses average {tail:.4f}"
