"""One decode step (a token per row) of a plain Llama model, run over its own weights without transformers'
per-layer machinery.

Written by hand because at serving sizes on CPU the model's Python overhead is a large share of a decode step:
transformers' forward builds a 4-D mask, output records, kernel-hub wrappers and a cache call chain per layer
per step. This step keeps the arithmetic op for op (the same RMSNorm, rotary embedding and SDPA call with a
boolean padding mask), so greedy tokens equal the model's own forward; prefill and every model it does not
recognise (PEFT wrappers, quantized or biased layers, other architectures) go through the model's forward.
"""

from __future__ import annotations

from typing import Any

SUPPORTED_ACTIVATIONS = ("silu",)


class LlamaStep:
    """`step(ids, positions, mask, cache)`: the last-position logits (float) of one new token per row, appended
    to `cache` (a DynamicCache whose layers hold the rows' keys and values so far)."""

    def __init__(self, model: Any):
        self.model = model
        self.inner = model.model
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scaling = self.head_dim ** -0.5

    @classmethod
    def for_model(cls, model: Any) -> LlamaStep | None:
        """The step for `model`, or None when it is not a plain Llama this step reproduces exactly."""
        import torch

        config = getattr(model, "config", None)
        if config is None or getattr(config, "model_type", "") != "llama" or hasattr(model, "peft_config"):
            return None
        if type(model).__name__ != "LlamaForCausalLM" or getattr(config, "pretraining_tp", 1) > 1:
            return None
        if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False) \
                or getattr(config, "hidden_act", "") not in SUPPORTED_ACTIVATIONS \
                or getattr(config, "_attn_implementation", "sdpa") != "sdpa":
            return None
        linears = [model.lm_head]
        for layer in model.model.layers:
            attention, mlp = layer.self_attn, layer.mlp
            linears += [attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj,
                        mlp.gate_proj, mlp.up_proj, mlp.down_proj]
        # Exactly torch's Linear: a quantized layer or an adapter injected into the module would be bypassed.
        if any(type(linear) is not torch.nn.Linear or linear.bias is not None for linear in linears):
            return None
        if model._forward_hooks or model._forward_pre_hooks:
            return None
        return cls(model)

    def __call__(self, ids: Any, positions: Any, mask: Any, cache: Any) -> Any:
        import torch.nn.functional as F
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        rows = ids.shape[0]
        x = self.inner.embed_tokens(ids)
        cos, sin = self.inner.rotary_emb(x, positions)
        keep = mask.bool()[:, None, None, :]  # the padding columns hidden, as the model's SDPA mask does
        for index, layer in enumerate(self.inner.layers):
            attention, mlp = layer.self_attn, layer.mlp
            h = _rms_norm(x, layer.input_layernorm)
            q = F.linear(h, attention.q_proj.weight).view(rows, 1, -1, self.head_dim).transpose(1, 2)
            k = F.linear(h, attention.k_proj.weight).view(rows, 1, -1, self.head_dim).transpose(1, 2)
            v = F.linear(h, attention.v_proj.weight).view(rows, 1, -1, self.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            keys, values = cache.layers[index].update(k, v)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=keep, scale=self.scaling,
                                                 enable_gqa=self.kv_heads != self.heads)
            x = x + F.linear(out.transpose(1, 2).reshape(rows, 1, -1), attention.o_proj.weight)
            h = _rms_norm(x, layer.post_attention_layernorm)
            x = x + F.linear(F.silu(F.linear(h, mlp.gate_proj.weight)) * F.linear(h, mlp.up_proj.weight),
                             mlp.down_proj.weight)
        x = _rms_norm(x, self.inner.norm)
        return F.linear(x[:, -1], self.model.lm_head.weight).float()


def _rms_norm(x: Any, norm: Any) -> Any:
    """LlamaRMSNorm's arithmetic (float32 inside, back to the input's dtype)."""
    import torch

    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(dtype)
