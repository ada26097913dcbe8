"""`llmft estimate` end to end on a tiny LoRA meta-initialisation trained on three toy tasks."""

import json

from click.testing import CliRunner

from llmft.cli import cli
from llmft.core.jsonl import write_jsonl
from llmft.recipes.sft.toys import toy_split

from ..conftest import tiny_config, train_run


def test_estimate_ranks_groups_caches_gradients_and_reports_errors(tmp_path):
    train_records, eval_records = [], []
    for seed, task in enumerate(("caesar", "reverse", "add")):
        a, b = toy_split(task, 24, 4, seed=seed)
        train_records += [{**r, "task": task} for r in a]
        eval_records += b
    train_file = write_jsonl(tmp_path / "train.jsonl", train_records)
    eval_file = write_jsonl(tmp_path / "eval.jsonl", eval_records)
    config = tiny_config(tmp_path, train_file, eval_file,
                         adapter={"method": "lora", "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                         train={"max_steps": 8, "learning_rate": 1e-2})
    train_run(config, progress=False)
    folder = tmp_path / "run" / "final"
    args = ["estimate", "--adapter", str(folder), "estimate.group_by=task", "estimate.project_dimension=16",
            "estimate.number_of_subsets=4", "estimate.approximation_examples=6", "estimate.shard_size=32",
            "estimate.metric=true", "eval.max_examples=3", "eval.max_new_tokens=4"]
    done = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    out = tmp_path / "run" / "estimate" / "final"
    report = json.loads((out / "estimate.json").read_text())
    rows = report["subsets"]
    # int(half of three tasks) = one task each: four draws, at most three distinct subsets.
    assert report["subsets_drawn"] == 4 and report["subsets_distinct"] == len(rows) <= 3
    assert len({tuple(r["groups"]) for r in rows}) == len(rows) and all(len(r["groups"]) == 1 for r in rows)
    assert all(r["examples"] == 24 for r in rows)
    assert f"4 subsets drawn, {len(rows)} distinct" in done.output
    assert all(len(r["losses"]) == 3 and r["loss_low"] <= r["loss"] <= r["loss_high"] for r in rows)
    assert {r["group"] for r in report["ranking"]} <= {"caesar", "reverse", "add"}
    assert all("exact_match" in r and 0 <= r["approx_error"] for r in rows)
    # Each estimate moved the model: its loss differs from the meta-initialisation's.
    assert all(abs(r["loss"] - report["meta_loss"]) > 1e-6 for r in rows)
    assert report["chosen_subset"] == min(rows, key=lambda r: r["loss"])["subset"]
    # A verdict only where the repeats' spread allows one.
    assert ("no chosen subset" not in done.output) == report["chosen"]
    assert ("no ranking" in done.output) == (not report["ranked"])
    assert "score" in done.output
    shards = sorted((out / "gradients-d16-seed0").glob("shard-*.safetensors"))
    assert len(shards) == 3  # 72 examples in shards of 32
    stamps = [s.stat().st_mtime_ns for s in shards]

    given = CliRunner().invoke(cli, [*args[:5], "estimate.shard_size=32",
                                             'estimate.subsets=[["add"], ["caesar", "reverse"]]'],
                               catch_exceptions=False)
    assert given.exit_code == 0, given.output
    again = json.loads((out / "estimate.json").read_text())
    assert [r["groups"] for r in again["subsets"]] == [["add"], ["caesar", "reverse"]]
    assert [s.stat().st_mtime_ns for s in shards] == stamps  # the cached gradients were reused

    clustered = CliRunner().invoke(cli, [*args[:5], "estimate.shard_size=32", "estimate.clusters=3"],
                                   catch_exceptions=False)
    assert clustered.exit_code == 0, clustered.output
    by_cluster = json.loads((out / "estimate.json").read_text())
    assert {g for r in by_cluster["subsets"] for g in r["groups"]} <= {"c0", "c1", "c2"}
    assert [s.stat().st_mtime_ns for s in shards] == stamps  # clustered from the cached gradients

    bad = CliRunner().invoke(cli, [*args[:3], "estimate.group_by=missing"])
    assert bad.exit_code == 2 and "has no such field" in bad.output


def test_estimate_against_a_real_fine_tune_of_the_meta_initialisation(tmp_path):
    records = []
    for seed, task in enumerate(("caesar", "reverse")):
        records += [{**r, "task": task} for r in toy_split(task, 16, 0, seed=seed)[0]]
    data = write_jsonl(tmp_path / "all.jsonl", records)
    subset = write_jsonl(tmp_path / "caesar.jsonl", [r for r in records if r["task"] == "caesar"])
    meta = tiny_config(tmp_path / "meta", data, data, train={"max_steps": 8, "learning_rate": 1e-2})
    train_run(meta, progress=False)
    meta_folder = tmp_path / "meta" / "run" / "final"
    tuned = tiny_config(tmp_path / "ft", subset, data, adapter={"method": "full", "init_from": str(meta_folder)},
                        train={"max_steps": 6, "learning_rate": 3e-3})
    train_run(tuned, progress=False)
    run = tmp_path / "ft" / "run" / "final"
    args = ["estimate", "--adapter", str(meta_folder), "estimate.group_by=task", "estimate.project_dimension=16",
            "estimate.number_of_subsets=2", "estimate.approximation_examples=6", f'estimate.finetuned=["{run}"]']
    done = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    (row,) = json.loads((tmp_path / "meta" / "run" / "estimate" / "final" / "estimate.json").read_text())["finetuned"]
    assert row["examples"] == 16  # the caesar records, found by content
    assert abs(row["relative_error"] - abs(row["loss"] - row["true_loss"]) / row["true_loss"]) < 1e-12
    assert row["update_norm_ratio"] > 0 and row["approx_error"] >= 0 and row["approx_error_without_gradient"] > 0
    assert "real fine-tunes" in done.output
    wrong = CliRunner().invoke(cli, [*args[:-1], f'estimate.finetuned=["{meta_folder}"]'])
    assert wrong.exit_code == 2 and "must fine-tune" in wrong.output
