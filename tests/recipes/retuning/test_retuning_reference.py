"""Re-Tuning against its reference (Pasewark/ReTuning @5e62ebc): the -llama presets' training settings, the
reference's BOS-free tokenisation, and where our answer parsing differs from the notebooks' (README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmft.core.data import tokenize_record
from llmft.recipes.base import load_recipe_config
from llmft.recipes.retuning.data import addition_recursive_examples
from llmft.recipes.retuning.engine import final_answer

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("task", ["addition", "parity", "dp"])
def test_llama_presets_train_as_the_reference(task):
    """config/model/llama7b.yaml policy_dtype float32; add_special_tokens=False; summed log-probs per
    sequence, mean over the batch; clip 10; torch AdamW's default weight decay 0.01."""
    preset, _ = load_recipe_config(REPO / "recipes" / f"retuning-{task}-llama.toml")
    assert (preset.model.dtype, preset.train.bf16) == ("float32", "false")
    assert preset.model.add_bos is False
    assert preset.train.loss_reduction == "sequence"
    assert (preset.train.max_grad_norm, preset.train.weight_decay, preset.train.warmup_steps) == (10.0, 0.01, 1)
    assert (preset.train.adam_beta1, preset.train.adam_beta2) == (0.9, 0.999)


def test_without_bos_a_record_is_the_references_ids():
    """preference_datasets.py: prompt and completion tokenised apart without special tokens, EOS appended."""
    from llmft.core.config import config_from_dict
    from llmft.core.models import load_tokenizer

    record = addition_recursive_examples(1234, 578)[-1]
    config = config_from_dict({"model": {"add_bos": False}})
    tokenizer = load_tokenizer(config, [record["prompt"] + record["completion"]])
    example = tokenize_record(record, tokenizer, 2048)
    prompt = tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]
    completion = tokenizer(record["completion"], add_special_tokens=False)["input_ids"]
    assert example.input_ids == prompt + completion + [tokenizer.eos_token_id]
    assert example.labels == [-100] * len(prompt) + completion + [tokenizer.eos_token_id]


def test_parsing_where_the_notebooks_read_differently():
    """Ours: the last word for parity, a final '.' dropped for scratchpad DP (README names the reference's)."""
    assert final_answer("parity", "baseline", "10") == "10"  # the notebook's rstrip()[-1] reads "0"
    trace = "Reconstructing all together, output=[1, 2, 1]"
    assert final_answer("dp", "scratchpad", trace + ".") == "[1, 2, 1]"
    assert final_answer("dp", "scratchpad", trace) == "[1, 2, 1]"  # split('=')[-1][:-1] reads "[1, 2, 1"
    assert (trace + ".").split("=")[-1][:-1] == "[1, 2, 1]" and trace.split("=")[-1][:-1] == "[1, 2, 1"
