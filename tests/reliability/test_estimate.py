"""estimate: every `estimate.*` value checked, given subsets checked against the data, and a gradient cache
reused only for the very weights and data it was computed from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmft.cli import cli
from llmft.core.jsonl import write_jsonl
from llmft.recipes.sft.toys import toy_split
from tests.conftest import tiny_config, train_run
from tests.reliability.battery import one_error

SMALL = ["estimate.group_by=task", "estimate.project_dimension=8", "estimate.number_of_subsets=2",
         "estimate.shard_size=8"]
LORA = {"method": "lora", "r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}


@pytest.fixture(scope="module")
def meta(tmp_path_factory) -> dict[str, Path]:
    """A 2-step tiny LoRA run (checkpoint at step 1) on three toy tasks of 6 records each."""
    root = tmp_path_factory.mktemp("estimate")
    train, held_out = [], []
    for seed, task in enumerate(("caesar", "reverse", "add")):
        a, b = toy_split(task, 6, 2, seed=seed)
        train += [{**r, "task": task} for r in a]
        held_out += b
    files = {"train": write_jsonl(root / "train.jsonl", train), "eval": write_jsonl(root / "eval.jsonl", held_out)}
    config = tiny_config(root, files["train"], files["eval"], adapter=LORA, train={"max_steps": 2, "save_steps": 1})
    train_run(config, progress=False)
    return {"root": root, "config": config, "final": root / "run" / "final", **files}


def estimate(folder: Path, *extra: str) -> dict:
    result = CliRunner().invoke(cli, ["estimate", "--adapter", str(folder), *SMALL, *extra])
    assert result.exit_code == 0, (result.output, result.exception)
    out = next((e.split("=", 1)[1] for e in extra if e.startswith("--out=")), None)
    return json.loads((Path(out) if out else folder.parent / "estimate" / folder.name).joinpath(
        "estimate.json").read_text())


@pytest.mark.parametrize(("value", "needle"), [
    ("estimate.project_dimension=0", "'estimate.project_dimension' must be >= 1, got 0"),
    ("estimate.scale=-1", "'estimate.scale' must be > 0, got -1.0"),
    ("estimate.number_of_subsets=0", "'estimate.number_of_subsets' must be >= 1, got 0"),
    ("estimate.shard_size=0", "'estimate.shard_size' must be >= 1, got 0"),
    ("estimate.batch_size=0", "'estimate.batch_size' must be >= 1, got 0"),
    ("estimate.positive_rate=2", "'estimate.positive_rate' must be in (0, 1), got 2.0"),
    ("estimate.max_examples=-1", "'estimate.max_examples' must be >= 0, got -1"),
    ("estimate.fit_fraction=0", "'estimate.fit_fraction' must be in (0, 1], got 0.0"),
    ("estimate.subset_size=1.5", "'estimate.subset_size' must be in (0, 1], got 1.5"),
    ("estimate.regularization=0", "'estimate.regularization' must be > 0"),
    ('estimate.subsets=[["add", "add"]]', "subset 1 names group 'add' twice"),
    ('estimate.subsets=[["add"], []]', "subset 2 is empty"),
    ('estimate.subsets=[["add", "sort"]]', "subset 1 names group 'sort', which no record of estimate.data has"),
])
def test_estimate_values_out_of_range(meta, value, needle):
    before = sorted(meta["root"].rglob("*"))
    one_error(["estimate", "--adapter", meta["final"], *SMALL, value], needle)
    assert sorted(meta["root"].rglob("*")) == before  # nothing written, no cache started


def test_a_null_group_is_an_error_not_a_group_named_none(meta, tmp_path):
    records = [json.loads(line) for line in meta["train"].read_text().splitlines()]
    records[4]["task"] = None
    data = write_jsonl(tmp_path / "data.jsonl", records)
    one_error(["estimate", "--adapter", meta["final"], *SMALL, f"estimate.data={data}"],
              "record 5 has null, not a group name")


def test_a_damaged_shard_is_recomputed(meta, tmp_path):
    out = tmp_path / "e"
    first = estimate(meta["final"], f"--out={out}")
    shard = out / "gradients-d8-seed0" / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:50])
    again = estimate(meta["final"], f"--out={out}")
    assert [r["loss"] for r in again["subsets"]] == [r["loss"] for r in first["subsets"]]


def test_one_out_folder_for_two_checkpoints_never_mixes_their_gradients(meta, tmp_path):
    shared = tmp_path / "shared"
    estimate(meta["root"] / "run" / "checkpoint-1", f"--out={shared}")
    reused = estimate(meta["final"], f"--out={shared}")
    fresh = estimate(meta["final"], f"--out={tmp_path / 'fresh'}")
    assert [r["loss"] for r in reused["subsets"]] == [r["loss"] for r in fresh["subsets"]]


def test_a_retrain_with_overwrite_clears_the_estimates_and_its_cache(meta, tmp_path):
    shared = tmp_path / "shared"
    estimate(meta["final"])
    estimate(meta["final"], f"--out={shared}")
    config = tiny_config(meta["root"], meta["train"], meta["eval"], adapter=LORA,
                         train={"max_steps": 2, "save_steps": 1, "seed": 7, "learning_rate": 1e-2})
    train_run(config, overwrite=True, progress=False)
    assert not (meta["root"] / "run" / "estimate").exists()
    reused = estimate(meta["final"], f"--out={shared}")
    fresh = estimate(meta["final"], f"--out={tmp_path / 'fresh'}")
    assert [r["loss"] for r in reused["subsets"]] == [r["loss"] for r in fresh["subsets"]]


def test_a_full_disk_while_saving_a_shard_is_one_line(meta, tmp_path, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    one_error(["estimate", "--adapter", meta["final"], *SMALL, "--out", tmp_path / "e"],
              "No space left on device writing a tensor file")
