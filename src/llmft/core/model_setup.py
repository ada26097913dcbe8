"""A training run's tokenizer, base model, adapter and rows, built the same way by `train` and `make-data --show`."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from llmft.core import runs
from llmft.core.config import Config
from llmft.core.data import TokenizedExample, load_examples, paused_gc
from llmft.core.errors import LlmftError
from llmft.core.jsonl import iter_jsonl
from llmft.core.packing import Row, merge_shared_prefixes, pack_rows, pack_rows_by_width, single_rows


class TrainingHooks(Protocol):
    """What training needs of a recipe: its added tokens and its own tokenisation rule."""

    def special_tokens(self, config: Config) -> list[str]: ...

    def tokenize(self, record: dict, tokenizer: Any, config: Config) -> TokenizedExample | None: ...

    def token_init(self, config: Config, tokenizer: Any) -> dict[str, list[int]]: ...


def training_texts(path: str) -> list[str]:
    """Every string a tokenizer trained for this data must cover."""
    texts = []
    for record in iter_jsonl(path, what="data.train"):
        for key in ("prompt", "completion", "text"):
            if key in record:
                texts.append(str(record[key]))
        for message in record.get("messages", []) or []:
            texts.append(str(message.get("content", "")))
    return texts


def extra_tokens(config: Config, recipe: TrainingHooks) -> list[str]:
    """The recipe's tokens, then adapter.new_tokens, each once."""
    return list(dict.fromkeys([*recipe.special_tokens(config), *config.adapter.new_tokens]))


def build_tokenizer(config: Config, recipe: TrainingHooks) -> Any:
    """The run's tokenizer: a tiny model's is trained on the training (and eval) texts; recipe tokens added."""
    from llmft.core.models import is_tiny, load_tokenizer

    if not config.data.train:
        raise LlmftError("data.train is not set: give the training JSONL path")
    texts = training_texts(config.data.train) if is_tiny(config) and not config.adapter.init_from else []
    if texts and config.data.eval and Path(config.data.eval).exists():
        texts += training_texts(config.data.eval)  # the alphabet only: unseen characters would be <unk>
    return load_tokenizer(config, texts, extra_tokens(config, recipe))


def run_tokenizer(config: Config, recipe: TrainingHooks, main: bool, barrier: Callable[[], None]) -> Any:
    """The tokenizer kept in the run folder (built once by the main process, reloaded by every rank)."""
    from transformers import AutoTokenizer

    from llmft.core.models import set_bos

    tokenizer_dir = Path(config.train.output_dir) / runs.TOKENIZER_DIR
    if main and not tokenizer_dir.exists():
        tokenizer = build_tokenizer(config, recipe)
        staged = runs.staging_dir(tokenizer_dir)
        tokenizer.save_pretrained(staged)
        runs.publish_dir(staged, tokenizer_dir)
    barrier()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    set_bos(tokenizer, config.model.add_bos)
    return tokenizer


def training_examples(config: Config, recipe: TrainingHooks, tokenizer: Any, limit: int = 0) -> list[TokenizedExample]:
    """data.train tokenised exactly as training sees it (the first `limit` records when limit > 0)."""
    return load_examples(config.data.train, tokenizer, config.data.max_length,
                         lambda record: recipe.tokenize(record, tokenizer, config), limit=limit)


def initial_rows(config: Config, recipe: TrainingHooks, tokenizer: Any) -> dict[int, list[int]]:
    """{new token id: ids whose rows it starts from}, from the recipe's token_init."""
    return {tokenizer.convert_tokens_to_ids(token): ids
            for token, ids in recipe.token_init(config, tokenizer).items()}


def build_rows(config: Config, recipe: TrainingHooks, tokenizer: Any, seq2seq: bool = False) -> list[Row]:
    """Training examples packed into rows (or one per row), as [data] says; encoder-decoder rows unpacked."""
    if seq2seq:
        from llmft.core.seq2seq import seq2seq_examples, seq2seq_rows

        if config.data.packing == "rows":
            raise LlmftError("data.packing = 'rows' packs decoder-only sequences; an encoder-decoder model "
                             "(T5) needs data.packing = 'group' or 'none'")
        return seq2seq_rows(seq2seq_examples(config.data.train, tokenizer, config.data.max_length))
    with paused_gc():
        examples = training_examples(config, recipe, tokenizer)
        if config.data.merge_prefixes:
            examples = merged_examples(examples)
        if config.data.packing == "rows":
            widest = max(config.data.pack_length, max(len(e) for e in examples))
            if config.data.row_widths:
                return pack_rows_by_width(examples, row_widths(config, widest))
            return pack_rows(examples, widest)
        return single_rows(examples)


def merged_examples(examples: list[TokenizedExample]) -> list[TokenizedExample]:
    """data.merge_prefixes: examples folded into longer ones that begin with them; says what it saved."""
    merged = merge_shared_prefixes(examples)
    before, after = sum(len(e) for e in examples), sum(len(e) for e in merged)
    print(f"data.merge_prefixes: {len(examples) - len(merged):,} of {len(examples):,} examples folded into longer "
          f"ones that begin with them ({1 - after / max(before, 1):.0%} fewer tokens, the same targets)",
          file=sys.stderr)
    return merged


def row_widths(config: Config, widest: int = 0) -> list[int]:
    """The row widths training packs into (data.row_widths plus the widest row), or [] for one width."""
    if config.data.packing != "rows" or not config.data.row_widths:
        return []
    return sorted({*config.data.row_widths, max(widest, config.data.pack_length)})


def setup_model(config: Config, tokenizer: Any, new_ids: list[int], main: bool,
                barrier: Callable[[], None], initial_rows: dict[int, list[int]] | None = None) -> Any:
    """Base model (hub, local, tiny from config, or an init_from run merged), resized, wrapped in its adapter.
    `initial_rows` {new id: source ids}: new rows start as the mean of those rows (not after init_from)."""
    from llmft.core.adapters import apply_adapter, keeps_base, trainable_summary
    from llmft.core.models import (
        build_tiny_model,
        init_token_rows,
        is_tiny,
        load_pretrained,
        resize_embeddings,
    )

    quantize = config.adapter.method == "qlora"
    base_dir = Path(config.train.output_dir) / runs.BASE_MODEL_DIR
    if config.adapter.init_from:
        if main and not base_dir.exists():
            save_merged_base(config.adapter.init_from, base_dir, tokenizer)
        barrier()
        model = load_pretrained(str(base_dir), config, quantize_4bit=quantize)
    elif is_tiny(config):
        if main and not base_dir.exists() and (keeps_base(config) or quantize):
            staged = runs.staging_dir(base_dir)
            build_tiny_model(config, tokenizer).save_pretrained(staged)
            tokenizer.save_pretrained(staged)
            runs.publish_dir(staged, base_dir)
        barrier()
        model = load_pretrained(str(base_dir), config, quantize_4bit=quantize) if base_dir.exists() \
            else build_tiny_model(config, tokenizer)
    else:
        model = load_pretrained(config.model.name, config, quantize_4bit=quantize)
    resize_embeddings(model, len(tokenizer))
    if initial_rows and not config.adapter.init_from:  # an init_from base already holds trained rows
        init_token_rows(model, initial_rows)
    model.config.use_cache = False
    model = apply_adapter(model, config, new_ids)
    trainable, total = trainable_summary(model)
    if trainable == 0:
        raise LlmftError(f"adapter.method = '{config.adapter.method}' leaves nothing to train")
    if main:
        print(f"llmft: {config.recipe} | {config.adapter.method} | trainable {trainable:,} of {total:,} parameters"
              f" | {cpu_threads()}")
    return model


def cpu_threads() -> str:
    """Torch's CPU threads and OpenMP's wait policy (threads.py chose it at launch), for the run's first line."""
    import torch

    policy = os.environ.get("OMP_WAIT_POLICY", "").lower() or "default"
    return f"{torch.get_num_threads()} CPU threads, OpenMP wait {policy}"


def save_merged_base(previous: str, base_dir: Path, tokenizer: Any) -> None:
    """adapter.init_from: the previous run's model with its adapter merged in, saved as this run's base."""
    from llmft.core.inference import load_for_inference
    from llmft.core.models import resize_embeddings

    _, previous_tokenizer, model = load_for_inference(previous, quantized=False)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if previous_tokenizer.get_vocab() != {k: v for k, v in tokenizer.get_vocab().items()
                                          if v < len(previous_tokenizer)}:
        raise LlmftError(f"adapter.init_from: {previous} was trained with a different tokenizer")
    resize_embeddings(model, len(tokenizer))
    staged = runs.staging_dir(base_dir)
    model.save_pretrained(staged, safe_serialization=True)
    tokenizer.save_pretrained(staged)
    runs.publish_dir(staged, base_dir)
