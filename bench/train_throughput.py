"""Training throughput, llmft vs plain TRL, on the same data, tokenizer, initial weights and optimizer steps.

A = `llmft.core.trainer.train` configured as the recipes do (packing = "rows", pack_length 512, bf16 "auto").
B = TRL `SFTTrainer` with its defaults for prompt/completion data (completion-only loss, padded random
    batches, bf16, gradient checkpointing), the same learning rate, schedule (linear, no warmup) and clipping.
A0 (with --baseline DIR) = A run from another llmft checkout (e.g. `git worktree add DIR <commit>`), the
    "before" of a speed change, in the same invocation (A0 A B, repeated).
`--precision fp32` trains A, A0 and B without bf16 autocast.

Effective batch: B takes `batch` examples per optimizer step, A takes `rows` packed rows per step (about as
many examples). The script picks the number of training examples E (at most --examples), `rows`, and `batch`
(within 25% of --batch) so that both runs make the same number of optimizer steps, ceil(E / batch) =
ceil(packed rows / rows), and see each of the E examples exactly once (one epoch each; each run's last step
may be smaller); the table shows both counts. Each run is its own subprocess (peak RSS = the child's own
ru_maxrss, taken right after training), timed A B A B in one invocation. Real tokens/s = non-padding tokens
trained / training-loop seconds (model loading and tokenisation excluded for both; the child's whole wall
time is shown too). "final loss" is the mean of the last 10 step losses; "held-out loss" is the completion
loss of the trained model on 128 unseen examples, in fp32, computed by the same function for both.

    flock /tmp/llmft-cpu.lock .venv/bin/python bench/train_throughput.py [--device cuda] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import workload

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

PACK_LENGTH = 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--examples", type=int, default=1280, help="most training examples to use")
    parser.add_argument("--batch", type=int, default=16, help="B's examples per optimizer step")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=2, help="A B pairs")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--trl-no-checkpointing",
        action="store_true",
        help="turn off TRL's default gradient checkpointing in B (to see its share of the gap)",
    )
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                        help="bf16: autocast where supported (llmft's bf16 = auto, TRL's default); fp32: none")
    parser.add_argument("--baseline", default="", help="an llmft checkout to run as A0 (its src/ first on the path)")
    parser.add_argument("--no-trl", action="store_true", help="with --baseline: A0 and A only (a change to llmft)")
    parser.add_argument("--json", default="", help="write the headline figures here")
    parser.add_argument("--child", choices=["A0", "A", "B"], help=argparse.SUPPRESS)
    parser.add_argument("--plan", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.no_trl and not args.baseline:
        parser.error("--no-trl compares llmft with a --baseline checkout; give one")
    if args.child:
        plan = json.loads(Path(args.plan).read_text())
        result = run_trl(plan) if args.child == "B" else run_llmft(plan)
        Path(plan["out"]).write_text(json.dumps(result))
        return

    with tempfile.TemporaryDirectory(prefix="llmft-bench-") as tmp:
        folder = Path(tmp)
        paths = workload.build_workload(folder, args.examples, 128)
        plan = make_plan(paths, args)
        runs: list[dict[str, Any]] = []
        for repeat in range(args.repeats):
            for who in (["A0"] if args.baseline else []) + ["A"] + ([] if args.no_trl else ["B"]):
                runs.append(run_child(who, repeat, plan, folder, args.baseline))
    report(runs, plan, args)


def make_plan(paths: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    """The largest E <= --examples, A's rows per step and B's batch (within 25% of --batch) such that both
    make the same number of optimizer steps in one epoch over the same E examples."""
    from transformers import AutoTokenizer

    from llmft.core.data import tokenize_record
    from llmft.core.packing import pack_rows

    tokenizer = AutoTokenizer.from_pretrained(paths["tokenizer"])
    records = [json.loads(line) for line in paths["train"].read_text().splitlines()]
    examples = [tokenize_record(r, tokenizer, 1024) for r in records]
    for count in range(args.examples, args.examples // 2, -1):
        subset = examples[:count]
        rows = pack_rows(subset, max(PACK_LENGTH, max(len(e) for e in subset)))
        near = max(round(len(rows) * args.batch / count), 1)
        for rows_per_step in (near, near + 1, near - 1):
            steps = math.ceil(len(rows) / max(rows_per_step, 1))
            batch = math.ceil(count / steps)
            if rows_per_step < 1 or steps < 2 or math.ceil(count / batch) != steps:
                continue
            if abs(batch - args.batch) > args.batch / 4:
                continue
            workload.write_jsonl(paths["train"], records[:count])
            lengths = sorted(len(e) for e in subset)
            return {
                "paths": {k: str(v) for k, v in paths.items()},
                "device": args.device,
                "lr": args.lr,
                "threads": args.threads,
                "batch": batch,
                "trl_checkpointing": not args.trl_no_checkpointing,
                "precision": args.precision,
                "examples": count,
                "steps": steps,
                "rows": len(rows),
                "rows_per_step": rows_per_step,
                "row_examples": [row.examples for row in rows],
                "real_tokens": sum(lengths),
                "median_len": statistics.median(lengths),
                "min_len": lengths[0],
                "max_len": lengths[-1],
            }
    raise SystemExit("no example count gives A and B the same number of steps; change --examples or --batch")


def run_child(who: str, repeat: int, plan: dict[str, Any], folder: Path, baseline: str) -> dict[str, Any]:
    out = folder / f"result-{who}{repeat}.json"
    log = folder / f"log-{who}{repeat}.txt"
    plan_file = folder / f"plan-{who}{repeat}.json"
    plan_file.write_text(
        json.dumps({**plan, "out": str(out), "output_dir": str(folder / f"run-{who}{repeat}")})
    )
    env = dict(os.environ)
    if who == "A0":  # the baseline checkout's llmft shadows the installed one
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(baseline).resolve() / "src"), env.get("PYTHONPATH")]))
    started = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.call(
            [sys.executable, __file__, "--child", who, "--plan", str(plan_file)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
    if code != 0:
        sys.stdout.write(log.read_text()[-4000:])
        raise SystemExit(f"run {who}{repeat} failed with exit code {code}")
    result = json.loads(out.read_text())
    result.update(who=who, repeat=repeat, process_s=time.perf_counter() - started)
    print(f"{who}{repeat}: {result['tokens_per_s']:,.0f} real tok/s, {result['process_s']:.0f} s", flush=True)
    return result


# --------------------------------------------------------------------------------------------------
# The two contenders (each runs in its own process)


def run_llmft(plan: dict[str, Any]) -> dict[str, Any]:
    from llmft.core.trainer import train

    paths = plan["paths"]
    settings = {
        "recipe": "sft",
        "model": {"name": paths["model"], "tokenizer_name": paths["tokenizer"]},
        "adapter": {"method": "full"},
        "data": {"train": paths["train"], "packing": "rows", "pack_length": PACK_LENGTH},
        "train": {
            "output_dir": plan["output_dir"],
            "max_steps": plan["steps"],
            "batch_size": plan["rows_per_step"],
            "learning_rate": plan["lr"],
            "lr_scheduler": "linear",
            "bf16": "auto" if plan["precision"] == "bf16" else "false",
            "threads": plan["threads"] if plan["device"] == "cpu" else 0,
            "logging_steps": 10,
        },
    }
    try:
        from llmft.recipes.base import get_recipe, recipe_config
    except ImportError:  # a baseline from before the Recipe contract (e.g. aaa5151, when issue 16 was filed)
        from llmft.core.config import config_from_dict

        result = train(config_from_dict(settings), progress=False)
    else:
        result = train(recipe_config(settings, source="bench"), get_recipe("sft"), progress=False)
    peak = _peak_memory()
    examples = sum(plan["row_examples"][i] for i in result.trained_on)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(result.output_dir / "final", dtype="float32")
    return {
        "tokens_per_s": result.tokens_per_second,
        "losses": result.losses,
        "steps": result.steps,
        "examples_seen": examples,
        "held_out_loss": held_out_loss(model, plan),
        **peak,
    }


def run_trl(plan: dict[str, Any]) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    if plan["device"] == "cpu":
        torch.set_num_threads(plan["threads"])
    paths = plan["paths"]
    tokenizer = AutoTokenizer.from_pretrained(paths["tokenizer"])
    records = [json.loads(line) for line in Path(paths["train"]).read_text().splitlines()]
    args = SFTConfig(
        output_dir=plan["output_dir"],
        per_device_train_batch_size=plan["batch"],
        num_train_epochs=1,
        learning_rate=plan["lr"],
        lr_scheduler_type="linear",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        disable_tqdm=True,
        use_cpu=plan["device"] == "cpu",
        gradient_checkpointing=plan["trl_checkpointing"],
        **({} if plan["precision"] == "bf16" else {"bf16": False}),
    )
    trainer = SFTTrainer(
        model=paths["model"], args=args, train_dataset=Dataset.from_list(records), processing_class=tokenizer
    )
    _check_same_tokens(trainer.train_dataset, records, tokenizer)
    real_tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    started = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - started
    peak = _peak_memory()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "tokens_per_s": real_tokens / elapsed,
        "losses": losses,
        "steps": trainer.state.global_step,
        "examples_seen": len(records),
        "held_out_loss": held_out_loss(trainer.model.float(), plan),
        **peak,
    }


def _check_same_tokens(dataset: Any, records: list[dict], tokenizer: Any) -> None:
    """B must train on exactly A's token ids and loss mask, or the comparison means nothing."""
    from llmft.core.data import tokenize_record

    for row, record in zip(dataset, records, strict=True):
        ours = tokenize_record(record, tokenizer, 1024)
        if row["input_ids"] != ours.input_ids or row["labels"] != ours.labels:
            raise SystemExit(f"TRL tokenised a record differently from llmft: {record}")


def _peak_memory() -> dict[str, float]:
    import torch

    peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peak["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def held_out_loss(model: Any, plan: dict[str, Any]) -> float:
    """Token-mean completion loss of `model` on the held-out records (fp32, one example at a time)."""
    import torch
    from transformers import AutoTokenizer

    from llmft.core.data import tokenize_record

    try:
        from llmft.core.scoring import token_loss_sum
    except ImportError:  # a baseline from before llmft.core.scoring (aaa5151)
        from llmft.core.trainer import token_loss_sum
    tokenizer = AutoTokenizer.from_pretrained(plan["paths"]["tokenizer"])
    device = "cuda" if plan["device"] == "cuda" else "cpu"
    model = model.to(device).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for line in Path(plan["paths"]["eval"]).read_text().splitlines():
            example = tokenize_record(json.loads(line), tokenizer, 1024)
            ids = torch.tensor([example.input_ids], device=device)
            labels = torch.tensor([example.labels], device=device)
            total += float(token_loss_sum(model(input_ids=ids, use_cache=False).logits, labels))
            count += example.trained
    return total / count


# --------------------------------------------------------------------------------------------------
# Report


def report(runs: list[dict[str, Any]], plan: dict[str, Any], args: argparse.Namespace) -> None:
    def final(run: dict[str, Any]) -> float:
        return statistics.mean(run["losses"][-10:])

    rows = [
        [
            f"{r['who']}{r['repeat'] + 1}",
            {"A0": "llmft (baseline)", "A": "llmft", "B": "TRL SFTTrainer"}[r["who"]],
            r["tokens_per_s"],
            r["steps"],
            r["examples_seen"],
            r["peak_rss_mb"],
            final(r),
            r["held_out_loss"],
            r["process_s"],
        ]
        for r in runs
    ]
    by = {who: [r for r in runs if r["who"] == who] for who in ("A0", "A", "B") if any(r["who"] == who for r in runs)}
    speed = {who: statistics.mean(r["tokens_per_s"] for r in group) for who, group in by.items()}
    rss = {who: max(r["peak_rss_mb"] for r in group) for who, group in by.items()}
    loss = {who: statistics.mean(final(r) for r in group) for who, group in by.items()}
    held = {who: statistics.mean(r["held_out_loss"] for r in group) for who, group in by.items()}
    same_work = all(r["steps"] == plan["steps"] and r["examples_seen"] == plan["examples"] for r in runs)
    print()
    print(
        f"device: {workload.device_name(args.device)}; threads {args.threads}; {plan['examples']} examples "
        f"(median {plan['median_len']:.0f} tokens, {plan['min_len']}-{plan['max_len']}, "
        f"{plan['real_tokens']:,} real tokens); B: batch {plan['batch']}, gradient checkpointing "
        f"{'on (TRL default)' if plan['trl_checkpointing'] else 'off'}; "
        f"A: {plan['rows_per_step']} packed rows of <= {PACK_LENGTH} tokens per step ({plan['rows']} rows); "
        f"{plan['steps']} optimizer steps each; lr {plan['lr']}"
    )
    workload.print_table(
        f"Training throughput ({args.device}, {args.precision})",
        [
            "run",
            "trainer",
            "real tok/s",
            "steps",
            "examples",
            "peak RSS MB",
            "final loss",
            "held-out loss",
            "process s",
        ],
        rows,
    )
    print()
    summary: list[list[Any]] = []
    if "B" in by:
        ratio = speed["A"] / speed["B"]
        loss_gap = abs(loss["A"] - loss["B"]) / loss["B"]
        held_gap = abs(held["A"] - held["B"]) / held["B"]
        summary += [
            ["real tok/s A / B (mean of runs)", f"{speed['A']:,.0f} / {speed['B']:,.0f}", "", True],
            ["A/B real-token throughput", f"{ratio:.2f}x", ">= 2.0", ratio >= 2.0],
            [
                "final loss A / B (mean of last 10 steps)",
                f"{loss['A']:.4f} / {loss['B']:.4f} ({loss_gap:.1%})",
                "within 5%",
                loss_gap <= 0.05,
            ],
            [
                "held-out loss A / B",
                f"{held['A']:.4f} / {held['B']:.4f} ({held_gap:.1%})",
                "within 5%",
                held_gap <= 0.05,
            ],
            ["peak RSS A / B (MB)", f"{rss['A']:,.0f} / {rss['B']:,.0f}", "A <= B", rss["A"] <= rss["B"]],
        ]
    summary.append(["same steps and examples", same_work, "yes", same_work])
    if "A0" in by:
        gain, before_gap = speed["A"] / speed["A0"], abs(loss["A"] - loss["A0"]) / loss["A0"]
        summary += [
            ["real tok/s A / A0 (this llmft / the baseline)", f"{gain:.2f}x", ">= 1.5", gain >= 1.5],
            ["final loss A / A0", f"{loss['A']:.4f} / {loss['A0']:.4f} ({before_gap:.2%})", "within 1%",
             before_gap <= 0.01],
        ]
    workload.print_table("Training: llmft (A) vs TRL (B)", ["figure", "value", "target", "met"], summary)
    if "B" not in by:
        return
    workload.write_summary(
        args.json,
        {
            "device": args.device,
            "llmft_tok_s": speed["A"],
            "trl_tok_s": speed["B"],
            "ratio": ratio,
            "final_loss_A": loss["A"],
            "final_loss_B": loss["B"],
            "held_out_A": held["A"],
            "held_out_B": held["B"],
            "rss_A_mb": rss["A"],
            "rss_B_mb": rss["B"],
            "rows": [
                ["train A/B tok/s ratio", f"{ratio:.2f}", ">= 2.0", ratio >= 2.0],
                ["train final-loss gap", f"{loss_gap:.1%}", "<= 5%", loss_gap <= 0.05],
                ["train held-out-loss gap", f"{held_gap:.1%}", "<= 5%", held_gap <= 0.05],
                ["train peak RSS A/B MB", f"{rss['A']:,.0f}/{rss['B']:,.0f}", "A <= B", rss["A"] <= rss["B"]],
            ],
        },
    )


if __name__ == "__main__":
    main()
