"""Export: merge an adapter (and its trained new-token rows) into a standalone Hugging Face model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmft.core import runs
from llmft.core.inference import is_adapter, load_for_inference

# A neutral probe for the merged-vs-adapter logit check: letters, digits, punctuation, no recipe's format.
PROBE_TEXT = "The quick brown fox jumps over the lazy dog. 0123456789 + - = ?"


def export_merged(folder: str | Path, out: str | Path, dtype: str = "auto") -> dict[str, Any]:
    """Merge an adapter (and its trained new-token rows) into a standalone HF folder; check the logits.

    QLoRA adapters merge into an unquantised base (bf16/fp32), never into 4-bit weights. Returns a report
    with the max |logit difference| between the merged model and the adapter model on a probe input.
    """
    import torch

    folder, out = Path(folder), Path(out)
    config, tokenizer, model = load_for_inference(folder, quantized=False)
    probe = tokenizer(PROBE_TEXT, return_tensors="pt")["input_ids"][:, :64].to(next(model.parameters()).device)
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
