"""Load a run folder for inference: the one path shared by eval, export and serve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmft.core import runs
from llmft.core.bottleneck import is_bottleneck_folder
from llmft.core.config import Config, load_config
from llmft.core.errors import LlmftError


def read_run_config(folder: str | Path) -> Config:
    """The config saved beside an adapter/checkpoint/model folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LlmftError(f"--adapter: folder not found: {folder}")
    if not (folder / runs.CONFIG_NAME).is_file():
        raise LlmftError(f"--adapter: {folder} has no {runs.CONFIG_NAME}; is it a llmft final/ or checkpoint-N/ folder?")
    if not has_weights(folder):
        inside = [child.name for child in (folder / runs.FINAL_NAME, *runs.checkpoint_dirs(folder)) if child.is_dir()]
        hint = f"; use {folder / inside[0]}" if inside else " (the run has no final/ or checkpoint yet)"
        raise LlmftError(f"--adapter: {folder} is a run's root folder, not a model{hint}")
    return load_config(folder / runs.CONFIG_NAME)


def has_weights(folder: Path) -> bool:
    """An adapter (PEFT or bottleneck) or a full model folder (what eval, export and serve can load)."""
    return (folder / "adapter_config.json").is_file() or (folder / "config.json").is_file() or \
        is_bottleneck_folder(folder)


def is_adapter(folder: Path) -> bool:
    """A PEFT adapter folder (rather than a full model)."""
    return (folder / "adapter_config.json").is_file()


def base_model_path(folder: Path, config: Config) -> str:
    """Where the adapter's base model lives: the run's saved tiny base, or model.name."""
    from llmft.core.models import is_tiny

    if is_tiny(config) or config.adapter.init_from:
        for candidate in (folder.parent / runs.BASE_MODEL_DIR, Path(config.train.output_dir) / runs.BASE_MODEL_DIR):
            if candidate.is_dir():
                return str(candidate)
        raise LlmftError(f"{folder}: the tiny base model ({runs.BASE_MODEL_DIR}/ beside it) is missing")
    return config.model.name


def load_for_inference(folder: str | Path, *, quantized: bool = True) -> tuple[Config, Any, Any]:
    """(config, tokenizer, model) from a run folder; an adapter is applied on its base (not merged)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmft.core.models import load_pretrained, resize_embeddings, set_bos

    folder = Path(folder)
    config = read_run_config(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    set_bos(tokenizer, config.model.add_bos)
    if is_bottleneck_folder(folder):
        from llmft.core.bottleneck import load_bottleneck

        base = load_pretrained(base_model_path(folder, config), config)
        resize_embeddings(base, len(tokenizer))
        model = load_bottleneck(base, folder)
    elif is_adapter(folder):
        from peft import PeftModel  # here: PEFT (and bitsandbytes) add ~1.5 s to loading a full model

        quantize = quantized and config.adapter.method == "qlora"
        base = load_pretrained(base_model_path(folder, config), config, quantize_4bit=quantize)
        resize_embeddings(base, len(tokenizer))
        model = PeftModel.from_pretrained(base, folder)
    else:
        from transformers import AutoModelForSeq2SeqLM

        from llmft.core.seq2seq import is_seq2seq_folder

        auto = AutoModelForSeq2SeqLM if is_seq2seq_folder(str(folder)) else AutoModelForCausalLM
        model = auto.from_pretrained(folder, dtype="auto")
    if torch.cuda.is_available() and next(model.parameters()).device.type == "cpu":
        model = model.to("cuda")
    model.eval()
    return config, tokenizer, model


def build_generator(folder: Path, config: Config) -> Any:
    """The configured backend over a run folder: HF (default, CPU or GPU) or vLLM (GPU)."""
    if config.eval.backend == "vllm":
        from llmft.core.models import cuda_available
        from llmft.core.positions import OWN_POSITIONS, own_decoding

        if own_decoding(config):
            raise LlmftError(f"{folder}: a model with {OWN_POSITIONS} "
                             "needs llmft's own decoding; use eval.backend = 'hf'")
        from llmft.core.vllm_backend import open_vllm, require_vllm

        require_vllm()
        if not cuda_available():
            raise LlmftError("eval.backend = 'vllm' needs a CUDA GPU; this machine has none (use eval.backend = 'hf')")
        if is_bottleneck_folder(folder):
            raise LlmftError(f"{folder}: vLLM cannot run bottleneck adapters; use eval.backend = 'hf'")
        if is_adapter(folder):
            return open_vllm(base_model_path(folder, config), str(folder), max_lora_rank=config.adapter.r,
                             tokenizer_path=str(folder))
        return open_vllm(str(folder), None)
    from llmft.core.generation import HFGenerator
    from llmft.core.positions import run_positions

    _, tokenizer, model = load_for_inference(folder)
    return HFGenerator(model, tokenizer, batch_size=config.eval.batch_size,
                       positions=run_positions(config, tokenizer))
