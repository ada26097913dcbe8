"""make-data from a teacher's completions file, then a tiny Llama student trains and evaluates."""

import json

import pytest

from llmft.core.errors import LlmftError
from llmft.core.jsonl import read_jsonl
from llmft.recipes.base import get_recipe, load_recipe_config, recipe_config
from llmft.recipes.cot_teacher.completions import new_completions, save_completions
from llmft.recipes.cot_teacher.formats import zs_cot_step1, zs_cot_step2
from llmft.recipes.cot_teacher.make_data import make_student_data
from llmft.recipes.cot_teacher.tasks import default_split


def worked_teacher_file(tmp_path, task, dataset, wrong_every=3):
    """A teacher CompletionDataset over the train split: the worked rationale, a wrong final answer every
    `wrong_every`-th sample (those must be filtered out)."""
    train, _ = default_split(task, len(dataset["data"]))
    completions = new_completions("worked", "zs_cot", task, "zs_cot")
    for position, index in enumerate(train):
        sample = dataset["data"][index]
        answer = sample["answer"] if position % wrong_every else ("no" if sample["answer"] == "yes" else "yes")
        step1 = zs_cot_step1(sample["question"])
        completions["data"][index] = [{
            "sample_index": index, "completion_index": 0, "question": sample["question"],
            "answer": sample["answer"], "reasoning_prompt": step1, "reasoning_completion": " " + sample["rationale"],
            "prompt": zs_cot_step2(step1, sample["rationale"]), "completion": f" {answer}."}]
    return save_completions(completions, tmp_path / "teacher.json"), train


def test_make_data_filters_by_the_teachers_answer(tmp_path):
    from llmft.recipes.cot_teacher.generators import generate_samples
    from llmft.recipes.cot_teacher.tasks import make_dataset

    dataset = make_dataset("coin_flip", generate_samples("coin_flip", 30, seed=0))
    teacher, train = worked_teacher_file(tmp_path, "coin_flip", dataset)
    paths = make_student_data(tmp_path / "data", 0, task="coin_flip", n=30, completions_file=str(teacher))
    records = read_jsonl(paths["train"])
    assert len(train) == 21 and len(records) == 14  # every third teacher answer was wrong
    first = records[0]
    sample = dataset["data"][first["sample_index"]]
    assert first["prompt"] == sample["question"] + " ###"
    assert first["completion"] == f" {sample['rationale']} --> {sample['answer']}"
    held_out = read_jsonl(paths["eval"])
    assert len(held_out) == 9 and held_out[0]["template"] == "ft_cot_token"
    assert held_out[0]["prompt"].endswith(" ###")
    assert json.loads((tmp_path / "data" / "dataset.json").read_text())["metadata"] == {"dataset_key": "coin_flip"}
    with pytest.raises(LlmftError, match="needs --teacher"):
        make_student_data(tmp_path / "x", 0, task="coin_flip", n=30)
    paths = make_student_data(tmp_path / "natural", 0, task="coin_flip", n=30, completions_file=str(teacher),
                              template="ft_cot_natural")
    natural = read_jsonl(paths["train"])
    assert [r["sample_index"] for r in natural] == [r["sample_index"] for r in records]
    assert natural[0]["prompt"] == f"Q: {sample['question']}\n\nA: Let's think step by step.\n\n"
    assert natural[0]["completion"] == f" {sample['rationale']}\n\nTherefore the answer is {sample['answer']}"
    assert read_jsonl(paths["eval"])[0]["template"] == "ft_cot_natural"
    with pytest.raises(LlmftError, match="give --dataset"):
        make_student_data(tmp_path / "x", 0, task="gsm8k", template="ft_token")


def student_config(tmp_path, data, method="full", tiny=None):
    raw = {
        "recipe": "cot-teacher",
        "model": {"name": "tiny", "tokenizer": "char",
                  "tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, **(tiny or {})}},
        "adapter": {"method": method, "r": 4, "alpha": 8},
        "data": {"train": str(data["train"]), "eval": str(data["eval"]), "max_length": 512, "packing": "none"},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 30, "batch_size": 8, "learning_rate": 3e-3,
                  "bf16": "false", "logging_steps": 1},
        "eval": {"max_new_tokens": 120, "batch_size": 16, "max_examples": 8},
    }
    return recipe_config(raw, source="test")


def test_tiny_llama_student_trains_and_evaluates(tmp_path, saved_figures):
    from llmft.core.evaluation import evaluate_folder
    from llmft.core.trainer import train
    from llmft.recipes.cot_teacher.generators import generate_samples
    from llmft.recipes.cot_teacher.tasks import make_dataset

    dataset = make_dataset("coin_flip", generate_samples("coin_flip", 60, seed=0, size=2))
    teacher, _ = worked_teacher_file(tmp_path, "coin_flip", dataset)
    data = make_student_data(tmp_path / "data", 0, task="coin_flip", n=60, size=2, completions_file=str(teacher))
    config = student_config(tmp_path, data)
    result = train(config, get_recipe("cot-teacher"), progress=False)
    assert result.losses[-1] < 0.6 * result.losses[0]
    folder = tmp_path / "run" / "final"
    metrics, eval_dir = evaluate_folder(folder, *load_recipe_config(folder / "llmft.toml"))
    rows = read_jsonl(eval_dir / "results.jsonl")
    assert metrics["n"] == len(rows) == 8 and metrics["task"] == "coin_flip"
    assert metrics["accuracy"] == sum(r["correct"] for r in rows) / 8
    completions = json.loads((eval_dir / "completions.json").read_text())
    assert completions["metadata"]["prediction_template"] == "ft_cot_token"
    assert sum(len(v) for v in completions["data"].values()) == 8
    assert (eval_dir / "accuracy.png").is_file()
    assert saved_figures["accuracy.png"]["title"] == f"cot-teacher coin_flip (ft_cot_token) on {data['eval']}"
    runs = {"a": dict(metrics), "b": dict(metrics, data_eval="/other/eval.jsonl")}
    get_recipe("cot-teacher").compare(runs, tmp_path / "compare")
    assert saved_figures["accuracy.png"]["title"] == (
        f"cot-teacher coin_flip on 2 different eval sets (/other/eval.jsonl, {data['eval']})")


@pytest.mark.parametrize("method", ["full", "lora"])
def test_tiny_t5_student_trains_and_evaluates(tmp_path, method):
    from llmft.core.evaluation import evaluate_folder
    from llmft.core.trainer import train
    from llmft.recipes.cot_teacher.generators import generate_samples
    from llmft.recipes.cot_teacher.tasks import make_dataset

    dataset = make_dataset("coin_flip", generate_samples("coin_flip", 60, seed=0, size=2))
    teacher, _ = worked_teacher_file(tmp_path, "coin_flip", dataset)
    data = make_student_data(tmp_path / "data", 0, task="coin_flip", n=60, size=2, completions_file=str(teacher),
                             model_type="encoder_decoder")
    first = read_jsonl(data["train"])[0]
    assert not first["prompt"].endswith("###") and not first["completion"].startswith(" ")
    config = student_config(tmp_path, data, method=method, tiny={"architecture": "t5"})
    if method == "lora":
        config.adapter.target_modules = ["q", "k", "v", "o"]
        config.train.learning_rate = 1e-2
    result = train(config, get_recipe("cot-teacher"), progress=False)
    assert result.losses[-1] < 0.6 * result.losses[0]
    folder = tmp_path / "run" / "final"
    metrics, eval_dir = evaluate_folder(folder, *load_recipe_config(folder / "llmft.toml"))
    rows = read_jsonl(eval_dir / "results.jsonl")
    assert metrics["n"] == len(rows) == 8
    assert metrics["accuracy"] == sum(r["correct"] for r in rows) / 8
    assert all(not r["completion"].startswith(r["prompt"]) for r in rows)


def test_best_epoch_on_test_reads_the_evaluated_checkpoints(tmp_path):
    from llmft.recipes.cot_teacher.evaluate import best_epoch_on_test

    for name, accuracy in (("checkpoint-10", 0.4), ("checkpoint-20", 0.7), ("other", 0.99)):
        (tmp_path / "eval" / name).mkdir(parents=True)
        (tmp_path / "eval" / name / "metrics.json").write_text(json.dumps({"accuracy": accuracy}))
    assert best_epoch_on_test(tmp_path, {"final": 0.5}) == {
        "best_epoch_on_test_accuracy": 0.7, "best_epoch_on_test_checkpoint": "checkpoint-20",
        "checkpoints_evaluated": 3}


def test_make_data_command(tmp_path):
    from click.testing import CliRunner

    from llmft.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["make-data", "cot-teacher", "--task", "coin_flip", "--format", "ft_token",
                                  "--out", str(tmp_path / "van")])
    assert result.exit_code == 0, result.output
    assert "train: " in result.output and "(350 records)" in result.output and "(150 records)" in result.output
    result = runner.invoke(cli, ["make-data", "cot-teacher", "--task", "gsm8k", "--out", str(tmp_path / "g")])
    assert result.exit_code == 2 and "give --dataset" in result.output
