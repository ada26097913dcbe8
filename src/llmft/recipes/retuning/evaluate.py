"""Re-Tuning evaluation: accuracy by problem size, in and beyond the training range; results.jsonl keeps each
problem's full trace (an interrupted run resumes past them); a plot per run and one plot comparing runs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmft.core import runs
from llmft.core.errors import LlmftError
from llmft.core.jsonl import read_jsonl
from llmft.core.plots import line_plot
from llmft.core.results import ResultsLog, evaluate_batched
from llmft.recipes.retuning.data import FORMATS, TASKS, TRAIN_SIZES
from llmft.recipes.retuning.engine import Trace, depth_cap, run_direct, run_recursion

if TYPE_CHECKING:
    from llmft.core.config import Config
    from llmft.core.generation import Generator
    from llmft.recipes.retuning.config import RetuningConfig

RESULTS = runs.RESULTS_NAME
PLOT = "accuracy_by_size.png"
SIZE_LABELS = {"addition": "digits per operand", "parity": "list length", "dp": "array length"}
EVAL_FIELDS = ("prompt", "task", "format", "size", "answer")


def load_eval_records(path: str | Path, max_examples: int = 0) -> list[dict]:
    """Eval records from make-data (one task and format), the first `max_examples` of them if set."""
    records = read_jsonl(path, what="data.eval")
    for line, record in enumerate(records, start=1):
        missing = [key for key in EVAL_FIELDS if key not in record]
        if missing:
            raise LlmftError(f"data.eval: {path}: line {line} lacks {', '.join(missing)} "
                             "(make it with `llmft make-data retuning`)")
        if record["task"] not in TASKS or record["format"] not in FORMATS:
            raise LlmftError(f"data.eval: {path}: line {line} has task {record['task']!r} and format "
                             f"{record['format']!r}; tasks are {', '.join(TASKS)}, "
                             f"formats {', '.join(FORMATS)}")
    kinds = {(r["task"], r["format"]) for r in records}
    if len(kinds) > 1:
        raise LlmftError(f"data.eval: {path} mixes task/format pairs {sorted(kinds)}; evaluate one at a time")
    if not records:
        raise LlmftError(f"data.eval: {path} has no records")
    return records[:max_examples] if max_examples else records


def evaluate_problems(
    generator: Generator,
    records: Sequence[dict],
    results_path: Path,
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
    max_depth: int = 0,
    batch_size: int = 64,
) -> list[dict]:
    """Solve every record not yet in results_path, appending one row per problem as it finishes.

    Returns all rows in record order. Recursive records go through the wave engine (every problem at once);
    scratchpad and baseline records are generated directly in chunks of batch_size.
    """
    task, fmt = records[0]["task"], records[0]["format"]
    with ResultsLog(results_path) as log:
        for index, row in log.items():
            known = isinstance(index, int) and 0 <= index < len(records)
            if not known or records[index]["prompt"] != row.get("prompt"):
                raise LlmftError(f"{results_path} holds results for other problems than data.eval; "
                                 "remove it or evaluate into another folder (--out)")
        if fmt == "recursive":
            todo = log.todo(range(len(records)))

            def record_row(position: int, trace: Trace) -> None:
                index = todo[position]
                log.add(index, result_row(index, records[index], trace))

            caps = [max_depth or depth_cap(task, records[i]["size"]) for i in todo]
            run_recursion(generator, [records[i]["prompt"] for i in todo], task, max_depth=caps,
                          max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                          on_done=record_row)
            return log.rows(range(len(records)))
    return evaluate_batched(
        results_path, range(len(records)), batch_size,
        lambda chunk: run_direct(generator, [records[i]["prompt"] for i in chunk], task, fmt,
                                 max_new_tokens=max_new_tokens, temperature=temperature, seed=seed),
        lambda index, trace: result_row(index, records[index], trace))


def result_row(index: int, record: dict, trace: Trace) -> dict[str, Any]:
    """One problem in results.jsonl: the record, the prediction, whether it is right, and the whole trace."""
    return {
        "index": index, "task": record["task"], "format": record["format"], "size": record["size"],
        "prompt": record["prompt"], "answer": record["answer"], "prediction": trace.answer,
        "correct": not trace.error and trace.answer == record["answer"], "error": trace.error,
        "calls": trace.calls, "depth": trace.depth, "generated_tokens": trace.generated_tokens,
        "text": trace.text, "steps": trace.steps,
    }


def accuracy_by_size(rows: Sequence[dict]) -> dict[int, float]:
    """Share of correct rows per problem size, sizes ascending."""
    right: dict[int, int] = {}
    count: dict[int, int] = {}
    for row in rows:
        size = int(row["size"])
        count[size] = count.get(size, 0) + 1
        right[size] = right.get(size, 0) + bool(row["correct"])
    return {size: right[size] / count[size] for size in sorted(count)}


def summarize(rows: Sequence[dict], train_max_size: int) -> dict[str, Any]:
    """Scalar metrics plus accuracy_by_size; "in range" means size <= train_max_size."""

    def accuracy(subset: list[dict]) -> float:
        return sum(bool(r["correct"]) for r in subset) / len(subset)

    rows = list(rows)
    metrics: dict[str, Any] = {
        "recipe": "retuning", "task": rows[0]["task"], "format": rows[0]["format"], "n": len(rows),
        "accuracy": accuracy(rows), "train_max_size": train_max_size,
    }
    in_range = [r for r in rows if r["size"] <= train_max_size]
    beyond = [r for r in rows if r["size"] > train_max_size]
    if in_range:
        metrics["accuracy_in_range"] = accuracy(in_range)
    if beyond:
        metrics["accuracy_beyond"] = accuracy(beyond)
    metrics.update({
        "errors": sum(1 for r in rows if r["error"]),
        "mean_calls": sum(r["calls"] for r in rows) / len(rows),
        "mean_generated_tokens": sum(r["generated_tokens"] for r in rows) / len(rows),
        "accuracy_by_size": {str(size): acc for size, acc in accuracy_by_size(rows).items()},
        "n_by_size": {str(size): n for size, n in sorted(Counter(int(r["size"]) for r in rows).items())},
    })
    return metrics


def report_table(metrics_by_run: dict[str, dict]) -> str:
    """Accuracy by size, one column per run, each size marked as trained or extrapolated (beyond the largest
    trained size); "" when the runs hold no accuracy_by_size."""
    runs_ = {run: m for run, m in metrics_by_run.items() if "accuracy_by_size" in m}
    if not runs_:
        return ""
    formats = [m.get("format", "?") for m in runs_.values()]
    names = formats if len(set(formats)) == len(formats) else list(runs_)
    train_max = max(int(m.get("train_max_size", 0)) for m in runs_.values())
    sizes = sorted({int(size) for m in runs_.values() for size in m["accuracy_by_size"]})
    task = next(iter(runs_.values())).get("task")
    widths = [max(len(name), 6) for name in names]
    lines = [f"accuracy by {SIZE_LABELS.get(task, 'problem size')} (trained: sizes <= {train_max})",
             f"{'size':>4}  {'':<12}" + "".join(f"  {name:>{w}}" for name, w in zip(names, widths, strict=True))
             + "  problems"]
    for size in sizes:
        where = "trained" if size <= train_max else "extrapolated"
        cells = []
        for m, w in zip(runs_.values(), widths, strict=True):
            acc = m["accuracy_by_size"].get(str(size))
            cells.append(f"  {acc:>{w}.3f}" if acc is not None else f"  {'-':>{w}}")
        counts = {m.get("n_by_size", {}).get(str(size)) for m in runs_.values()} - {None}
        lines.append(f"{size:>4}  {where:<12}" + "".join(cells)
                     + f"  {'/'.join(str(c) for c in sorted(counts)) if counts else '?':>8}")
    return "\n".join(lines)


def plot_accuracy(curves: dict[str, dict[int, float]], path: Path, *, title: str,
                  xlabel: str = "problem size", train_max_size: int = 0) -> Path:
    """Accuracy against size, one line per curve; the trained sizes are shaded."""
    series = {label: (sorted(curve), [curve[s] for s in sorted(curve)]) for label, curve in curves.items()}
    shade = (0.5, train_max_size + 0.5) if train_max_size else None
    return line_plot(path, series, title=title, xlabel=xlabel, ylabel="accuracy", shade=shade,
                     shade_label="trained sizes", ylim=(-0.02, 1.02))


def compare(metrics_by_run: dict[str, dict], out_dir: Path) -> Path:
    """Several runs' accuracy by size on one plot (e.g. recursive, scratchpad and baseline)."""
    curves, tasks, train_sizes = {}, [], set()
    for run, metrics in metrics_by_run.items():
        if "accuracy_by_size" not in metrics:
            raise LlmftError(f"{run}: its metrics have no accuracy_by_size (not a retuning evaluation)")
        curve = {int(size): acc for size, acc in metrics["accuracy_by_size"].items()}
        curves[f"{run} ({metrics.get('format', '?')})"] = curve
        if metrics.get("task") not in tasks:
            tasks.append(metrics.get("task"))
        train_sizes.add(metrics.get("train_max_size", 0))
    task = tasks[0] if len(tasks) == 1 else None
    return plot_accuracy(curves, Path(out_dir) / PLOT, title=" / ".join(str(t) for t in tasks),
                         xlabel=SIZE_LABELS.get(task, "problem size") if task else "problem size",
                         train_max_size=train_sizes.pop() if len(train_sizes) == 1 else 0)


def run_evaluation(generator: Generator, config: Config, section: RetuningConfig,
                   eval_dir: Path) -> dict[str, Any]:
    """The recipe's `evaluate`: data.eval -> results.jsonl, metrics, accuracy_by_size.png."""
    if not config.data.eval:
        raise LlmftError("data.eval is not set: make it with "
                         "`llmft make-data retuning --task ... --format ...`")
    records = load_eval_records(config.data.eval, config.eval.max_examples)
    task, fmt = records[0]["task"], records[0]["format"]
    if (task, fmt) != (section.task, section.format):
        raise LlmftError(f"data.eval holds {task}/{fmt} problems but [retuning] says "
                         f"task = {section.task!r}, format = {section.format!r}; "
                         "set them to what the run trained on")
    rows = evaluate_problems(
        generator, records, Path(eval_dir) / RESULTS, max_new_tokens=config.eval.max_new_tokens,
        temperature=config.eval.temperature, seed=config.eval.seed, max_depth=section.max_depth,
        batch_size=config.eval.batch_size)
    train_max = section.max_size or int(records[0].get("train_max_size") or TRAIN_SIZES[task][1])
    metrics = summarize(rows, train_max)
    curve = {int(k): v for k, v in metrics["accuracy_by_size"].items()}
    plot = plot_accuracy({f"{task} ({fmt})": curve}, Path(eval_dir) / PLOT, title=f"Re-Tuning {task}, {fmt}",
                         xlabel=SIZE_LABELS[task], train_max_size=train_max)
    metrics["plot"] = str(plot)
    return metrics
