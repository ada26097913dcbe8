"""The vLLM Generator (GPU only, `pip install 'llmft[vllm]'`): base model once, LoRA per request."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmft.core.errors import LlmftError

# vLLM accepts only these LoRA ranks for max_lora_rank.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def require_vllm() -> Any:
    """Import vllm or fail in one line saying what to do."""
    try:
        import vllm
    except ImportError:
        raise LlmftError(
            "eval.backend = 'vllm' needs vLLM, which runs on CUDA GPUs only: on a GPU machine run "
            "pip install 'llmft[vllm]', or use eval.backend = 'hf'"
        ) from None
    return vllm


def lora_rank_for(r: int) -> int:
    """The smallest rank vLLM accepts that holds an adapter of rank r."""
    for rank in VLLM_LORA_RANKS:
        if rank >= r:
            return rank
    raise LlmftError(f"adapter.r = {r} is larger than vLLM's largest LoRA rank {VLLM_LORA_RANKS[-1]}")


def check_adapter_servable(adapter_dir: Path) -> None:
    """vLLM rejects adapters that carry embedding rows (new tokens): say so and point at `llmft export`."""
    import json

    config_file = adapter_dir / "adapter_config.json"
    if not config_file.exists():
        return
    data = json.loads(config_file.read_text())
    if data.get("trainable_token_indices") or data.get("modules_to_save") or data.get("peft_type") == "TRAINABLE_TOKENS":
        raise LlmftError(
            f"{adapter_dir}: this adapter trains new-token embeddings, which vLLM cannot load as LoRA; "
            f"run `llmft export --adapter {adapter_dir} --out DIR` and evaluate the merged folder"
        )


class VLLMGenerator:
    """Generator over a `vllm.LLM`; every prompt carries `lora` (a `LoRARequest`, or None for the base)."""

    def __init__(self, llm: Any, lora: Any = None):
        self._sampling_params = require_vllm().SamplingParams
        self.llm, self.lora = llm, lora
        self.tokenizer = llm.get_tokenizer()
        self.model = self  # serve's context_length reads max_model_len from here
        engine = llm.llm_engine
        model_config = getattr(engine, "model_config", None) or engine.vllm_config.model_config
        self.max_model_len = model_config.max_model_len

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 64, stop: Sequence[str] = (),
                 num_beams: int = 1, temperature: float = 0.0, seed: int = 0, top_p: float = 1.0) -> list[str]:
        if num_beams > 1:
            raise LlmftError("num_beams > 1 is not supported by the vLLM backend; use the hf backend")
        params = self._sampling_params(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                       seed=seed, stop=list(stop) or None)
        outputs = self.llm.generate(list(prompts), params, lora_request=self.lora, use_tqdm=False)
        return [out.outputs[0].text for out in outputs]


def open_vllm(model_path: str, adapter_dir: str | None, max_lora_rank: int = 64, tokenizer_path: str | None = None,
              gpu_memory_utilization: float = 0.85) -> VLLMGenerator:
    """One model (and at most one LoRA adapter) in vLLM, for evaluation."""
    vllm = require_vllm()
    kwargs: dict[str, Any] = {"gpu_memory_utilization": gpu_memory_utilization}
    if tokenizer_path:
        kwargs["tokenizer"] = tokenizer_path
    lora = None
    if adapter_dir:
        from vllm.lora.request import LoRARequest

        check_adapter_servable(Path(adapter_dir))
        kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=lora_rank_for(max_lora_rank))
        lora = LoRARequest("llmft", 1, str(adapter_dir))
    return VLLMGenerator(vllm.LLM(model=model_path, **kwargs), lora)
