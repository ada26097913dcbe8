"""Base model and tokenizer loading: a hub id, a local folder, or `tiny` (a Llama built from config)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llmft.core.config import Config
from llmft.core.errors import LlmftError


def is_tiny(config: Config) -> bool:
    """Whether the base model is built from [model.tiny] rather than loaded."""
    return config.model.name == "tiny"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def bf16_supported() -> bool:
    """bf16 that is fast, not just emulated: CUDA with bf16, or a CPU with AVX512-BF16 / AMX."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def check_hub_reachable(name: str) -> None:
    """A hub id is fine offline only when cached; say so in one line instead of a long HTTP traceback."""
    if Path(name).exists() or name == "tiny":
        return
    if "/" not in name and not Path(name).exists():
        raise LlmftError(f"model.name: '{name}' is neither a local folder, a hub id (org/name) nor 'tiny'")


def load_tokenizer(config: Config, train_texts: Iterable[str] = (), extra_tokens: list[str] = ()) -> Any:
    """The run's tokenizer: trained locally for `tiny`, else from the hub/folder; extra tokens added."""
    from transformers import AutoTokenizer

    from llmft.core.tokenizers import train_tokenizer

    if config.adapter.init_from:
        tokenizer = AutoTokenizer.from_pretrained(config.adapter.init_from)  # the previous stage's tokens
    elif is_tiny(config) and not config.model.tokenizer_name:
        tokenizer = train_tokenizer(train_texts, config.model.tokenizer, config.model.vocab_size)
    else:
        name = config.model.tokenizer_name or config.model.name
        check_hub_reachable(name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=config.model.trust_remote_code)
        except OSError as exc:
            raise LlmftError(f"model.name: cannot load a tokenizer from '{name}': {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        # Our labels are explicit, so pad == eos never hides EOS from the loss (the llama-squad bug).
        tokenizer.pad_token = tokenizer.eos_token
    new = [t for t in extra_tokens if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_tokens(new, special_tokens=True)
    if config.model.chat_template:
        tokenizer.chat_template = config.model.chat_template
    set_bos(tokenizer, config.model.add_bos)
    return tokenizer


def set_bos(tokenizer: Any, add_bos: bool) -> None:
    """Stop a tokenizer from prepending BOS (model.add_bos = false); the saved tokenizer.json keeps it."""
    bos = tokenizer.bos_token_id
    if add_bos or bos is None or tokenizer("a")["input_ids"][:1] != [bos]:
        return
    tokenizer.add_bos_token = False
    if tokenizer("a")["input_ids"][:1] == [bos]:
        raise LlmftError(f"model.add_bos = false: the {type(tokenizer).__name__} tokenizer keeps adding BOS")


def torch_dtype(config: Config) -> Any:
    import torch

    name = config.model.dtype
    if name == "auto":
        return torch.bfloat16 if (cuda_available() and bf16_supported()) else torch.float32
    return getattr(torch, name)


# Widest training row for which "auto" attention picks eager over SDPA (measured on CPU, bf16 and fp32).
EAGER_MAX_WIDTH = 128


def loaded_attention(config: Config) -> str:
    """The attention a model is loaded with: "auto" loads SDPA (the trainer switches per batch)."""
    return "sdpa" if config.model.attn_implementation == "auto" else config.model.attn_implementation


def attention_for_width(model: Any, width: int) -> None:
    """For "auto" attention on CPU: eager for a batch of rows up to EAGER_MAX_WIDTH tokens, block-sparse SDPA
    above (llmft.core.attention); on a GPU, SDPA."""
    from llmft.core import attention

    if next(model.parameters()).device.type != "cpu":
        wanted = "sdpa"
    else:
        wanted = "eager" if width <= EAGER_MAX_WIDTH else attention.register()
    if model.config._attn_implementation != wanted:
        model.config._attn_implementation = wanted


def build_tiny_model(config: Config, tokenizer: Any) -> Any:
    """A Llama from [model.tiny], seeded from train.seed, sized to the tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = config.model.tiny
    if tiny.architecture == "t5":
        from llmft.core.seq2seq import build_tiny_t5

        return build_tiny_t5(tiny, tokenizer, config.train.seed)
    intermediate = tiny.intermediate_size or _llama2c_hidden(tiny.hidden_size)
    llama_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=tiny.hidden_size,
        intermediate_size=intermediate,
        num_hidden_layers=tiny.num_layers,
        num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_kv_heads or tiny.num_heads,
        max_position_embeddings=tiny.max_position_embeddings,
        rope_parameters=rope_parameters(tiny),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        attn_implementation=loaded_attention(config),
    )
    torch.manual_seed(config.train.seed)
    return LlamaForCausalLM(llama_config)


# RoPE with every frequency divided by this is the identity at any position a model reaches (angles < 1e-20):
# no positional encoding, stored in config.json as a plain linear RoPE so every loader (generate, export, vLLM)
# reproduces it without code of ours.
NO_POSITIONS_FACTOR = 1e24


def rope_parameters(tiny: Any) -> dict[str, Any]:
    """Llama's rope_parameters for [model.tiny]: plain RoPE, or none (`positions = "none"`)."""
    if tiny.positions == "none":
        return {"rope_type": "linear", "factor": NO_POSITIONS_FACTOR, "rope_theta": tiny.rope_theta}
    if tiny.rope_factor != 1.0:
        return {"rope_type": "linear", "factor": float(tiny.rope_factor), "rope_theta": tiny.rope_theta}
    return {"rope_type": "default", "rope_theta": tiny.rope_theta}


def _llama2c_hidden(dim: int) -> int:
    """llama2.c's FFN width: 2/3 of 4*dim, rounded up to a multiple of 32."""
    hidden = int(2 * (4 * dim) / 3)
    return 32 * ((hidden + 31) // 32)


def load_pretrained(path: str, config: Config, quantize_4bit: bool = False) -> Any:
    """A causal LM (or an encoder-decoder such as T5) from a hub id or folder, optionally 4-bit nf4 (QLoRA)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from llmft.core.seq2seq import is_seq2seq_folder

    check_hub_reachable(path)
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype(config),
        "trust_remote_code": config.model.trust_remote_code,
        "attn_implementation": loaded_attention(config),
    }
    if quantize_4bit:
        kwargs["quantization_config"] = qlora_quantization(config)
        kwargs["device_map"] = {"": _device_index()}
    try:
        auto = AutoModelForSeq2SeqLM if is_seq2seq_folder(path) else AutoModelForCausalLM
        return auto.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise LlmftError(f"model.name: cannot load '{path}': {str(exc).splitlines()[0]}") from None


def _device_index() -> Any:
    import torch

    if torch.cuda.is_available():
        return int(os.environ.get("LOCAL_RANK", 0))
    return "cpu"


def qlora_quantization(config: Config) -> Any:
    """bitsandbytes 4-bit nf4; double quantisation and the compute dtype as [adapter] says (auto: bf16 where it
    is fast, else fp32)."""
    import torch
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise LlmftError("adapter.method = 'qlora' needs bitsandbytes: pip install 'llmft[quant]'") from None
    name = config.adapter.compute_dtype
    if name == "auto":
        compute = torch.bfloat16 if bf16_supported() else torch.float32
    else:
        compute = getattr(torch, name)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=config.adapter.double_quant,
        bnb_4bit_compute_dtype=compute,
    )


def resize_embeddings(model: Any, size: int) -> list[int]:
    """Grow input/output embeddings to `size` rows; new rows start at the mean of the old ones
    (deterministic, unlike transformers' sampled mean-resizing, so a reloaded base matches). Returns new ids."""
    import torch

    old = model.get_input_embeddings().weight.shape[0]
    if size <= old:
        return []
    model.resize_token_embeddings(size, mean_resizing=False)
    with torch.no_grad():
        for layer in (model.get_input_embeddings(), model.get_output_embeddings()):
            if layer is not None and layer.weight.shape[0] == size:
                layer.weight[old:] = layer.weight[:old].float().mean(0).to(layer.weight.dtype)
    return list(range(old, size))


def init_token_rows(model: Any, sources: dict[int, list[int]]) -> None:
    """Set each new token's input row and (untied) output row to the mean of its source tokens' rows,
    e.g. a recipe's planning token starting from the literal word's embedding."""
    import torch

    with torch.no_grad():
        for layer in (model.get_input_embeddings(), model.get_output_embeddings()):
            if layer is None:
                continue
            weight = layer.weight
            for new, ids in sources.items():
                weight[new] = weight[ids].float().mean(0).to(weight.dtype)
