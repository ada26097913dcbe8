"""GradEx: estimate what fine-tuning a meta-initialisation on a data subset would give, without training.

Steps (Li et al. 2024, VirtuosoResearch/Scalable-finetuning): per-example outputs f_i and projected
gradients g~_i at the meta-initialisation theta* (estimate/gradients.py), computed once and cached in shards;
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
        tensors = _load_shard(shard, len(examples[start:start + settings.shard_size]))
        if tensors is None:
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
