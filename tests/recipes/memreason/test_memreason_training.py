"""memreason training: LoRA on the MLP + the new tokens' input and output rows train, every old row stays put."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from llmft.core.jsonl import write_jsonl
from llmft.recipes.base import get_recipe, recipe_config
from llmft.recipes.memreason.data import Report, build_records
from llmft.recipes.memreason.synthetic import synthetic_splits


def memreason_config(tmp_path: Path, method: str = "lora+prompt-tuning", **train: object):
    raw = synthetic_splits(120, 10, random.Random(0))
    paths = {}
    for split, rows in raw.items():
        records = build_records([(f"{split}#{i}", r) for i, r in enumerate(rows)], "synthetic", "tokens", 1, 1,
                                Report())
        paths[split] = write_jsonl(tmp_path / f"{split}.jsonl", records)
    return recipe_config({
        "recipe": "memreason",
        "model": {"name": "tiny", "tokenizer": "char", "tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 2}},
        "adapter": {"method": method, "r": 4, "alpha": 4, "dropout": 0.05,
                    "target_modules": ["gate_proj", "up_proj", "down_proj"]},
        "data": {"train": str(paths["train"]), "eval": str(paths["test"]), "packing": "none"},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 4, "batch_size": 8, "learning_rate": 1e-2,
                  "bf16": "false", "logging_steps": 1, **train},
        "eval": {"max_new_tokens": 8},
        "memreason": {"num_prefix_tokens": 1, "num_special_tokens": 1},
    }, source="test")


def test_new_rows_and_lora_train_old_rows_stay_bit_identical(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from llmft.core.export import export_merged
    from llmft.core.inference import load_for_inference
    from llmft.core.trainer import train

    config = memreason_config(tmp_path)
    train(config, get_recipe("memreason"), progress=False)
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "base-model")
    _, tokenizer, model = load_for_inference(tmp_path / "run" / "final")
    new_ids = [tokenizer.convert_tokens_to_ids(t) for t in get_recipe("memreason").special_tokens(config)]
    assert new_ids == list(range(min(new_ids), len(tokenizer)))  # the recipe's tokens are the last rows
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(float(p.abs().sum()) > 0 for p in lora_b)  # LoRA B starts at zero: it trained
    assert all(any(m in n for m in ("gate_proj", "up_proj", "down_proj")) for n, _ in model.named_parameters()
               if "lora_" in n)
    merged = model.merge_and_unload()
    unk = tokenizer.unk_token_id  # "memory" etc. are no tokens of a char tokenizer: rows started at unk's
    for name in ("get_input_embeddings", "get_output_embeddings"):
        before, after = getattr(base, name)().weight, getattr(merged, name)().weight
        old = min(new_ids)
        assert torch.equal(before[:old], after[:old]), name  # every old row bit-identical
        for token, i in zip(get_recipe("memreason").special_tokens(config), new_ids):
            if name == "get_input_embeddings" and token == "<assignment_0>":
                # No synthetic step is untyped: this input row never appears, so it keeps its initial value.
                assert torch.equal(after[i], before[unk])
                continue
            assert not torch.equal(after[i], before[unk]), (name, token)  # moved away from the initial row

    # Export carries the trained rows: the merged folder gives the adapter model's logits.
    report = export_merged(tmp_path / "run" / "final", tmp_path / "merged")
    assert report["max_abs_logit_diff"] < 1e-4
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert torch.equal(exported.get_output_embeddings().weight[new_ids], merged.get_output_embeddings().weight[new_ids])


def test_new_rows_start_from_the_literal_word() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmft.core.models import init_token_rows
    from llmft.core.tokenizers import train_tokenizer
    from llmft.recipes.memreason.tokens import all_tokens

    tokenizer = train_tokenizer(["memory reason answer"], "bpe", vocab_size=300, extra_tokens=all_tokens(1, 1))
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, tie_word_embeddings=False))
    config = recipe_config({"recipe": "memreason", "memreason": {"num_prefix_tokens": 1, "num_special_tokens": 1}})
    sources = get_recipe("memreason").token_init(config, tokenizer)
    before = model.get_input_embeddings().weight.clone()
    init_token_rows(model, {tokenizer.convert_tokens_to_ids(t): ids for t, ids in sources.items()})
    memory, word = tokenizer.convert_tokens_to_ids("<memory_0>"), tokenizer.get_vocab()["memory"]
    for layer in (model.get_input_embeddings(), model.get_output_embeddings()):
        assert torch.equal(layer.weight[memory], layer.weight[word])
    assert torch.equal(model.get_input_embeddings().weight[:len(tokenizer) - 6], before[:len(tokenizer) - 6])


def test_a_record_made_for_other_tokens_is_a_user_error(tmp_path: Path) -> None:
    from llmft.core.errors import LlmftError
    from llmft.core.trainer import train

    config = memreason_config(tmp_path)
    config.section.num_special_tokens = 2
    with pytest.raises(LlmftError, match="made with --num-prefix-tokens 1 --num-special-tokens 1"):
        train(config, get_recipe("memreason"), progress=False)
    config.section.variant = "cot"
    with pytest.raises(LlmftError, match="made with --variant tokens, but memreason.variant = cot"):
        train(config, get_recipe("memreason"), progress=False)


def test_reference_pad_id_reaches_the_model(tmp_path: Path) -> None:
    from llmft.core.model_setup import build_tokenizer
    from llmft.core.trainer import train

    recipe = get_recipe("memreason")
    losses = {}
    for pad in (-1, None):
        config = memreason_config(tmp_path / str(pad), "full", max_steps=2)
        space = build_tokenizer(config, recipe).convert_tokens_to_ids(" ")
        recipe.section(config).reference_pad_id = space if pad is None else pad  # every space hidden
        losses[pad] = train(config, recipe, progress=False).losses
    assert losses[-1][0] != pytest.approx(losses[None][0], abs=1e-4)  # the same data, the spaces hidden
