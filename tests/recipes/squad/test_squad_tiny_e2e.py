"""End to end on a CPU: synthetic SQuAD v2 data, recipes/squad-tiny.toml from scratch, held-out evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import train_run

from llmft.core.evaluation import evaluate_folder
from llmft.recipes.base import load_recipe_config
from llmft.recipes.squad.recipe import SquadRecipe

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_tiny_squad_preset_answers_held_out_questions(tmp_path):
    """The preset's own data command and settings: >= 95% valid JSON, >= 80% exact match, and both the
    unanswerable and the answerable questions above 70% (about 10 minutes on 2 CPU cores)."""
    import torch

    preset = REPO / "recipes" / "squad-tiny.toml"
    command = preset.read_text().splitlines()[0]
    assert '--synthetic 40000 --system-prompt "" --no-instruction --passages' in command
    paths = SquadRecipe().make_data(tmp_path / "data", 0, synthetic=40000, system_prompt="",
                                              no_instruction=True, passages=True)
    config, recipe = load_recipe_config(preset, [f"data.train={paths['train']}", f"data.eval={paths['eval']}",
                                  f"train.output_dir={tmp_path / 'run'}"])
    threads = torch.get_num_threads()
    try:
        result = train_run(config, progress=False)
        final = tmp_path / "run" / "final"
        eval_config, _ = load_recipe_config(final / "llmft.toml", ["eval.max_examples=400"])
        metrics, eval_dir = evaluate_folder(final, eval_config, recipe)
    finally:
        torch.set_num_threads(threads)
    assert result.losses[-1] < 0.1 * result.losses[0]
    assert metrics["examples"] == 400 and metrics["no_answer_examples"] > 100
    assert metrics["valid_json"] >= 95, metrics
    assert metrics["exact_match"] >= 80, metrics
    assert metrics["no_answer"] > 70 and metrics["has_answer"] > 70, metrics
    rows = [json.loads(line) for line in (eval_dir / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 400 and rows[0]["response"].startswith("\n{\n")
