"""Scoring a model without generating: token losses, per-example losses, option log-likelihoods, gradients.

One place for what training, evaluation (held-out loss, multiple choice) and data-selection estimates all
compute, so they agree to the last bit on the same batch. Torch is imported inside the functions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from llmft.core.data import IGNORE, TokenizedExample, collate, encode_prompt
from llmft.core.packing import single_rows


def token_losses(logits: Any, labels: Any) -> Any:
    """Next-token cross-entropy per position, shape [batch, length - 1], 0 where the label is ignored (fp32)."""
    import torch.nn.functional as F

    shifted = logits[:, :-1].float()
    targets = labels[:, 1:]
    losses = F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1),
                             ignore_index=IGNORE, reduction="none")
    return losses.view(targets.shape)


def token_loss_sum(logits: Any, labels: Any, shift: bool = True, weights: Any = None) -> Any:
    """Sum of next-token cross-entropy over trained positions (computed in fp32), each weighted by `weights`
    (shaped as labels) when given. shift=False: the labels are already aligned with the logits (an
    encoder-decoder's decoder targets, or logits gathered where trained)."""
    import torch.nn.functional as F

    shifted = logits[:, :-1].float() if shift else logits.float()
    targets = labels[:, 1:] if shift else labels
    losses = F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1), ignore_index=IGNORE,
                             reduction="sum" if weights is None else "none")
    return losses if weights is None else (losses * (weights[:, 1:] if shift else weights).reshape(-1)).sum()


def trained_logits_pay(model: Any) -> bool:
    """Whether `logits_only_where_trained` saves time: the output layer is wider than the hidden states (a
    character vocabulary of a few dozen ids saves nothing, and the Re-Tuning demo measured slower with it)."""
    head = model.get_output_embeddings()
    return head is not None and getattr(head, "out_features", 0) > getattr(head, "in_features", 0)


@contextlib.contextmanager
def logits_only_where_trained(model: Any, labels: Any, weights: Any = None) -> Iterator[tuple[Any, Any]]:
    """Within: a causal LM's head computes logits only at the positions whose next token is trained, as
    (1, kept, vocab); yields those next tokens and their loss weights (None if none given), in the same order.
    A completion-only loss reads nothing else, and the head's matmul and the fp32 softmax over the vocabulary
    are a tenth to a fifth of a small model's step."""
    trained = labels[:, 1:] != IGNORE
    keep = labels.new_zeros(labels.shape, dtype=bool)
    keep[:, :-1] = trained
    handle = model.get_output_embeddings().register_forward_pre_hook(
        lambda _module, args: (args[0][keep.to(args[0].device)][None], *args[1:]))
    try:
        yield labels[:, 1:][trained][None], None if weights is None else weights[:, 1:][trained][None]
    finally:
        handle.remove()


def _forward(model: Any, batch: dict[str, Any]) -> Any:
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    return model(**inputs, use_cache=False).logits


def example_losses(model: Any, examples: Sequence[TokenizedExample], pad_id: int, batch_size: int = 16,
                   reduction: Literal["mean", "sum"] = "mean", positions: Any = None) -> list[float]:
    """Each example's loss over its trained tokens (mean per token, or the sum), in input order.
    `positions`: the run's PositionRules (llmft.core.positions) when its positions are not 0..n-1."""
    import torch

    rows = single_rows(examples)
    eager = getattr(model.config, "_attn_implementation", "") == "eager"  # replaced positions: a float mask
    out: list[float] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                batch = collate(rows[start:start + batch_size], pad_id, packed=False)
                if positions is not None:
                    batch = positions.scoring(batch, additive=eager)
                losses = token_losses(_forward(model, batch), batch["labels"].to(next(model.parameters()).device))
                counts = (batch["labels"][:, 1:] != IGNORE).sum(dim=1).to(losses.device)
                sums = losses.sum(dim=1)
                values = sums if reduction == "sum" else sums / counts.clamp(min=1)
                out += [float(v) for v in values]
    finally:
        model.train(was_training)
    return out


def option_loglikelihoods(model: Any, tokenizer: Any, prompt: str, options: Sequence[str]) -> list[float]:
    """log P(option | prompt) for each option: the sum of its tokens' log-probabilities after the prompt."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    examples = []
    for option in options:
        option_ids = tokenizer(option, add_special_tokens=False)["input_ids"]
        ids = prompt_ids + option_ids
        labels = [IGNORE] * len(prompt_ids) + option_ids
        examples.append(TokenizedExample(ids, labels))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return [-loss for loss in example_losses(model, examples, pad, batch_size=len(examples) or 1, reduction="sum")]


def trainable_parameters(model: Any) -> list[tuple[str, Any]]:
    """(name, parameter) of every parameter that requires a gradient, in the model's order."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def per_example_gradients(model: Any, examples: Sequence[TokenizedExample], pad_id: int,
                          reduction: Literal["mean", "sum"] = "sum") -> Iterator[Any]:
    """The flat fp32 gradient of each example's loss over the trainable parameters (trainable_parameters order).

    One backward per example: exact for any model (dropout off, no batch statistics), with memory for one
    gradient; vmap over torch.func would need equal lengths and fails on some PEFT layers.
    """
    import torch

    params = [p for _, p in trainable_parameters(model)]
    was_training = model.training
    model.eval()
    try:
        for row in single_rows(examples):
            batch = collate([row], pad_id, packed=False)
            logits = _forward(model, batch)
            labels = batch["labels"].to(logits.device)
            loss = token_loss_sum(logits, labels)
            if reduction == "mean":
                loss = loss / max(int((labels[:, 1:] != IGNORE).sum()), 1)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            yield torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                             for g, p in zip(grads, params)])
    finally:
        model.train(was_training)
