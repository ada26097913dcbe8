"""What trains: full weights, LoRA, QLoRA, new-token embeddings (prompt tuning), LoRA + new tokens, or
bottleneck adapters (core/bottleneck.py, not PEFT).

LoRA and prompt tuning are built on PEFT: LoRA layers from `LoraConfig`, new-token rows from
`trainable_token_indices` (LoRA) or `TrainableTokensConfig` (embeddings only), so adapters reload with plain
`PeftModel.from_pretrained`.
"""

from __future__ import annotations

from typing import Any

from llmft.core.config import Config
from llmft.core.errors import LlmftError


def uses_peft(config: Config) -> bool:
    return config.adapter.method not in ("full", "bottleneck")


def keeps_base(config: Config) -> bool:
    """Whether the run saves only adapter weights, so its base model must be kept or reloadable."""
    return config.adapter.method != "full"


def bottleneck_spec(config: Config) -> Any:
    from llmft.core.bottleneck import BottleneckSpec

    a = config.adapter
    return BottleneckSpec(a.mh_adapter, a.output_adapter, a.reduction_factor, a.non_linearity)


def apply_adapter(model: Any, config: Config, new_token_ids: list[int]) -> Any:
    """Wrap the base model for training as [adapter] says; returns the model to train."""
    method = config.adapter.method
    if method == "full":
        return model
    if method == "bottleneck":
        from llmft.core.bottleneck import add_bottlenecks

        if new_token_ids:
            raise LlmftError("adapter.method = 'bottleneck' does not train new-token embeddings, but this run adds "
                             f"{len(new_token_ids)} tokens; use 'lora+prompt-tuning' or drop adapter.new_tokens")
        add_bottlenecks(model, bottleneck_spec(config))
        return model
    # Imported here: PEFT (and the bitsandbytes it loads) adds ~1.5 s to a full-weights run's start.
    from peft import LoraConfig, TrainableTokensConfig, get_peft_model, prepare_model_for_kbit_training

    lora_targets = [] if method == "prompt-tuning" else config.adapter.target_modules
    token_layers = _token_layers(model, new_token_ids, lora_targets)
    if method == "prompt-tuning":
        if not new_token_ids:
            raise LlmftError(
                "adapter.method = 'prompt-tuning' trains new-token embeddings, but there are no new tokens "
                "(set adapter.new_tokens or use a recipe that adds tokens)"
            )
        peft_config = TrainableTokensConfig(token_indices=new_token_ids, target_modules=list(token_layers))
        return get_peft_model(model, peft_config)
    if method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    peft_config = LoraConfig(
        r=config.adapter.r,
        lora_alpha=config.adapter.alpha,
        lora_dropout=config.adapter.dropout,
        target_modules=config.adapter.target_modules,
        task_type="SEQ_2_SEQ_LM" if getattr(model.config, "is_encoder_decoder", False) else "CAUSAL_LM",
        # New tokens always train (as TRL does): an adapter whose new rows stay random cannot work.
        trainable_token_indices=token_layers or None,
    )
    return get_peft_model(model, peft_config)


def _token_layers(model: Any, new_token_ids: list[int], lora_targets: list[str]) -> dict[str, list[int]]:
    """Input and (untied) output embedding layers whose new rows train; an output layer that LoRA targets
    (llama-squad's all-linear set includes lm_head) adapts through LoRA instead, which covers its new rows."""
    if not new_token_ids:
        return {}
    names = {}
    inputs = model.get_input_embeddings()
    outputs = model.get_output_embeddings()
    for name, module in model.named_modules():
        short = name.split(".")[-1]
        if module is inputs:
            names[short] = new_token_ids
        elif outputs is not None and module is outputs and outputs.weight is not inputs.weight \
                and short not in lora_targets:
            names[short] = new_token_ids
    return names


def trainable_summary(model: Any) -> tuple[int, int]:
    """(trainable parameters, all parameters)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
