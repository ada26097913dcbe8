"""The whole uft flow on CPU with the tiny presets (make test-slow): pretrain with and without Twist, delete
Twist (filtering + adversarial), recover it, and read the generation scores and the Twist probe."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.conftest import eval_run, train_run

from llmft.core.jsonl import read_jsonl
from llmft.recipes.base import load_recipe_config
from llmft.recipes.uft.probes import split_indices
from llmft.recipes.uft.recipe import UftRecipe

RECIPES = Path(__file__).resolve().parents[3] / "recipes"


def run_flow(root: Path, overrides: dict[str, list[str]] | None = None) -> dict:
    """The README's tiny flow in `root`; `overrides` per preset (pretrain, deletion, recovery).

    Returns {"metrics": {run: metrics}, "seconds": {stage: wall seconds}, "majority": Twist majority rate
    of the probes' test split}.
    """
    overrides = overrides or {}
    data, runs = root / "data", root / "runs"
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    UftRecipe().make_data(data, seed=0, preset="deletion-suite")
    seconds["make-data"] = time.perf_counter() - started
    sets = [f"data.eval={data}/pretrain-all/eval.jsonl", f"uft.task_set={data}/recovery-Twist/eval.jsonl",
            f"uft.complement_set={data}/filter-Twist/eval.jsonl",
            f"uft.adversarial_set={data}/filter-adv-Twist/eval.jsonl", "train.threads=2"]

    def run(preset: str, name: str, train_set: str, *extra: str) -> Path:
        start = time.perf_counter()
        config, _ = load_recipe_config(RECIPES / f"uft-{preset}-tiny.toml",
                             [*sets, f"data.train={data}/{train_set}/train.jsonl",
                              f"train.output_dir={runs / name}", *extra, *overrides.get(preset, [])])
        train_run(config, progress=False)
        seconds[name] = time.perf_counter() - start
        return runs / name / "final"

    twist = run("pretrain", "pretrain", "pretrain-all")
    no_twist = run("pretrain", "pretrain-no-twist", "filter-Twist")
    deleted = run("deletion", "deletion", "filter-adv-Twist", f"model.name={twist}")
    recovered = run("recovery", "recovery", "recovery-Twist", f"model.name={deleted}")
    recovered_no_twist = run("recovery", "recovery-no-twist", "recovery-Twist", f"model.name={no_twist}")
    metrics = {}
    start = time.perf_counter()
    for name, folder in (("pretrain", twist), ("pretrain-no-twist", no_twist), ("deletion", deleted),
                         ("recovery", recovered), ("recovery-no-twist", recovered_no_twist)):
        metrics[name] = eval_run(folder, [])[0]
    seconds["eval"] = time.perf_counter() - start
    # The probes' test split of the ID set, as probe_accuracy draws it (eval.seed = 0, 20%).
    records = read_jsonl(data / "pretrain-all" / "eval.jsonl")[:1000]
    _, test = split_indices(len(records), 0.2, seed=0)
    rate = sum("Twist" in records[i]["story_features"] for i in test) / len(test)
    return {"metrics": metrics, "seconds": seconds, "majority": max(rate, 1 - rate)}


@pytest.mark.slow
def test_twist_is_deleted_recovered_and_still_decodable(tmp_path):
    """Measured (README-uft): Twist score 0.97 with Twist in pretraining, 0.00 without; 0.00 after deletion;
    0.98 after 30 reFT steps (0.00 from the model pretrained without Twist); Twist probe 0.925 on the
    deleted model against a majority rate of 0.72."""
    flow = run_flow(tmp_path)
    m = flow["metrics"]
    twist, no_twist = m["pretrain"]["generation_score"], m["pretrain-no-twist"]["generation_score"]
    deleted = m["deletion"]["generation_score"]
    curve = {int(k.split("/")[1]): v for k, v in m["recovery"].items() if k.startswith("recovery/")}
    curve_no_twist = {int(k.split("/")[1]): v for k, v in m["recovery-no-twist"].items()
                      if k.startswith("recovery/")}
    probe = max(v for k, v in m["deletion"].items() if k.startswith("probe/Twist/"))
    summary = (f"twist {twist} no-twist {no_twist} deleted {deleted} recovery {curve} "
               f"recovery-no-twist {curve_no_twist} probe {probe} {flow}")
    assert twist >= no_twist + 0.5, summary
    assert deleted <= twist - 0.5 and curve[0] <= twist - 0.5, summary  # step 0 is the deleted model
    assert curve[30] >= deleted + 0.5, summary
    # The paper's reading: the deleted capability comes back far faster than it is learnt from scratch.
    assert curve[30] >= curve_no_twist[30] + 0.5, summary
    assert probe >= flow["majority"] + 0.1, summary
