"""GradEx: estimate what fine-tuning a meta-initialisation on a data subset would give, without training.

Steps (Li et al. 2024, VirtuosoResearch/Scalable-finetuning): per-example outputs f_i and projected
gradients g~_i at the meta-initialisation theta* (estimate/gradients.py), computed once and cached in shards;
for each subset, random labels y ~ Bernoulli(0.7) with g~_i negated where y = 0, an L2 logistic regression
(liblinear's objective, intercept included) fit on a random 80%, the update P w rescaled to
scale x |theta*|, and theta* + update evaluated directly (loss, optionally the recipe's metric). Each subset is
estimated once per repeat (its own P and labels); the repeats' min-max is the estimate's spread. Groups are
ranked by the random-ensemble score: the mean estimated loss of the subsets that hold them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from llmft.core import runs
from llmft.core.config import EstimateConfig
from llmft.core.data import TokenizedExample, collate
from llmft.core.errors import LlmftError
from llmft.core.packing import single_rows
from llmft.core.scoring import example_losses
from llmft.estimate.gradients import OUTPUTS, Projection, outputs_and_projected_gradients


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
    """The regression weights w [d] for one subset's projected gradients, fit on a seeded random
    `fit_fraction` of its rows."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    labels = torch.bernoulli(torch.full((len(gradients),), settings.positive_rate), generator=generator)
    signed = gradients * (labels * 2 - 1).unsqueeze(1)
    # The reference splits the rows in the order drawn (random for sampled examples); ours arrive grouped, so
    # a fixed first 80% would leave out most of the subset's last group.
    order = torch.randperm(len(gradients), generator=generator)
    fit = order[:max(1, int(len(gradients) * settings.fit_fraction))]
    weights, _ = logistic_regression(signed[fit], labels[fit], settings.regularization)
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
    """Identifies the data, the parameter layout and the weights themselves a cache was computed for (a retrain
    into the same folder leaves the layout as it was)."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.input_ids, example.labels]).encode())
    digest.update(json.dumps([(n, p.numel()) for n, p in params]).encode())
    for _, p in params:
        digest.update(p.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def cached_gradients(model: Any, examples: Sequence[TokenizedExample], pad_id: int,
                     params: Sequence[tuple[str, Any]], projections: Sequence[Projection], folder: Path,
                     settings: EstimateConfig, progress: bool = False) -> tuple[Any, Any]:
    """(f [N], g~ [N, d x repeats]) at theta*, from `folder`'s shards where present (resumable), computing the
    rest."""
    import torch
    from safetensors.torch import load_file, save_file

    meta = {"fingerprint": fingerprint(examples, params), "examples": len(examples), "dimension": projections[0].dim,
            "output": settings.output, "seed": projections[0].seed, "repeats": len(projections),
            "shard_size": settings.shard_size}
    meta_file = folder / "meta.json"
    if meta_file.is_file() and json.loads(meta_file.read_text()) != meta:
        for old in folder.glob("shard-*.safetensors"):
            old.unlink()
    runs.atomic_write_json(meta_file, meta)
    outputs, gradients = [], []
    starts = range(0, len(examples), settings.shard_size)
    for number, start in enumerate(starts):
        shard = folder / f"shard-{number:05d}.safetensors"
        tensors = _load_shard(shard, len(examples[start:start + settings.shard_size]))
        if tensors is None:
            chunk = examples[start:start + settings.shard_size]
            pieces = [outputs_and_projected_gradients(model, chunk[i:i + settings.batch_size], pad_id, params,
                                                      projections, OUTPUTS[settings.output])
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


def _load_shard(shard: Path, rows: int) -> dict[str, Any] | None:
    """A cached shard's tensors; None when it is missing or damaged (cut short by a kill or a full disk)."""
    from safetensors.torch import load_file

    if not shard.is_file():
        return None
    try:
        tensors = load_file(shard)
    except Exception:  # safetensors' own error type for a truncated or garbled file
        return None
    if set(tensors) != {"outputs", "gradients"} or not len(tensors["outputs"]) == len(tensors["gradients"]) == rows:
        return None
    return tensors


# --------------------------------------------------------------------------------------------------
# Subsets and groups


def sample_subsets(groups: Sequence[str], number: int, size: float, seed: int) -> list[list[str]]:
    """The distinct subsets among `number` random draws of int(size x #groups) groups (at least one, the
    reference's rounding), in first-drawn order, each in first-seen group order."""
    names = list(dict.fromkeys(groups))
    k = min(len(names), max(1, int(size * len(names))))
    rng = random.Random(seed)
    subsets: dict[tuple[str, ...], None] = {}
    for _ in range(number):
        chosen = set(rng.sample(names, k))
        subsets.setdefault(tuple(g for g in names if g in chosen))
    return [list(s) for s in subsets]


def gradient_clusters(gradients: Any, k: int, seed: int, iterations: int = 100) -> list[str]:
    """Each row's cluster name (c0, c1, ...) from k-means on the unit-normalised rows (cosine distance), seeded
    k-means++ starts; empty clusters are dropped by construction of the names."""
    import torch

    x = torch.nn.functional.normalize(gradients.double(), dim=1)
    k = min(k, len(x))
    generator = torch.Generator().manual_seed(seed)
    centres = x[torch.randint(len(x), (1,), generator=generator)]
    while len(centres) < k:
        distance = (1 - x @ centres.T).min(1).values.clamp(min=0)
        weights = distance if float(distance.sum()) > 0 else torch.ones(len(x), dtype=x.dtype)
        centres = torch.cat([centres, x[torch.multinomial(weights, 1, generator=generator)]])
    assignment = torch.full((len(x),), -1)
    for _ in range(iterations):
        new = (x @ centres.T).argmax(1)
        if torch.equal(new, assignment):
            break
        assignment = new
        for j in range(k):
            members = x[assignment == j]
            if len(members):
                centres[j] = torch.nn.functional.normalize(members.sum(0), dim=0)
    return [f"c{int(j)}" for j in assignment]


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


def spread_scores(subsets: Sequence[Sequence[str]], losses: Sequence[Sequence[float]]) -> list[dict]:
    """Each group's random-ensemble score per repeat (losses[k][j]: subset k, repeat j): mean, min and max over
    the repeats and the number of subsets holding it, best first."""
    repeats = len(losses[0])
    per_repeat = [dict((g, s) for g, s, _ in group_scores(subsets, [row[j] for row in losses]))
                  for j in range(repeats)]
    counts = {g: n for g, _, n in group_scores(subsets, [row[0] for row in losses])}
    scored = []
    for group, count in counts.items():
        values = [scores[group] for scores in per_repeat]
        scored.append({"group": group, "score": sum(values) / repeats, "low": min(values), "high": max(values),
                       "subsets": count})
    return sorted(scored, key=lambda item: item["score"])


def tiers(items: Sequence[dict]) -> list[int]:
    """Tier numbers (1 = best) for items sorted by score with "low"/"high" spreads: an item opens a new tier only
    when its low lies above the high of every item in the current tier (the spread cannot reorder them)."""
    out, tier, ceiling = [], 1, None
    for item in items:
        if ceiling is not None and item["low"] > ceiling:
            tier, ceiling = tier + 1, None
        ceiling = item["high"] if ceiling is None else max(ceiling, item["high"])
        out.append(tier)
    return out


def clear_best(rows: Sequence[dict]) -> int | None:
    """The subset whose estimate beats every other by more than the spread (its highest repeat below every
    other's lowest); None when the spreads overlap at the top."""
    best = min(rows, key=lambda r: r["loss"])
    others = [r for r in rows if r is not best]
    if others and best["loss_high"] >= min(r["loss_low"] for r in others):
        return None
    return best["subset"]


# --------------------------------------------------------------------------------------------------
# The whole estimate


def subset_deltas(projections: Sequence[Projection], gradients: Any, indices: Sequence[int], norm: float,
                  settings: EstimateConfig, k: int) -> list[list[Any]]:
    """Subset k's update per repeat: its rows of repeat j's d columns, regression, P_j w rescaled to `norm`."""
    d = projections[0].dim
    out = []
    for j, projection in enumerate(projections):
        rows = gradients[indices][:, j * d:(j + 1) * d]
        weights = subset_update(rows, settings, settings.seed * 1_000_003 + k + 7_919 * j)
        out.append(scaled_update(projection, weights, norm))
    return out


def estimate_subsets(model: Any, params: Sequence[tuple[str, Any]], projections: Sequence[Projection],
                     gradients: Any, groups: Sequence[str], subsets: Sequence[Sequence[str]],
                     eval_examples: Sequence[TokenizedExample], pad_id: int, settings: EstimateConfig,
                     on_model: Any = None, start: int = 0) -> list[dict]:
    """One row per subset: its size, the estimated model's mean eval loss over the repeats (each repeat's in
    `losses`, their min-max in loss_low/loss_high), timings; `on_model(k, row, deltas)` may add more (e.g. the
    recipe's metric) while the model sits at theta* + the first repeat's delta. Subsets are numbered from
    `start` (their numbers seed the labels)."""
    norm = sum(float(p.detach().float().square().sum()) for _, p in params) ** 0.5 * settings.scale
    rows = []
    for k, subset in enumerate(subsets, start):
        started = time.perf_counter()
        indices = subset_indices(groups, subset)
        if not indices:
            raise LlmftError(f"estimate.subsets: subset {k} ({', '.join(subset)}) matches no example")
        row: dict[str, Any] = {"subset": k, "groups": list(subset), "examples": len(indices)}
        losses = []
        for j, deltas in enumerate(subset_deltas(projections, gradients, indices, norm, settings, k)):
            with moved(params, deltas):
                losses.append(mean_loss(model, eval_examples, pad_id, settings.batch_size))
                if j == 0 and on_model is not None:
                    on_model(k, row, deltas)
        row.update(loss=sum(losses) / len(losses), loss_low=min(losses), loss_high=max(losses), losses=losses,
                   seconds=time.perf_counter() - started)
        rows.append(row)
    return rows


def first_order_error(model: Any, params: Sequence[tuple[str, Any]], projection: Projection, outputs: Any,
                      gradients: Any, examples: Sequence[TokenizedExample], pad_id: int, deltas: Sequence[Any],
                      batch_size: int, output: str = "logit") -> tuple[float, float]:
    """The reference's approximation error of f at theta* + delta on `examples` (the first rows of the cache;
    `projection`'s columns first); g_i.delta is recovered through P's pseudo-inverse: g~_i (P^T P)^-1 P^T delta."""
    import torch

    n = len(examples)
    coordinates = torch.linalg.solve(projection.gram().double(), projection.reduce(deltas).double())
    first_order = (gradients[:n, :projection.dim].double() @ coordinates).float()
    with moved(params, deltas):
        after = example_outputs(model, examples, pad_id, batch_size, output)
    return approximation_error(outputs[:n], first_order, after)
