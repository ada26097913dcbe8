"""Load run folders for serving: the base model once, every adapter on it under its own name (PEFT
`load_adapter`), one Generator per name over the model's one continuous-batching engine (core/continuous/)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmft.core import runs
from llmft.core.config import Config, SectionTypes
from llmft.core.errors import LlmftError

ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class LoadedRun:
    """One served name: its folder, run config (defaults for a plain PEFT folder) and generator."""

    name: str
    folder: Path
    config: Config
    generator: Any
    base: str


def parse_adapter_spec(spec: str) -> tuple[str, Path]:
    """`NAME=DIR` or `DIR` (named after the run: runs/x/final -> x, runs/x/checkpoint-N -> x-checkpoint-N)."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = "", spec
    folder = Path(path)
    if not name:
        name = folder.resolve().name
        if name == runs.FINAL_NAME:
            name = folder.resolve().parent.name
        elif name.startswith(runs.CHECKPOINT_PREFIX):
            name = f"{folder.resolve().parent.name}-{name}"
    if not name.strip():
        raise LlmftError(f"--adapter {spec}: empty model name")
    return name, folder


def run_config(folder: Path, section_types: SectionTypes | None = None) -> Config:
    """The folder's llmft.toml (recipe sections typed by `section_types`), or defaults around a plain PEFT
    adapter's own base model."""
    from llmft.core.config import DEFAULT_RECIPE, config_from_dict, load_config
    from llmft.core.inference import read_run_config

    if not folder.is_dir():
        raise LlmftError(f"--adapter: folder not found: {folder}")
    if (folder / runs.CONFIG_NAME).is_file():
        read_run_config(folder)  # a clear error for a run's root folder
        return load_config(folder / runs.CONFIG_NAME, section_types=section_types)
    if (folder / ADAPTER_CONFIG).is_file():
        base = json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path") or ""
        if not base:
            raise LlmftError(f"--adapter: {folder / ADAPTER_CONFIG} names no base_model_name_or_path")
        return config_from_dict({"recipe": DEFAULT_RECIPE, "model": {"name": base}}, source=str(folder),
                                section_types=section_types)
    raise LlmftError(f"--adapter: {folder} has neither {runs.CONFIG_NAME} nor {ADAPTER_CONFIG}; "
                     "is it a llmft final/, checkpoint-N/, export or PEFT adapter folder?")


def base_of(folder: Path, config: Config) -> str:
    """The base model an adapter folder applies to (a resolved path when local); a full model is its own."""
    from llmft.core.inference import base_model_path, is_adapter

    if not is_adapter(folder):
        return str(folder.resolve())
    if not (folder / runs.CONFIG_NAME).is_file():
        base = config.model.name
    else:
        base = base_model_path(folder, config)
    return str(Path(base).resolve()) if Path(base).exists() else base


def _entries(specs: Sequence[str], section_types: SectionTypes | None) -> list[tuple[str, Path, Config, str]]:
    """(name, folder, config, base) per `--adapter`; a taken name is a one-line error."""
    entries: list[tuple[str, Path, Config, str]] = []
    for spec in specs:
        name, folder = parse_adapter_spec(spec)
        if any(name == other for other, *_ in entries):
            raise LlmftError(f"--adapter {spec}: the name '{name}' is taken; give one with NAME=DIR")
        config = run_config(folder, section_types)
        entries.append((name, folder, config, base_of(folder, config)))
    if not entries:
        raise LlmftError("--adapter: give at least one run folder")
    return entries


def one_base(entries: list[tuple[str, Path, Config, str]]) -> None:
    """A one-line error when the runs sit on more than one base (the vLLM backend loads one)."""
    first, base = entries[0][0], entries[0][3]
    for _, folder, _, other in entries[1:]:
        if other != base:
            raise LlmftError(f"--adapter {folder}: its base model {other} differs from {base} ({first}'s); "
                             "--backend vllm serves adapters of one base")


def load_runs(specs: Sequence[str], batch_size: int = 32, section_types: SectionTypes | None = None
              ) -> list[LoadedRun]:
    """Every `--adapter`, each base loaded once with its adapters on it (one engine per base), in the order
    given; a clash of names is a one-line error."""
    entries = _entries(specs, section_types)  # a bad folder or name fails before torch loads (seconds)
    groups: dict[str, list[tuple[str, Path, Config, str]]] = {}
    for entry in entries:
        groups.setdefault(entry[3], []).append(entry)
    loaded = {run.name: run for group in groups.values() for run in _load_base(group, batch_size)}
    return [loaded[name] for name, *_ in entries]


def _load_base(entries: list[tuple[str, Path, Config, str]], batch_size: int) -> list[LoadedRun]:
    """The runs on one base: the base loaded once, each adapter on it under its own PEFT name."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from llmft.core.bottleneck import is_bottleneck_folder
    from llmft.core.continuous.engine import ContinuousEngine
    from llmft.core.continuous.generator import ContinuousGenerator
    from llmft.core.generation import HFGenerator
    from llmft.core.inference import is_adapter, load_for_inference
    from llmft.core.models import load_pretrained, resize_embeddings
    from llmft.core.positions import run_positions

    first_name, first_folder, first_config, base = entries[0]
    tokenizers = [_tokenizer(folder, base) for _, folder, _, _ in entries]
    for (_, folder, _, _), tokenizer in zip(entries[1:], tokenizers[1:]):
        if tokenizer.get_vocab() != tokenizers[0].get_vocab():
            raise LlmftError(f"--adapter {folder}: its tokenizer differs from {first_name}'s (other tokens); "
                             "adapters on one base must share the tokenizer")
    # served name -> PEFT adapter name (PEFT keys modules by it, so a served name with a dot cannot be one)
    adapters: dict[str, str | None] = {name: None for name, *_ in entries}
    if any(is_bottleneck_folder(folder) for _, folder, _, _ in entries):
        if len(entries) > 1:
            raise LlmftError("--adapter: a bottleneck run is served alone (its adapters sit inside its own copy "
                             "of the base)")
        _, _, model = load_for_inference(first_folder)
    elif not is_adapter(first_folder):
        model = AutoModelForCausalLM.from_pretrained(first_folder, dtype="auto")
    else:
        quantize = first_config.adapter.method == "qlora"
        model = load_pretrained(base, first_config, quantize_4bit=quantize)
        resize_embeddings(model, len(tokenizers[0]))
        adapters = {name: f"adapter{i}" for i, (name, *_) in enumerate(entries)}
        model = PeftModel.from_pretrained(model, first_folder, adapter_name=adapters[first_name])
        for name, folder, _, _ in entries[1:]:
            model.load_adapter(folder, adapter_name=adapters[name])
    if torch.cuda.is_available() and next(model.parameters()).device.type == "cpu":
        model = model.to("cuda")
    model.eval()
    if any(is_bottleneck_folder(folder) for _, folder, _, _ in entries):
        # A bottleneck model is its own module tree (no KV cache of ours): transformers' generate, batch by batch.
        return [LoadedRun(first_name, first_folder, first_config,
                          HFGenerator(model, tokenizers[0], batch_size, run_positions(first_config, tokenizers[0])),
                          base)]
    engine = ContinuousEngine(model, tokenizers[0], max_batch=batch_size)
    return [LoadedRun(name, folder, config,
                      ContinuousGenerator(engine, HFGenerator(model, tokenizer, batch_size,
                                                              run_positions(config, tokenizer)),
                                          adapters[name], run_positions(config, tokenizer)), base)
            for (name, folder, config, base), tokenizer in zip(entries, tokenizers)]


def _tokenizer(folder: Path, base: str) -> Any:
    from transformers import AutoTokenizer

    source = folder if (folder / "tokenizer_config.json").is_file() else base
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        raise LlmftError(f"--adapter {folder}: cannot load a tokenizer from {source}: "
                         f"{str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def context_length(model: Any) -> int:
    """The model's context window (max_position_embeddings), or 2048 when its config does not say."""
    if hasattr(model, "max_model_len"):
        return int(model.max_model_len)
    config = getattr(model, "config", None)
    return int(getattr(config, "max_position_embeddings", 0) or 2048)


def load_vllm_runs(specs: Sequence[str], max_batch: int = 256, section_types: SectionTypes | None = None
                   ) -> list[LoadedRun]:
    """The vLLM backend (CUDA GPU): one `vllm.LLM` over the base with LoRA on; each adapter is a LoRARequest."""
    from llmft.core.inference import is_adapter
    from llmft.core.models import cuda_available
    from llmft.core.vllm_backend import VLLMGenerator, check_adapter_servable, lora_rank_for

    try:
        import vllm
    except ImportError:
        raise LlmftError("--backend vllm needs vLLM, which runs on CUDA GPUs only: on a GPU machine run "
                         "pip install 'llmft[vllm]', or use --backend hf") from None
    if not cuda_available():
        raise LlmftError("--backend vllm needs a CUDA GPU; this machine has none (use --backend hf)")
    entries = _entries(specs, section_types)
    one_base(entries)
    base = entries[0][3]
    adapters = [folder for _, folder, _, _ in entries if is_adapter(folder)]
    if adapters and len(adapters) != len(entries):
        raise LlmftError("--backend vllm: serve either adapters of one base or one full model, not both")
    first = entries[0][1]
    tokenizer = first if (first / "tokenizer_config.json").is_file() else base
    kwargs: dict[str, Any] = {"tokenizer": str(tokenizer), "max_num_seqs": max_batch}
    if adapters:
        for folder in adapters:
            check_adapter_servable(folder)
        rank = max(config.adapter.r for _, _, config, _ in entries)
        kwargs.update(enable_lora=True, max_loras=len(adapters), max_lora_rank=lora_rank_for(rank))
    from vllm.lora.request import LoRARequest

    llm = vllm.LLM(model=base, **kwargs)
    loras = {name: LoRARequest(name, index + 1, str(folder)) if adapters else None
             for index, (name, folder, _, _) in enumerate(entries)}
    return [LoadedRun(name, folder, config, VLLMGenerator(llm, loras[name]), base)
            for name, folder, config, _ in entries]

