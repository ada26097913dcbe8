"""Linear probes on a frozen model: is each feature still linearly decodable, layer by layer?

As the reference: the input is the story alone (instructions stripped), the probe reads the mean of the
last 10 token states after a block, one linear map (no bias) per layer to all six features, multi-label
BCE, scored by per-feature test accuracy.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from llmft.core.data import encode_prompt
from llmft.recipes.uft.checker import FEATURES
from llmft.recipes.uft.text import split_text

LAST_TOKENS = 10


def default_layers(num_layers: int) -> list[int]:
    """After each block but the last (the reference's probes); the last state has the final norm applied."""
    return list(range(1, num_layers)) or [num_layers]


def story_states(model: Any, tokenizer: Any, stories: Sequence[str], layers: Sequence[int],
                 last_n: int = LAST_TOKENS, batch_size: int = 16, max_length: int = 1024) -> dict[int, Any]:
    """{layer: float tensor [stories, hidden]}: the mean of each story's last `last_n` token states.

    Layer i is the residual stream after block i (`hidden_states[i]`; 0 = embeddings).
    """
    import torch

    device = next(model.parameters()).device
    encoded = [encode_prompt(tokenizer, story)[:max_length] for story in stories]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pooled: dict[int, list[Any]] = {layer: [] for layer in layers}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            width = max(len(ids) for ids in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, seq in enumerate(chunk):
                ids[row, :len(seq)] = torch.tensor(seq)
                mask[row, :len(seq)] = 1
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
            # Weights that average each row's last `last_n` real (unpadded) positions.
            lengths = mask.sum(1)
            positions = torch.arange(width).unsqueeze(0)
            window = (positions < lengths.unsqueeze(1)) & (positions >= (lengths - last_n).unsqueeze(1))
            weights = (window.float() / window.sum(1, keepdim=True)).to(device)
            for layer in layers:
                states = out.hidden_states[layer].float()
                pooled[layer].append(torch.einsum("bt,bth->bh", weights, states).cpu())
    model.train(was_training)
    return {layer: torch.cat(parts) for layer, parts in pooled.items()}


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, test) indices of a seeded shuffle; at least one of each when n >= 2."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    cut = min(max(1, round(n * test_fraction)), n - 1) if n >= 2 else 0
    return order[cut:], order[:cut]


def fit_probe(states: Any, labels: Any, train: Sequence[int], test: Sequence[int], steps: int = 2000,
              lr: float = 1e-3, seed: int = 0) -> list[float]:
    """Fit a bias-free linear multi-label probe with full-batch Adam on `train`; test accuracy per label."""
    import torch

    torch.manual_seed(seed)
    x, y = states.float(), labels.float()
    probe = torch.nn.Linear(x.shape[1], y.shape[1], bias=False)
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    train_idx, test_idx = torch.tensor(list(train)), torch.tensor(list(test))
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            loss = loss_fn(probe(x[train_idx]), y[train_idx])
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predicted = probe(x[test_idx]) > 0
    return ((predicted == y[test_idx].bool()).float().mean(0)).tolist()


def probe_accuracy(model: Any, tokenizer: Any, records: Sequence[dict], layers: Sequence[int] = (),
                   features: Sequence[str] = FEATURES, *, test_fraction: float = 0.2, steps: int = 2000,
                   lr: float = 1e-3, seed: int = 0, batch_size: int = 16) -> dict[int, dict[str, float]]:
    """{layer: {feature: test accuracy}} of probes on text records (labels: what each story really has)."""
    import torch

    layers = list(layers) or default_layers(model.config.num_hidden_layers)
    stories = [split_text(record["text"])[1] for record in records]
    labels = torch.tensor([[float(f in record.get("story_features", record.get("features", [])))
                            for f in features] for record in records])
    train, test = split_indices(len(records), test_fraction, seed)
    states = story_states(model, tokenizer, stories, layers, batch_size=batch_size)
    accuracy = {}
    for layer in layers:
        per_feature = fit_probe(states[layer], labels, train, test, steps, lr, seed)
        accuracy[layer] = dict(zip(features, per_feature, strict=True))
    return accuracy
