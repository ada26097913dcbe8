"""Rows sized to the examples vs one packing width: llmft's trainer on the benchmark workload, side by side.

A = packed rows of pack_length 512 only (the default); B = `data.row_widths = [64, 128, 256]` (+ 512):
each example joins the narrowest row width that holds it and a batch holds one width, with the same tokens
per optimizer step; C = B with `model.attn_implementation = "auto"` (eager attention for batches of rows up to
128 tokens, SDPA above); D = one width of 128 with "auto" attention (the Re-Tuning demo's preset), the same tokens
of capacity per step (4x the rows). Same data, seed, steps and learning rate; runs alternate A B C D A B C D, one process each.
`--workload retuning` trains on the Re-Tuning demo's data (`recipes/retuning-addition-tiny.toml`'s model and
data, made first with its make-data line) instead of the benchmark workload.

    .venv/bin/python bench/row_widths.py --steps 40 --threads 2 [--precision fp32|bf16|both] [--contenders ACD]
    .venv/bin/python bench/row_widths.py --workload retuning --rows 16 --steps 40 --contenders ACD
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402

WIDTHS = [64, 128, 256]
# (label, data.row_widths, model.attn_implementation, data.pack_length); A is the baseline the others divide by.
CONTENDERS = [("A one width 512", [], "sdpa", 512), ("B row widths", WIDTHS, "sdpa", 512),
              ("C row widths + auto attention", WIDTHS, "auto", 512),
              ("D one width 128 + auto attention", [], "auto", 128)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rows", type=int, default=3, help="512-token rows per step (A); B has the same tokens")
    parser.add_argument("--examples", type=int, default=1280)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    parser.add_argument("--workload", choices=["bench", "retuning"], default="bench")
    parser.add_argument("--contenders", default="ABCD", help="which of A B C D to run (A always)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(json.loads(args.child))))
        return
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    with tempfile.TemporaryDirectory(prefix="llmft-widths-") as tmp:
        paths = workload.build_workload(Path(tmp), args.examples, 64) if args.workload == "bench" else {}
        results = []
        for precision in precisions:
            for repeat in range(args.repeats):
                for label, widths, attn, width in CONTENDERS:
                    if label[0] not in args.contenders + "A":  # A is the baseline every ratio divides by
                        continue
                    plan = {"paths": {k: str(v) for k, v in paths.items()}, "widths": widths, "steps": args.steps,
                            "attn": attn, "workload": args.workload, "pack_length": width,
                            "rows": args.rows, "threads": args.threads, "precision": precision,
                            "out": str(Path(tmp) / f"run-{precision}-{label[0]}-{repeat}")}
                    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(plan)],
                                          capture_output=True, text=True, check=True)
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    results.append({"precision": precision, "run": f"{label} #{repeat + 1}", **result})
                    print(f"{precision} {label} #{repeat + 1}: {result['tokens_per_s']:,.0f} real tok/s", flush=True)
    rows = [[r["precision"], r["run"], r["tokens_per_s"], r["final_loss"], r["seconds"]] for r in results]
    workload.print_table(f"Row widths vs one width ({workload.machine()}, {args.threads} threads, {args.steps} steps)",
                         ["precision", "run", "real tok/s", "final loss (last 5)", "train s"], rows)
    for precision in precisions:
        a = [r for r in results if r["precision"] == precision and r["run"].startswith("A")]
        for other in sorted(set(args.contenders) - {"A"}):
            b = [r for r in results if r["precision"] == precision and r["run"].startswith(other)]
            speed = sum(r["tokens_per_s"] for r in b) / sum(r["tokens_per_s"] for r in a)
            loss = sum(r["final_loss"] for r in b) / sum(r["final_loss"] for r in a)
            print(f"{precision}: {other}/A real tok/s {speed:.2f}x, final loss {other}/A {loss:.3f}")


def run_one(plan: dict[str, Any]) -> dict[str, Any]:
    """One training run in this process; real tokens/s and the mean loss of the last 5 steps."""
    from llmft.recipes.base import get_recipe, recipe_config

    if plan["workload"] == "retuning":
        return run_retuning(plan)
    paths = plan["paths"]
    config = recipe_config({
        "recipe": "sft",
        "model": {"name": paths["model"], "tokenizer_name": paths["tokenizer"],
                  "dtype": "float32",  # bf16 = autocast over fp32 weights, as recipes train
                  "attn_implementation": plan["attn"]},
        "adapter": {"method": "full"},
        "data": {"train": paths["train"], "packing": "rows", "pack_length": plan["pack_length"],
                 "row_widths": plan["widths"]},
        "train": {"output_dir": plan["out"], "max_steps": plan["steps"],
                  "batch_size": rows_per_step(plan),
                  "learning_rate": 1e-3, "lr_scheduler": "linear", "threads": plan["threads"],
                  "bf16": "true" if plan["precision"] == "bf16" else "false"},
    }, source="bench")
    return timed_train(config, get_recipe("sft"))


def run_retuning(plan: dict[str, Any]) -> dict[str, Any]:
    """The Re-Tuning demo preset, its rows 512 wide or sized to the examples, for `steps` steps."""
    config, recipe = workload.retuning_demo(plan["out"], plan["steps"], [
        f"train.threads={plan['threads']}", f"train.bf16={'true' if plan['precision'] == 'bf16' else 'false'}",
        f"data.pack_length={plan['pack_length']}", f"train.batch_size={rows_per_step(plan)}",
        f"model.attn_implementation={plan['attn']}",
        f"data.row_widths={plan['widths']}"])
    return timed_train(config, recipe)


def rows_per_step(plan: dict[str, Any]) -> int:
    """Rows of the plan's pack_length holding the tokens of `rows` 512-token rows."""
    return plan["rows"] * 512 // plan["pack_length"]


def timed_train(config: Any, recipe: Any) -> dict[str, Any]:
    """Train in this process; real tokens/s, the mean loss of the last 5 steps and the wall seconds."""
    from llmft.core.trainer import train

    started = time.perf_counter()
    result = train(config, recipe, progress=False)
    return {"tokens_per_s": result.tokens_per_second, "final_loss": sum(result.losses[-5:]) / 5,
            "seconds": round(time.perf_counter() - started, 1)}


if __name__ == "__main__":
    main()
