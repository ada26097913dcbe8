"""Re-Tuning inference: the wave-batched recursion engine vs the reference's sequential loop.

Baseline (named): `run_sequential`, the reference notebooks' way: one problem at a time, every context its own
`generate` call at batch 1. Contender: `run_recursion`, every ready context of every problem in one batch.
Same trained model (a run folder, default the demo's), same 64 problems, greedy: the answers must agree.

    .venv/bin/python bench/retuning_engine.py [--adapter runs/retuning-addition-tiny/final] [--problems 64]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default="runs/retuning-addition-tiny/final")
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--sizes", default="2,3,4,5", help="addition sizes drawn from, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default="", help="also write the row as JSON here")
    args = parser.parse_args()

    import torch

    from llmft.core.generation import HFGenerator
    from llmft.core.inference import load_for_inference
    from llmft.recipes.retuning.data import eval_prompt, problem_answer
    from llmft.recipes.retuning.engine import run_recursion, run_sequential

    torch.set_num_threads(args.threads)
    folder = Path(args.adapter)
    if not (folder / "llmft.toml").exists():
        sys.exit(f"error: {folder} is not a run folder; run `make demo` first (it trains the tiny model)")
    _, tokenizer, model = load_for_inference(folder)
    model.to(args.device)
    generator = HFGenerator(model, tokenizer, batch_size=256)
    rng = random.Random(0)
    sizes = [int(s) for s in args.sizes.split(",")]
    problems = []
    for _ in range(args.problems):
        size = rng.choice(sizes)
        problems.append((rng.randint(10 ** (size - 1), 10 ** size - 1), rng.randint(10 ** (size - 1), 10 ** size - 1)))
    prompts = [eval_prompt("addition", "recursive", p) for p in problems]
    answers = [problem_answer("addition", p) for p in problems]

    rows = {}
    for name, run in (("sequential (reference)", run_sequential), ("waves (llmft)", run_recursion)):
        run(generator, prompts[:2], "addition", max_new_tokens=40)  # warm-up
        start = time.perf_counter()
        traces = run(generator, prompts, "addition", max_new_tokens=40)
        seconds = time.perf_counter() - start
        tokens = sum(t.generated_tokens for t in traces)
        rows[name] = {"seconds": seconds, "tokens_per_s": tokens / seconds, "problems_per_s": len(prompts) / seconds,
                      "accuracy": sum(t.answer == a for t, a in zip(traces, answers)) / len(prompts),
                      "answers": [t.answer for t in traces]}
    seq, wave = rows["sequential (reference)"], rows["waves (llmft)"]
    agree = sum(a == b for a, b in zip(seq["answers"], wave["answers"])) / len(prompts)
    ratio = seq["seconds"] / wave["seconds"]
    print(f"\nRe-Tuning recursion, {len(prompts)} addition problems (sizes {args.sizes}), {folder}, "
          f"{args.device}, {args.threads} threads")
    print(f"{'engine':<24}{'seconds':>10}{'tokens/s':>12}{'problems/s':>12}{'accuracy':>10}")
    for name, row in rows.items():
        print(f"{name:<24}{row['seconds']:>10.2f}{row['tokens_per_s']:>12.0f}{row['problems_per_s']:>12.2f}"
              f"{row['accuracy']:>10.3f}")
    print(f"waves / sequential speed-up: {ratio:.2f}x; answers agree on {agree:.1%} of problems")
    if args.json:
        Path(args.json).write_text(json.dumps({"ratio": ratio, "agree": agree, "problems": len(prompts),
                                               "rows": {k: {x: y for x, y in v.items() if x != "answers"}
                                                        for k, v in rows.items()}}))


if __name__ == "__main__":
    main()
