import json
import math

import pytest
import torch

from llmft.core.config import config_to_toml
from llmft.core.errors import LlmftError
from llmft.core.generation import HFGenerator
from llmft.core.tokenizers import train_tokenizer
from llmft.recipes.base import recipe_config
from llmft.recipes.uft.evaluate import (
    compare_runs,
    evaluate_uft,
    recovery_folder,
    recovery_table,
    set_loss,
    story_prompts,
)
from llmft.recipes.uft.recipe import UftRecipe

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    UftRecipe().make_data(out, seed=0, n_stories=120, n_eval=40, preset="deletion-suite")
    return out


@pytest.fixture(scope="module")
def tiny(suite):
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = [json.loads(line)["text"] for line in (suite / "pretrain-all" / "train.jsonl").open()]
    tokenizer = train_tokenizer(texts, "bpe", vocab_size=400)
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval(), tokenizer


def read(path):
    return [json.loads(line) for line in path.open()]


def test_set_loss_is_the_token_weighted_mean_of_each_record(suite, tiny):
    model, tokenizer = tiny
    records = read(suite / "pretrain-all" / "eval.jsonl")[:3]
    losses, counts = [], []
    for record in records:
        ids = torch.tensor([tokenizer(record["text"])["input_ids"] + [tokenizer.eos_token_id]])
        with torch.no_grad():
            losses.append(model(input_ids=ids, labels=ids).loss.item())
        counts.append(ids.shape[1] - 1)
    expected = sum(loss * n for loss, n in zip(losses, counts, strict=True)) / sum(counts)
    assert set_loss(model, tokenizer, records, batch_size=3) == pytest.approx(expected, rel=1e-5)
    assert set_loss(model, tokenizer, records[:1]) == pytest.approx(losses[0], rel=1e-5)
    assert abs(expected - math.log(len(tokenizer))) < 0.1  # random init: near uniform


def test_prompts_request_the_feature_and_end_at_story(suite):
    records = read(suite / "filter-adv-Twist" / "eval.jsonl")
    prompts = story_prompts(records, "Twist", 5)
    assert len(prompts) == 5
    for prompt in prompts:
        assert prompt.endswith("\nStory:") and any(
            line.startswith("Features: ") and "Twist" in line for line in prompt.split("\n"))
    assert story_prompts(read(suite / "filter-Twist" / "eval.jsonl"), "Twist", 5) == []


def test_recovery_table_has_the_reference_layout():
    table = recovery_table({0: {"Not in pretraining": 0.12, "Filtering 1e-5": 0.69},
                            30: {"Not in pretraining": 0.31, "Filtering 1e-5": 0.88},
                            270: {"Not in pretraining": 0.44}, 3000: {"Not in pretraining": 0.8125}})
    assert table.splitlines() == [
        "| deletion (LR) | 0 | 30 | 270 | 3000 |",
        "|---|---|---|---|---|",
        "| Not in pretraining | 0.12 | 0.31 | 0.44 | 0.81 |",
        "| Filtering 1e-5 | 0.69 | 0.88 | - | - |",
    ]


class Counting:
    """A generator wrapper that counts prompts, to check a resumed evaluation generates nothing again."""

    def __init__(self, inner):
        self.inner, self.model, self.tokenizer, self.prompts = inner, inner.model, inner.tokenizer, 0

    def generate(self, prompts, **kwargs):
        self.prompts += len(prompts)
        return self.inner.generate(prompts, **kwargs)


def uft_config(suite, tmp_path, **section):
    return recipe_config({
        "recipe": "uft",
        "data": {"eval": str(suite / "pretrain-all" / "eval.jsonl")},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 4},
        "eval": {"batch_size": 4},
        "uft": {"task_set": str(suite / "recovery-Twist" / "eval.jsonl"),
                "complement_set": str(suite / "filter-Twist" / "eval.jsonl"),
                "adversarial_set": str(suite / "filter-adv-Twist" / "eval.jsonl"),
                "loss_examples": 6, "n_generations": 6, "story_tokens": 12, "probe_examples": 30,
                "probe_steps": 20, **section},
    })


def test_evaluate_writes_losses_scores_probes_and_resumes(suite, tiny, tmp_path):
    model, tokenizer = tiny
    generator = Counting(HFGenerator(model, tokenizer, batch_size=4))
    config = uft_config(suite, tmp_path)
    metrics = evaluate_uft(generator, config, config.section, tmp_path / "eval")
    assert set(metrics) >= {"loss/id", "loss/task", "loss/complement", "loss/adversarial", "generation_score",
                            "probe/Twist/layer1", "probe_accuracy"}
    assert generator.prompts == 6
    rows = read(tmp_path / "eval" / "results.jsonl")
    generations = [r for r in rows if r["kind"] == "generation"]
    assert [r["index"] for r in generations] == [["generation", None, i] for i in range(6)]
    assert metrics["generation_score"] == sum(r["has_feature"] for r in generations) / 6
    assert {r["set"] for r in rows if r["kind"] == "loss"} == {"id", "task", "complement", "adversarial"}
    assert (tmp_path / "eval" / "losses.png").stat().st_size > 0
    assert (tmp_path / "eval" / "probes.png").stat().st_size > 0
    config = uft_config(suite, tmp_path)
    again = evaluate_uft(generator, config, config.section, tmp_path / "eval")
    assert generator.prompts == 6 and again == metrics


def test_unknown_feature_is_a_one_line_error(suite, tiny, tmp_path):
    model, tokenizer = tiny
    with pytest.raises(LlmftError, match="unknown feature 'twist' \\(did you mean 'Twist'\\?\\)"):
        config = uft_config(suite, tmp_path, feature="twist")
        evaluate_uft(HFGenerator(model, tokenizer), config, config.section, tmp_path)


def test_recovery_curve_reads_the_start_model_and_checkpoints(suite, tiny, tmp_path):
    model, tokenizer = tiny
    start, run = tmp_path / "deleted" / "final", tmp_path / "run"
    config = uft_config(suite, tmp_path, recovery_steps=[0, 2, 4], probes=False, n_generations=2)
    config.model.name = str(start)
    config.adapter.method = "full"
    for folder in (start, run / "checkpoint-2", run / "final"):
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "llmft.toml").write_text(config_to_toml(config))
    assert recovery_folder(config, 4) == run / "final"
    metrics = evaluate_uft(HFGenerator(model, tokenizer, batch_size=4), config, config.section, tmp_path / "eval")
    assert {"recovery/0", "recovery/2", "recovery/4"} <= set(metrics)
    assert (tmp_path / "eval" / "recovery.png").is_file()
    assert (tmp_path / "eval" / "recovery_table.md").read_text().startswith("| deletion (LR) | 0 | 2 | 4 |")
    with pytest.raises(LlmftError, match="no checkpoint for step 3"):
        recovery_folder(config, 3)


def test_compare_draws_curves_from_recovery_metrics_or_checkpoint_labels(tmp_path):
    plot = compare_runs({
        "adv/final": {"feature": "Twist", "recovery/0": 0.1, "recovery/30": 0.5},
        "filt/checkpoint-30": {"generation_score": 0.75},
        "filt/checkpoint-270": {"generation_score": 0.5},
    }, tmp_path)
    assert plot.is_file()
    assert (tmp_path / "recovery_table.md").read_text().splitlines()[2:] == [
        "| adv/final | 0.10 | 0.50 | - |", "| filt | - | 0.75 | 0.50 |"]
