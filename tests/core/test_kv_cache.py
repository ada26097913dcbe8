"""The running batch's cache layout: after rows join (shorter or longer than the batch), steps append and rows
leave, every row still holds exactly its own keys, values and mask, right-aligned, and only moved rows are
copied (the buffers are reused while they have room)."""

from __future__ import annotations

import torch

from llmft.core.continuous import kv_cache


def prefill(lengths: list[int], seed: int) -> tuple[object, torch.Tensor, list[torch.Tensor]]:
    """A prefill cache of rows of these prompt lengths (left-padded), its mask, and each row's own keys."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    keys = torch.randn(len(lengths), 2, width, 3, generator=generator)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for r, n in enumerate(lengths):
        mask[r, width - n:] = 1
    cache = kv_cache.new_cache()
    cache.update(keys, keys * 2, 0)
    return cache, mask, [keys[r, :, width - n:] for r, n in enumerate(lengths)]


def check(running: kv_cache.RunningCache, expected: list[torch.Tensor]) -> None:
    layer = running.cache.layers[0]
    mask = running.mask
    assert layer.keys.shape[0] == mask.shape[0] == len(expected)
    assert layer.keys.shape[2] == mask.shape[1]
    assert bool(mask.any(0)[0])  # no column that no row uses on the left
    for r, own in enumerate(expected):
        used = mask[r].bool()
        assert int(used.sum()) == own.shape[1] and bool(used[-own.shape[1]:].all())  # right-aligned
        assert torch.equal(layer.keys[r][:, used], own)
        assert torch.equal(layer.values[r][:, used], own * 2)


def test_rows_join_step_and_leave_keeping_their_own_keys():
    cache, mask, expected = prefill([3, 5], seed=0)
    running = kv_cache.RunningCache(cache, mask)
    check(running, expected)
    for step in range(3):
        new = torch.randn(len(expected), 2, 1, 3, generator=torch.Generator().manual_seed(10 + step))
        running.step_mask()
        running.cache.update(new, new * 2, 0)
        expected = [torch.cat([own, new[r]], dim=1) for r, own in enumerate(expected)]
        check(running, expected)
    joining, joining_mask, own = prefill([2, 12, 4], seed=1)  # 12: wider than the batch (8 columns)
    running.join(joining, joining_mask)
    expected += own
    check(running, expected)
    buffer = running.cache.layers[0].slab.buffers[0]
    order = running.keep([1, 3, 4])  # rows 0 and 2 leave; rows 3 and 4 take their places
    assert order == [3, 1, 4]
    expected = [expected[i] for i in order]
    check(running, expected)
    assert running.cache.layers[0].slab.buffers[0] is buffer  # no new buffer for a leave
    order = running.keep([1, 2])  # the 12-token row (now first) leaves: the padding it needed is cut
    expected = [expected[i] for i in order]
    check(running, expected)
    assert order == [2, 1] and running.mask.shape[1] == max(own.shape[1] for own in expected) == 8
