"""Recipe TOML -> typed, validated Config. Unknown keys and wrong types are all reported at once."""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmft.core.bounds import Range, above, at_least, between, out_of_range
from llmft.core.errors import LlmftError, did_you_mean
from llmft.core.runs import run_of_saved_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class TinyModelConfig:
    """Sizes of the Llama built from scratch when `model.name = "tiny"` (random init from `train.seed`)."""

    architecture: Literal["llama", "t5"] = "llama"  # t5: an encoder-decoder (Flan-T5 layout), num_layers each
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 0  # 0 = same as num_heads
    intermediate_size: int = 0  # 0 = 4 x hidden_size rounded, like llama2.c
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0
    # "rope": rotary positions (Llama's own); "none": no positional encoding (NoPE, Kazemnejad et al. 2023):
    # causal attention alone tells the order, which generalises to longer inputs than any trained.
    # "digits": RoPE over digit-aligned position ids (llmft.core.positions), in training and in llmft's own
    # generation; other loaders (vLLM, an exported checkpoint) would give plain positions.
    positions: Literal["rope", "none", "digits"] = "rope"
    # For "digits": text tokens sit this many positions apart, so numbers of up to digit_stride - 1 digits fit.
    digit_stride: int = 32
    # For "digits": the text token after a number sits right after its last digit, off the text grid.
    digit_ends: bool = False
    # For "digits": characters that continue a number once a digit has started it (", " makes a list such as
    # "1, 0, 1" one number, so its items sit at the same offsets whatever the list's length); "" = none.
    digit_joiners: str = ""
    # For "digits": characters that start a number as a digit does ("-" puts a negative number's sign on its
    # first slot, so "[-2, 4]" and "[2, 4]" leave the text after them at the same positions); "" = none.
    digit_signs: str = ""
    # For "digits": "grid" puts text tokens digit_stride apart; "slots" puts them one apart and gives every
    # number digit_stride positions (the same fixed offsets between numbers, shorter distances).
    digit_layout: Literal["grid", "slots"] = "grid"
    # For "digits", training only: each example's numbers start a random 0..digit_offset positions further
    # from the text before them (one draw per example), so a model meets digit distances its trained lengths
    # do not reach (the random offsets of Abacus embeddings, McLeish et al. 2024); inference uses 0.
    digit_offset: int = 0
    # RoPE's linear scaling: positions divided by this (> 1 slows every rotation, so RoPE's fastest one, one
    # radian per position, no longer comes back to where it started after 6 positions).
    rope_factor: float = 1.0


@dataclass
class ModelConfig:
    """The base model: a hub id, a local folder, or `tiny` (built from [model.tiny])."""

    name: str = "tiny"
    # For `tiny`: "char" (one token per character) or "bpe", trained locally on the training data.
    tokenizer: Literal["char", "bpe"] = "char"
    vocab_size: int = 4096  # BPE vocabulary size for tiny models
    # A hub or local tokenizer to use instead of the model's own (optional).
    tokenizer_name: str = ""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    chat_template: str = ""  # a Jinja template overriding the tokenizer's own
    trust_remote_code: bool = False
    # A transformers attention ("sdpa", "eager", ...), or "auto": training on CPU takes eager attention for
    # batches of rows up to 128 tokens wide and above that SDPA over each block of queries' unmasked keys only
    # (llmft.core.attention; packed rows mask most pairs); loading, evaluating and GPUs take SDPA
    # (bench/RESULTS.md, "Rows sized to the examples" and "Block-sparse attention").
    attn_implementation: str = "auto"
    # false: texts and prompts are encoded without BOS (Re-Tuning's add_special_tokens=False); the run's saved
    # tokenizer keeps this, so training, eval and serve agree.
    add_bos: bool = True
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)


@dataclass
class AdapterConfig:
    """What trains: full weights, LoRA, QLoRA (4-bit nf4 base), new-token embeddings, LoRA + those, or
    bottleneck adapters."""

    method: Literal["full", "lora", "qlora", "prompt-tuning", "lora+prompt-tuning", "bottleneck"] = "lora"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    # Extra tokens to add to the tokenizer, besides the recipe's own.
    new_tokens: list[str] = field(default_factory=list)
    # Bottleneck adapters (method "bottleneck"): after each attention block and/or each feed-forward block,
    # hidden_size // reduction_factor wide (the `adapters` library's names and Pfeiffer defaults).
    mh_adapter: bool = False
    output_adapter: bool = True
    reduction_factor: int = 16
    non_linearity: Literal["relu", "gelu", "swish", "tanh"] = "relu"
    # A previous run's final/ or checkpoint-N/ folder merged into the base before this run trains
    # (multi-stage training, e.g. new-token embeddings first, then LoRA); "" = start from model.name.
    init_from: str = ""
    # QLoRA's 4-bit base: double quantisation of the quantisation constants, and the dtype the dequantised
    # matmuls run in ("auto": bf16 where it is fast, else fp32).
    double_quant: bool = True
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"


@dataclass
class DataConfig:
    """Training and evaluation JSONL: {prompt, completion} (loss on completion), or {text} (loss on all)."""

    train: str = ""
    eval: str = ""
    heldout: str = ""  # the file scored for the held-out loss during training (train.eval_steps); "" = eval
    max_length: int = 1024  # longer examples are cut: the prompt's start first, the EOS always stays
    # "rows": best-fit-decreasing packing into rows of pack_length tokens with per-example position_ids;
    # "group": batches of similar length; "none": random padded batches.
    packing: Literal["rows", "group", "none"] = "rows"
    pack_length: int = 512
    # "rows" only: pack into rows of these widths instead of pack_length alone (each example joins the
    # narrowest that holds it; a batch holds one width, batch_size x pack_length tokens); [] = pack_length only.
    # Narrow rows cut the attention spent on masked pairs (bench/train_throughput.py --widths).
    row_widths: list[int] = field(default_factory=list)
    # Fold an example into a longer one that begins with all its tokens but the last (a multi-step record's
    # earlier steps): same targets, each with its own context, so the same loss on fewer tokens.
    merge_prefixes: bool = False


@dataclass
class TrainConfig:
    """The shared trainer's settings."""

    output_dir: str = "runs/default"
    max_steps: int = 0  # optimizer steps; 0 = run `epochs` epochs
    epochs: float = 1.0
    batch_size: int = 8  # rows (packed) or examples per device per micro-batch
    grad_accum: int = 1
    learning_rate: float = 2e-4
    lr_scheduler: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    # The schedule's length in steps, warmup_ratio included (0 = the run's): a run that stops at max_steps part
    # way through a longer schedule, as llama-squad's 65,000-step cosine read at 10,000 steps.
    lr_schedule_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    # "token": the loss is the mean over the trained tokens of the whole accumulation window and all ranks;
    # "sequence": each example's summed token loss, averaged over the window's examples (a packed row counts
    # each example it holds), as Re-Tuning's reference trained; "example": each example's mean token loss,
    # averaged over the window's examples (a one-token answer weighs as much as a forty-token call).
    loss_reduction: Literal["token", "sequence", "example"] = "token"
    seed: int = 0
    save_steps: int = 0  # 0 = only the final adapter/model
    save_total_limit: int = 2
    logging_steps: int = 10
    # Held-out loss on data.eval every N steps (and at the end); -1 = about 10 times a run whenever data.eval
    # holds prompt/completion or text records (or ones the recipe tokenises); 0 = off.
    eval_steps: int = -1
    eval_examples: int = 256  # held-out records scored each time (the first N of data.eval); 0 = all
    bf16: Literal["auto", "true", "false"] = "auto"
    # Lightning-style precision; "" = decided by `bf16`. "bf16-true" casts the weights to bf16, the "-mixed"
    # ones keep fp32 weights and autocast; "16-mixed" (fp16 with loss scaling) needs a CUDA GPU.
    precision: Literal["", "32-true", "bf16-mixed", "bf16-true", "16-mixed"] = ""
    threads: int = 0  # torch CPU threads; 0 = leave torch's default
    # Randomised positions (Ruoss et al., ACL 2023): > 0 = each training example's position ids are a sorted
    # random sample of range(random_positions) instead of 0..n-1, so a model meets the relative distances of
    # longer inputs in training; 0 = off. Inference keeps 0..n-1. Decoder-only models.
    random_positions: int = 0


@dataclass
class EvalConfig:
    """Evaluation and decoding settings."""

    backend: Literal["hf", "vllm"] = "hf"
    batch_size: int = 64
    max_new_tokens: int = 64
    num_beams: int = 1
    temperature: float = 0.0
    max_examples: int = 0  # 0 = all
    seed: int = 0


@dataclass
class EstimateConfig:
    """`llmft estimate`: the gradient-projection (GradEx) estimate of fine-tuning on data subsets."""

    data: str = ""  # JSONL whose per-example gradients are taken; "" = data.train
    eval_data: str = ""  # JSONL the estimated models' loss is measured on; "" = data.eval
    max_examples: int = 0  # 0 = all of `data`
    # f_i whose gradients are taken: "logit" = the reference's mean gold-token log-odds with its instruction
    # code's shifts; "cot-logit" = the same with its CoT script's p - 1e-3; "loss" = minus the mean token loss
    # (an option of ours: the direction fine-tuning itself starts along).
    output: Literal["logit", "cot-logit", "loss"] = "logit"
    project_dimension: int = 200  # d of the random projection
    seed: int = 0  # projection matrix, random labels and sampled subsets
    # Independent projections (and label draws) per subset, from one gradient pass: the estimate is their mean,
    # their min-max its spread; a subset is "chosen" only when its spread clears every other subset's.
    repeats: int = 3
    lora_bias: bool = True  # LoRA runs: also move the adapted layers' biases (the reference's bias="lora_only")
    clusters: int = 0  # > 0: the groups are this many k-means clusters of the projected gradients
    scale: float = 0.05  # |update| = scale x |meta-initialisation's adapter parameters|
    regularization: float = 1e-4  # C of the L2 logistic regression
    positive_rate: float = 0.7  # P(label = 1) of the random labels
    fit_fraction: float = 0.8  # share of a subset's examples the regression is fit on
    batch_size: int = 8
    shard_size: int = 256  # examples per cached gradient file
    group_by: str = ""  # record field naming each example's group (e.g. "task"); "" = one group per example
    number_of_subsets: int = 8
    subset_size: float = 0.5  # share of the groups in each sampled subset: int(size x groups), at least 1
    subsets: list[list[str]] = field(default_factory=list)  # given subsets (group names) instead of sampled ones
    approximation_examples: int = 0  # > 0: the first-order approximation error on this many examples
    metric: bool = False  # also run the recipe's evaluation on each estimated model
    # Real fine-tunes of the meta-initialisation (full runs with adapter.init_from = it) to compare with: each
    # one's true loss beside the estimate for its data.train records, and its update's approximation error.
    finetuned: list[str] = field(default_factory=list)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "adapter": AdapterConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "estimate": EstimateConfig,
}


DEFAULT_RECIPE = "sft"  # a TOML without a `recipe` key: plain supervised fine-tuning


@dataclass
class Config:
    """A resolved run configuration; `section` holds the recipe's own `[<recipe>]` section, if any."""

    recipe: str = DEFAULT_RECIPE
    model: ModelConfig = field(default_factory=ModelConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    estimate: EstimateConfig = field(default_factory=EstimateConfig)
    section: Any = None
    source: str = ""  # where it was read from, for messages

    def to_dict(self) -> dict[str, Any]:
        """The config as nested plain data (TOML-ready), the recipe section under its name."""
        data: dict[str, Any] = {"recipe": self.recipe}
        for name in SECTIONS:
            data[name] = dataclasses.asdict(getattr(self, name))
        if isinstance(self.section, dict):
            data[self.recipe] = dict(self.section)
        elif self.section is not None:
            data[self.recipe] = dataclasses.asdict(self.section)
        return data


# --------------------------------------------------------------------------------------------------
# Loading


SectionTypes = Mapping[str, "type | None"]


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                section_types: SectionTypes | None = None) -> Config:
    """Read a recipe TOML, apply `a.b=value` overrides, validate everything, report all errors at once.

    `section_types` maps each known recipe name to its `[<recipe>]` dataclass (the command layer passes the
    registry's); without it the recipe name is not checked and its section stays a plain table.
    """
    path = Path(path)
    if not path.is_file():
        raise LlmftError(f"config file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise LlmftError(f"{path}: malformed TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise LlmftError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    config = config_from_dict(raw, overrides, source=str(path), section_types=section_types)
    run = run_of_saved_config(path)
    if run is not None and not any(item.split("=", 1)[0].strip() == "train.output_dir" for item in overrides):
        config.train.output_dir = str(run)  # where the run lives now, not where it was trained (a moved run)
    return config


def config_from_dict(raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), source: str = "",
                     section_types: SectionTypes | None = None) -> Config:
    """Validate nested data (as read from TOML) plus overrides into a Config (see load_config)."""
    errors: list[str] = []
    raw = _deep_copy(raw)
    for item in overrides:
        _apply_override(raw, item, errors)
    recipe_name = raw.pop("recipe", DEFAULT_RECIPE)
    if not isinstance(recipe_name, str):
        errors.append(f"key 'recipe' must be a string, got {type(recipe_name).__name__}")
        recipe_name = DEFAULT_RECIPE
    where = f"{source}: " if source else ""
    if section_types is not None and recipe_name not in section_types:
        known = ", ".join(sorted(section_types))
        raise LlmftError(f"{where}unknown recipe '{recipe_name}'{did_you_mean(recipe_name, section_types)}; "
                         f"known recipes: {known}")
    section_type = section_types.get(recipe_name) if section_types is not None else dict
    types_by_key: dict[str, Any] = dict(SECTIONS)
    if section_type is not None:
        types_by_key[recipe_name] = section_type
    built: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in types_by_key:
            errors.append(f"unknown key '{key}'{did_you_mean(key, [*types_by_key, 'recipe'])}")
            continue
        if not isinstance(value, dict):
            errors.append(f"key '{key}' must be a table [{key}], got {type(value).__name__}")
            continue
        built[key] = dict(value) if types_by_key[key] is dict else _build(types_by_key[key], value, key, errors)
    for key, cls in types_by_key.items():
        built.setdefault(key, cls())
    errors += _check_values(built)
    if errors:
        raise LlmftError(where + "; ".join(errors))
    section = built.pop(recipe_name, None) if section_type is not None else None
    return Config(recipe=recipe_name, section=section, source=source, **{k: built[k] for k in SECTIONS})


# Every numeric setting's range, by dotted key; a recipe section's own table is its dataclass's `BOUNDS`.
BOUNDS: dict[str, Range] = {
    "model.vocab_size": at_least(1),
    "model.tiny.hidden_size": at_least(1), "model.tiny.num_layers": at_least(1), "model.tiny.num_heads": at_least(1),
    "model.tiny.num_kv_heads": at_least(0), "model.tiny.intermediate_size": at_least(0),
    "model.tiny.max_position_embeddings": at_least(2), "model.tiny.rope_theta": above(0),
    "model.tiny.digit_stride": at_least(1), "model.tiny.rope_factor": above(0),
    "adapter.r": at_least(1), "adapter.alpha": at_least(1), "adapter.dropout": between(0, 1, high_open=True),
    "adapter.reduction_factor": at_least(1),
    "data.max_length": at_least(2), "data.pack_length": at_least(2),
    "train.max_steps": at_least(0), "train.epochs": above(0), "train.batch_size": at_least(1),
    "train.grad_accum": at_least(1), "train.learning_rate": above(0), "train.warmup_steps": at_least(0),
    "train.warmup_ratio": between(0, 1), "train.lr_schedule_steps": at_least(0), "train.weight_decay": at_least(0),
    "train.max_grad_norm": at_least(0), "train.adam_beta1": between(0, 1, high_open=True),
    "train.adam_beta2": between(0, 1, high_open=True), "train.seed": between(0, 2**32 - 1),
    "train.save_steps": at_least(0), "train.save_total_limit": at_least(1), "train.logging_steps": at_least(1),
    "train.eval_steps": at_least(-1), "train.eval_examples": at_least(0), "train.threads": at_least(0),
    "train.random_positions": at_least(0),
    "eval.batch_size": at_least(1), "eval.max_new_tokens": at_least(1), "eval.num_beams": at_least(1),
    "eval.temperature": at_least(0), "eval.max_examples": at_least(0), "eval.seed": between(0, 2**32 - 1),
    "estimate.max_examples": at_least(0), "estimate.project_dimension": at_least(1),
    "estimate.repeats": at_least(1), "estimate.clusters": at_least(0),
    "estimate.seed": between(0, 2**32 - 1), "estimate.scale": above(0), "estimate.regularization": above(0),
    "estimate.positive_rate": Range(0, 1, low_open=True, high_open=True),
    "estimate.fit_fraction": Range(0, 1, low_open=True), "estimate.batch_size": at_least(1),
    "estimate.shard_size": at_least(1), "estimate.number_of_subsets": at_least(1),
    "estimate.subset_size": Range(0, 1, low_open=True), "estimate.approximation_examples": at_least(0),
}


def _dotted(built: dict[str, Any], key: str) -> Any:
    node: Any = built
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
    return node


def _check_values(built: dict[str, Any]) -> list[str]:
    """Values that type-check but cannot work (a zero batch size, heads not dividing the width)."""
    errors = out_of_range(lambda key: _dotted(built, key), BOUNDS, lambda key: f"key '{key}'")
    for name, section in built.items():
        table = getattr(section, "BOUNDS", None)
        if table:
            errors += out_of_range(lambda key, s=section: getattr(s, key), table, lambda key, n=name: f"key '{n}.{key}'")
    errors += _estimate_subsets(built["estimate"])
    tiny = built["model"].tiny
    if tiny.num_heads >= 1 and tiny.hidden_size % tiny.num_heads:
        errors.append(f"key 'model.tiny.num_heads' ({tiny.num_heads}) must divide model.tiny.hidden_size "
                      f"({tiny.hidden_size})")
    elif tiny.num_kv_heads and tiny.num_heads % tiny.num_kv_heads:
        errors.append(f"key 'model.tiny.num_kv_heads' ({tiny.num_kv_heads}) must divide model.tiny.num_heads "
                      f"({tiny.num_heads})")
    if not 0 <= tiny.digit_offset < tiny.digit_stride:
        errors.append(f"key 'model.tiny.digit_offset' must be >= 0 and below model.tiny.digit_stride "
                      f"({tiny.digit_stride}), got {tiny.digit_offset!r}")
    if any(c.isdigit() for c in tiny.digit_joiners):
        errors.append(f"key 'model.tiny.digit_joiners' must not hold digits, got {tiny.digit_joiners!r}")
    if any(c.isdigit() for c in tiny.digit_signs):
        errors.append(f"key 'model.tiny.digit_signs' must not hold digits, got {tiny.digit_signs!r}")
    if tiny.positions == "digits" and tiny.architecture != "llama":
        errors.append("key 'model.tiny.positions' = 'digits' needs model.tiny.architecture = 'llama'")
    if tiny.positions == "digits" and built["train"].random_positions:
        errors.append("keys 'model.tiny.positions' = 'digits' and 'train.random_positions' exclude each other "
                      "(both set the position ids); set train.random_positions = 0")
    if not built["train"].output_dir.strip():
        errors.append("key 'train.output_dir' must not be empty")
    widths = built["data"].row_widths
    if widths and (min(widths) < 2 or max(widths) > built["data"].pack_length):
        errors.append(f"key 'data.row_widths' must lie between 2 and data.pack_length ({built['data'].pack_length}), "
                      f"got {widths}")
    return errors


def _estimate_subsets(estimate: EstimateConfig) -> list[str]:
    """Given subsets name each group once and are not empty (which groups exist is known once data is read)."""
    errors = []
    for number, subset in enumerate(estimate.subsets, 1):
        repeated = sorted({group for group in subset if subset.count(group) > 1})
        if repeated:
            errors.append(f"key 'estimate.subsets': subset {number} names group '{repeated[0]}' twice")
        if not subset:
            errors.append(f"key 'estimate.subsets': subset {number} is empty")
    return errors


def _deep_copy(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in raw.items()}


def _apply_override(raw: dict[str, Any], item: str, errors: list[str]) -> None:
    """`a.b.c=value`, the value read as a TOML value when it parses as one, else as a plain string."""
    if "=" not in item:
        errors.append(f"override '{item}' is not key=value")
        return
    key, text = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            errors.append(f"override '{key}': '{part}' is not a table")
            return
    node[parts[-1]] = value


def _build(cls: type, values: dict[str, Any], prefix: str, errors: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}"
        if key not in names:
            hint = did_you_mean(key, names).replace("(did you mean '", f"(did you mean '{prefix}.")
            errors.append(f"unknown key '{dotted}'{hint}")
            continue
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                errors.append(f"key '{dotted}' must be a table, got {type(value).__name__}")
                continue
            kwargs[key] = _build(kind, value, dotted, errors)
            continue
        ok, converted = _coerce(value, kind)
        if not ok:
            errors.append(f"key '{dotted}' must be {_describe(kind)}, got {value!r}")
            continue
        kwargs[key] = converted
    return cls(**kwargs)


def _coerce(value: Any, kind: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(kind)
    if origin is Literal:
        if isinstance(value, bool) and str(value).lower() in typing.get_args(kind):
            value = str(value).lower()  # `bf16 = true` in TOML or `train.bf16=true` on the command line
        return (value in typing.get_args(kind), value)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            if option is type(None):
                if value is None:
                    return True, None
                continue
            ok, converted = _coerce(value, option)
            if ok:
                return True, converted
        return False, value
    if origin is list:
        (item,) = typing.get_args(kind) or (Any,)
        if not isinstance(value, list):
            return False, value
        out = []
        for element in value:
            ok, converted = _coerce(element, item)
            if not ok:
                return False, value
            out.append(converted)
        return True, out
    if origin is dict:
        return isinstance(value, dict), value
    if kind is Any:
        return True, value
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if kind is str:
        return isinstance(value, str), value
    return isinstance(value, kind), value


def _describe(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(kind))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(kind))
    if origin is list:
        (item,) = typing.get_args(kind) or (Any,)
        return f"a list of {_describe(item)}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            type(None): "none"}.get(kind, getattr(kind, "__name__", str(kind)))


# --------------------------------------------------------------------------------------------------
# Saving


def config_to_toml(config: Config) -> str:
    """The resolved config as TOML text (what `llmft.toml` in a run folder holds)."""
    data = config.to_dict()
    lines = [f"# resolved llmft config (from {config.source or 'defaults'})", f"recipe = {_toml_value(data.pop('recipe'))}"]
    for name, table in data.items():
        _emit_table(name, table, lines)
    return "\n".join(lines) + "\n"


def _emit_table(name: str, table: dict[str, Any], lines: list[str]) -> None:
    lines.append("")
    lines.append(f"[{name}]")
    nested = []
    for key, value in table.items():
        if isinstance(value, dict):
            nested.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in nested:
        _emit_table(f"{name}.{key}", value, lines)


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if value is None:
        return '""'
    raise TypeError(f"cannot write {value!r} as TOML")
