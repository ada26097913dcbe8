"""The end of a training run: `summary.md` (what ran, how the loss went) and `loss.png`, from metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from llmft.core import runs
from llmft.core.config import Config

SUMMARY_NAME = "summary.md"
LOSS_PLOT_NAME = "loss.png"


def read_metrics(output_dir: Path) -> tuple[list[dict], list[dict]]:
    """(train records, held-out records) of metrics.jsonl, each in step order; torn lines are skipped."""
    path = output_dir / runs.METRICS_NAME
    train, held_out = [], []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "eval_loss" in record:
            held_out.append(record)
        elif "loss" in record:
            train.append(record)
    return sorted(train, key=lambda r: r["step"]), sorted(held_out, key=lambda r: r["step"])


def write_summary(output_dir: Path, config: Config, steps: int, seconds: float, tokens_per_second: float) -> Path:
    """Write loss.png (train and held-out loss, learning rate) and summary.md into the run folder."""
    from llmft.core.plots import line_plot

    output_dir = Path(output_dir)
    train, held_out = read_metrics(output_dir)
    series = {"train loss": ([r["step"] for r in train], [r["loss"] for r in train])}
    if held_out:
        series["held-out loss"] = ([r["step"] for r in held_out], [r["eval_loss"] for r in held_out])
    if train:
        line_plot(output_dir / LOSS_PLOT_NAME, series, title=f"{output_dir.name}: loss", xlabel="step",
                  ylabel="loss per trained token (log scale)", log_y=True,
                  right={"learning rate": ([r["step"] for r in train], [r["lr"] for r in train])},
                  right_label="learning rate")
    t = config.train
    lines = [
        f"# {output_dir.name}",
        "",
        f"- recipe `{config.recipe}`, model `{config.model.name}`, adapter `{config.adapter.method}`",
        f"- data `{config.data.train}` (packing {config.data.packing}); "
        + (f"held-out `{config.data.heldout or config.data.eval}`" if held_out else "no held-out loss"),
        f"- {steps} steps of batch {t.batch_size} x grad_accum {t.grad_accum}, lr {t.learning_rate:g} "
        f"{t.lr_scheduler}, seed {t.seed}",
        f"- {_duration(seconds)} this session, {tokens_per_second:,.0f} tokens/s",
        "",
        "| | first | last | best |",
        "|---|---|---|---|",
    ]
    for name, records, key in (("train loss", train, "loss"), ("held-out loss", held_out, "eval_loss")):
        if records:
            best = min(records, key=lambda r: r[key])
            lines.append(f"| {name} | {records[0][key]:.4f} (step {records[0]['step']}) | "
                         f"{records[-1][key]:.4f} (step {records[-1]['step']}) | "
                         f"{best[key]:.4f} (step {best['step']}) |")
    lines += ["", f"Files: `{runs.FINAL_NAME}/`, `{runs.METRICS_NAME}`, `{runs.TENSORBOARD_DIR}/`"
              + (f", `{LOSS_PLOT_NAME}`" if train else "") + f"; the resolved config is `{runs.CONFIG_NAME}`.",
              f"Next: `llmft eval --adapter {output_dir / runs.FINAL_NAME}`", ""]
    path = output_dir / SUMMARY_NAME
    runs.atomic_write_text(path, "\n".join(lines))
    return path


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
