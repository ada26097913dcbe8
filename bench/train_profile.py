"""Where a training step of the 5M benchmark model spends its time, and what that caps the 6·N rate at.

Trains bench/workload.py's model with llmft's own batches (core.data: packed rows as the recipes use them, and
length-grouped unpacked batches with no attention mask) and llmft's loss, in a plain loop (the trainer's step
without accelerate's bookkeeping, so the profiler sees only the model), after warm-up steps. Prints, per
variant, milliseconds per step by kind of op (GEMMs, attention, element-wise, loss, optimizer), the GEMMs' own
rate inside training, the 6·N rate reached as a fraction of the GEMM peak, and the fraction the step would
reach if everything but the GEMMs took no time (the ceiling even perfect fusion could not pass). The first
variant is the plain step (SDPA over whole rows, logits everywhere), the second llmft's trainer step (its CPU
attention choice, `llmft.core.attention`'s blocks for 512-token rows, and logits only where trained).
`--compile` adds a torch.compile (inductor) variant timed after its compilation; `--top N` lists the N ops
that take the most time in llmft's step.

    flock /tmp/llmft-cpu.lock .venv/bin/python bench/train_profile.py [--bf16] [--compile] [--top 25]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import workload
from machine_limit import gemm_rate

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

KINDS = [  # (kind, op-name prefixes), first match wins
    ("GEMM", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")),
    ("attention", ("aten::_scaled_dot_product", "aten::_flash_attention", "aten::_efficient_attention")),
    ("loss", ("aten::_log_softmax", "aten::nll_loss", "aten::log_softmax", "aten::cross_entropy")),
    ("optimizer", ("aten::_fused_adamw", "aten::_foreach")),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (default: fp32)")
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd model")
    parser.add_argument("--top", type=int, default=0, help="list the N slowest ops of llmft's step")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    dtype = "bfloat16" if args.bf16 else "float32"
    peak = max(gemm_rate(n, n, n, dtype, "cpu") for n in (1024, 2048, 3072))
    with tempfile.TemporaryDirectory(prefix="llmft-bench-") as tmp:
        paths = workload.build_workload(Path(tmp), 1200, 0)
        variants = [("packed rows, 3 x 512, plain step", "rows", False, False),
                    ("packed rows, 3 x 512, llmft's step", "rows", False, True),
                    ("grouped, 18 examples, no mask", "group", False, False)]
        if args.compile:
            variants.append(("packed rows, torch.compile", "rows", True, False))
        rows = [profile_variant(paths, label, packing, compiled, ours, peak, args)
                for label, packing, compiled, ours in variants]
    precision = "bf16 autocast" if args.bf16 else "fp32"
    workload.print_table(
        f"Training step by kind of op ({precision}, {args.threads} threads, {args.steps} profiled steps)",
        ["variant", "real tok/s", "ms/step", "GEMM ms", "attention ms", "element-wise ms", "loss ms",
         "optimizer ms", "other ms (profiled)", "6·N GFLOP/s", "of peak", "GEMM GFLOP/s in training",
         "ceiling: of peak if only GEMMs took time"], rows)
    print(f"{dtype} GEMM peak (best square GEMM 1024-3072): {peak:,.0f} GFLOP/s; op times from torch.profiler "
          "(self CPU time per step, a second pass over the same steps)")


def profile_variant(paths: dict[str, Path], label: str, packing: str, compiled: bool, ours: bool, peak: float,
                    args: argparse.Namespace) -> list:
    """One table row: timings of `args.steps` steps, then the same steps again under the profiler. `ours`:
    the trainer's attention choice and logits only where trained."""
    import contextlib

    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmft.core.data import collate, load_examples
    from llmft.core.models import attention_for_width
    from llmft.core.packing import batch_order, pack_rows, single_rows
    from llmft.core.scoring import logits_only_where_trained, token_loss_sum

    tokenizer = AutoTokenizer.from_pretrained(paths["tokenizer"])
    model = AutoModelForCausalLM.from_pretrained(paths["model"], dtype=torch.float32)
    n_matmul = workload.parameter_counts(model)[1]
    examples = load_examples(paths["train"], tokenizer, 1024)
    if packing == "rows":
        rows = pack_rows(examples, 512)
        order = batch_order(rows, 3, 0, 0, "random")
    else:
        rows = single_rows(examples)
        order = batch_order(rows, 18, 0, 0, "group")
    batches = [(collate([rows[i] for i in b], tokenizer.pad_token_id, packing == "rows"),
                sum(len(rows[i].input_ids) for i in b)) for b in order]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    forward = torch.compile(model) if compiled else model
    if ours:
        attention_for_width(model, max(batch["input_ids"].shape[1] for batch, _ in batches))

    def step(batch: dict) -> None:
        labels = batch["labels"]
        gathered = logits_only_where_trained(model, labels) if ours else contextlib.nullcontext()
        with gathered as trained, torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            logits = forward(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
        loss = token_loss_sum(logits, trained[0], shift=False) if ours else token_loss_sum(logits, labels)
        loss.div(1000).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    warm = 3
    for batch, _ in batches[:warm]:
        step(batch)
    timed = batches[warm:warm + args.steps]
    started = time.perf_counter()
    for batch, _ in timed:
        step(batch)
    seconds = time.perf_counter() - started
    tokens = sum(n for _, n in timed)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        for batch, _ in timed:
            step(batch)
        profiled_seconds = time.perf_counter() - started
    ms = {kind: 0.0 for kind, _ in KINDS} | {"element-wise": 0.0}
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            kind = next((k for k, prefixes in KINDS if event.key.startswith(prefixes)), "element-wise")
            ms[kind] += event.self_cpu_time_total / 1e3 / len(timed)
    if ours and args.top:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    # What the profiled step spent outside aten ops: Python, the autograd engine, the profiler itself.
    other = profiled_seconds * 1e3 / len(timed) - sum(ms.values())
    rate = tokens / seconds
    gemm_rate = 6 * n_matmul * tokens / len(timed) / (ms["GEMM"] / 1e3) / 1e9
    return [label, rate, seconds * 1e3 / len(timed), ms["GEMM"], ms["attention"], ms["element-wise"], ms["loss"],
            ms["optimizer"], other, 6 * n_matmul * rate / 1e9, f"{6 * n_matmul * rate / 1e9 / peak:.1%}",
            gemm_rate, f"{gemm_rate / peak:.1%}"]


if __name__ == "__main__":
    main()
