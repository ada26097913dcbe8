"""GradEx estimate vs actually fine-tuning each subset, on a tiny model (CPU), in fp32 and bf16 over seeds.

Eight small string tasks are the groups (the same data in every run). Per precision and seed, a
meta-initialisation is trained on all of them (a tiny Llama trained in full, then a LoRA on top: the reference's
multitask-LoRA meta-init) with the core trainer at that train.bf16 and train.seed. Then, for the distinct subsets
among `--subsets` random draws of half the tasks, one after the other (interleaved, so load changes hit both):
  estimate  = per-example gradients at theta* once (timed, counted), then per subset `--repeats` regressions
              (own projection and labels each) and evaluations of theta* + delta (llmft.estimate.gradex);
  fine-tune = AdamW on the same LoRA parameters from theta*, `--epochs` over the subset (bf16 autocast in the
              bf16 runs), then the same evaluation.
Both report the mean per-example loss on one target task's held-out data (`--target`, default shift2; '' = the
mixture of all eight tasks). Per run: mean relative error, the same for predicting "no change" (the
meta-init's loss), Spearman across subsets, the true loss of the subset the estimate chooses (only when it clears
the repeats' spread) against the best, the mean and the worst subset, and the speed-up.

    PYTHONPATH=src .venv/bin/python bench/estimate.py [--precisions fp32,bf16] [--seeds 0,1,2] [--json out.json]
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


def finetune(model, params, examples, pad_id, epochs: float, lr: float, batch_size: int, seed: int,
             bf16: bool = False) -> None:
    """AdamW on `params` only, from their current values, `epochs` passes in a seeded order (bf16 autocast on
    request, as the trainer's bf16 runs)."""
    import contextlib

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
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    while done < steps:
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = collate(single_rows([examples[i] for i in order[start:start + batch_size]]), pad_id, False)
            with autocast:
                logits = model(input_ids=batch["input_ids"], use_cache=False).logits
            loss = token_loss_sum(logits.float(), batch["labels"]) / (batch["labels"][:, 1:] != -100).sum()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            if done >= steps:
                break
    model.eval()
    for p, flag in zip(tensors, flags):
        p.requires_grad_(flag)


def meta_initialisation(work: Path, args, seed: int, bf16: bool) -> Path:
    """Stage 1: a tiny Llama trained in full on all tasks; stage 2: a LoRA on it (the meta-init), both on all
    tasks, at train.seed = `seed` and train.bf16 = `bf16`; the data is the same for every seed."""
    from accelerate.state import AcceleratorState, GradientState

    from llmft.core.jsonl import write_jsonl
    from llmft.core.trainer import train
    from llmft.recipes.base import get_recipe, recipe_config

    # accelerate keeps one mixed precision per process; each run here picks its own.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
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
    precision = "true" if bf16 else "false"
    stage1 = recipe_config({**common, "adapter": {"method": "full"},
                               "train": {"output_dir": str(work / "stage1"), "max_steps": args.stage1_steps,
                                         "batch_size": 16, "learning_rate": 3e-3, "bf16": precision, "seed": seed,
                                         "threads": args.threads, "logging_steps": 50}}, source="bench")
    train(stage1, get_recipe("sft"), progress=False)
    stage2 = recipe_config({**common,
                               "adapter": {"method": "lora", "r": args.rank, "alpha": args.alpha,
                                           "init_from": str(work / "stage1" / "final"),
                                           "target_modules": args.targets.split(",")},
                               "train": {"output_dir": str(work / "meta"), "max_steps": args.stage2_steps,
                                         "batch_size": 16, "learning_rate": args.lr, "bf16": precision,
                                         "seed": seed, "threads": args.threads, "logging_steps": 50}},
                          source="bench")
    train(stage2, get_recipe("sft"), progress=False)
    return work / "meta" / "final"


def one_run(work: Path, args, seed: int, bf16: bool) -> dict:
    """The estimate and the fine-tunes of every subset, interleaved, for one precision and seed."""
    import torch

    from llmft.core.config import EstimateConfig
    from llmft.core.data import load_examples
    from llmft.core.inference import load_for_inference
    from llmft.core.jsonl import read_jsonl
    from llmft.estimate.gradex import (
        cached_gradients,
        clear_best,
        estimate_subsets,
        first_order_error,
        mean_loss,
        sample_subsets,
        subset_deltas,
    )
    from llmft.estimate.gradients import estimate_parameters, repeat_projections

    started = time.perf_counter()
    folder = work / "meta" / "final"
    if not folder.is_dir():
        folder = meta_initialisation(work, args, seed, bf16)
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
        finetune(model, params, chosen, pad_id, args.epochs, args.finetune_lr, 8, seed=seed * 1000 + k, bf16=bf16)
        return [(p.detach() - t).reshape(-1).float() for (_, p), t in zip(params, theta)]

    def reset() -> None:
        with torch.no_grad():
            for (_, p), t in zip(params, theta):
                p.copy_(t)

    settings = EstimateConfig(project_dimension=args.dimension, scale=args.scale or 0.05, batch_size=16,
                              output=args.output, seed=seed, repeats=args.repeats,
                              regularization=args.regularization)
    projections = repeat_projections([(n, p.numel()) for n, p in params], args.dimension, seed, args.repeats)
    # The estimate's one gradient pass (counted, never cached across runs).
    t0 = time.perf_counter()
    cache = Path(tempfile.mkdtemp(prefix="gradients-", dir=work))
    outputs, gradients = cached_gradients(model, examples, pad_id, params, projections, cache, settings)
    gradient_seconds = time.perf_counter() - t0

    calibration_seconds = 0.0
    if not args.scale:
        # The scale as a fitted constant: pilot subsets drawn with another seed, fine-tuned for real; the grid
        # value with the lowest mean relative error of their estimated losses.
        t0 = time.perf_counter()
        pilots = sample_subsets(groups, args.calibrate, 0.5, seed=seed + 10_000)
        truths = []
        for k, subset in enumerate(pilots):
            travel(1000 + k, subset)
            truths.append(mean_loss(model, eval_examples, pad_id, 64))
            reset()
        grid = [0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.4]
        errors = []
        for scale in grid:
            settings.scale = scale
            pilot_rows = estimate_subsets(model, params, projections, gradients, groups, pilots, eval_examples,
                                          pad_id, settings)
            errors.append(sum(abs(r["loss"] - t) / t for r, t in zip(pilot_rows, truths)) / len(truths))
        settings.scale = grid[errors.index(min(errors))]
        calibration_seconds = time.perf_counter() - t0

    subsets = sample_subsets(groups, args.subsets, 0.5, seed=seed)
    meta_loss = mean_loss(model, eval_examples, pad_id, settings.batch_size)
    norm = settings.scale * theta_norm
    check = examples[:args.approx_examples]
    rows, estimate_seconds, finetune_seconds = [], gradient_seconds, 0.0
    for k, subset in enumerate(subsets):
        (row,) = estimate_subsets(model, params, projections, gradients, groups, [subset], eval_examples, pad_id,
                                  settings, start=k)
        estimate_seconds += row["seconds"]
        indices = [i for i, g in enumerate(groups) if g in set(subset)]
        estimated = subset_deltas(projections, gradients, indices, norm, settings, k)[0]
        row["estimate_approx_error"], _ = first_order_error(model, params, projections[0], outputs, gradients,
                                                            check, pad_id, estimated, 16, args.output)
        t0 = time.perf_counter()
        deltas = travel(k, subset)
        row["true_loss"] = mean_loss(model, eval_examples, pad_id, settings.batch_size)
        finetune_seconds += time.perf_counter() - t0
        row["update_norm_ratio"] = sum(float(d.square().sum()) for d in deltas) ** 0.5 / theta_norm
        reset()
        row["relative_error"] = abs(row["loss"] - row["true_loss"]) / row["true_loss"]
        rows.append(row)

    true = [r["true_loss"] for r in rows]
    chosen = clear_best(rows)
    chosen_row = next((r for r in rows if r["subset"] == chosen), None)
    return {
        "precision": "bf16" if bf16 else "fp32", "seed": seed, "drawn": args.subsets, "subsets": len(rows),
        "examples": len(examples), "eval_examples": len(eval_examples),
        "parameters": sum(p.numel() for _, p in params), "scale": settings.scale,
        "regularization": settings.regularization, "output": args.output, "repeats": args.repeats,
        "dimension": args.dimension, "target": args.target, "meta_loss": meta_loss, "meta_seconds": meta_seconds,
        "mean_relative_error": sum(r["relative_error"] for r in rows) / len(rows),
        "unchanged_relative_error": sum(abs(meta_loss - t) / t for t in true) / len(rows),
        "spearman": _spearman([r["loss"] for r in rows], true),
        "chosen_subset": chosen, "chosen_true_loss": chosen_row["true_loss"] if chosen_row else None,
        "lowest_estimate_true_loss": min(rows, key=lambda r: r["loss"])["true_loss"],
        "best_true_loss": min(true), "mean_true_loss": sum(true) / len(true), "worst_true_loss": max(true),
        "gradient_seconds": gradient_seconds, "estimate_seconds": estimate_seconds,
        "finetune_seconds": finetune_seconds, "calibration_seconds": calibration_seconds,
        "speedup": finetune_seconds / estimate_seconds,
        "speedup_with_calibration": finetune_seconds / (estimate_seconds + calibration_seconds),
        "estimate_approx_error": sum(r["estimate_approx_error"] for r in rows) / len(rows),
        "load_average": os.getloadavg()[0], "rows": rows,
    }


def print_run(run: dict) -> None:
    print(f"\n{run['precision']} seed {run['seed']}: {run['drawn']} subsets drawn, {run['subsets']} distinct; "
          f"meta-init loss {run['meta_loss']:.4f}; scale {run['scale']:.3f}")
    print(f"{'k':>2}  {'tasks':<28} {'estimate':>8} {'spread':>15} {'true':>8} {'rel.err':>7} {'|d|/|t|':>7}")
    for r in run["rows"]:
        print(f"{r['subset']:>2}  {','.join(r['groups']):<28} {r['loss']:8.4f} {r['loss_low']:7.4f}-"
              f"{r['loss_high']:.4f} {r['true_loss']:8.4f} {r['relative_error']:7.2%} {r['update_norm_ratio']:7.3f}")


def summary_line(run: dict) -> str:
    chosen = f"{run['chosen_true_loss']:.3f}" if run["chosen_subset"] is not None else \
        f"none ({run['lowest_estimate_true_loss']:.3f})"
    return (f"| {run['precision']} | {run['seed']} | {run['subsets']}/{run['drawn']} | {run['meta_loss']:.3f} | "
            f"{run['mean_relative_error']:.2%} | {run['unchanged_relative_error']:.2%} | {run['spearman']:.2f} | "
            f"{chosen} | {run['best_true_loss']:.3f} / {run['mean_true_loss']:.3f} / {run['worst_true_loss']:.3f} | "
            f"{run['speedup']:.1f}x" + (f" ({run['speedup_with_calibration']:.1f}x with pilots)"
                                        if run["calibration_seconds"] else "") + f" | {run['scale']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default="fp32,bf16", help="train.bf16 off (fp32) and/or on (bf16)")
    parser.add_argument("--seeds", default="0,1,2", help="train.seed, estimate.seed, subset draws, fine-tune orders")
    parser.add_argument("--subsets", type=int, default=12, help="subsets drawn (the distinct ones are used)")
    parser.add_argument("--scale", type=float, default=0.05,
                        help="estimate.scale (the reference's default 0.05); 0 = fit it on --calibrate pilot subsets")
    parser.add_argument("--calibrate", type=int, default=2, help="pilot subsets (another seed) for --scale 0")
    parser.add_argument("--regularization", type=float, default=1e-4, help="estimate.regularization (C)")
    parser.add_argument("--repeats", type=int, default=3, help="estimate.repeats")
    parser.add_argument("--dimension", type=int, default=200)
    parser.add_argument("--target", default="shift2",
                        help="measure the loss on this task's held-out data (the selection use case: which tasks "
                             "help a target); '' = the held-out mixture of all eight tasks")
    parser.add_argument("--output", choices=["logit", "cot-logit", "loss"], default="logit", help="estimate.output")
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
    parser.add_argument("--work", default="", help="keep the meta-inits here (reused when present)")
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="llmft-estimate-"))
    results = []
    for precision in args.precisions.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            run = one_run(work / f"{precision}-seed{seed}", args, seed, precision == "bf16")
            print_run(run)
            results.append(run)
    print("\n| precision | seed | subsets distinct/drawn | meta-init loss | mean rel. error | \"no change\" error | "
          "Spearman | chosen subset's true loss | best / mean / worst true loss | speed-up | scale |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for run in results:
        print(summary_line(run))
    print(f"load average {os.getloadavg()[0]:.2f}; {args.threads} torch thread(s); work folder {work}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


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
