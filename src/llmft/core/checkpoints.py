"""Checkpoints of a training run: where to start, how to save (atomically, every rank's RNG), how to resume.

Training state is stored as safetensors (trainable tensors), a weights-only torch file (optimizer and
scheduler state) and JSON; nothing here unpickles arbitrary objects, so a crafted checkpoint cannot run code.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path
from typing import Any

from llmft.core import runs
from llmft.core.config import Config, config_to_toml
from llmft.core.errors import LlmftError


def resolve_start(output_dir: Path, resume: bool, overwrite: bool, main: bool) -> Path | None:
    """The checkpoint to resume from (None = fresh start); a finished run needs --resume or --overwrite.

    On --resume a damaged newest checkpoint (a kill or full disk mid-save) is reported and the previous
    complete one is used. A fresh start clears what an earlier failed or replaced run left (its tokenizer
    was built for other data; its eval results came from other weights).
    """
    if resume:
        for checkpoint in reversed(runs.checkpoint_dirs(output_dir)):
            problem = damage(checkpoint)
            if problem is None:
                return checkpoint
            if main:
                print(f"--resume: {checkpoint} is damaged ({problem}); trying an earlier checkpoint", file=sys.stderr)
        raise LlmftError(f"--resume: no complete checkpoint in {output_dir} (set train.save_steps to write them)")
    has_run = runs.last_checkpoint(output_dir) is not None or (output_dir / runs.FINAL_NAME).exists()
    if has_run and not overwrite:
        raise LlmftError(f"train.output_dir {output_dir} already holds a run; pass --resume or --overwrite")
    if main:
        for child in [*runs.checkpoint_dirs(output_dir), output_dir / runs.FINAL_NAME]:
            shutil.rmtree(child, ignore_errors=True)
        (output_dir / runs.METRICS_NAME).unlink(missing_ok=True)
        for name in (runs.TOKENIZER_DIR, runs.BASE_MODEL_DIR, runs.TENSORBOARD_DIR, runs.EVAL_DIR, runs.ESTIMATE_DIR):
            shutil.rmtree(output_dir / name, ignore_errors=True)
        runs.remove_stale_staging(output_dir)
    return None


def damage(folder: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (missing, empty or truncated files), or None if it looks whole."""
    import zipfile

    from safetensors import safe_open

    try:
        state = json.loads((folder / runs.TRAINER_STATE_NAME).read_text(encoding="utf-8"))
        int(state["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"{runs.TRAINER_STATE_NAME} is missing or unreadable"
    try:
        with safe_open(str(folder / runs.TRAINABLE_NAME), framework="pt") as handle:
            for key in handle.keys():
                handle.get_slice(key)
    except Exception as exc:  # safetensors raises its own error types for truncated or bad headers
        return f"{runs.TRAINABLE_NAME}: {str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__}"
    try:
        with zipfile.ZipFile(folder / runs.OPTIMIZER_NAME) as archive:
            if archive.testzip() is not None:
                return f"{runs.OPTIMIZER_NAME} is corrupt"
    except (OSError, zipfile.BadZipFile):
        return f"{runs.OPTIMIZER_NAME} is missing or truncated"
    return None


# Keys that may change on --resume without changing what the run trains: how long, how often it saves or
# logs, how many threads, and evaluation.
RESUMABLE_CHANGES = ("train.max_steps", "train.epochs", "train.save_steps", "train.save_total_limit",
                     "train.logging_steps", "train.threads", "eval.", "data.eval")


def changed_keys(saved: Config, new: Config) -> list[str]:
    """Dotted keys whose values differ between the run's saved config and the one given now (training-relevant
    keys only)."""
    old_flat, new_flat = _flatten(saved.to_dict()), _flatten(new.to_dict())
    keys = sorted(set(old_flat) | set(new_flat))
    return [k for k in keys if old_flat.get(k) != new_flat.get(k) and not k.startswith(RESUMABLE_CHANGES)]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def save_artifact(model: Any, tokenizer: Any, config: Config, folder: Path) -> None:
    """An adapter (PEFT) or full model folder that reloads on its own: weights, tokenizer, llmft.toml."""
    from llmft.core.adapters import bottleneck_spec, uses_peft
    from llmft.core.models import is_tiny

    if uses_peft(config) and (is_tiny(config) or config.adapter.init_from):
        model.peft_config["default"].base_model_name_or_path = str(
            (Path(config.train.output_dir) / runs.BASE_MODEL_DIR).resolve())
    if config.adapter.method == "bottleneck":
        from llmft.core.bottleneck import save_bottleneck

        save_bottleneck(model, bottleneck_spec(config), folder)
    else:
        model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    runs.atomic_write_text(folder / runs.CONFIG_NAME, config_to_toml(config))


def save(accelerator: Any, model: Any, tokenizer: Any, config: Config, name: str,
         optimizer: Any = None, scheduler: Any = None, step: int = 0) -> Path:
    """Write `<output_dir>/<name>` atomically: the artifact, plus training state when an optimizer is given."""
    import torch
    from safetensors.torch import save_file

    output_dir = Path(config.train.output_dir)
    final = output_dir / name
    # A fixed staging name so every rank can drop its RNG state in before the atomic rename.
    staged = output_dir / f".{name}.staging"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if optimizer is not None:
        # Each rank keeps its own RNG state (dropout differs per rank).
        torch.save(rng_state(), staged / runs.rng_name(accelerator.process_index))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        save_artifact(unwrapped, tokenizer, config, staged)
        if optimizer is not None:
            # Full training state for --resume; trainable tensors by exact name (cloned: no shared storage).
            state = {n: p.detach().cpu().clone().contiguous()
                     for n, p in unwrapped.named_parameters() if p.requires_grad}
            save_file(state, staged / runs.TRAINABLE_NAME)
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                       staged / runs.OPTIMIZER_NAME)
            runs.atomic_write_json(staged / runs.TRAINER_STATE_NAME, {"step": step})
        runs.publish_dir(staged, final)
        if name != runs.FINAL_NAME:
            for old in runs.checkpoint_dirs(output_dir)[:-max(config.train.save_total_limit, 1)]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def rng_state() -> dict[str, Any]:
    """Python and torch RNG states (and CUDA's where present), as weights-only-loadable data."""
    import torch

    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def load(folder: Path, model: Any, optimizer: Any, scheduler: Any, rank: int) -> int:
    """Restore trainable tensors, optimizer, scheduler and this rank's RNG; returns the step reached."""
    import torch
    from safetensors.torch import load_file

    state = load_file(folder / runs.TRAINABLE_NAME)
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise LlmftError(f"--resume: {folder} does not match this config (unknown tensor {missing[0]})")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    saved = _weights_only_load(folder / runs.OPTIMIZER_NAME)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rng_file = folder / runs.rng_name(rank)
    if rng_file.exists():
        rng = _weights_only_load(rng_file)
        random.setstate(_as_python_rng(rng["python"]))
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    return int(json.loads((folder / runs.TRAINER_STATE_NAME).read_text())["step"])


def _weights_only_load(path: Path) -> Any:
    """torch.load that refuses pickled code: a crafted file is a one-line error, never executed."""
    import pickle

    import torch

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise LlmftError(f"--resume: {path} holds more than tensors and plain data; refusing to load it "
                         f"({str(exc).splitlines()[0][:120]})") from None


def _as_python_rng(state: Any) -> tuple:
    """random.setstate needs tuples; a weights-only load may hand back lists."""
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
