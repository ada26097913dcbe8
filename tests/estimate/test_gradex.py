import torch

from llmft.core.config import EstimateConfig
from llmft.estimate.gradex import (
    approximation_error,
    cached_gradients,
    first_order_error,
    group_scores,
    logistic_regression,
    moved,
    sample_subsets,
    scaled_update,
    subset_update,
)
from llmft.estimate.gradients import Projection, estimate_parameters

from .test_gradients import bottleneck_model, examples


def test_logistic_regression_solves_the_liblinear_objective():
    torch.manual_seed(0)
    x = torch.randn(40, 6)
    labels = (x[:, 0] + 0.3 * torch.randn(40) > 0).double()
    c = 0.7
    w, b = logistic_regression(x, labels, c)
    beta = torch.cat([w, torch.tensor([b], dtype=torch.float64)]).requires_grad_(True)
    z = torch.cat([x.double(), torch.ones(40, 1, dtype=torch.float64)], 1)
    s = labels * 2 - 1
    objective = 0.5 * beta.square().sum() + c * torch.nn.functional.softplus(-s * (z @ beta)).sum()
    (grad,) = torch.autograd.grad(objective, beta)
    assert float(grad.abs().max()) < 1e-9  # the optimum
    assert float(w[0]) > 0.5 and float(w[0]) > 3 * float(w[1:].abs().max())  # the informative feature


def test_strong_regularisation_points_the_update_along_the_summed_gradients():
    """With C = 1e-4 and flipped signs, w is (nearly) parallel to sum_i g~_i: a step that raises every f_i."""
    torch.manual_seed(1)
    g = torch.randn(50, 8) + torch.tensor([2.0, 0, 0, 0, 0, 0, 0, 0])
    w = subset_update(g, EstimateConfig(fit_fraction=1.0), seed=0)
    cosine = torch.nn.functional.cosine_similarity(w.float(), g.sum(0), dim=0)
    assert float(cosine) > 0.95


def test_approximation_error_formula_by_hand():
    before, first, after = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.0]), torch.tensor([2.0, -1.0])
    with_term, without = approximation_error(before, first, after)
    # |1 + .5 - 2| / 2 = .25 ; |-2 + 0 + 1| / 2 = .5   -> mean of squares (0.0625 + 0.25) / 2
    assert abs(with_term - 0.15625) < 1e-7
    # |1 - 2| / 2 = .5 ; |-2 + 1| / 2 = .5 -> 0.25
    assert abs(without - 0.25) < 1e-7


def test_first_order_term_reduces_the_approximation_error_at_a_small_scale(tmp_path, capsys):
    model, method = bottleneck_model()
    params = estimate_parameters(model, method)
    projection = Projection([(n, p.numel()) for n, p in params], dim=32, seed=0)
    settings = EstimateConfig(shard_size=3, batch_size=2, fit_fraction=1.0)
    items = examples()
    outputs, gradients = cached_gradients(model, items, 0, params, projection, tmp_path, settings)
    weights = subset_update(gradients, settings, seed=0)
    norm = sum(float(p.detach().square().sum()) for _, p in params) ** 0.5
    errors = {}
    for scale in (0.01, 0.3):
        deltas = scaled_update(projection, weights, scale * norm)
        errors[scale] = first_order_error(model, params, projection, outputs, gradients, items, 0, deltas, 2)
    with capsys.disabled():
        for scale, (with_term, without) in errors.items():
            print(f"\nscale {scale}: approximation error {with_term:.3e} with the gradient term, "
                  f"{without:.3e} without")
    small_with, small_without = errors[0.01]
    assert small_with < 0.05 * small_without
    assert errors[0.3][0] > small_with  # the linearisation degrades further out


def test_gradient_cache_is_sharded_and_resumes(tmp_path):
    model, method = bottleneck_model()
    params = estimate_parameters(model, method)
    projection = Projection([(n, p.numel()) for n, p in params], dim=8, seed=0)
    settings = EstimateConfig(shard_size=3, batch_size=2)
    items = examples()
    first = cached_gradients(model, items, 0, params, projection, tmp_path, settings)
    shards = sorted(tmp_path.glob("shard-*.safetensors"))
    assert [s.name for s in shards] == ["shard-00000.safetensors", "shard-00001.safetensors"]
    kept = shards[0].stat().st_mtime_ns
    shards[1].unlink()  # a run killed after the first shard
    again = cached_gradients(model, items, 0, params, projection, tmp_path, settings)
    assert shards[0].stat().st_mtime_ns == kept and shards[1].exists()
    torch.testing.assert_close(again[1], first[1])
    other = Projection(projection.shapes, 8, 1)  # another seed: the old shards are dropped
    third = cached_gradients(model, items, 0, params, other, tmp_path, settings)
    assert not torch.allclose(third[1], first[1])


def test_moved_restores_the_meta_initialisation():
    model, method = bottleneck_model()
    params = estimate_parameters(model, method)
    before = [p.detach().clone() for _, p in params]
    deltas = [torch.ones(p.numel()) for _, p in params]
    with moved(params, deltas):
        assert torch.equal(params[0][1], before[0] + 1)
    assert all(torch.equal(p, b) for (_, p), b in zip(params, before))


def test_subsets_and_random_ensemble_scores():
    groups = ["a", "b", "c", "d"]
    subsets = sample_subsets(groups * 3, number=5, size=0.5, seed=0)
    assert len(subsets) == 5 and all(len(s) == 2 and len(set(s)) == 2 for s in subsets)
    assert subsets == sample_subsets(groups * 3, number=5, size=0.5, seed=0)
    scores = group_scores([["a", "b"], ["b", "c"], ["a", "c"]], [1.0, 2.0, 4.0])
    assert scores == [("b", 1.5, 2), ("a", 2.5, 2), ("c", 3.0, 2)]
