"""Held-out loss during training: data.heldout (default data.eval) scored with the training loss every
`train.eval_steps` steps."""

from __future__ import annotations

import itertools
import sys
from typing import Any

from llmft.core.config import Config
from llmft.core.data import TokenizedExample, load_examples
from llmft.core.errors import LlmftError
from llmft.core.jsonl import iter_jsonl
from llmft.core.model_setup import TrainingHooks

AUTO_EVALS = 10  # train.eval_steps = -1: about this many held-out losses per run


def scorable(record: dict, recipe: TrainingHooks, tokenizer: Any, config: Config) -> bool:
    """Whether a record carries a target to score: prompt/completion, text, or the recipe's own format."""
    if ("prompt" in record and "completion" in record) or "text" in record:
        return True
    try:
        return recipe.tokenize(record, tokenizer, config) is not None
    except (KeyError, TypeError, ValueError, LlmftError):
        return False


def heldout_path(config: Config) -> tuple[str, str]:
    """(key, path) of the held-out file: data.heldout when set, else data.eval."""
    return ("data.heldout", config.data.heldout) if config.data.heldout else ("data.eval", config.data.eval)


def heldout_examples(config: Config, recipe: TrainingHooks, tokenizer: Any) -> list[TokenizedExample]:
    """The first `train.eval_examples` held-out records, tokenised as training is; [] when off or unscorable.

    With `train.eval_steps` set explicitly, the file must exist and be scorable (else a one-line error).
    """
    explicit = config.train.eval_steps > 0
    key, path = heldout_path(config)
    if config.train.eval_steps == 0 or not path:
        if explicit:
            raise LlmftError(f"train.eval_steps = {config.train.eval_steps} needs data.eval (a JSONL file)")
        return []
    try:
        first = next(itertools.islice(iter_jsonl(path, what=key), 1), None)
    except LlmftError:
        if explicit:
            raise
        return []  # a missing eval file is `llmft eval`'s error to report, not training's
    if first is None or not scorable(first, recipe, tokenizer, config):
        if explicit:
            raise LlmftError(f"train.eval_steps: {key} {path} has no prompt/completion or text records to "
                             "score; set train.eval_steps = 0")
        return []
    try:
        return load_examples(path, tokenizer, config.data.max_length,
                             lambda record: recipe.tokenize(record, tokenizer, config), what=key,
                             limit=config.train.eval_examples)
    except LlmftError as exc:
        if explicit:
            raise
        print(f"llmft: no held-out loss ({exc}); set train.eval_steps = 0 to silence this", file=sys.stderr)
        return []


def eval_interval(config: Config, total_steps: int, examples: list[TokenizedExample]) -> int:
    """Steps between held-out losses (0 = never): train.eval_steps, or about AUTO_EVALS per run."""
    if not examples:
        return 0
    if config.train.eval_steps > 0:
        return config.train.eval_steps
    return max(1, total_steps // AUTO_EVALS)


def heldout_loss(model: Any, examples: list[TokenizedExample], pad_id: int, accelerator: Any,
                 batch_tokens: int, positions: Any = None) -> float:
    """Mean loss per trained token over all held-out examples, each process scoring its share in padded
    batches of at most `batch_tokens` tokens (a training batch's size, so it fits where training does)."""
    import torch

    from llmft.core.scoring import example_losses

    world, rank = accelerator.num_processes, accelerator.process_index
    share = examples[rank::world]
    total, count = 0.0, 0
    if share:
        batch_size = max(1, batch_tokens // max(len(example) for example in share))
        with accelerator.autocast():
            total = sum(example_losses(model, share, pad_id, batch_size=batch_size, reduction="sum",
                                       positions=positions))
        count = sum(example.trained for example in share)
    summed = accelerator.reduce(torch.tensor([total, float(count)], device=accelerator.device), reduction="sum")
    return float(summed[0] / summed[1].clamp(min=1))
