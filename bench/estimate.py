"""GradEx estimate vs actually fine-tuning each subset, on a tiny model (CPU).

Eight small string tasks are the groups. A meta-initialisation is trained on all of them (a tiny Llama trained
in full, then a LoRA on top: the reference's multitask-LoRA meta-init), with the core trainer. Then for the same
random subsets (half of the tasks each):
  estimate  = per-example gradients at theta* once (cached), then per subset a logistic regression and one
              evaluation of theta* + delta (llmft.estimate.gradex);
  fine-tune = AdamW on the same LoRA parameters from theta*, `--epochs` over the subset, then the same evaluation.
Both report the mean per-example loss on one target task's held-out data (`--target`, default shift2; '' = the
mixture of all eight tasks). The scale is the reference's default 0.05, or fitted on pilot subsets drawn
with another seed and fine-tuned for real (`--scale 0 --calibrate 2`). The script prints the table,
the mean relative error, the time ratio (estimate including its gradient pass vs fine-tuning every subset), and
the true loss of the subset the estimate ranks best vs the mean true loss of a random subset.

    PYTHONPATH=src .venv/bin/python bench/estimate.py [--subsets 12] [--target shift2] [--scale 0.05] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import sys
import tempfile
import time
from pathlib import Path

LETTERS = string.ascii_lowercase[:12]


def _word(rng: random.Random, low: int = 3, high: int = 6) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(low, high)))


def _shift(word: str, k: int) -> str:
    return "".join(chr(ord(c) + k) for c in word)


TASKS = {
    "shift1": lambda w: _shift(w, 1),
    "shift2": lambda w: _shift(w, 2),
    "reverse": lambda w: w[::-1],
    "copy": lambda w: w,
    "sort": lambda w: "".join(sorted(w)),
    "double": lambda w: "".join(c + c for c in w),
    "last": lambda w: w[-1],
    "first": lambda w: w[0] * 3,
}


def task_records(per_task: int, seed: int) -> list[dict]:
    """`per_task` distinct prompts per task, each record tagged with its task."""
    rng = random.Random(seed)
    records = []
    for task, rule in TASKS.items():
        seen: set[str] = set()
        while len(seen) < per_task:
            word = _word(rng)
            if word in seen:
                continue
            seen.add(word)
            records.append({"prompt": f"{task} {word} =", "completion": " " + rule(word), "task": task})
    return records


def finetune(model, params, examples, pad_id, epochs: float, lr: float, batch_size: int, seed: int) -> None:
    """AdamW on `params` only, from their current values, `epochs` passes in a seeded order."""
    import torch

    from llmft.core.data import collate
    from llmft.core.packing import single_rows
    from llmft.core.scoring import token_loss_sum

    rng = random.Random(seed)
    order = list(range(len(examples)))
    tensors = [p for _, p in params]
    flags = [p.requires_grad for p in tensors]
    for p in tensors:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(tensors, lr=lr, weight_decay=0.0)
    model.train()
    steps = max(1, round(epochs * len(examples) / batch_size))
    done = 0
    while done < steps:
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = collate(single_rows([examples[i] for i in order[start:start + batch_size]]), pad_id, False)
            logits = model(input_ids=batch["input_ids"], use_cache=False).logits
            loss = token_loss_sum(logits, batch["labels"]) / (batch["labels"][:, 1:] != -100).sum()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            if done >= steps:
                break
    model.eval()
    for p, flag in zip(tensors, flags):
        p.requires_grad_(flag)


def meta_initialisation(work: Path, args) -> Path:
    """Stage 1: a tiny Llama trained in full on all tasks; stage 2: a LoRA on it (the meta-init), both on all tasks."""
    from llmft.core.jsonl import write_jsonl
    from llmft.core.trainer import train
    from llmft.recipes.base import get_recipe, recipe_config

    records = task_records(args.per_task + args.eval_per_task, seed=0)
    rng = random.Random(1)
    train_records, eval_records = [], []
    for task in TASKS:
        rows = [r for r in records if r["task"] == task]
        rng.shuffle(rows)
        eval_records += rows[:args.eval_per_task]
        train_records += rows[args.eval_per_task:]
    train_file = write_jsonl(work / "train.jsonl", train_records)
    eval_file = write_jsonl(work / "eval.jsonl", eval_records)
    common = {
        "recipe": "sft",
        "model": {"name": "tiny", "tokenizer": "char",
                  "tiny": {"hidden_size": args.hidden, "num_layers": 2, "num_heads": 4}},
        "data": {"train": str(train_file), "eval": str(eval_file), "packing": "none"},
    }
    stage1 = recipe_config({**common, "adapter": {"method": "full"},
                               "train": {"output_dir": str(work / "stage1"), "max_steps": args.stage1_steps,
                                         "batch_size": 16, "learning_rate": 3e-3, "bf16": "false",
                                         "logging_steps": 50}}, source="bench")
    train(stage1, get_recipe("sft"), progress=False)
    stage2 = recipe_config({**common,
                               "adapter": {"method": "lora", "r": args.rank, "alpha": args.alpha,
                                           "init_from": str(work / "stage1" / "final"),
                                           "target_modules": args.targets.split(",")},
                               "train": {"output_dir": str(work / "meta"), "max_steps": args.stage2_steps,
                                         "batch_size": 16, "learning_rate": args.lr, "bf16": "false",
                                         "logging_steps": 50}}, source="bench")
    train(stage2, get_recipe("sft"), progress=False)
    return work / "meta" / "final"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subsets", type=int, default=12)
    parser.add_argument("--scale", type=float, default=0.05,
                        help="estimate.scale (the reference's default 0.05); 0 = fit it on --calibrate pilot subsets")
    parser.add_argument("--calibrate", type=int, default=2, help="pilot subsets (another seed) for --scale 0")
    parser.add_argument("--dimension", type=int, default=200)
    parser.add_argument("--target", default="shift2",
                        help="measure the loss on this task's held-out data (the selection use case: which tasks "
                             "help a target); '' = the held-out mixture of all eight tasks")
    parser.add_argument("--output", choices=["logit", "loss"], default="logit", help="estimate.output")
    parser.add_argument("--epochs", type=float, default=4.0, help="fine-tuning epochs over each subset")
    parser.add_argument("--lr", type=float, default=5e-3, help="the meta-init's LoRA learning rate")
    parser.add_argument("--finetune-lr", type=float, default=1e-3, help="learning rate of each subset's fine-tune")
    parser.add_argument("--per-task", type=int, default=80)
    parser.add_argument("--eval-per-task", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--rank", type=int, default=4, help="meta-init LoRA rank (the reference's Alpaca run: 4)")
    parser.add_argument("--alpha", type=int, default=32)
    parser.add_argument("--targets", default="q_proj,k_proj,v_proj", help="LoRA targets (the reference's)")
    parser.add_argument("--stage1-steps", type=int, default=600)
    parser.add_argument("--stage2-steps", type=int, default=150)
    parser.add_argument("--approx-examples", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default="", help="keep the meta-init here (reused when present)")
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    import torch

    from llmft.core.config import EstimateConfig
    from llmft.core.data import load_examples
    from llmft.core.inference import load_for_inference
    from llmft.core.jsonl import read_jsonl
    from llmft.estimate.gradex import (
        cached_gradients,
        estimate_subsets,
        first_order_error,
        mean_loss,
        sample_subsets,
        scaled_update,
        subset_update,
    )
    from llmft.estimate.gradients import Projection, estimate_parameters

    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="llmft-estimate-"))
    started = time.perf_counter()
    folder = work / "meta" / "final"
    if not folder.is_dir():
        folder = meta_initialisation(work, args)
    meta_seconds = time.perf_counter() - started

    _, tokenizer, model = load_for_inference(folder)
    pad_id = tokenizer.pad_token_id
    records = read_jsonl(work / "train.jsonl")
    examples = load_examples(work / "train.jsonl", tokenizer, 128)
    eval_examples = load_examples(work / "eval.jsonl", tokenizer, 128)
    if args.target:  # the selection use case: which tasks help one target task
        tasks = [r["task"] for r in read_jsonl(work / "eval.jsonl")]
        eval_examples = [e for e, t in zip(eval_examples, tasks) if t == args.target]
    groups = [r["task"] for r in records]
    params = estimate_parameters(model, "lora")
    theta = [p.detach().clone() for _, p in params]
    theta_norm = sum(float(t.square().sum()) for t in theta) ** 0.5

    def travel(k: int, subset: list[str]) -> list:
        """Fine-tune `subset` from theta*; return the update (the model is left at theta* + update)."""
        chosen = [examples[i] for i, g in enumerate(groups) if g in set(subset)]
        finetune(model, params, chosen, pad_id, args.epochs, args.finetune_lr, 8, seed=k)
        return [(p.detach() - t).reshape(-1).float() for (_, p), t in zip(params, theta)]

    def reset() -> None:
        with torch.no_grad():
            for (_, p), t in zip(params, theta):
                p.copy_(t)

    settings = EstimateConfig(project_dimension=args.dimension, scale=args.scale, batch_size=16, output=args.output)
    projection = Projection([(n, p.numel()) for n, p in params], settings.project_dimension, settings.seed)
    # Estimate: one gradient pass (counted, never cached across runs), then a regression and an evaluation
    # per subset.
    t0 = time.perf_counter()
    cache = Path(tempfile.mkdtemp(prefix="gradients-", dir=work))
    outputs, gradients = cached_gradients(model, examples, pad_id, params, projection, cache, settings)
    gradient_seconds = time.perf_counter() - t0

    calibration_seconds = 0.0
    if not args.scale:
        # The scale is the estimate's one free knob (the reference uses 0.02-0.4): fit it on pilot subsets
        # drawn with another seed, fine-tuned for real, by the mean relative error of the estimated losses.
        t0 = time.perf_counter()
        pilots = sample_subsets(groups, args.calibrate, 0.5, seed=1)
        truths = []
        for k, subset in enumerate(pilots):
            travel(1000 + k, subset)
            truths.append(mean_loss(model, eval_examples, pad_id, 64))
            reset()
        grid = [0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3]
        errors = []
        for scale in grid:
            settings.scale = scale
            pilot_rows = estimate_subsets(model, params, projection, gradients, groups, pilots, eval_examples,
                                          pad_id, settings)
            errors.append(sum(abs(r["loss"] - t) / t for r, t in zip(pilot_rows, truths)) / len(truths))
        settings.scale = grid[errors.index(min(errors))]
        calibration_seconds = time.perf_counter() - t0
    scale = settings.scale
    subsets = sample_subsets(groups, args.subsets, 0.5, seed=0)
    rows = estimate_subsets(model, params, projection, gradients, groups, subsets, eval_examples, pad_id, settings)
    estimate_seconds = gradient_seconds + sum(r["seconds"] for r in rows)
    # The reference's approximation-error experiment on the estimated updates themselves (not timed).
    norm = scale * sum(float(t.square().sum()) for t in theta) ** 0.5
    check = examples[:args.approx_examples]
    for k, row in enumerate(rows):
        indices = [i for i, g in enumerate(groups) if g in set(row["groups"])]
        weights = subset_update(gradients[indices], settings, settings.seed * 1_000_003 + k)
        row["estimate_approx_error"], row["estimate_approx_error_without_gradient"] = first_order_error(
            model, params, projection, outputs, gradients, check, pad_id, scaled_update(projection, weights, norm),
            16, args.output)

    # Truth: fine-tune every subset from theta*, evaluate the same way.

    meta_loss = mean_loss(model, eval_examples, pad_id, 64)
    finetune_seconds = 0.0
    for k, (row, subset) in enumerate(zip(rows, subsets)):
        t0 = time.perf_counter()
        deltas = travel(k, subset)
        row["true_loss"] = mean_loss(model, eval_examples, pad_id, settings.batch_size)
        finetune_seconds += time.perf_counter() - t0
        row["update_norm_ratio"] = sum(float(d.square().sum()) for d in deltas) ** 0.5 / theta_norm
        reset()
        row["approx_error"], row["approx_error_without_gradient"] = first_order_error(
            model, params, projection, outputs, gradients, check, pad_id, deltas, 16, args.output)
        row["relative_error"] = abs(row["loss"] - row["true_loss"]) / row["true_loss"]

    mean_error = sum(r["relative_error"] for r in rows) / len(rows)
    # The trivial predictor: every subset's fine-tune keeps the meta-init's loss.
    unchanged_error = sum(abs(meta_loss - r["true_loss"]) / r["true_loss"] for r in rows) / len(rows)
    approx = {key: sum(r[key] for r in rows) / len(rows) for key in (
        "estimate_approx_error", "estimate_approx_error_without_gradient", "approx_error",
        "approx_error_without_gradient")}
    chosen = min(rows, key=lambda r: r["loss"])
    random_true = sum(r["true_loss"] for r in rows) / len(rows)
    ranks = _spearman([r["loss"] for r in rows], [r["true_loss"] for r in rows])
    load = os.getloadavg()
    report = {
        "subsets": len(rows), "examples": len(examples), "eval_examples": len(eval_examples),
        "parameters": sum(p.numel() for _, p in params), "scale": scale,
        "calibration_seconds": calibration_seconds, "time_ratio_with_calibration":
            finetune_seconds / (estimate_seconds + calibration_seconds), "dimension": args.dimension,
        "epochs": args.epochs, "output": args.output, "target": args.target, "rank": args.rank, "targets": args.targets, "finetune_lr": args.finetune_lr, "meta_loss": meta_loss, "meta_seconds": meta_seconds,
        "gradient_seconds": gradient_seconds, "estimate_seconds": estimate_seconds,
        "finetune_seconds": finetune_seconds, "time_ratio": finetune_seconds / estimate_seconds,
        "mean_relative_error": mean_error, "unchanged_relative_error": unchanged_error, "spearman": ranks, "mean_approximation_errors": approx,
        "chosen_subset": chosen["subset"], "chosen_true_loss": chosen["true_loss"],
        "random_subset_true_loss": random_true, "load_average": load, "threads": args.threads,
        "rows": rows,
    }
    print(f"{'k':>2}  {'tasks':<28} {'estimate':>8} {'true':>8} {'rel.err':>7} {'|d|/|t|':>7} "
          f"{'ft-approx':>9} {'ft-nograd':>9}")
    for r in rows:
        print(f"{r['subset']:>2}  {','.join(r['groups']):<28} {r['loss']:8.4f} {r['true_loss']:8.4f} "
              f"{r['relative_error']:7.2%} {r['update_norm_ratio']:7.3f} {r['approx_error']:9.2e} "
              f"{r['approx_error_without_gradient']:9.2e}")
    print(f"meta-init loss {meta_loss:.4f}; mean relative error {mean_error:.2%} (predicting the meta-init's loss "
          f"for every subset: {unchanged_error:.2%}); Spearman {ranks:.2f}")
    print(f"approximation error (reference formula, {len(check)} training examples), with / without the gradient "
          f"term: estimated updates {approx['estimate_approx_error']:.2e} / "
          f"{approx['estimate_approx_error_without_gradient']:.2e}; real fine-tune updates (g via pinv(P)) "
          f"{approx['approx_error']:.2e} / {approx['approx_error_without_gradient']:.2e}")
    print(f"time: estimate {estimate_seconds:.1f} s (gradients {gradient_seconds:.1f} s) vs fine-tuning "
          f"{finetune_seconds:.1f} s -> {finetune_seconds / estimate_seconds:.1f}x; scale {scale:.3f}"
          + (f" calibrated on {args.calibrate} pilot fine-tunes ({calibration_seconds:.1f} s; "
             f"{finetune_seconds / (estimate_seconds + calibration_seconds):.1f}x counting them)"
             if calibration_seconds else ""))
    print(f"chosen subset {chosen['subset']}: true loss {chosen['true_loss']:.4f} vs random subset "
          f"{random_true:.4f}")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.threads} torch thread(s); meta-init "
          f"{meta_seconds:.0f} s; work folder {work}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


def _spearman(a: list[float], b: list[float]) -> float:
    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        for rank, i in enumerate(order):
            out[i] = float(rank)
        return out

    ra, rb = ranks(a), ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var if var else 0.0


if __name__ == "__main__":
    sys.exit(main())
