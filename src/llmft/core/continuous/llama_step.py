"""A forward of a plain Llama model over a batch's new tokens (a prefill, or one decode step), run over its own
weights without transformers' per-layer machinery.

Written by hand because at serving sizes on CPU the model's Python overhead is a large share of a forward:
transformers' builds output records, kernel-hub wrappers and a cache call chain per layer per call. This one keeps
the arithmetic op for op (the model's own norms, rotary embedding, mask builder and SDPA dispatch), so
its logits equal the model's forward; every model it does not recognise (PEFT wrappers, quantized or biased
layers, other architectures) goes through the model's forward.
"""

from __future__ import annotations

from typing import Any

SUPPORTED_ACTIVATIONS = ("silu",)


class LlamaStep:
    """`step(ids, positions, mask, cache)`: the last position's logits (float) of each row's new tokens, their
    keys and values appended to `cache` (a DynamicCache holding the rows' tokens so far, or empty)."""

    def __init__(self, model: Any):
        self.model = model
        self.inner = model.model

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
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        from transformers.masking_utils import create_causal_mask
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        rows, length = ids.shape
        x = self.inner.embed_tokens(ids)
        # The model's own mask (causal and padding, or None where SDPA needs none) and its own SDPA dispatch.
        causal = create_causal_mask(config=self.model.config, inputs_embeds=x, attention_mask=mask, cache=cache,
                                    position_ids=positions)
        cos, sin = self.inner.rotary_emb(x, positions)
        for index, layer in enumerate(self.inner.layers):
            attention, mlp = layer.self_attn, layer.mlp
            h = layer.input_layernorm(x)
            shape = (rows, length, -1, attention.head_dim)
            q = F.linear(h, attention.q_proj.weight).view(shape).transpose(1, 2)
            k = F.linear(h, attention.k_proj.weight).view(shape).transpose(1, 2)
            v = F.linear(h, attention.v_proj.weight).view(shape).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            keys, values = cache.update(k, v, index)
            out, _ = sdpa_attention_forward(attention, q, keys, values, causal, dropout=0.0,
                                            scaling=attention.scaling)
            x = x + F.linear(out.reshape(rows, length, -1).contiguous(), attention.o_proj.weight)
            h = layer.post_attention_layernorm(x)
            x = x + F.linear(F.silu(F.linear(h, mlp.gate_proj.weight)) * F.linear(h, mlp.up_proj.weight),
                             mlp.down_proj.weight)
        x = self.inner.norm(x)
        return F.linear(x[:, -1:], self.model.lm_head.weight)[:, -1].float()

