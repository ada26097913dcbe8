"""The running batch's KV cache and attention mask, laid out so that joining and leaving rows copy only the rows
that move.

Every layer's keys and values, and the 2-D mask, are views `[:rows, :, start:end]` of buffers with spare rows
and columns (a Slab). A decode step writes its column in place (DynamicLayer's torch.cat copies the whole cache
every step); a joining row is written into a spare row, right-aligned at the batch's last column (the columns
before its prompt masked); a leaving row's place is taken by one of the batch's last rows; padding no row uses
any more is cut off the left by moving `start`. With 64 rows of mixed answer lengths a row joins or leaves
nearly every step, and copying the whole cache each time cost as much as the steps themselves.
"""

from __future__ import annotations

from typing import Any

ROW_SPARE = 8  # rows a buffer holds beyond the batch's, for rows that join


def column_spare(width: int) -> int:
    """Columns a buffer holds beyond `width`, for the steps to come."""
    return max(64, width // 2)


class Slab:
    """Tensors shaped [rows, a, columns, b] kept alike: views `[:rows, :, start:end]` of buffers with spare room."""

    def __init__(self, parts: list[Any]):
        rows, width = parts[0].shape[0], parts[0].shape[2]
        self.buffers = [part.new_zeros((rows + ROW_SPARE, part.shape[1], width + column_spare(width), part.shape[3]))
                        for part in parts]
        for buffer, part in zip(self.buffers, parts):
            buffer[:rows, :, :width] = part
        self.rows, self.start, self.end = rows, 0, width

    @property
    def width(self) -> int:
        return self.end - self.start

    def views(self) -> list[Any]:
        """The filled part of each buffer."""
        return [buffer[:self.rows, :, self.start:self.end] for buffer in self.buffers]

    def append(self, parts: list[Any]) -> None:
        """New columns for every row, after the last."""
        new = parts[0].shape[2]
        if self.end + new > self.buffers[0].shape[2]:
            self._reallocate(self.buffers[0].shape[0], shift=0, extra=new)
        for buffer, part in zip(self.buffers, parts):
            buffer[:self.rows, :, self.end:self.end + new] = part
        self.end += new

    def join(self, parts: list[Any]) -> None:
        """New rows, right-aligned at the last column; a wider batch is made by opening columns on the left
        (zeros there, for the rows already in)."""
        rows, width = parts[0].shape[0], parts[0].shape[2]
        capacity = self.buffers[0].shape[0]
        if self.end < width or self.rows + rows > capacity:
            self._reallocate(max(capacity, self.rows + rows + ROW_SPARE), shift=max(0, width - self.width), extra=0)
        start = min(self.start, self.end - width)
        for buffer, part in zip(self.buffers, parts):
            buffer[:self.rows, :, start:self.start] = 0
            buffer[self.rows:self.rows + rows, :, start:self.end - width] = 0
            buffer[self.rows:self.rows + rows, :, self.end - width:self.end] = part
        self.start, self.rows = start, self.rows + rows

    def keep(self, keep: list[int]) -> list[int]:
        """Only the rows `keep` (ascending) stay: each leaving row's place among the first len(keep) is taken
        by a kept row from beyond them. Returns the old index of each row in its new place."""
        kept = len(keep)
        holes = sorted(set(range(kept)) - set(keep))
        movers = [row for row in keep if row >= kept]
        order = list(range(kept))
        for hole, mover in zip(holes, movers):  # a plain slice copy per row: few rows leave at a time
            for buffer in self.buffers:
                buffer[hole, :, self.start:self.end].copy_(buffer[mover, :, self.start:self.end])
            order[hole] = mover
        self.rows = kept
        return order

    def trim(self, columns: int) -> None:
        """The first `columns` columns (padding no row uses) are dropped."""
        self.start += columns

    def _reallocate(self, capacity: int, shift: int, extra: int) -> None:
        """New buffers of `capacity` rows, the filled columns moved to start at `shift`, room for `extra` more."""
        width = self.width
        columns = shift + width + extra + column_spare(width + extra)
        moved = []
        for buffer in self.buffers:
            fresh = buffer.new_zeros((capacity, buffer.shape[1], columns, buffer.shape[3]))
            fresh[:self.rows, :, shift:shift + width] = buffer[:self.rows, :, self.start:self.end]
            moved.append(fresh)
        self.buffers, self.start, self.end = moved, shift, shift + width


def rows_layer() -> Any:
    """The DynamicLayer class whose keys and values live in a Slab (made once, on first use)."""
    global _ROWS_LAYER
    if _ROWS_LAYER is None:
        from transformers.cache_utils import DynamicLayer

        class RowsLayer(DynamicLayer):
            slab: Slab | None = None

            def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
                if not self.is_initialized:
                    self.lazy_initialization(key_states, value_states)
                    self.slab = Slab([key_states, value_states])
                else:
                    self.slab.append([key_states, value_states])
                self.refresh()
                return self.keys, self.values

            def refresh(self) -> None:
                """keys and values: the slab's filled views."""
                self.keys, self.values = self.slab.views()

        _ROWS_LAYER = RowsLayer
    return _ROWS_LAYER


_ROWS_LAYER: Any = None


def new_cache() -> Any:
    """An empty DynamicCache for a prefill, its layers RowsLayers."""
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.layer_class_to_replicate = rows_layer()
    return cache


class RunningCache:
    """The running batch's cache (a prefill's DynamicCache, rows joined into it) and its 2-D attention mask."""

    def __init__(self, cache: Any, mask: Any):
        self.cache = cache
        self._mask = Slab([mask[:, None, :, None]])

    @property
    def mask(self) -> Any:
        return self._mask.views()[0][:, 0, :, 0]

    def step_mask(self) -> Any:
        """The mask with a column for the step's new token (every row sees it)."""
        self._mask.append([self._mask.buffers[0].new_ones((self._mask.rows, 1, 1, 1))])
        return self.mask

    def join(self, prefilled: Any, mask: Any) -> None:
        """A prefill's rows (its cache and mask) join the batch after its rows."""
        for mine, theirs in zip(self.cache.layers, prefilled.layers):
            mine.slab.join(theirs.slab.views())
            mine.refresh()
        self._mask.join([mask[:, None, :, None]])

    def keep(self, keep: list[int]) -> list[int]:
        """Only the rows `keep` (ascending) stay; returns the old index of each row in its new place. Columns
        no remaining row uses are cut off the left."""
        order = self._mask.keep(keep)
        used = self.mask.any(0)
        first = int(used.long().argmax()) if bool(used.any()) else 0
        self._mask.trim(first)
        for layer in self.cache.layers:
            layer.slab.keep(keep)  # the same moves as the mask's
            layer.slab.trim(first)
            layer.refresh()
        return order
