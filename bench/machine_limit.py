"""How close llmft's training gets to this machine's matmul limit.

Measures fp32 and bf16 GEMM GFLOP/s two ways: the peak (best of large square GEMMs: what the hardware allows)
and the rate at the benchmark model's own GEMM shapes (the forward and backward matmuls of one micro-batch,
weighted by their FLOPs: what a 256-wide model can get at best). Then trains the benchmark model with llmft
(as train_throughput.py's A) in fp32 and in bf16 autocast and reports 6·N·(real tokens/s) over each, where
N = parameters that take part in matmuls (all but the input embedding table, which is a lookup); the figure
with all parameters is shown too. Attention score FLOPs are not counted (the 6·N rule leaves them out).

    flock /tmp/llmft-cpu.lock .venv/bin/python bench/machine_limit.py [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import workload

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROWS, PACK_LENGTH = 3, 512  # train_throughput.py's A: 3 packed rows of <= 512 tokens per step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", default="")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        folder, bf16 = args.child.rsplit(":", 1)
        print(json.dumps({"tokens_per_s": train_rate(Path(folder), bf16, args)}))
        return

    import torch

    torch.set_num_threads(args.threads)
    sizes = (1024, 2048, 4096, 8192) if args.device == "cuda" else (512, 1024, 2048, 3072)
    tokens = ROWS * PACK_LENGTH
    gemm = {}
    for dtype in ("float32", "bfloat16"):
        square = {n: gemm_rate(n, n, n, dtype, args.device) for n in sizes}
        gemm[dtype] = (max(square.values()), model_shape_rate(tokens, dtype, args.device), square)

    with tempfile.TemporaryDirectory(prefix="llmft-bench-") as tmp:
        paths = workload.build_workload(Path(tmp), 1200, 0)
        from transformers import AutoModelForCausalLM

        total, matmul = workload.parameter_counts(AutoModelForCausalLM.from_pretrained(paths["model"]))
        # One process per precision: accelerate fixes mixed precision once per process.
        rate = {dtype: _train_in_child(Path(tmp), bf16, args)
                for dtype, bf16 in (("float32", "false"), ("bfloat16", "true"))}

    rows = []
    for dtype in ("float32", "bfloat16"):
        peak, shaped, square = gemm[dtype]
        achieved = 6 * matmul * rate[dtype] / 1e9
        rows.append([dtype, peak, shaped, rate[dtype], achieved, f"{achieved / peak:.1%}",
                     f"{achieved / shaped:.1%}", f"{6 * total * rate[dtype] / 1e9 / peak:.1%}"])
    print(f"device: {workload.device_name(args.device)}; threads {args.threads}; model {total:,} parameters "
          f"({matmul:,} in matmuls); training: llmft, {ROWS} packed rows of <= {PACK_LENGTH} tokens "
          f"per step, "
          f"{args.steps} steps")
    print("square GEMM GFLOP/s: " + "; ".join(
        f"{d} " + ", ".join(f"{n}: {r:,.0f}" for n, r in gemm[d][2].items()) for d in gemm))
    workload.print_table(
        f"Machine limit ({args.device})",
        ["precision", "GEMM peak GFLOP/s", "GEMM at model shapes", "llmft real tok/s", "6·N·tok/s GFLOP/s",
         "of peak", "of model-shape GEMM", "of peak (N = all params)"], rows)
    default = "bfloat16" if _bf16_default() else "float32"
    fraction = {dtype: 6 * matmul * rate[dtype] / 1e9 / gemm[dtype][0] for dtype in gemm}
    workload.write_summary(args.json, {
        "device": args.device, "fractions": fraction, "default_precision": default,
        "rows": [[f"train {d} / {d} GEMM peak", f"{fraction[d]:.0%}" + (" (default)" if d == default else ""),
                  ">= 60%", fraction[d] >= 0.6] for d in fraction],
    })


def gemm_rate(m: int, k: int, n: int, dtype: str, device: str, seconds: float = 0.6) -> float:
    """GFLOP/s of (m x k) @ (k x n): the best of three windows of `seconds` / 3 (a peak; the best window is
    the one least disturbed by other jobs on a shared machine)."""
    import torch

    a = torch.randn(m, k, dtype=getattr(torch, dtype), device=device)
    b = torch.randn(k, n, dtype=getattr(torch, dtype), device=device)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(3):
        reps, started = 0, time.perf_counter()
        while True:
            for _ in range(4):
                a @ b
            reps += 4
            if device == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - started
            if elapsed > seconds / 3:
                best = max(best, 2 * m * k * n * reps / elapsed / 1e9)
                break
    return best


def model_shape_rate(tokens: int, dtype: str, device: str) -> float:
    """FLOP-weighted GEMM rate of one training micro-batch's matmuls (forward, input and weight grads)."""
    h, f, v = workload.HIDDEN, workload.FFN, workload.VOCAB
    layers = [(h, h)] * 4 + [(h, f), (h, f), (f, h)]  # q k v o, gate up, down: (in, out)
    shapes = [shape for i, o in layers for shape in ((tokens, i, o), (tokens, o, i), (o, tokens, i))]
    shapes = shapes * workload.LAYERS + [(tokens, h, v), (tokens, v, h), (v, tokens, h)]
    distinct = {s: shapes.count(s) for s in shapes}
    flops = seconds = 0.0
    for (m, k, n), count in distinct.items():
        work = 2 * m * k * n * count
        flops += work
        seconds += work / (gemm_rate(m, k, n, dtype, device, 0.3) * 1e9)
    return flops / seconds / 1e9


def _train_in_child(folder: Path, bf16: str, args: argparse.Namespace) -> float:
    command = [sys.executable, __file__, "--child", f"{folder}:{bf16}", "--steps", str(args.steps),
               "--threads", str(args.threads), "--device", args.device]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stdout.write(done.stdout[-2000:] + done.stderr[-4000:])
        raise SystemExit(f"training (bf16 {bf16}) failed")
    return json.loads(done.stdout.strip().splitlines()[-1])["tokens_per_s"]


def train_rate(folder: Path, bf16: str, args: argparse.Namespace) -> float:
    """Real tokens/s of llmft's trainer on the benchmark data in `folder`."""
    from llmft.core.trainer import train
    from llmft.recipes.base import get_recipe, recipe_config

    paths = {"model": folder / "model", "tokenizer": folder / "tokenizer", "train": folder / "train.jsonl"}
    out = folder / f"run-bf16-{bf16}"
    config = recipe_config({
        "recipe": "sft",
        # fp32 means fp32 weights too (llmft's "auto" dtype loads bf16 weights on a GPU)
        "model": {"name": str(paths["model"]), "tokenizer_name": str(paths["tokenizer"]),
                  "dtype": "auto" if bf16 == "true" else "float32"},
        "adapter": {"method": "full"},
        "data": {"train": str(paths["train"]), "packing": "rows", "pack_length": PACK_LENGTH},
        "train": {"output_dir": str(out), "max_steps": args.steps, "batch_size": ROWS, "learning_rate": 1e-3,
                  "lr_scheduler": "linear", "bf16": bf16,
                  "threads": args.threads if args.device == "cpu" else 0},
    }, source="bench")
    return train(config, get_recipe("sft"), progress=False).tokens_per_second


def _bf16_default() -> bool:
    from llmft.core.models import bf16_supported

    return bf16_supported()


if __name__ == "__main__":
    main()
