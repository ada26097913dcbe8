"""`train.precision` (Lightning's names) -> the trainer's settings: accelerate's mixed precision and the
dtype of the weights. Unset, the older `train.bf16` switch decides, as before."""

from __future__ import annotations

from dataclasses import dataclass

from llmft.core.config import Config
from llmft.core.errors import LlmftError


@dataclass(frozen=True)
class Precision:
    """What the trainer does: autocast kind ("no", "bf16", "fp16") and the weights' dtype ("" = as loaded)."""

    mixed_precision: str
    weight_dtype: str = ""

    def describe(self) -> str:
        """One phrase for the run's first lines, e.g. "bf16 autocast, float32 weights"."""
        autocast = {"no": "no autocast", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}[self.mixed_precision]
        if self.mixed_precision == "no" and self.weight_dtype in ("", "float32"):
            return "fp32"
        return f"{autocast}, {self.weight_dtype or 'float32'} weights"


TABLE = {
    "32-true": Precision("no", "float32"),
    "bf16-mixed": Precision("bf16", "float32"),
    "bf16-true": Precision("no", "bfloat16"),
    "16-mixed": Precision("fp16", "float32"),
}


def resolve_precision(config: Config, cuda: bool, cuda_bf16: bool, fast_bf16: bool) -> Precision:
    """The precision this machine runs `config` at; a one-line error where it cannot.

    `cuda_bf16`: the GPU supports bf16; `fast_bf16`: bf16 is fast here (decides `train.bf16 = "auto"`).
    """
    name, bf16 = config.train.precision, config.train.bf16
    if not name:
        return Precision("bf16" if bf16 == "true" or (bf16 == "auto" and fast_bf16) else "no")
    if bf16 != "auto":
        raise LlmftError(f"train.precision = '{name}' and train.bf16 = '{bf16}' both set the precision; "
                         "keep one (train.bf16 = 'auto')")
    if name == "16-mixed" and not cuda:
        raise LlmftError("train.precision = '16-mixed' needs a CUDA GPU (fp16 autocast with loss scaling); "
                         "this machine has none: use 'bf16-mixed' or '32-true'")
    if name.startswith("bf16") and cuda and not cuda_bf16:
        raise LlmftError(f"train.precision = '{name}': this GPU has no bf16; use '16-mixed' or '32-true'")
    chosen = TABLE[name]
    if chosen.weight_dtype == "bfloat16" and config.adapter.method == "qlora":
        raise LlmftError("train.precision = 'bf16-true' casts the weights, but a QLoRA base stays 4-bit; "
                         "use 'bf16-mixed'")
    if config.model.dtype not in ("auto", chosen.weight_dtype):
        raise LlmftError(f"train.precision = '{name}' keeps the weights in {chosen.weight_dtype} but model.dtype = "
                         f"'{config.model.dtype}'; leave model.dtype = 'auto'")
    return chosen
