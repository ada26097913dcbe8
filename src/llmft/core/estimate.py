"""GradEx: estimate what fine-tuning a meta-initialisation on a data subset would give, without training.

Steps (Li et al. 2024, VirtuosoResearch/Scalable-finetuning): per-example outputs f_i and projected
gradients g~_i at the meta-initialisation theta* (core/gradients.py), computed once and cached in shards;
for each subset, random labels y ~ Bernoulli(0.7) with g~_i negated where y = 0, an L2 logistic regression
(liblinear's objective, intercept included) fit on the first 80%, the update P w rescaled to
scale x |theta*|, and theta* + update evaluated directly (loss, optionally the recipe's metric). Groups are
ranked by the random-ensemble score: the mean estimated loss of the subsets that hold them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from llmft.core import runs
from llmft.core.config import Config, EstimateConfig
from llmft.core.data import TokenizedExample, collate, single_rows
from llmft.core.errors import LlmftError
from llmft.core.gradients import OUTPUTS, Projection, outputs_and_projected_gradients
from llmft.core.scoring import example_losses


def logistic_regression(x: Any, labels: Any, c: float, iterations: int = 50) -> tuple[Any, float]:
    """(w, b) minimising 0.5 (|w|^2 + b^2) + C sum_i log(1 + exp(-s_i (w.x_i + b))), s_i = +-1: the objective
    sklearn's LogisticRegression(penalty="l2", solver="liblinear") solves (its intercept is penalised too).
    Newton's method in float64; the problem is strictly convex."""
    import torch

    z = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
    s = labels.double() * 2 - 1
    beta = torch.zeros(z.shape[1], dtype=torch.float64)
    for _ in range(iterations):
        margin = s * (z @ beta)
        grad = beta - c * z.T @ (s * torch.sigmoid(-margin))
        weight = torch.sigmoid(margin) * torch.sigmoid(-margin)
        hessian = torch.eye(len(beta), dtype=torch.float64) + c * (z.T * weight) @ z
        step = torch.linalg.solve(hessian, grad)
        beta = beta - step
        if float(step.abs().max()) < 1e-12:
            break
    return beta[:-1], float(beta[-1])


def subset_update(gradients: Any, settings: EstimateConfig, seed: int) -> Any:
    """The regression weights w [d] for one subset's projected gradients (rows in the subset's order)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    labels = torch.bernoulli(torch.full((len(gradients),), settings.positive_rate), generator=generator)
    signed = gradients * (labels * 2 - 1).unsqueeze(1)
    fit = max(1, int(len(gradients) * settings.fit_fraction))
    weights, _ = logistic_regression(signed[:fit], labels[:fit], settings.regularization)
    return weights


def approximation_error(before: Any, first_order: Any, after: Any) -> tuple[float, float]:
    """The reference's error: mean_i (|f_i(theta*) + g_i.delta - f_i(theta* + delta)| / max(|f(theta*+delta)|,
    |f(theta*)|))^2, with the gradient term and without it."""
    import torch

    scale = torch.maximum(after.abs(), before.abs())
    with_term = ((before + first_order - after).abs() / scale) ** 2
    without = ((before - after).abs() / scale) ** 2
    keep = torch.isfinite(with_term) & torch.isfinite(without)
    return float(with_term[keep].mean()), float(without[keep].mean())


# --------------------------------------------------------------------------------------------------
# The model at theta* and theta* + delta


@contextlib.contextmanager
def moved(params: Sequence[tuple[str, Any]], deltas: Sequence[Any]) -> Iterator[None]:
    """Parameters at theta* + delta inside the block, back at theta* after."""
    import torch

    saved = [p.detach().clone() for _, p in params]
    with torch.no_grad():
        for (_, p), delta in zip(params, deltas):
            p.add_(delta.reshape(p.shape).to(p.device, p.dtype))
    try:
        yield
    finally:
        with torch.no_grad():
            for (_, p), old in zip(params, saved):
                p.copy_(old)


def scaled_update(projection: Projection, weights: Any, norm: float) -> list[Any]:
    """P w per parameter, rescaled so that the whole update has L2 norm `norm`."""
    pieces = projection.lift(weights)
    total = sum(float(piece.square().sum()) for piece in pieces) ** 0.5
    return [piece * (norm / max(total, 1e-30)) for piece in pieces]


def mean_loss(model: Any, examples: Sequence[TokenizedExample], pad_id: int, batch_size: int) -> float:
    """The mean over examples of each one's mean next-token loss (the reference's validation loss)."""
    losses = example_losses(model, examples, pad_id, batch_size=batch_size, reduction="mean")
    return sum(losses) / len(losses)


def example_outputs(model: Any, examples: Sequence[TokenizedExample], pad_id: int, batch_size: int,
                    output: str = "logit") -> Any:
    """f_i without gradients [N]."""
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collate(single_rows(examples[start:start + batch_size]), pad_id, packed=False)
            logits = model(input_ids=batch["input_ids"].to(device), use_cache=False).logits
            out.append(OUTPUTS[output](logits, batch["labels"].to(device)).cpu())
    return torch.cat(out)


# --------------------------------------------------------------------------------------------------
# The gradient cache


def fingerprint(examples: Sequence[TokenizedExample], params: Sequence[tuple[str, Any]]) -> str:
    """Identifies the data and the parameter layout a cache was computed for."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.input_ids, example.labels]).encode())
    digest.update(json.dumps([(n, p.numel()) for n, p in params]).encode())
    return digest.hexdigest()[:16]


def cached_gradients(model: Any, examples: Sequence[TokenizedExample], pad_id: int,
                     params: Sequence[tuple[str, Any]], projection: Projection, folder: Path, settings: EstimateConfig,
                     progress: bool = False) -> tuple[Any, Any]:
    """(f [N], g~ [N, d]) at theta*, from `folder`'s shards where present (resumable), computing the rest."""
    import torch
    from safetensors.torch import load_file, save_file

    meta = {"fingerprint": fingerprint(examples, params), "examples": len(examples), "dimension": projection.dim,
            "output": settings.output,
            "seed": projection.seed, "shard_size": settings.shard_size}
    meta_file = folder / "meta.json"
    if meta_file.is_file() and json.loads(meta_file.read_text()) != meta:
        for old in folder.glob("shard-*.safetensors"):
            old.unlink()
    runs.atomic_write_json(meta_file, meta)
    outputs, gradients = [], []
    starts = range(0, len(examples), settings.shard_size)
    for number, start in enumerate(starts):
        shard = folder / f"shard-{number:05d}.safetensors"
        if not shard.is_file():
            chunk = examples[start:start + settings.shard_size]
            pieces = [outputs_and_projected_gradients(model, chunk[i:i + settings.batch_size], pad_id, params,
                                                      projection, OUTPUTS[settings.output])
                      for i in range(0, len(chunk), settings.batch_size)]
            staged = shard.with_name(f".{shard.name}.tmp")
            save_file({"outputs": torch.cat([p[0] for p in pieces]).contiguous(),
                       "gradients": torch.cat([p[1] for p in pieces]).contiguous()}, staged)
            staged.replace(shard)
            if progress:
                print(f"estimate: gradients {min(start + settings.shard_size, len(examples))}/{len(examples)}")
        tensors = load_file(shard)
        outputs.append(tensors["outputs"])
        gradients.append(tensors["gradients"])
    return torch.cat(outputs), torch.cat(gradients)


# --------------------------------------------------------------------------------------------------
# Subsets and groups


def sample_subsets(groups: Sequence[str], number: int, size: float, seed: int) -> list[list[str]]:
    """`number` random subsets, each round(size x #groups) distinct groups, in first-seen group order."""
    names = list(dict.fromkeys(groups))
    k = min(len(names), max(1, round(size * len(names))))
    rng = random.Random(seed)
    subsets = []
    for _ in range(number):
        chosen = set(rng.sample(names, k))
        subsets.append([g for g in names if g in chosen])
    return subsets


def group_scores(subsets: Sequence[Sequence[str]], losses: Sequence[float]) -> list[tuple[str, float, int]]:
    """Random-ensemble score per group: mean loss of the subsets holding it; (group, score, count), best first."""
    totals: dict[str, list[float]] = {}
    for subset, loss in zip(subsets, losses):
        for group in subset:
            totals.setdefault(group, []).append(loss)
    scored = [(g, sum(v) / len(v), len(v)) for g, v in totals.items()]
    return sorted(scored, key=lambda item: item[1])


def subset_indices(groups: Sequence[str], subset: Sequence[str]) -> list[int]:
    wanted = set(subset)
    return [i for i, g in enumerate(groups) if g in wanted]


# --------------------------------------------------------------------------------------------------
# The whole estimate


def estimate_subsets(model: Any, params: Sequence[tuple[str, Any]], projection: Projection, gradients: Any,
                     groups: Sequence[str], subsets: Sequence[Sequence[str]], eval_examples: Sequence[TokenizedExample],
                     pad_id: int, settings: EstimateConfig, on_model: Any = None) -> list[dict]:
    """One row per subset: its size, the estimated model's mean eval loss, timings; `on_model(k, row, deltas)`
    may add more (e.g. the recipe's metric) while the model sits at theta* + delta."""
    norm = sum(float(p.detach().float().square().sum()) for _, p in params) ** 0.5 * settings.scale
    rows = []
    for k, subset in enumerate(subsets):
        started = time.perf_counter()
        indices = subset_indices(groups, subset)
        if not indices:
            raise LlmftError(f"estimate.subsets: subset {k} ({', '.join(subset)}) matches no example")
        weights = subset_update(gradients[indices], settings, settings.seed * 1_000_003 + k)
        deltas = scaled_update(projection, weights, norm)
        row: dict[str, Any] = {"subset": k, "groups": list(subset), "examples": len(indices)}
        with moved(params, deltas):
            row["loss"] = mean_loss(model, eval_examples, pad_id, settings.batch_size)
            if on_model is not None:
                on_model(k, row, deltas)
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
    return rows


def first_order_error(model: Any, params: Sequence[tuple[str, Any]], projection: Projection, outputs: Any,
                      gradients: Any, examples: Sequence[TokenizedExample], pad_id: int, deltas: Sequence[Any],
                      batch_size: int, output: str = "logit") -> tuple[float, float]:
    """The reference's approximation error of f at theta* + delta on `examples` (the first rows of the cache);
    g_i.delta is recovered through P's pseudo-inverse: g~_i (P^T P)^-1 P^T delta."""
    import torch

    n = len(examples)
    coordinates = torch.linalg.solve(projection.gram().double(), projection.reduce(deltas).double())
    first_order = (gradients[:n].double() @ coordinates).float()
    with moved(params, deltas):
        after = example_outputs(model, examples, pad_id, batch_size, output)
    return approximation_error(outputs[:n], first_order, after)


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
        return folder.parent / "estimate" / folder.name
    return folder / "estimate"


def gradient_dir(out_dir: Path, settings: EstimateConfig) -> Path:
    return out_dir / f"gradients-d{settings.project_dimension}-seed{settings.seed}"


def config_groups(records: Sequence[dict], settings: EstimateConfig, what: str) -> list[str]:
    """Each record's group name: its `group_by` field, or its own index."""
    if not settings.group_by:
        return [f"#{i}" for i in range(len(records))]
    missing = next((i for i, r in enumerate(records) if settings.group_by not in r), None)
    if missing is not None:
        raise LlmftError(f"estimate.group_by = '{settings.group_by}': {what} record {missing + 1} has no such field")
    return [str(r[settings.group_by]) for r in records]


def record_key(record: dict) -> str:
    """What identifies a training record across files: its text fields."""
    return json.dumps({k: record.get(k) for k in ("prompt", "completion", "text", "messages")}, sort_keys=True)


def against_finetuned(run: Path, meta: Path, model: Any, params: Sequence[tuple[str, Any]], projection: Projection,
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
    (row,) = estimate_subsets(model, params, projection, gradients, marks, [["in"]], eval_examples, pad_id, settings)
    _, _, tuned = load_for_inference(run)
    tuned_params = dict(tuned.named_parameters())
    deltas = [(tuned_params[n].detach().to(p.device).float() - p.detach().float()).reshape(-1) for n, p in params]
    true_loss = mean_loss(tuned, eval_examples, pad_id, settings.batch_size)
    out = {"run": str(run), "examples": row["examples"], "loss": row["loss"], "true_loss": true_loss,
           "relative_error": abs(row["loss"] - true_loss) / true_loss,
           "update_norm_ratio": float(torch.cat(deltas).norm() / torch.cat([p.detach().reshape(-1).float()
                                                                             for _, p in params]).norm())}
    if check:
        out["approx_error"], out["approx_error_without_gradient"] = first_order_error(
            model, params, projection, outputs, gradients, check, pad_id, deltas, settings.batch_size,
            settings.output)
    return out


def describe(config: Config) -> dict[str, Any]:
    """The settings that fix an estimate's result (saved beside it)."""
    from dataclasses import asdict

    return {"adapter_method": config.adapter.method, **asdict(config.estimate)}


def run_estimate(folder: str | Path, config: Config, recipe: Any = None, out: str | Path | None = None,
                 progress: bool = True) -> tuple[dict, Path]:
    """The estimate for a meta-initialisation run folder as `config.estimate` says; writes estimate.json and
    table.txt under `out` (default: beside the run's eval folders) and returns (report, out)."""
    from llmft.core.data import load_examples
    from llmft.core.gradients import estimate_parameters
    from llmft.core.inference import load_for_inference
    from llmft.core.jsonl import read_jsonl

    folder = Path(folder)
    settings = config.estimate
    data_path, eval_path = settings.data or config.data.train, settings.eval_data or config.data.eval
    for key, path in (("estimate.data (or data.train)", data_path), ("estimate.eval_data (or data.eval)", eval_path)):
        if not path or not Path(path).is_file():
            raise LlmftError(f"{key}: file not found: {path or '(not set)'}")
    out_dir = Path(out) if out else default_estimate_dir(folder)
    _, tokenizer, model = load_for_inference(folder)
    custom = (lambda record: recipe.tokenize(record, tokenizer, config)) if recipe is not None else None
    records = read_jsonl(data_path, what="estimate.data")[:settings.max_examples or None]
    examples = load_examples(data_path, tokenizer, config.data.max_length, custom, what="estimate.data",
                             limit=settings.max_examples)
    eval_examples = load_examples(eval_path, tokenizer, config.data.max_length, custom, what="estimate.eval_data")
    groups = config_groups(records, settings, "estimate.data")
    params = estimate_parameters(model, config.adapter.method)
    projection = Projection([(n, p.numel()) for n, p in params], settings.project_dimension, settings.seed)
    pad_id = tokenizer.pad_token_id

    started = time.perf_counter()
    outputs, gradients = cached_gradients(model, examples, pad_id, params, projection,
                                          gradient_dir(out_dir, settings), settings, progress)
    gradient_seconds = time.perf_counter() - started
    subsets = [list(s) for s in settings.subsets] or sample_subsets(groups, settings.number_of_subsets,
                                                                    settings.subset_size, settings.seed)
    check = examples[:settings.approximation_examples]

    def on_model(k: int, row: dict, deltas: list) -> None:
        if check:
            row["approx_error"], row["approx_error_without_gradient"] = first_order_error(
                model, params, projection, outputs, gradients, check, pad_id, deltas, settings.batch_size,
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

    rows = estimate_subsets(model, params, projection, gradients, groups, subsets, eval_examples, pad_id,
                            settings, on_model)
    meta_loss = mean_loss(model, eval_examples, pad_id, settings.batch_size)
    finetuned = [against_finetuned(Path(run), folder, model, params, projection, (outputs, gradients), records,
                                   eval_examples, check, pad_id, settings) for run in settings.finetuned]
    ranking = [{"group": g, "score": s, "subsets": n}
               for g, s, n in group_scores([r["groups"] for r in rows], [r["loss"] for r in rows])]
    best = min(rows, key=lambda r: r["loss"])
    report = {"run": str(folder), "settings": describe(config), "examples": len(examples),
              "eval_examples": len(eval_examples), "parameters": sum(p.numel() for _, p in params),
              "meta_loss": meta_loss, "gradient_seconds": gradient_seconds, "subsets": rows,
              "chosen_subset": best["subset"], "ranking": ranking, "finetuned": finetuned}
    runs.atomic_write_json(out_dir / "estimate.json", report)
    columns = ["subset", "examples", "loss", *[c for c in rows[0] if c not in ("subset", "examples", "loss",
                                                                              "groups", "seconds")], "groups"]
    text = (format_table(rows, columns) + f"\n\nmeta-initialisation loss {meta_loss:.4f}; chosen subset "
            f"{best['subset']}\n\n" + format_table(ranking, ["group", "score", "subsets"]))
    if finetuned:
        text += "\n\nreal fine-tunes vs the estimate of the same records\n" + format_table(
            finetuned, [c for c in finetuned[0] if c != "run"] + ["run"])
    runs.atomic_write_text(out_dir / "table.txt", text + "\n")
    return report, out_dir
