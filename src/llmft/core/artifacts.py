"""Reload what training saved (an adapter or model folder with its llmft.toml) and export merged models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmft.core import runs
from llmft.core.config import Config, load_config
from llmft.core.errors import LlmftError


def read_run_config(folder: str | Path) -> Config:
    """The config saved beside an adapter/checkpoint/model folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LlmftError(f"--adapter: folder not found: {folder}")
    if not (folder / runs.CONFIG_NAME).is_file():
        raise LlmftError(f"--adapter: {folder} has no {runs.CONFIG_NAME}; is it a llmft final/ or checkpoint-N/ folder?")
    return load_config(folder / runs.CONFIG_NAME)


def is_adapter(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file()


def base_model_path(folder: Path, config: Config) -> str:
    """Where the adapter's base model lives: the run's saved tiny base, or model.name."""
    from llmft.core.models import BASE_MODEL_DIR, is_tiny

    if is_tiny(config) or config.adapter.init_from:
        for candidate in (folder.parent / BASE_MODEL_DIR, Path(config.train.output_dir) / BASE_MODEL_DIR):
            if candidate.is_dir():
                return str(candidate)
        raise LlmftError(f"{folder}: the tiny base model ({BASE_MODEL_DIR}/ beside it) is missing")
    return config.model.name


def load_for_inference(folder: str | Path, *, quantized: bool = True) -> tuple[Config, Any, Any]:
    """(config, tokenizer, model) from a run folder; an adapter is applied on its base (not merged)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmft.core.models import load_pretrained, resize_embeddings

    folder = Path(folder)
    config = read_run_config(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if is_adapter(folder):
        quantize = quantized and config.adapter.method == "qlora"
        base = load_pretrained(base_model_path(folder, config), config, quantize_4bit=quantize)
        resize_embeddings(base, len(tokenizer))
        model = PeftModel.from_pretrained(base, folder)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto")
    if torch.cuda.is_available() and next(model.parameters()).device.type == "cpu":
        model = model.to("cuda")
    model.eval()
    return config, tokenizer, model


def export_merged(folder: str | Path, out: str | Path, dtype: str = "auto") -> dict[str, Any]:
    """Merge an adapter (and its trained new-token rows) into a standalone HF folder; check the logits.

    QLoRA adapters merge into an unquantised base (bf16/fp32), never into 4-bit weights. Returns a report
    with the max |logit difference| between the merged model and the adapter model on a probe input.
    """
    import torch

    folder, out = Path(folder), Path(out)
    config, tokenizer, model = load_for_inference(folder, quantized=False)
    probe_text = "The quick brown fox 123 + 456\nSolution: "
    probe = tokenizer(probe_text, return_tensors="pt")["input_ids"][:, :64].to(next(model.parameters()).device)
    with torch.no_grad():
        before = model(input_ids=probe).logits.float()
    merged = model.merge_and_unload() if is_adapter(folder) else model
    if dtype != "auto":
        merged = merged.to(getattr(torch, dtype))
    with torch.no_grad():
        after = merged(input_ids=probe).logits.float()
    staged = runs.staging_dir(out)
    merged.save_pretrained(staged, safe_serialization=True)
    tokenizer.save_pretrained(staged)
    if merged.generation_config is not None:
        merged.generation_config.save_pretrained(staged)
    runs.atomic_write_text(staged / runs.CONFIG_NAME, (folder / runs.CONFIG_NAME).read_text())
    runs.publish_dir(staged, out)
    return {"out": str(out), "max_abs_logit_diff": float((before - after).abs().max())}
