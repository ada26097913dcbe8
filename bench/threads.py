"""Torch threads on a busy machine: llmft training at 1 thread, 2 threads (OpenMP's default active wait) and
2 threads with a passive wait policy, each on an idle machine and beside a competing CPU-bound process.

Baseline: the best setting of each condition; the table gives each setting as a share of it.

    .venv/bin/python bench/threads.py --steps 30
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402

SETTINGS = {"1 thread": (1, {}), "2 threads (active wait)": (2, {"OMP_WAIT_POLICY": "ACTIVE"}),
            "2 threads (passive wait)": (2, {"OMP_WAIT_POLICY": "PASSIVE"})}
BUSY = "import time\nend = time.time() + {seconds}\nx = 0\nwhile time.time() < end:\n    x = (x * 31 + 7) % 1000003\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(json.loads(args.child))))
        return
    with tempfile.TemporaryDirectory(prefix="llmft-threads-") as tmp:
        paths = {k: str(v) for k, v in workload.build_workload(Path(tmp), 1280, 64).items()}
        rows = []
        for condition in ("idle", "beside a busy process"):
            rates = {}
            for name, (threads, env) in SETTINGS.items():
                busy = None
                if condition != "idle":
                    busy = subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=900)])
                    time.sleep(1)
                try:
                    plan = {"paths": paths, "threads": threads, "steps": args.steps,
                            "out": str(Path(tmp) / f"run-{condition[:4]}-{len(rates)}")}
                    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(plan)],
                                          capture_output=True, text=True, check=True, env={**os.environ, **env})
                    rates[name] = json.loads(done.stdout.strip().splitlines()[-1])["tokens_per_s"]
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
                print(f"{condition}, {name}: {rates[name]:,.0f} real tok/s", flush=True)
            best = max(rates.values())
            rows += [[condition, name, rate, f"{rate / best:.0%}"] for name, rate in rates.items()]
    workload.print_table(f"Torch threads ({workload.machine()}, {args.steps} steps, bf16 off)",
                         ["machine", "setting", "real tok/s", "of the best"], rows)


def run_one(plan: dict) -> dict:
    from llmft.core.trainer import train
    from llmft.recipes.base import get_recipe, recipe_config

    paths = plan["paths"]
    config = recipe_config({
        "recipe": "sft",
        "model": {"name": paths["model"], "tokenizer_name": paths["tokenizer"], "dtype": "float32"},
        "adapter": {"method": "full"},
        "data": {"train": paths["train"], "packing": "rows", "pack_length": 512},
        "train": {"output_dir": plan["out"], "max_steps": plan["steps"], "batch_size": 3, "learning_rate": 1e-3,
                  "threads": plan["threads"], "bf16": "false"},
    }, source="bench")
    return {"tokens_per_s": train(config, get_recipe("sft"), progress=False).tokens_per_second}


if __name__ == "__main__":
    main()
