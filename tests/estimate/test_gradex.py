import torch

from llmft.core.config import EstimateConfig
from llmft.estimate.gradex import (
    approximation_error,
    cached_gradients,
    clear_best,
    estimate_subsets,
    first_order_error,
    gradient_clusters,
    group_scores,
    logistic_regression,
    moved,
    sample_subsets,
    scaled_update,
    spread_scores,
    subset_update,
    tiers,
)
from llmft.estimate.gradients import (
    Projection,
    estimate_parameters,
    outputs_and_projected_gradients,
    repeat_projections,
)

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


def test_first_order_term_reduces_the_approximation_error_at_a_small_scale(tmp_path):
    model, method = bottleneck_model()
    params = estimate_parameters(model, method)
    projection = Projection([(n, p.numel()) for n, p in params], dim=32, seed=0)
    settings = EstimateConfig(shard_size=3, batch_size=2, fit_fraction=1.0)
    items = examples()
    outputs, gradients = cached_gradients(model, items, 0, params, [projection], tmp_path, settings)
    weights = subset_update(gradients, settings, seed=0)
    norm = sum(float(p.detach().square().sum()) for _, p in params) ** 0.5
    errors = {}
    for scale in (0.01, 0.3):
        deltas = scaled_update(projection, weights, scale * norm)
        errors[scale] = first_order_error(model, params, projection, outputs, gradients, items, 0, deltas, 2)
    small_with, small_without = errors[0.01]
    assert small_with < 0.05 * small_without, errors  # (with the gradient term, without) by scale
    assert errors[0.3][0] > small_with, errors  # the linearisation degrades further out


def test_gradient_cache_is_sharded_and_resumes(tmp_path):
    model, method = bottleneck_model()
    params = estimate_parameters(model, method)
    projection = Projection([(n, p.numel()) for n, p in params], dim=8, seed=0)
    settings = EstimateConfig(shard_size=3, batch_size=2)
    items = examples()
    first = cached_gradients(model, items, 0, params, [projection], tmp_path, settings)
    shards = sorted(tmp_path.glob("shard-*.safetensors"))
    assert [s.name for s in shards] == ["shard-00000.safetensors", "shard-00001.safetensors"]
    kept = shards[0].stat().st_mtime_ns
    shards[1].unlink()  # a run killed after the first shard
    again = cached_gradients(model, items, 0, params, [projection], tmp_path, settings)
    assert shards[0].stat().st_mtime_ns == kept and shards[1].exists()
    torch.testing.assert_close(again[1], first[1])
    other = Projection(projection.shapes, 8, 1)  # another seed: the old shards are dropped
    third = cached_gradients(model, items, 0, params, [other], tmp_path, settings)
    assert not torch.allclose(third[1], first[1])


def test_moved_restores_the_meta_initialisation():
    model, method = bottleneck_model()
    params = estimate_parameters(model, method)
    before = [p.detach().clone() for _, p in params]
    deltas = [torch.ones(p.numel()) for _, p in params]
    with moved(params, deltas):
        assert torch.equal(params[0][1], before[0] + 1)
    assert all(torch.equal(p, b) for (_, p), b in zip(params, before))


def test_subsets_are_distinct_with_the_references_rounding_and_random_ensemble_scores():
    groups = ["a", "b", "c", "d"]
    subsets = sample_subsets(groups * 3, number=5, size=0.5, seed=0)
    assert all(len(s) == 2 and len(set(s)) == 2 for s in subsets)
    assert len({tuple(s) for s in subsets}) == len(subsets) <= 5
    assert subsets == sample_subsets(groups * 3, number=5, size=0.5, seed=0)
    # 4 groups hold 6 pairs: 40 draws find all of them, each once.
    assert sorted(map(tuple, sample_subsets(groups, number=40, size=0.5, seed=0))) == \
        [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]
    # int(), not round(): half of 7 groups is 3 of them, half of 3 is 1.
    assert {len(s) for s in sample_subsets(list("abcdefg"), number=4, size=0.5, seed=0)} == {3}
    assert {len(s) for s in sample_subsets(list("abc"), number=4, size=0.5, seed=0)} == {1}
    scores = group_scores([["a", "b"], ["b", "c"], ["a", "c"]], [1.0, 2.0, 4.0])
    assert scores == [("b", 1.5, 2), ("a", 2.5, 2), ("c", 3.0, 2)]


def test_the_fit_split_is_random_not_the_first_rows():
    """Rows arrive grouped; a fixed first 80% would leave the last group out of the fit. With C tiny, w follows
    the sum of the rows fit on, so a large last group must still pull w its way."""
    g = torch.cat([torch.tensor([[1.0, 0.0]]).repeat(16, 1), torch.tensor([[0.0, 1.0]]).repeat(4, 1) * 10])
    w = subset_update(g, EstimateConfig(fit_fraction=0.8), seed=3)
    assert float(w[1]) > float(w[0]) > 0  # the last 4 rows (in the last 20%) were fit on


def test_spread_decides_the_chosen_subset_and_the_ranking_by_hand():
    rows = [{"subset": 0, "loss": 1.0, "loss_low": 0.9, "loss_high": 1.1},
            {"subset": 1, "loss": 1.3, "loss_low": 1.2, "loss_high": 1.4},
            {"subset": 2, "loss": 1.15, "loss_low": 1.12, "loss_high": 1.18}]
    assert clear_best(rows) == 0  # 1.1 < 1.12: its worst repeat beats every other's best
    rows[2]["loss_low"] = 1.05
    assert clear_best(rows) is None  # 1.1 >= 1.05: the spreads overlap
    # Group scores per repeat: a in subsets 0 and 1, b in 1 and 2, c in 0 and 2.
    scored = spread_scores([["a", "c"], ["a", "b"], ["b", "c"]], [[1.0, 2.0], [3.0, 3.0], [5.0, 4.0]])
    assert scored == [{"group": "a", "score": 2.25, "low": 2.0, "high": 2.5, "subsets": 2},
                      {"group": "c", "score": 3.0, "low": 3.0, "high": 3.0, "subsets": 2},
                      {"group": "b", "score": 3.75, "low": 3.5, "high": 4.0, "subsets": 2}]
    assert tiers(scored) == [1, 2, 3]
    assert tiers([{"low": 0, "high": 2}, {"low": 1, "high": 3}, {"low": 3.5, "high": 4}]) == [1, 1, 2]
    assert tiers([{"low": 0, "high": 2}, {"low": 1, "high": 3}, {"low": 2.5, "high": 4}]) == [1, 1, 1]  # 2.5 < 3


def test_repeats_share_one_gradient_pass_and_give_a_spread(tmp_path):
    model, method = bottleneck_model()
    params = estimate_parameters(model, method)
    shapes = [(n, p.numel()) for n, p in params]
    projections = repeat_projections(shapes, 8, 0, 3)
    settings = EstimateConfig(shard_size=3, batch_size=2, repeats=3, fit_fraction=1.0)
    items = examples()
    _, gradients = cached_gradients(model, items, 0, params, projections, tmp_path, settings)
    assert gradients.shape == (len(items), 24)
    _, alone = outputs_and_projected_gradients(model, items, 0, params, projections[2])
    torch.testing.assert_close(gradients[:, 16:], alone)  # repeat 2's columns: its own projection's
    (row,) = estimate_subsets(model, params, projections, gradients, ["x"] * len(items), [["x"]], items, 0, settings)
    assert len(row["losses"]) == 3 and row["loss_low"] < row["loss_high"]
    assert abs(row["loss"] - sum(row["losses"]) / 3) < 1e-12


def test_gradient_clusters_find_directions():
    torch.manual_seed(0)
    axes = torch.eye(3) * 5
    rows = torch.cat([axes[i] + 0.3 * torch.randn(10, 3) for i in range(3)])
    names = gradient_clusters(rows, 3, seed=0)
    assert len(set(names)) == 3
    assert all(len(set(names[i * 10:(i + 1) * 10])) == 1 for i in range(3))
