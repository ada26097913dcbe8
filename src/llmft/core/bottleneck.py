"""Bottleneck adapters (Houlsby/Pfeiffer): down-projection, activation, up-projection, residual.

The `adapters` library (AdapterHub) implements these, but it pins transformers 4.x and cannot be used with
the transformers 5 this project needs, so this module adds them itself, with the library's key names:
`mh_adapter` sits on the output of each self-attention block, `output_adapter` on the output of each
feed-forward block (both before the block's own residual add), and the bottleneck width is
hidden_size // reduction_factor. The up-projection starts at zero, so a fresh adapter is the identity
and training starts exactly at the base model. Adapters are attached as child modules plus forward hooks,
so the base weights keep their names and any decoder (Llama, GPT-2, ...) or T5 model works unchanged.

A run folder holds `bottleneck.safetensors` (adapter tensors by model parameter name) and
`bottleneck_config.json`; `load_bottleneck(base_model, folder)` is the documented loader.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmft.core.errors import LlmftError

WEIGHTS_NAME = "bottleneck.safetensors"
CONFIG_NAME = "bottleneck_config.json"
SITES = ("mh_adapter", "output_adapter")
# Child-module names of the sublayers an adapter follows, across architectures (Llama and most decoders,
# GPT-2, GPT-NeoX, T5).
ATTENTION_NAMES = ("self_attn", "attn", "attention", "SelfAttention")
FEED_FORWARD_NAMES = ("mlp", "feed_forward", "DenseReluDense")


@dataclass
class BottleneckSpec:
    """Where adapters go and how wide they are (saved as bottleneck_config.json)."""

    mh_adapter: bool = False
    output_adapter: bool = True
    reduction_factor: int = 16
    non_linearity: str = "relu"


def _activation(name: str) -> Any:
    import torch.nn as nn

    table = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU, "silu": nn.SiLU, "tanh": nn.Tanh}
    if name not in table:
        raise LlmftError(f"adapter.non_linearity: unknown '{name}'; use one of {', '.join(table)}")
    return table[name]()


def _bottleneck_class() -> type:
    import torch.nn as nn

    class Bottleneck(nn.Module):
        """x + up(act(down(x))), with `up` zero-initialised."""

        def __init__(self, hidden: int, width: int, non_linearity: str):
            super().__init__()
            self.down = nn.Linear(hidden, width)
            self.act = _activation(non_linearity)
            self.up = nn.Linear(width, hidden)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

        def forward(self, x: Any) -> Any:
            return x + self.up(self.act(self.down(x)))

    return Bottleneck


def _apply_to_output(adapter: Any) -> Any:
    """A forward hook that passes a sublayer's output (a tensor, or a tuple led by one) through `adapter`."""

    def hook(module: Any, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (adapter(output[0]), *output[1:])
        return adapter(output)

    return hook


def _hidden_size(model: Any) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for key in ("hidden_size", "d_model", "n_embd"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    raise LlmftError(f"adapter.method = 'bottleneck': cannot find the hidden size of {type(model).__name__}")


def add_bottlenecks(model: Any, spec: BottleneckSpec) -> list[str]:
    """Attach adapters in place (base weights untouched, adapters trainable); returns their module names."""
    import torch

    if not (spec.mh_adapter or spec.output_adapter):
        raise LlmftError("adapter.method = 'bottleneck' needs adapter.mh_adapter or adapter.output_adapter = true")
    hidden = _hidden_size(model)
    if spec.reduction_factor < 1 or hidden // spec.reduction_factor < 1:
        raise LlmftError(f"adapter.reduction_factor = {spec.reduction_factor} leaves no bottleneck for hidden "
                         f"size {hidden}")
    width = hidden // spec.reduction_factor
    reference = next(model.parameters())
    dtype = reference.dtype if reference.is_floating_point() else torch.float32
    bottleneck = _bottleneck_class()
    wanted = [(site, names) for site, names, on in (("mh_adapter", ATTENTION_NAMES, spec.mh_adapter),
                                                    ("output_adapter", FEED_FORWARD_NAMES, spec.output_adapter)) if on]
    added = []
    for parent_name, parent in list(model.named_modules()):
        for site, names in wanted:
            child = next((getattr(parent, n) for n in names if isinstance(getattr(parent, n, None), torch.nn.Module)),
                         None)
            if child is None or hasattr(parent, site):
                continue
            device = next(child.parameters(), reference).device
            adapter = bottleneck(hidden, width, spec.non_linearity).to(device=device, dtype=dtype)
            parent.add_module(site, adapter)
            child.register_forward_hook(_apply_to_output(adapter))
            added.append(f"{parent_name}.{site}" if parent_name else site)
    if not added:
        raise LlmftError(f"adapter.method = 'bottleneck': no attention or feed-forward block found in "
                         f"{type(model).__name__}")
    for name, param in model.named_parameters():
        param.requires_grad = is_bottleneck_param(name)
    return added


def is_bottleneck_param(name: str) -> bool:
    return any(f".{site}." in f".{name}" for site in SITES)


def bottleneck_state(model: Any) -> dict[str, Any]:
    """The adapter tensors by parameter name (cloned to CPU, contiguous: ready for safetensors)."""
    return {n: p.detach().cpu().clone().contiguous() for n, p in model.named_parameters() if is_bottleneck_param(n)}


def save_bottleneck(model: Any, spec: BottleneckSpec, folder: str | Path) -> None:
    """Write the adapter tensors and their spec into `folder`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(bottleneck_state(model), folder / WEIGHTS_NAME)
    (folder / CONFIG_NAME).write_text(json.dumps(asdict(spec), indent=2) + "\n")


def is_bottleneck_folder(folder: str | Path) -> bool:
    return (Path(folder) / CONFIG_NAME).is_file()


def load_bottleneck(model: Any, folder: str | Path) -> Any:
    """Attach the adapters saved in `folder` to its base model and load their weights; returns the model."""
    import torch
    from safetensors.torch import load_file

    folder = Path(folder)
    spec = BottleneckSpec(**json.loads((folder / CONFIG_NAME).read_text()))
    add_bottlenecks(model, spec)
    state = load_file(folder / WEIGHTS_NAME)
    params = dict(model.named_parameters())
    expected = {n for n in params if is_bottleneck_param(n)}
    if set(state) != expected:
        odd = sorted(set(state) ^ expected)[0]
        raise LlmftError(f"{folder / WEIGHTS_NAME} does not fit this base model (tensor {odd})")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    return model
