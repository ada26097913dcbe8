"""The one trainer every recipe uses: accelerate for devices and data parallelism, a plain loop for the rest.

Why not transformers' Trainer or TRL's SFTTrainer: we need (1) packed rows without TRL's whole-batch
flattening, which is slow on CPU (see PERF-NOTES), (2) a loss normalised by trained tokens across the
whole accumulation window and all ranks, (3) checkpoints written atomically and a resume that replays the
exact data order, and (4) a hard error on a batch with no trained tokens. Each is a few lines here and a
fight with callbacks there. Models, adapters, optimisers, schedulers and DDP still come from the libraries.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmft.core import checkpoints, runs
from llmft.core.config import Config, config_to_toml
from llmft.core.data import (
    IGNORE,
    align_digit_positions,
    batch_order,
    collate,
    example_loss_weights,
    randomize_positions,
)
from llmft.core.errors import LlmftError
from llmft.core.heldout import eval_interval, heldout_examples, heldout_loss
from llmft.core.jsonl import iter_jsonl
from llmft.core.model_setup import (
    TrainingHooks,
    build_rows,
    extra_tokens,
    initial_rows,
    row_widths,
    run_tokenizer,
    setup_model,
)
from llmft.core.models import attention_for_width
from llmft.core.positions import digit_alignment
from llmft.core.progress import note_large_file
from llmft.core.run_summary import write_summary
from llmft.core.scoring import logits_only_where_trained, token_loss_sum, trained_logits_pay
from llmft.core.seq2seq import collate_seq2seq, is_seq2seq
from llmft.core.train_log import TrainLog


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports."""

    output_dir: Path
    steps: int
    final_loss: float
    losses: list[float] = field(default_factory=list)
    tokens_per_second: float = 0.0
    trained_on: list[int] = field(default_factory=list)  # row indices this process saw (for DDP checks)
    eval_losses: dict[int, float] = field(default_factory=dict)  # held-out loss by step (train.eval_steps)
    main: bool = True  # the main process (the one that reports)


def train(
    config: Config,
    recipe: TrainingHooks,
    *,
    resume: bool = False,
    overwrite: bool = False,
    stop_after_step: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune or pretrain as `config` says, with the recipe's tokens and tokenisation.

    `stop_after_step` simulates a kill after that step (tests of --resume).
    """
    # The user's mistakes are answered before torch loads (seconds): a missing or malformed data.train, or
    # --resume of a run with no checkpoint (read-only here; resolved again under the run's lock).
    if config.data.train:
        next(iter_jsonl(config.data.train, what="data.train"), None)
    if resume:
        checkpoints.resolve_start(Path(config.train.output_dir), resume, overwrite, main=False)
    import torch
    from accelerate import Accelerator

    from llmft.core.models import bf16_supported, cuda_available
    from llmft.core.precision import resolve_precision

    output_dir = Path(config.train.output_dir)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    cuda = cuda_available()
    precision = resolve_precision(config, cuda, cuda and torch.cuda.is_bf16_supported(), bf16_supported())
    accelerator = Accelerator(mixed_precision=precision.mixed_precision, cpu=not cuda)
    main, barrier = accelerator.is_main_process, accelerator.wait_for_everyone
    with _output_lock(output_dir, main):
        checkpoint = checkpoints.resolve_start(output_dir, resume, overwrite, main)
        barrier()
        return _train(config, recipe, accelerator, checkpoint, stop_after_step, progress, precision.weight_dtype)


def _output_lock(output_dir: Path, main: bool) -> Any:
    """The run folder's lock on the main process (one training per folder); checks the folder is usable."""
    if output_dir.exists() and not output_dir.is_dir():
        raise LlmftError(f"train.output_dir {output_dir} is a file, not a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LlmftError(f"train.output_dir {output_dir}: cannot create it ({exc.strerror})") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise LlmftError(f"train.output_dir {output_dir} is not writable")
    return runs.RunLock(output_dir) if main else contextlib.nullcontext()


def _train(config: Config, recipe: TrainingHooks, accelerator: Any, checkpoint: Path | None, stop_after_step: int,
           progress: bool, weight_dtype: str = "") -> TrainResult:
    import torch

    output_dir = Path(config.train.output_dir)
    main, barrier = accelerator.is_main_process, accelerator.wait_for_everyone
    if main:
        note_large_file(config.data.train, "data.train")
    tokenizer = run_tokenizer(config, recipe, main, barrier)
    new_ids = [tokenizer.convert_tokens_to_ids(t) for t in extra_tokens(config, recipe)]
    model = setup_model(config, tokenizer, new_ids, main, barrier, initial_rows=initial_rows(config, recipe, tokenizer))
    if weight_dtype and config.adapter.method != "qlora":  # a 4-bit base keeps its own dtypes
        model = model.to(getattr(torch, weight_dtype))
    seq2seq = is_seq2seq(model)
    gather = not seq2seq and trained_logits_pay(model)
    start_id = model.config.decoder_start_token_id if seq2seq else None
    rows = build_rows(config, recipe, tokenizer, seq2seq)
    # The held-out loss scores decoder-only sequences; encoder-decoder runs skip it.
    held_out = [] if seq2seq else heldout_examples(config, recipe, tokenizer)
    packed = config.data.packing == "rows"
    digit_rule = None if seq2seq else digit_alignment(config, tokenizer)
    world, rank = accelerator.num_processes, accelerator.process_index
    widths = row_widths(config, max(len(row.input_ids) for row in rows))
    strategy = "group" if config.data.packing == "group" else "random"

    @functools.lru_cache(maxsize=1)  # one shuffle per epoch, not per step (18 ms of a ~200 ms demo step)
    def epoch_order(epoch: int) -> list[list[int]]:
        return batch_order(rows, config.train.batch_size, config.train.seed, epoch, strategy, widths)

    batches_per_epoch = len(epoch_order(0))
    steps_per_epoch = batches_per_epoch // (config.train.grad_accum * world)
    if steps_per_epoch == 0:
        raise LlmftError(
            f"data.train: {len(rows)} rows make no full step of batch_size {config.train.batch_size} x "
            f"grad_accum {config.train.grad_accum} x {world} processes; lower them or add data"
        )
    total_steps = config.train.max_steps or math.ceil(config.train.epochs * steps_per_epoch)
    eval_every = eval_interval(config, total_steps, held_out)
    eval_tokens = config.train.batch_size * max(len(row.input_ids) for row in rows)  # a training batch's size
    horizon = config.train.lr_schedule_steps or total_steps
    if horizon < total_steps:
        raise LlmftError(f"train.lr_schedule_steps ({horizon}) is shorter than the run ({total_steps} steps)")

    optimizer, scheduler = _optimizer(model, config, horizon)
    model, optimizer = accelerator.prepare(model, optimizer)
    step = 0
    if checkpoint is not None:
        step = checkpoints.load(checkpoint, accelerator.unwrap_model(model), optimizer, scheduler, rank)
    else:
        random.seed(config.train.seed)
        torch.manual_seed(config.train.seed + rank)

    logger = TrainLog(output_dir, main, progress, total_steps, step)
    if main:
        runs.atomic_write_text(output_dir / runs.CONFIG_NAME, config_to_toml(config))
    device = accelerator.device
    model.train()
    losses: list[float] = []
    seen: list[int] = []
    eval_losses: dict[int, float] = {}
    started, real_tokens = time.perf_counter(), 0
    while step < total_steps:
        epoch, index = divmod(step, steps_per_epoch)
        order = epoch_order(epoch)
        micro = [order[(index * config.train.grad_accum + g) * world + rank]
                 for g in range(config.train.grad_accum)]
        batches = [collate_seq2seq([rows[i] for i in indices], tokenizer.pad_token_id, start_id) if seq2seq
                   else collate([rows[i] for i in indices], tokenizer.pad_token_id, packed) for indices in micro]
        if config.train.loss_reduction == "example":  # from collate's positions, before any lever replaces them
            batches = [{**b, "loss_weights": example_loss_weights(b)} for b in batches]
        if config.model.attn_implementation == "auto" and not seq2seq:
            attention_for_width(accelerator.unwrap_model(model), max(b["input_ids"].shape[1] for b in batches))
        eager = accelerator.unwrap_model(model).config._attn_implementation == "eager"  # masks float or bool
        # Position draws seeded by step: a resumed run draws the same positions.
        draw = torch.Generator().manual_seed(config.train.seed * 1_000_003 + step)
        if config.train.random_positions and not seq2seq:
            batches = [randomize_positions(b, config.train.random_positions, draw, additive=eager) for b in batches]
        if digit_rule is not None:
            batches = [align_digit_positions(b, digit_rule, additive=eager, max_offset=config.model.tiny.digit_offset,
                                             generator=draw) for b in batches]
        seen += [i for indices in micro for i in indices]
        tokens = sum(float((b["labels"][:, 0 if seq2seq else 1:] != IGNORE).sum()) for b in batches)
        if tokens == 0:
            raise LlmftError(f"step {step + 1}: a batch has no trained tokens (check the data's loss mask)")
        # The loss divides by the window's trained tokens, or by its examples (a packed row holds several).
        examples = sum(rows[i].examples for indices in micro for i in indices)
        local = torch.tensor(float(tokens if config.train.loss_reduction == "token" else examples)).to(device)
        window = accelerator.reduce(local.clone(), reduction="sum")
        loss_sum = torch.zeros((), device=device)
        for g, batch in enumerate(batches):
            batch = {k: v.to(device) for k, v in batch.items()}
            sync = g == len(batches) - 1
            # Logits only where a token is trained, where that pays (a wide vocabulary); else all of them.
            labels, weights = batch["labels"], batch.get("loss_weights")
            trained = (logits_only_where_trained(accelerator.unwrap_model(model), labels, weights) if gather
                       else contextlib.nullcontext((labels, weights)))
            with accelerator.no_sync(model) if not sync else contextlib.nullcontext():
                with accelerator.autocast(), trained as (targets, target_weights):
                    logits = model(**{k: v for k, v in batch.items() if k not in ("labels", "loss_weights")},
                                   use_cache=False).logits
                summed = token_loss_sum(logits, targets, shift=not (gather or seq2seq), weights=target_weights)
                # DDP averages gradients over ranks: scale so the sum over the window / its denominator results.
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
        if eval_every and (step % eval_every == 0 or step == total_steps):
            eval_losses[step] = heldout_loss(model, held_out, tokenizer.pad_token_id, accelerator, eval_tokens, digit_rule)
            logger.log_eval(step, eval_losses[step])
        elapsed = time.perf_counter() - started
        logger.log(step, loss, scheduler.get_last_lr()[0], real_tokens * world / max(elapsed, 1e-9),
                   config.train.logging_steps)
        if config.train.save_steps and step % config.train.save_steps == 0 and step < total_steps:
            checkpoints.save(accelerator, model, tokenizer, config, f"{runs.CHECKPOINT_PREFIX}{step}",
                             optimizer, scheduler, step)
        if stop_after_step and step >= stop_after_step:
            logger.close()
            return TrainResult(output_dir, step, loss, losses, 0.0, seen, eval_losses, main)
    checkpoints.save(accelerator, model, tokenizer, config, runs.FINAL_NAME, step=step)
    logger.close()
    elapsed = time.perf_counter() - started
    if main:
        write_summary(output_dir, config, step, elapsed, real_tokens * world / max(elapsed, 1e-9))
    return TrainResult(output_dir, step, losses[-1] if losses else float("nan"), losses,
                       real_tokens * world / max(elapsed, 1e-9), seen, eval_losses, main)


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
        lr=config.train.learning_rate, betas=(config.train.adam_beta1, config.train.adam_beta2), fused=fused,
    )
    warmup = config.train.warmup_steps or int(config.train.warmup_ratio * total_steps)
    name = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}[config.train.lr_scheduler]
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    return optimizer, scheduler
