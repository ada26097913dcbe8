"""The running batch's KV cache: rows left-aligned in one DynamicCache whose layers write each step into
buffers with spare columns; rows join (left-padded to one length) and leave (padding cut off the left)."""

from __future__ import annotations

from typing import Any

_SPARE_LAYER: Any = None


def spare_layer() -> Any:
    """A DynamicLayer whose keys and values sit in buffers with spare columns: a decode step writes its column in
    place, where DynamicLayer's torch.cat copies the whole cache every step (at 64 rows, as much memory traffic
    as the step's matmuls). Keys handed out are views of the buffer's filled columns."""
    global _SPARE_LAYER
    if _SPARE_LAYER is None:
        from transformers.cache_utils import DynamicLayer

        class SpareLayer(DynamicLayer):
            buffers: Any = None

            def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
                if not self.is_initialized:
                    self.lazy_initialization(key_states, value_states)
                    self.keys, self.values = key_states, value_states
                    return self.keys, self.values
                filled, new = self.keys.shape[-2], key_states.shape[-2]
                if self.buffers is None or self.buffers[0].shape[-2] < filled + new \
                        or self.buffers[0].data_ptr() != self.keys.data_ptr() \
                        or self.buffers[0].shape[0] != self.keys.shape[0]:
                    # First step, a full buffer, or the batch's rows changed (keys replaced): a new buffer.
                    spare = max(64, filled // 2)
                    self.buffers = tuple(t.new_empty((*t.shape[:2], filled + new + spare, t.shape[3]))
                                         for t in (self.keys, self.values))
                    self.buffers[0][:, :, :filled] = self.keys
                    self.buffers[1][:, :, :filled] = self.values
                self.buffers[0][:, :, filled:filled + new] = key_states
                self.buffers[1][:, :, filled:filled + new] = value_states
                self.keys = self.buffers[0][:, :, :filled + new]
                self.values = self.buffers[1][:, :, :filled + new]
                return self.keys, self.values

        _SPARE_LAYER = SpareLayer
    return _SPARE_LAYER


def new_cache() -> Any:
    """An empty DynamicCache for a prefill, its layers SpareLayers."""
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.layer_class_to_replicate = spare_layer()
    return cache


def merge(cache: Any, mask: Any, joining: Any, joining_mask: Any) -> tuple[Any, Any]:
    """The running cache and mask with a prefilled cache's rows appended, the shorter side left-padded."""
    import torch.nn.functional as F

    if cache is None:
        return joining, joining_mask
    old, new = mask.shape[1], joining_mask.shape[1]
    for mine, theirs in zip(cache.layers, joining.layers):
        for name in ("keys", "values"):
            a, b = getattr(mine, name), getattr(theirs, name)
            a = F.pad(a, (0, 0, new - old, 0)) if new > old else a
            b = F.pad(b, (0, 0, old - new, 0)) if old > new else b
            setattr(mine, name, torch_cat([a, b]))
    a = F.pad(mask, (new - old, 0)) if new > old else mask
    b = F.pad(joining_mask, (old - new, 0)) if old > new else joining_mask
    return cache, torch_cat([a, b])


def keep_rows(cache: Any, mask: Any, keep: list[int]) -> Any:
    """The mask of the rows `keep` (indices, in order), their cache cut to them in place; padding columns no
    kept row uses are cut off the left."""
    import torch

    index = torch.tensor(keep, device=mask.device)
    mask = mask.index_select(0, index)
    start = int(mask.any(0).long().argmax())  # the first column a remaining row uses
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, index)[:, :, start:]
        layer.values = layer.values.index_select(0, index)[:, :, start:]
    return mask[:, start:]


def torch_cat(parts: list[Any]) -> Any:
    """`parts` joined along the batch dimension."""
    import torch

    return torch.cat(parts, dim=0)
