"""The CPU miniature: a tiny Llama from scratch on the synthetic task, with planning tokens vs plain CoT text vs
answer-only (recipes/memreason-tiny.toml; docs/recipes/memreason.md holds the measured table: 0.81 / 0.905 / 0.735,
chance 0.44; 7 to 13 minutes on the shared 2-core machine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmft.recipes.base import get_recipe, load_recipe_config
from llmft.recipes.memreason.data import VARIANTS

REPO = Path(__file__).resolve().parents[3]

SYNTHETIC, HELD_OUT = 4000, 200


@pytest.mark.slow
def test_tiny_tokens_vs_cot_vs_answer_only(tmp_path: Path) -> None:
    from llmft.core.evaluation import evaluate_folder
    from llmft.core.trainer import train
    from llmft.recipes.memreason.evaluate import compare_table

    recipe = get_recipe("memreason")
    results = {}
    for variant in VARIANTS:
        paths = recipe.make_data(tmp_path / "data" / variant, 0, synthetic=SYNTHETIC, synthetic_test=HELD_OUT,
                                 variant=variant, num_prefix_tokens=2, num_special_tokens=2)
        run = tmp_path / f"run-{variant}"
        overrides = [f"data.train={paths['train']}", f"data.eval={paths['eval']}", f"train.output_dir={run}",
                     f"memreason.variant={variant}", "train.threads=1"]  # one thread, as every test
        config, recipe = load_recipe_config(REPO / "recipes" / "memreason-tiny.toml", overrides)
        train(config, recipe, progress=False)
        config, _ = load_recipe_config(run / "final" / "llmft.toml")
        metrics, eval_dir = evaluate_folder(run / "final", config, recipe)
        results[variant] = metrics
        if variant == "tokens":
            rows = [json.loads(line) for line in (eval_dir / "results.jsonl").read_text().splitlines()]
            assert sum("<memory_0>" in r["generated"] and "<reason_0>" in r["generated"] for r in rows) > 0.9 * len(rows)
    table = compare_table({variant: m for variant, m in results.items()})
    by_kind = {v: m["accuracy_by_kind"] for v, m in results.items()}
    print("\n" + table + json.dumps(by_kind, indent=1))
    chance = results["tokens"]["chance"]
    assert results["tokens"]["n"] == results["cot"]["n"] == results["answer-only"]["n"] == HELD_OUT
    for variant in ("tokens", "cot"):
        assert results[variant]["accuracy"] > chance + 0.25, (variant, results[variant]["accuracy"], chance)
        assert results[variant]["step_type_agreement"] > 0.95
