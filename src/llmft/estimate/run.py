"""`llmft estimate` around the GradEx algorithm (estimate/gradex.py): load the meta-initialisation and the data,
cache the gradients, estimate every subset, compare with real fine-tunes, write estimate.json and table.txt."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmft.core import runs
from llmft.core.config import Config, EstimateConfig
from llmft.core.data import TokenizedExample
from llmft.core.errors import LlmftError
from llmft.estimate.gradex import (
    cached_gradients,
    clear_best,
    estimate_subsets,
    first_order_error,
    gradient_clusters,
    mean_loss,
    sample_subsets,
    spread_scores,
    tiers,
)
from llmft.estimate.gradients import Projection, repeat_projections


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A plain-text table of `rows` (floats with 4 decimals)."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        if isinstance(value, list):
            return ",".join(str(v) for v in value)
        return str(value)

    cells = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def default_estimate_dir(folder: Path) -> Path:
    """runs/<name>/final -> runs/<name>/estimate/final; any other folder -> <folder>/estimate."""
    if folder.name == runs.FINAL_NAME or folder.name.startswith(runs.CHECKPOINT_PREFIX):
        return folder.parent / runs.ESTIMATE_DIR / folder.name
    return folder / runs.ESTIMATE_DIR


def gradient_dir(out_dir: Path, settings: EstimateConfig) -> Path:
    return out_dir / f"gradients-d{settings.project_dimension}-seed{settings.seed}"


def config_groups(records: Sequence[dict], settings: EstimateConfig, what: str) -> list[str]:
    """Each record's group name: its `group_by` field, or its own index."""
    if not settings.group_by:
        return [f"#{i}" for i in range(len(records))]
    missing = next((i for i, r in enumerate(records) if settings.group_by not in r), None)
    if missing is not None:
        raise LlmftError(f"estimate.group_by = '{settings.group_by}': {what} record {missing + 1} has no such field")
    odd = next((i for i, r in enumerate(records) if not isinstance(r[settings.group_by], (str, int))
                or isinstance(r[settings.group_by], bool)), None)
    if odd is not None:
        raise LlmftError(f"estimate.group_by = '{settings.group_by}': {what} record {odd + 1} has "
                         f"{json.dumps(records[odd][settings.group_by])}, not a group name (a string or integer)")
    return [str(r[settings.group_by]) for r in records]


def check_subsets(subsets: Sequence[Sequence[str]], groups: Sequence[str], settings: EstimateConfig) -> None:
    """Every group a given subset names exists in the data (an unknown one would be silently left out)."""
    known = set(groups)
    for number, subset in enumerate(subsets, 1):
        unknown = [g for g in subset if g not in known]
        if unknown:
            by = f"estimate.group_by '{settings.group_by}'" if settings.group_by else "example number (#i)"
            raise LlmftError(f"estimate.subsets: subset {number} names group '{unknown[0]}', which no record of "
                             f"estimate.data has as its {by}")


def record_key(record: dict) -> str:
    """What identifies a training record across files: its text fields."""
    return json.dumps({k: record.get(k) for k in ("prompt", "completion", "text", "messages")}, sort_keys=True)


def against_finetuned(run: Path, meta: Path, model: Any, params: Sequence[tuple[str, Any]],
                      projections: Sequence[Projection],
                      cache: tuple[Any, Any], records: Sequence[dict], eval_examples: Sequence[TokenizedExample],
                      check: Sequence[TokenizedExample], pad_id: int, settings: EstimateConfig) -> dict:
    """A real fine-tune of the meta-initialisation on some of the records: its true loss beside the estimate of
    the same subset, and the approximation error of its own update delta = theta_ft - theta*."""
    import torch

    from llmft.core.inference import load_for_inference, read_run_config
    from llmft.core.jsonl import read_jsonl

    config = read_run_config(run)
    if config.adapter.method != "full" or not config.adapter.init_from or \
            Path(config.adapter.init_from).resolve() != meta.resolve():
        raise LlmftError(f"estimate.finetuned: {run} must fine-tune {meta} itself (adapter.method = 'full', "
                         f"adapter.init_from = '{meta}') so that its update is in theta*'s coordinates")
    wanted = {record_key(r) for r in read_jsonl(config.data.train, what=f"{run}: data.train")}
    marks = ["in" if record_key(r) in wanted else "out" for r in records]
    if "in" not in marks:
        raise LlmftError(f"estimate.finetuned: no record of {config.data.train} is in the estimate's data")
    outputs, gradients = cache
    (row,) = estimate_subsets(model, params, projections, gradients, marks, [["in"]], eval_examples, pad_id,
                              settings)
    _, _, tuned = load_for_inference(run)
    tuned_params = dict(tuned.named_parameters())
    deltas = [(tuned_params[n].detach().to(p.device).float() - p.detach().float()).reshape(-1) for n, p in params]
    true_loss = mean_loss(tuned, eval_examples, pad_id, settings.batch_size)
    out = {"run": str(run), "examples": row["examples"], "loss": row["loss"], "loss_low": row["loss_low"],
           "loss_high": row["loss_high"], "true_loss": true_loss,
           "relative_error": abs(row["loss"] - true_loss) / true_loss,
           "update_norm_ratio": float(torch.cat(deltas).norm() / torch.cat([p.detach().reshape(-1).float()
                                                                             for _, p in params]).norm())}
    if check:
        out["approx_error"], out["approx_error_without_gradient"] = first_order_error(
            model, params, projections[0], outputs, gradients, check, pad_id, deltas, settings.batch_size,
            settings.output)
    return out


def table_columns(rows: Sequence[dict]) -> list[str]:
    """The per-subset table's columns: fixed ones first, then whatever the metric or error checks added."""
    fixed = ["subset", "examples", "loss", "loss_low", "loss_high"]
    return [*fixed, *[c for c in rows[0] if c not in (*fixed, "groups", "seconds", "losses")], "groups"]


def verdict_text(report: dict, settings: EstimateConfig) -> str:
    """What the estimate can and cannot tell: subsets drawn vs distinct, the chosen subset only when it clears
    the spread of the repeats, and "no ranking" when the groups' spreads overlap."""
    rows, lines = report["subsets"], [f"meta-initialisation loss {report['meta_loss']:.4f}"]
    if report["subsets_drawn"]:
        lines.append(f"{report['subsets_drawn']} subsets drawn, {report['subsets_distinct']} distinct")
    spread = f"the spread of {settings.repeats} repeats (projections and labels)"
    best = min(rows, key=lambda r: r["loss"])
    if len(rows) == 1:
        lines.append("one subset: nothing to choose between")
    elif settings.repeats == 1:
        lines.append(f"lowest estimate: subset {best['subset']} (no verdict: one repeat measures no spread)")
    elif report["chosen"]:
        lines.append(f"chosen subset {best['subset']}: its estimate beats every other subset's by more than {spread}")
    else:
        lines.append(f"no chosen subset: the lowest estimate (subset {best['subset']}) lies within {spread} of "
                     "another subset's")
    if not report["ranked"] and settings.repeats > 1:
        lines.append(f"no ranking: the groups' scores overlap within {spread}, from the best group to the worst")
    return "\n".join(lines)


def describe(config: Config) -> dict[str, Any]:
    """The settings that fix an estimate's result (saved beside it)."""
    from dataclasses import asdict

    return {"adapter_method": config.adapter.method, **asdict(config.estimate)}


def run_estimate(folder: str | Path, config: Config, recipe: Any = None, out: str | Path | None = None,
                 progress: bool = True) -> tuple[dict, Path]:
    """The estimate for a meta-initialisation run folder as `config.estimate` says; writes estimate.json and
    table.txt under `out` (default: beside the run's eval folders) and returns (report, out)."""
    from llmft.core.data import load_examples
    from llmft.core.inference import load_for_inference
    from llmft.core.jsonl import read_jsonl
    from llmft.estimate.gradients import estimate_parameters

    folder = Path(folder)
    settings = config.estimate
    data_path, eval_path = settings.data or config.data.train, settings.eval_data or config.data.eval
    for key, path in (("estimate.data (or data.train)", data_path), ("estimate.eval_data (or data.eval)", eval_path)):
        if not path or not Path(path).is_file():
            raise LlmftError(f"{key}: file not found: {path or '(not set)'}")
    out_dir = Path(out) if out else default_estimate_dir(folder)
    records = read_jsonl(data_path, what="estimate.data")[:settings.max_examples or None]
    groups = config_groups(records, settings, "estimate.data")
    if settings.clusters and settings.subsets:
        raise LlmftError("estimate.clusters: the groups are gradient clusters, found after the gradient pass; "
                         "give sampled subsets (estimate.number_of_subsets), not estimate.subsets")
    check_subsets(settings.subsets, groups, settings)
    _, tokenizer, model = load_for_inference(folder)
    if getattr(model.config, "is_encoder_decoder", False):
        raise LlmftError(f"{folder}: the estimate takes decoder-only (causal LM) runs; this one is encoder-decoder")
    custom = (lambda record: recipe.tokenize(record, tokenizer, config)) if recipe is not None else None
    examples = load_examples(data_path, tokenizer, config.data.max_length, custom, what="estimate.data",
                             limit=settings.max_examples)
    eval_examples = load_examples(eval_path, tokenizer, config.data.max_length, custom, what="estimate.eval_data")
    params = estimate_parameters(model, config.adapter.method, settings.lora_bias)
    projections = repeat_projections([(n, p.numel()) for n, p in params], settings.project_dimension,
                                     settings.seed, settings.repeats)
    pad_id = tokenizer.pad_token_id

    started = time.perf_counter()
    outputs, gradients = cached_gradients(model, examples, pad_id, params, projections,
                                          gradient_dir(out_dir, settings), settings, progress)
    gradient_seconds = time.perf_counter() - started
    if settings.clusters:
        groups = gradient_clusters(gradients[:, :settings.project_dimension], settings.clusters, settings.seed)
    subsets = [list(s) for s in settings.subsets] or sample_subsets(groups, settings.number_of_subsets,
                                                                    settings.subset_size, settings.seed)
    check = examples[:settings.approximation_examples]

    def on_model(k: int, row: dict, deltas: list) -> None:
        if check:
            row["approx_error"], row["approx_error_without_gradient"] = first_order_error(
                model, params, projections[0], outputs, gradients, check, pad_id, deltas, settings.batch_size,
                settings.output)
        if settings.metric and recipe is not None:
            from llmft.core.generation import HFGenerator

            generator = HFGenerator(model, tokenizer, batch_size=config.eval.batch_size)
            subset_dir = out_dir / f"subset-{k}"
            shutil.rmtree(subset_dir, ignore_errors=True)  # results of other weights must not be resumed
            subset_dir.mkdir(parents=True)
            metrics = recipe.evaluate(generator, config, subset_dir)
            row.update({key: v for key, v in metrics.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})

    rows = estimate_subsets(model, params, projections, gradients, groups, subsets, eval_examples, pad_id,
                            settings, on_model)
    meta_loss = mean_loss(model, eval_examples, pad_id, settings.batch_size)
    finetuned = [against_finetuned(Path(run), folder, model, params, projections, (outputs, gradients), records,
                                   eval_examples, check, pad_id, settings) for run in settings.finetuned]
    ranking = spread_scores([r["groups"] for r in rows], [r["losses"] for r in rows])
    for item, tier in zip(ranking, tiers(ranking)):
        item["tier"] = tier
    measured = settings.repeats > 1  # with one repeat nothing says how far apart estimates must be
    chosen = clear_best(rows) if measured and len(rows) > 1 else None
    report = {"run": str(folder), "settings": describe(config), "examples": len(examples),
              "eval_examples": len(eval_examples), "parameters": sum(p.numel() for _, p in params),
              "meta_loss": meta_loss, "gradient_seconds": gradient_seconds, "subsets": rows,
              "subsets_drawn": 0 if settings.subsets else settings.number_of_subsets, "subsets_distinct": len(rows),
              "chosen_subset": min(rows, key=lambda r: r["loss"])["subset"], "chosen": chosen is not None,
              "ranking": ranking, "ranked": measured and ranking[-1]["tier"] > 1, "finetuned": finetuned}
    runs.atomic_write_json(out_dir / "estimate.json", report)
    text = format_table(rows, table_columns(rows)) + "\n\n" + verdict_text(report, settings) + "\n\n" + \
        format_table(ranking, ["group", "score", "low", "high", "tier", "subsets"])
    if finetuned:
        text += "\n\nreal fine-tunes vs the estimate of the same records\n" + format_table(
            finetuned, [c for c in finetuned[0] if c != "run"] + ["run"])
    runs.atomic_write_text(out_dir / "table.txt", text + "\n")
    return report, out_dir
