"""Export: merge an adapter (and its trained new-token rows) into a standalone Hugging Face model folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from llmft.core import runs
from llmft.core.bottleneck import is_bottleneck_folder
from llmft.core.errors import LlmftError
from llmft.core.inference import is_adapter, load_for_inference, read_run_config
from llmft.core.positions import OWN_POSITIONS, own_decoding

# A neutral probe for the merged-vs-adapter logit check: letters, numerals, punctuation, no recipe's format.
PROBE_TEXT = "The quick brown fox jumps over the lazy dog. 0123456789 + - = ?"


def check_destination(folder: Path, out: Path, overwrite: bool) -> None:
    """Refuse an export that would destroy something: the run itself, a folder holding it, the current
    folder, or (without --overwrite) an existing file or non-empty folder."""
    source, target = folder.resolve(), out.resolve()
    run_root = source.parent if source.name == runs.FINAL_NAME or source.name.startswith(runs.CHECKPOINT_PREFIX) \
        else source
    if target == run_root or target in run_root.parents or target == source or source in target.parents:
        raise LlmftError(f"export --out {out}: that is the run being exported or holds it; choose another folder")
    if target == Path.cwd().resolve() or target in Path.cwd().resolve().parents:
        raise LlmftError(f"export --out {out}: that is the current folder (or holds it); choose a new folder")
    if overwrite:
        return
    if target.is_file() or target.is_symlink():
        raise LlmftError(f"export --out {out}: a file of that name exists; pass --overwrite to replace it")
    if target.is_dir() and any(target.iterdir()):
        kind = "an earlier export" if (target / runs.CONFIG_NAME).is_file() else "a folder llmft did not write"
        raise LlmftError(f"export --out {out}: {kind} is there and not empty; pass --overwrite to replace it")


def export_merged(folder: str | Path, out: str | Path, dtype: str = "auto", overwrite: bool = False) -> dict[str, Any]:
    """Merge an adapter (and its trained new-token rows) into a standalone HF folder; check the logits.

    QLoRA adapters merge into an unquantised base (bf16/fp32), never into 4-bit weights. Returns a report
    with the max |logit difference| between the merged model and the adapter model on a probe input.
    """
    import torch

    folder, out = Path(folder), Path(out)
    read_run_config(folder)
    if is_bottleneck_folder(folder):
        raise LlmftError(f"{folder}: bottleneck adapters are non-linear and cannot be merged into the base weights; "
                         "use the run folder itself (llmft eval/serve, or llmft.core.bottleneck.load_bottleneck)")
    check_destination(folder, out, overwrite)
    config, tokenizer, model = load_for_inference(folder, quantized=False)
    probe = tokenizer(PROBE_TEXT, return_tensors="pt")["input_ids"][:, :64].to(next(model.parameters()).device)
    inputs = {"input_ids": probe}
    if getattr(model.config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = probe  # an encoder-decoder reads the probe on both sides
    with torch.no_grad():
        before = model(**inputs).logits.float()
    merged = model.merge_and_unload() if is_adapter(folder) else model
    if dtype != "auto":
        merged = merged.to(getattr(torch, dtype))
    with torch.no_grad():
        after = merged(**inputs).logits.float()
    staged = runs.staging_dir(out)
    try:
        merged.save_pretrained(staged, safe_serialization=True)
        tokenizer.save_pretrained(staged)
        if merged.generation_config is not None:
            merged.generation_config.save_pretrained(staged)
        runs.atomic_write_text(staged / runs.CONFIG_NAME, (folder / runs.CONFIG_NAME).read_text())
        if out.is_file() or out.is_symlink():
            out.unlink()  # --overwrite of a file: publish_dir replaces folders only
        runs.publish_dir(staged, out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # a failed write (disk full) leaves nothing behind
    report = {"out": str(out), "max_abs_logit_diff": float((before - after).abs().max())}
    if own_decoding(config):
        report["warning"] = (f"the model takes {OWN_POSITIONS}: llmft eval/serve on this folder apply them, "
                             "other loaders (generate, vLLM) would not")
    return report
