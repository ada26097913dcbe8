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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmft.core import checkpoints, runs
from llmft.core.config import Config, config_to_toml
from llmft.core.data import IGNORE, TokenizedExample, collate, example_loss_weights
from llmft.core.errors import LlmftError
from llmft.core.heldout import eval_interval, heldout_examples, heldout_loss
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
from llmft.core.packing import Row, batch_order
from llmft.core.positions import PositionRules, run_positions
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


@dataclass
class TrainPlan:
    """What a run steps over, decided before its first step: the tokenizer and model, the rows and their
    order per epoch, the held-out examples, the position rules and the step counts."""

    tokenizer: Any
    model: Any
    rows: list[Row]
    held_out: list[TokenizedExample]
    seq2seq: bool
    gather: bool  # logits only where a token is trained (a wide vocabulary)
    start_id: int | None  # an encoder-decoder's decoder start token
    packed: bool
    positions: PositionRules
    epoch_order: Callable[[int], list[list[int]]]
    steps_per_epoch: int
    total_steps: int
    horizon: int  # the learning-rate schedule's length
    eval_every: int
    eval_tokens: int  # the held-out loss's batch size in tokens (a training batch's)


def _plan(config: Config, recipe: TrainingHooks, accelerator: Any, weight_dtype: str) -> TrainPlan:
    """Tokenizer, model, rows and step counts; a run that cannot take one full step is a one-line error."""
    import torch

    main, barrier = accelerator.is_main_process, accelerator.wait_for_everyone
    if main:
        note_large_file(config.data.train, "data.train")
    tokenizer = run_tokenizer(config, recipe, main, barrier)
    new_ids = [tokenizer.convert_tokens_to_ids(t) for t in extra_tokens(config, recipe)]
    model = setup_model(config, tokenizer, new_ids, main, barrier, initial_rows=initial_rows(config, recipe, tokenizer))
    if weight_dtype and config.adapter.method != "qlora":  # a 4-bit base keeps its own dtypes
        model = model.to(getattr(torch, weight_dtype))
    seq2seq = is_seq2seq(model)
    rows = build_rows(config, recipe, tokenizer, seq2seq)
    # The held-out loss scores decoder-only sequences; encoder-decoder runs skip it.
    held_out = [] if seq2seq else heldout_examples(config, recipe, tokenizer)
    world = accelerator.num_processes
    widths = row_widths(config, max(len(row.input_ids) for row in rows))
    strategy = "group" if config.data.packing == "group" else "random"

    @functools.lru_cache(maxsize=1)  # one shuffle per epoch, not per step (18 ms of a ~200 ms demo step)
    def epoch_order(epoch: int) -> list[list[int]]:
        return batch_order(rows, config.train.batch_size, config.train.seed, epoch, strategy, widths)

    steps_per_epoch = len(epoch_order(0)) // (config.train.grad_accum * world)
    if steps_per_epoch == 0:
        raise LlmftError(
            f"data.train: {len(rows)} rows make no full step of batch_size {config.train.batch_size} x "
            f"grad_accum {config.train.grad_accum} x {world} processes; lower them or add data"
        )
    total_steps = config.train.max_steps or math.ceil(config.train.epochs * steps_per_epoch)
    horizon = config.train.lr_schedule_steps or total_steps
    if horizon < total_steps:
        raise LlmftError(f"train.lr_schedule_steps ({horizon}) is shorter than the run ({total_steps} steps)")
    return TrainPlan(
        tokenizer=tokenizer, model=model, rows=rows, held_out=held_out, seq2seq=seq2seq,
        gather=not seq2seq and trained_logits_pay(model),
        start_id=model.config.decoder_start_token_id if seq2seq else None,
        packed=config.data.packing == "rows", positions=run_positions(config, tokenizer, seq2seq),
        epoch_order=epoch_order, steps_per_epoch=steps_per_epoch, total_steps=total_steps, horizon=horizon,
        eval_every=eval_interval(config, total_steps, held_out),
        eval_tokens=config.train.batch_size * max(len(row.input_ids) for row in rows))


def _micro_batches(plan: TrainPlan, config: Config, step: int, model: Any,
                   accelerator: Any) -> tuple[list[list[int]], list[dict[str, Any]]]:
    """This process's row indices and batches of one step (grad_accum of them), positions applied."""
    import torch

    world, rank = accelerator.num_processes, accelerator.process_index
    epoch, index = divmod(step, plan.steps_per_epoch)
    order = plan.epoch_order(epoch)
    micro = [order[(index * config.train.grad_accum + g) * world + rank] for g in range(config.train.grad_accum)]
    rows, pad = plan.rows, plan.tokenizer.pad_token_id
    batches = [collate_seq2seq([rows[i] for i in indices], pad, plan.start_id) if plan.seq2seq
               else collate([rows[i] for i in indices], pad, plan.packed) for indices in micro]
    if config.train.loss_reduction == "example":  # from collate's positions, before any lever replaces them
        batches = [{**b, "loss_weights": example_loss_weights(b)} for b in batches]
    if config.model.attn_implementation == "auto" and not plan.seq2seq:
        attention_for_width(accelerator.unwrap_model(model), max(b["input_ids"].shape[1] for b in batches))
    eager = accelerator.unwrap_model(model).config._attn_implementation == "eager"  # masks float or bool
    # Position draws seeded by step: a resumed run draws the same positions.
    draw = torch.Generator().manual_seed(config.train.seed * 1_000_003 + step)
    return micro, plan.positions.training(batches, draw, additive=eager)


def _window_loss(plan: TrainPlan, model: Any, batches: list[dict[str, Any]], window: Any, accelerator: Any) -> Any:
    """Forward and backward over one step's batches; the summed loss (detached) over the window."""
    import torch

    world, device = accelerator.num_processes, accelerator.device
    loss_sum = torch.zeros((), device=device)
    for g, batch in enumerate(batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        sync = g == len(batches) - 1
        # Logits only where a token is trained, where that pays (a wide vocabulary); else all of them.
        labels, weights = batch["labels"], batch.get("loss_weights")
        trained = (logits_only_where_trained(accelerator.unwrap_model(model), labels, weights) if plan.gather
                   else contextlib.nullcontext((labels, weights)))
        with accelerator.no_sync(model) if not sync else contextlib.nullcontext():
            with accelerator.autocast(), trained as (targets, target_weights):
                logits = model(**{k: v for k, v in batch.items() if k not in ("labels", "loss_weights")},
                               use_cache=False).logits
            summed = token_loss_sum(logits, targets, shift=not (plan.gather or plan.seq2seq), weights=target_weights)
            # DDP averages gradients over ranks: scale so the sum over the window / its denominator results.
            accelerator.backward(summed * world / window)
        loss_sum += summed.detach()
    return loss_sum


def _train(config: Config, recipe: TrainingHooks, accelerator: Any, checkpoint: Path | None, stop_after_step: int,
           progress: bool, weight_dtype: str = "") -> TrainResult:
    import torch

    output_dir = Path(config.train.output_dir)
    plan = _plan(config, recipe, accelerator, weight_dtype)
    main, world, rank = accelerator.is_main_process, accelerator.num_processes, accelerator.process_index
    rows, tokenizer, total_steps = plan.rows, plan.tokenizer, plan.total_steps
    optimizer, scheduler = _optimizer(plan.model, config, plan.horizon)
    model, optimizer = accelerator.prepare(plan.model, optimizer)
    step = 0
    if checkpoint is not None:
        step = checkpoints.load(checkpoint, accelerator.unwrap_model(model), optimizer, scheduler, rank)
    else:
        random.seed(config.train.seed)
        torch.manual_seed(config.train.seed + rank)

    logger = TrainLog(output_dir, main, progress, total_steps, step)
    if main:
        runs.atomic_write_text(output_dir / runs.CONFIG_NAME, config_to_toml(config))
    model.train()
    losses: list[float] = []
    seen: list[int] = []
    eval_losses: dict[int, float] = {}
    started, real_tokens = time.perf_counter(), 0
    while step < total_steps:
        micro, batches = _micro_batches(plan, config, step, model, accelerator)
        seen += [i for indices in micro for i in indices]
        tokens = sum(float((b["labels"][:, 0 if plan.seq2seq else 1:] != IGNORE).sum()) for b in batches)
        if tokens == 0:
            raise LlmftError(f"step {step + 1}: a batch has no trained tokens (check the data's loss mask)")
        # The loss divides by the window's trained tokens, or by its examples (a packed row holds several).
        examples = sum(rows[i].examples for indices in micro for i in indices)
        local = torch.tensor(float(tokens if config.train.loss_reduction == "token" else examples))
        window = accelerator.reduce(local.to(accelerator.device).clone(), reduction="sum")
        loss_sum = _window_loss(plan, model, batches, window, accelerator)
        real_tokens += sum(len(rows[i].input_ids) for indices in micro for i in indices)
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
        if plan.eval_every and (step % plan.eval_every == 0 or step == total_steps):
            eval_losses[step] = heldout_loss(model, plan.held_out, tokenizer.pad_token_id, accelerator,
                                             plan.eval_tokens, plan.positions)
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
