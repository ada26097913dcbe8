"""Block-sparse attention for packed rows on CPU: each block of queries attends only to the keys its mask allows.

A packed row of 512 tokens holding examples of ~70 tokens has a block-diagonal causal mask, and torch's CPU
SDPA kernels compute every (query, key) pair of the row before masking. Cutting the queries into blocks of
`BLOCK` and giving each block only the span of keys its rows allow (from the earliest key any of its queries
may see to the latest) skips most masked pairs; the result equals full attention for any mask, since every
key left out is masked for every query of the block. torch's FlexAttention would skip them too but has no
backward on CPU (torch 2.13), and the varlen flash kernels are CUDA-only, hence this.
"""

from __future__ import annotations

import functools
from typing import Any

NAME = "llmft_blocks"
# Queries per block: 128 measured best for 512-token rows of 20-400-token examples (bench/RESULTS.md).
BLOCK = 128
# Key spans start on a multiple of this, so a run meets few distinct shapes (oneDNN compiles a kernel per shape).
ALIGN = 32


def key_spans(allowed: Any, block: int, align: int = ALIGN) -> list[tuple[int, int, int, int]]:
    """(query start, query end, key start, key end) per block of queries, for a (batch, queries, keys) boolean
    mask, the key start rounded down to a multiple of `align`; a block whose queries may see no key gets (0, 0)."""
    import torch

    rows, queries, keys = allowed.shape
    index = torch.arange(keys)
    spans = []
    for start in range(0, queries, block):
        end = min(queries, start + block)
        seen = allowed[:, start:end].any(dim=1).any(dim=0)  # keys any query of the block may see
        hit = index[seen]
        first, last = (int(hit[0]) // align * align, int(hit[-1]) + 1) if len(hit) else (0, 0)
        spans.append((start, end, first, last))
    return spans


def mask_spans(attention_mask: Any) -> list[tuple[int, int, int, int]]:
    """`key_spans` of a 4-D mask, computed once and kept on the mask (every layer of a forward gets the same one)."""
    kept = attention_mask.__dict__
    if "_llmft_key_spans" not in kept:
        kept["_llmft_key_spans"] = key_spans(allowed_pairs(attention_mask), BLOCK)
    return kept["_llmft_key_spans"]


def allowed_pairs(attention_mask: Any) -> Any:
    """The (batch, queries, keys) boolean view of a 4-D mask, boolean or additive (finite where allowed, the
    dtype's minimum or -inf where not)."""
    import torch

    mask = attention_mask[:, 0]
    return mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2


def blocked_attention_forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                              dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
    """transformers' attention-function contract (output as (batch, queries, heads, dim)): SDPA per block of
    queries over its key span; SDPA as a whole where blocks cannot save work (no mask, decoding, GPU)."""
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    queries = query.shape[2]
    if (attention_mask is None or attention_mask.ndim != 4 or attention_mask.shape[1] != 1
            or queries <= BLOCK or queries != key.shape[2] or query.device.type != "cpu"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    dropout = dropout if module.training else 0.0
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    # bf16/fp16 blocks: matmul + fp32 softmax, 2x faster than SDPA's CPU kernels at these sizes; fp32: SDPA.
    low = _low_precision(query)
    if low is not None:
        # Scaled and cast once per layer, not per block: RoPE leaves q and k in fp32 under autocast, which would
        # cast every block's slices (and the key spans overlap); the scale goes on q as SDPA puts it.
        query, key, value = (query * scaling).to(low), key.to(low), value.to(low)
    outputs = []
    for start, end, first, last in mask_spans(attention_mask):
        if first == last:  # no query here may see any key (padding): zeros, as no real token reads them
            outputs.append(torch.zeros_like(query[:, :, start:end]))
            continue
        q, k, v = query[:, :, start:end], key[:, :, first:last], value[:, :, first:last]
        if low is not None:
            outputs.append(_matmul_block(q, k, v, block_bias(attention_mask, start, end, first, last, low),
                                         dropout))
        else:
            outputs.append(torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=attention_mask[:, :, start:end, first:last], dropout_p=dropout, scale=scaling))
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def _low_precision(query: Any) -> Any:
    """bf16/fp16 when attention runs in it (the tensors' dtype, or autocast's: q is fp32 after RoPE there), else
    None."""
    import torch

    device = query.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else query.dtype
    return None if dtype == torch.float32 else dtype


def block_bias(attention_mask: Any, start: int, end: int, first: int, last: int, dtype: Any) -> Any:
    """The additive mask (0 where allowed, the dtype's minimum where not) of one block, made once per mask."""
    import torch

    kept = attention_mask.__dict__.setdefault("_llmft_block_bias", {})
    block = (start, end, first, last, dtype)
    if block not in kept:
        allowed = allowed_pairs(attention_mask[:, :, start:end, first:last])[:, None]
        kept[block] = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return kept[block]


def _matmul_block(query: Any, key: Any, value: Any, bias: Any, dropout: float) -> Any:
    """transformers' eager attention on one block of scaled queries (softmax in fp32)."""
    import torch

    scores = torch.matmul(query, key.transpose(2, 3)) + bias
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=dropout > 0)
    return torch.matmul(weights, value)


@functools.cache
def register() -> str:
    """Make NAME a transformers attention implementation (its masks built as SDPA's); returns NAME."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, blocked_attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
