"""The one trainer every recipe uses: accelerate for devices and data parallelism, a plain loop for the rest.

Why not transformers' Trainer or TRL's SFTTrainer: we need (1) packed rows without TRL's whole-batch
flattening, which is slow on CPU (see PERF-NOTES), (2) a loss normalised by trained tokens across the
whole accumulation window and all ranks, (3) checkpoints written atomically and a resume that replays the
exact data order, and (4) a hard error on a batch with no trained tokens. Each is a few lines here and a
fight with callbacks there. Models, adapters, optimisers, schedulers and DDP still come from the libraries.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmft.core import runs
from llmft.core.config import Config, config_to_toml
from llmft.core.data import Row, batch_order, collate, load_examples, pack_rows, single_rows
from llmft.core.errors import LlmftError
from llmft.core.jsonl import iter_jsonl

TOKENIZER_DIR = "tokenizer"


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports."""

    output_dir: Path
    steps: int
    final_loss: float
    losses: list[float] = field(default_factory=list)
    tokens_per_second: float = 0.0
    trained_on: list[int] = field(default_factory=list)  # row indices this process saw (for DDP checks)


def train(
    config: Config,
    *,
    resume: bool = False,
    overwrite: bool = False,
    stop_after_step: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune or pretrain as `config` says; `stop_after_step` simulates a kill after that step."""
    import torch
    from accelerate import Accelerator

    from llmft.core.models import bf16_supported, cuda_available
    from llmft.recipes.base import get_recipe

    recipe = get_recipe(config.recipe)
    output_dir = Path(config.train.output_dir)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    use_bf16 = config.train.bf16 == "true" or (config.train.bf16 == "auto" and bf16_supported())
    accelerator = Accelerator(mixed_precision="bf16" if use_bf16 else "no", cpu=not cuda_available())
    checkpoint = _resolve_start(output_dir, resume, overwrite, accelerator.is_main_process)
    accelerator.wait_for_everyone()

    tokenizer, model, new_ids = _setup_model(config, recipe, output_dir, accelerator)
    rows = _build_rows(config, recipe, tokenizer)
    packed = config.data.packing == "rows"
    world, rank = accelerator.num_processes, accelerator.process_index
    batches_per_epoch = math.ceil(len(rows) / config.train.batch_size)
    steps_per_epoch = batches_per_epoch // (config.train.grad_accum * world)
    if steps_per_epoch == 0:
        raise LlmftError(
            f"data.train: {len(rows)} rows make no full step of batch_size {config.train.batch_size} x "
            f"grad_accum {config.train.grad_accum} x {world} processes; lower them or add data"
        )
    total_steps = config.train.max_steps or math.ceil(config.train.epochs * steps_per_epoch)

    optimizer, scheduler = _optimizer(model, config, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    step = 0
    if checkpoint is not None:
        step = _load_checkpoint(checkpoint, accelerator.unwrap_model(model), optimizer, scheduler, rank)
    else:
        random.seed(config.train.seed)
        torch.manual_seed(config.train.seed + rank)

    logger = _Logger(output_dir, accelerator.is_main_process, progress, total_steps, step)
    if accelerator.is_main_process:
        runs.atomic_write_text(output_dir / runs.CONFIG_NAME, config_to_toml(config))
    device = accelerator.device
    model.train()
    losses: list[float] = []
    seen: list[int] = []
    started, real_tokens = time.perf_counter(), 0
    while step < total_steps:
        epoch, index = divmod(step, steps_per_epoch)
        order = batch_order(rows, config.train.batch_size, config.train.seed, epoch,
                            "group" if config.data.packing == "group" else "random")
        micro = [order[(index * config.train.grad_accum + g) * world + rank]
                 for g in range(config.train.grad_accum)]
        batches = [collate([rows[i] for i in indices], tokenizer.pad_token_id, packed) for indices in micro]
        seen += [i for indices in micro for i in indices]
        local = torch.tensor([float((b["labels"][:, 1:] != -100).sum()) for b in batches]).sum().to(device)
        window = accelerator.reduce(local.clone(), reduction="sum")
        if float(local) == 0:
            raise LlmftError(f"step {step + 1}: a batch has no trained tokens (check the data's loss mask)")
        loss_sum = torch.zeros((), device=device)
        for g, batch in enumerate(batches):
            batch = {k: v.to(device) for k, v in batch.items()}
            sync = g == len(batches) - 1
            with accelerator.no_sync(model) if not sync else _nullcontext():
                with accelerator.autocast():
                    logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
                summed = token_loss_sum(logits, batch["labels"])
                # DDP averages gradients over ranks: scale so the sum over the window / all tokens results.
                accelerator.backward(summed * world / window)
            loss_sum += summed.detach()
            real_tokens += sum(len(rows[i].input_ids) for i in micro[g])
        if config.train.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), config.train.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss = float(accelerator.reduce(loss_sum, reduction="sum") / window)
        if not math.isfinite(loss):
            raise LlmftError(f"step {step}: loss is {loss}; lower train.learning_rate or check the data")
        losses.append(loss)
        elapsed = time.perf_counter() - started
        logger.log(step, loss, scheduler.get_last_lr()[0], real_tokens * world / max(elapsed, 1e-9),
                   config.train.logging_steps)
        if config.train.save_steps and step % config.train.save_steps == 0 and step < total_steps:
            _save(accelerator, model, tokenizer, config, output_dir,
                  f"{runs.CHECKPOINT_PREFIX}{step}", optimizer, scheduler, step)
        if stop_after_step and step >= stop_after_step:
            logger.close()
            return TrainResult(output_dir, step, loss, losses, 0.0, seen)
    _save(accelerator, model, tokenizer, config, output_dir, runs.FINAL_NAME, None, None, step)
    logger.close()
    elapsed = time.perf_counter() - started
    return TrainResult(output_dir, step, losses[-1] if losses else float("nan"), losses,
                       real_tokens * world / max(elapsed, 1e-9), seen)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def token_loss_sum(logits: Any, labels: Any) -> Any:
    """Sum of next-token cross-entropy over positions whose label is not IGNORE (computed in fp32)."""
    import torch.nn.functional as F

    shifted = logits[:, :-1].float()
    targets = labels[:, 1:]
    return F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1),
                           ignore_index=-100, reduction="sum")


# --------------------------------------------------------------------------------------------------
# Setup


def _resolve_start(output_dir: Path, resume: bool, overwrite: bool, main: bool) -> Path | None:
    checkpoint = runs.last_checkpoint(output_dir)
    if resume:
        if checkpoint is None:
            raise LlmftError(f"--resume: no checkpoint in {output_dir} (set train.save_steps to write them)")
        return checkpoint
    has_run = checkpoint is not None or (output_dir / runs.FINAL_NAME).exists()
    if has_run and not overwrite:
        raise LlmftError(f"train.output_dir {output_dir} already holds a run; pass --resume or --overwrite")
    if has_run and main:
        for child in list(runs.checkpoint_dirs(output_dir)) + [output_dir / runs.FINAL_NAME]:
            shutil.rmtree(child, ignore_errors=True)
        (output_dir / runs.METRICS_NAME).unlink(missing_ok=True)
        shutil.rmtree(output_dir / TOKENIZER_DIR, ignore_errors=True)
        shutil.rmtree(output_dir / "base-model", ignore_errors=True)
        shutil.rmtree(output_dir / "tb", ignore_errors=True)
    return None


def training_texts(path: str) -> list[str]:
    """Every string a tokenizer trained for this data must cover."""
    texts = []
    for record in iter_jsonl(path, what="data.train"):
        for key in ("prompt", "completion", "text"):
            if key in record:
                texts.append(str(record[key]))
        for message in record.get("messages", []) or []:
            texts.append(str(message.get("content", "")))
    return texts


def _setup_model(config: Config, recipe: Any, output_dir: Path, accelerator: Any) -> tuple[Any, Any, list[int]]:
    """Tokenizer (trained once and kept in the run folder), base model, new tokens, adapter."""
    from transformers import AutoTokenizer

    from llmft.core.adapters import apply_adapter, trainable_summary, uses_peft
    from llmft.core.models import (
        BASE_MODEL_DIR,
        build_tiny_model,
        init_token_rows,
        is_tiny,
        load_pretrained,
        load_tokenizer,
        resize_embeddings,
    )

    if not config.data.train:
        raise LlmftError("data.train is not set: give the training JSONL path")
    extra = list(dict.fromkeys([*recipe.special_tokens(config), *config.adapter.new_tokens]))
    tokenizer_dir = output_dir / TOKENIZER_DIR
    if accelerator.is_main_process and not tokenizer_dir.exists():
        texts = training_texts(config.data.train) if is_tiny(config) and not config.adapter.init_from else []
        if is_tiny(config) and config.data.eval and Path(config.data.eval).exists():
            texts += training_texts(config.data.eval)  # the alphabet only: unseen characters would be <unk>
        tokenizer = load_tokenizer(config, texts, extra)
        staged = runs.staging_dir(tokenizer_dir)
        tokenizer.save_pretrained(staged)
        runs.publish_dir(staged, tokenizer_dir)
    accelerator.wait_for_everyone()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    new_ids = [tokenizer.convert_tokens_to_ids(t) for t in extra]

    quantize = config.adapter.method == "qlora"
    base_dir = output_dir / BASE_MODEL_DIR
    if config.adapter.init_from:
        if accelerator.is_main_process and not base_dir.exists():
            _save_merged_base(config.adapter.init_from, base_dir, tokenizer)
        accelerator.wait_for_everyone()
        model = load_pretrained(str(base_dir), config, quantize_4bit=quantize)
    elif is_tiny(config):
        if accelerator.is_main_process and not base_dir.exists() and (uses_peft(config) or quantize):
            staged = runs.staging_dir(base_dir)
            build_tiny_model(config, tokenizer).save_pretrained(staged)
            tokenizer.save_pretrained(staged)
            runs.publish_dir(staged, base_dir)
        accelerator.wait_for_everyone()
        if base_dir.exists():
            model = load_pretrained(str(base_dir), config, quantize_4bit=quantize)
        else:
            model = build_tiny_model(config, tokenizer)
    else:
        model = load_pretrained(config.model.name, config, quantize_4bit=quantize)
    resize_embeddings(model, len(tokenizer))
    token_init = getattr(recipe, "token_init", None)  # optional: {new token: ids whose rows it starts from}
    if token_init is not None and not config.adapter.init_from:
        init_token_rows(model, {tokenizer.convert_tokens_to_ids(t): ids
                                for t, ids in token_init(config, tokenizer).items()})
    model.config.use_cache = False
    model = apply_adapter(model, config, new_ids)
    trainable, total = trainable_summary(model)
    if trainable == 0:
        raise LlmftError(f"adapter.method = '{config.adapter.method}' leaves nothing to train")
    if accelerator.is_main_process:
        print(f"llmft: {config.recipe} | {config.adapter.method} | trainable {trainable:,} of {total:,} parameters")
    return tokenizer, model, new_ids


def _save_merged_base(previous: str, base_dir: Path, tokenizer: Any) -> None:
    """adapter.init_from: the previous run's model with its adapter merged in, saved as this run's base."""
    from llmft.core.artifacts import load_for_inference
    from llmft.core.models import resize_embeddings

    _, previous_tokenizer, model = load_for_inference(previous, quantized=False)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if previous_tokenizer.get_vocab() != {k: v for k, v in tokenizer.get_vocab().items()
                                          if v < len(previous_tokenizer)}:
        raise LlmftError(f"adapter.init_from: {previous} was trained with a different tokenizer")
    resize_embeddings(model, len(tokenizer))
    staged = runs.staging_dir(base_dir)
    model.save_pretrained(staged, safe_serialization=True)
    tokenizer.save_pretrained(staged)
    runs.publish_dir(staged, base_dir)


def _build_rows(config: Config, recipe: Any, tokenizer: Any) -> list[Row]:
    examples = load_examples(config.data.train, tokenizer, config.data.max_length,
                             lambda record: recipe.tokenize(record, tokenizer, config))
    if config.data.packing == "rows":
        return pack_rows(examples, max(config.data.pack_length, max(len(e) for e in examples)))
    return single_rows(examples)


def _optimizer(model: Any, config: Config, total_steps: int) -> tuple[Any, Any]:
    import torch
    from transformers import get_scheduler

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "norm" in name else decay).append(param)
    # The fused kernel makes one pass over the weights instead of a dozen foreach ops: an AdamW step of the
    # 5.9M benchmark model drops from 11 ms to 2.6 ms on CPU (about 4% of a training step).
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in decay + no_decay)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.train.learning_rate, fused=fused,
    )
    warmup = config.train.warmup_steps or int(config.train.warmup_ratio * total_steps)
    name = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}[config.train.lr_scheduler]
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    return optimizer, scheduler


# --------------------------------------------------------------------------------------------------
# Saving and resuming


def save_artifact(model: Any, tokenizer: Any, config: Config, folder: Path) -> None:
    """An adapter (PEFT) or full model folder that reloads on its own: weights, tokenizer, llmft.toml."""
    from llmft.core.adapters import uses_peft
    from llmft.core.models import BASE_MODEL_DIR, is_tiny

    if uses_peft(config) and (is_tiny(config) or config.adapter.init_from):
        model.peft_config["default"].base_model_name_or_path = str(
            (Path(config.train.output_dir) / BASE_MODEL_DIR).resolve())
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    runs.atomic_write_text(folder / runs.CONFIG_NAME, config_to_toml(config))


def _save(accelerator: Any, model: Any, tokenizer: Any, config: Config, output_dir: Path, name: str,
          optimizer: Any, scheduler: Any, step: int) -> None:
    import torch
    from safetensors.torch import save_file

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
        torch.save(_rng_state(), staged / f"rng-{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        save_artifact(unwrapped, tokenizer, config, staged)
        if optimizer is not None:
            # Full training state for --resume; trainable tensors by exact name (cloned: no shared storage).
            state = {n: p.detach().cpu().clone().contiguous()
                     for n, p in unwrapped.named_parameters() if p.requires_grad}
            save_file(state, staged / "trainable.safetensors")
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                       staged / "optimizer.pt")
            runs.atomic_write_json(staged / "trainer_state.json", {"step": step})
        runs.publish_dir(staged, final)
        if name != runs.FINAL_NAME:
            for old in runs.checkpoint_dirs(output_dir)[:-max(config.train.save_total_limit, 1)]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _rng_state() -> dict[str, Any]:
    import torch

    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _load_checkpoint(folder: Path, model: Any, optimizer: Any, scheduler: Any, rank: int) -> int:
    import torch
    from safetensors.torch import load_file

    state = load_file(folder / "trainable.safetensors")
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise LlmftError(f"--resume: {folder} does not match this config (unknown tensor {missing[0]})")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    saved = torch.load(folder / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rng_file = folder / f"rng-{rank}.pt"
    if rng_file.exists():
        rng = torch.load(rng_file, weights_only=False)
        random.setstate(rng["python"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    return int(json.loads((folder / "trainer_state.json").read_text())["step"])


class _Logger:
    """Progress bar, metrics.jsonl and TensorBoard, on the main process only."""

    def __init__(self, output_dir: Path, main: bool, progress: bool, total: int, start: int):
        self.main = main
        self.bar = None
        self.writer = None
        if not main:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        self.path = output_dir / runs.METRICS_NAME
        kept = [line for line in (self.path.read_text().splitlines() if self.path.exists() else [])
                if line.strip() and json.loads(line).get("step", 0) <= start]
        runs.atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self.handle = self.path.open("a", encoding="utf-8")
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output_dir / "tb"), purge_step=start + 1)
        except ImportError:  # pragma: no cover - tensorboard is a dependency, but logs are optional
            self.writer = None

    def log(self, step: int, loss: float, lr: float, tokens_per_second: float, every: int) -> None:
        if not self.main:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_second:,.0f}", lr=f"{lr:.2e}")
        if step % max(every, 1) == 0 or step == 1:
            record = {"step": step, "loss": loss, "lr": lr, "tokens_per_s": round(tokens_per_second, 1)}
            self.handle.write(json.dumps(record) + "\n")
            self.handle.flush()
            os.fsync(self.handle.fileno())
            if self.writer is not None:
                self.writer.add_scalar("train/loss", loss, step)
                self.writer.add_scalar("train/lr", lr, step)
                self.writer.add_scalar("train/tokens_per_s", tokens_per_second, step)

    def close(self) -> None:
        if not self.main:
            return
        if self.bar is not None:
            self.bar.close()
        self.handle.close()
        if self.writer is not None:
            self.writer.close()
