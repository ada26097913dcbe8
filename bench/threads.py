"""Torch threads on a busy machine: llmft training at 1 thread, 2 threads with OpenMP's active (spinning) wait,
2 threads with a passive wait, and llmft's default (threads.py: the wait policy chosen from how busy the
machine is at launch), each on an idle machine and beside a competing CPU-bound process.

Baseline: the best setting of each condition; the table gives each setting as a share of it.
`--workload retuning`: the Re-Tuning demo preset (`recipes/retuning-addition-tiny.toml`, its data made first)
instead of the benchmark workload's 5.8M Llama in fp32.

    .venv/bin/python bench/threads.py --steps 30
    .venv/bin/python bench/threads.py --workload retuning --steps 60
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

# name: (threads, environment); None = no OMP_WAIT_POLICY, so llmft's launch-time choice decides.
SETTINGS = {"1 thread": (1, {}), "2 threads (active wait)": (2, {"OMP_WAIT_POLICY": "ACTIVE"}),
            "2 threads (passive wait)": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
            "llmft default (2 threads, wait chosen at launch)": (2, None)}
BUSY = "import time\nend = time.time() + {seconds}\nx = 0\nwhile time.time() < end:\n    x = (x * 31 + 7) % 1000003\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workload", choices=["bench", "retuning"], default="bench")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(json.loads(args.child))))
        return
    with tempfile.TemporaryDirectory(prefix="llmft-threads-") as tmp:
        paths = ({k: str(v) for k, v in workload.build_workload(Path(tmp), 1280, 64).items()}
                 if args.workload == "bench" else {})
        rows = []
        for condition in ("idle", "beside a busy process"):
            rates = {}
            for name, (threads, env) in SETTINGS.items():
                busy = None
                if condition != "idle":
                    busy = subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=900)])
                    time.sleep(1)
                try:
                    plan = {"paths": paths, "threads": threads, "steps": args.steps, "workload": args.workload,
                            "out": str(Path(tmp) / f"run-{condition[:4]}-{len(rates)}"), "choose": env is None}
                    child_env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
                    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(plan)],
                                          capture_output=True, text=True, check=True, env={**child_env, **(env or {})})
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    name = name if env is not None else f"{name}: {result['policy']}"
                    rates[name] = result["tokens_per_s"]
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
                print(f"{condition}, {name}: {rates[name]:,.0f} real tok/s", flush=True)
            best = max(rates.values())
            rows += [[condition, name, rate, f"{rate / best:.0%}"] for name, rate in rates.items()]
    what = "benchmark workload, fp32" if args.workload == "bench" else "Re-Tuning demo preset"
    workload.print_table(f"Torch threads ({workload.machine()}, {what}, {args.steps} steps)",
                         ["machine", "setting", "real tok/s", "of the best"], rows)


def run_one(plan: dict) -> dict:
    policy = "given"
    if plan["choose"]:  # as `llmft train` does, before torch loads
        from llmft.threads import set_wait_policy

        policy = set_wait_policy().lower()
    from llmft.core.trainer import train
    from llmft.recipes.base import get_recipe, recipe_config

    if plan["workload"] == "retuning":
        config, recipe = workload.retuning_demo(plan["out"], plan["steps"], [f"train.threads={plan['threads']}"])
        return {"tokens_per_s": train(config, recipe, progress=False).tokens_per_second, "policy": policy}
    paths = plan["paths"]
    config = recipe_config({
        "recipe": "sft",
        "model": {"name": paths["model"], "tokenizer_name": paths["tokenizer"], "dtype": "float32"},
        "adapter": {"method": "full"},
        "data": {"train": paths["train"], "packing": "rows", "pack_length": 512},
        "train": {"output_dir": plan["out"], "max_steps": plan["steps"], "batch_size": 3, "learning_rate": 1e-3,
                  "threads": plan["threads"], "bf16": "false"},
    }, source="bench")
    return {"tokens_per_s": train(config, get_recipe("sft"), progress=False).tokens_per_second, "policy": policy}


if __name__ == "__main__":
    main()
