"""Linear probes on a frozen model: is each feature still linearly decodable, layer by layer?

As the reference: the input is the story alone (instructions stripped), the probe reads the mean of the
last 10 token states after a block, one linear map (no bias) per layer to all six features, multi-label
BCE, scored by per-feature test accuracy. Training is the reference's by default (AdamW, weight decay 0.1,
betas 0.9/0.95, clip 1 over all probes together, a fresh batch of stories every step) or full-batch Adam.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from llmft.core.data import encode_prompt
from llmft.recipes.uft.checker import FEATURES
from llmft.recipes.uft.text import split_text

LAST_TOKENS = 10
# llama2.c's train.py settings, which the reference's probe run (base91M_tw_probe_aws.py) kept.
REFERENCE_WEIGHT_DECAY, REFERENCE_BETAS, REFERENCE_CLIP = 0.1, (0.9, 0.95), 1.0


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


def fit_probes_minibatch(model: Any, tokenizer: Any, stories: Sequence[str], labels: Any, test_states: dict[int, Any],
                         test_labels: Any, layers: Sequence[int], *, steps: int = 2000, lr: float = 1e-3,
                         batch: int = 128, seed: int = 0, batch_size: int = 16) -> dict[int, list[float]]:
    """The reference's probe training: every step reads the states of `batch` stories not seen before (the
    pool is reshuffled when used up), sums the layers' BCE losses and takes one AdamW step with the
    reference's decay, betas and clip; {layer: test accuracy per label}."""
    import torch

    torch.manual_seed(seed)
    rng = random.Random(seed)
    probes = {layer: torch.nn.Linear(test_states[layer].shape[1], labels.shape[1], bias=False) for layer in layers}
    params = [p for probe in probes.values() for p in probe.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=REFERENCE_BETAS, weight_decay=REFERENCE_WEIGHT_DECAY)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    order: list[int] = []
    with torch.enable_grad():
        for _ in range(steps):
            if len(order) < batch:
                fresh = list(range(len(stories)))
                rng.shuffle(fresh)
                order += fresh
            chosen, order = order[:batch], order[batch:]
            states = story_states(model, tokenizer, [stories[i] for i in chosen], layers, batch_size=batch_size)
            target = labels[chosen].float()
            loss = sum(loss_fn(probes[layer](states[layer]), target) for layer in layers)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, REFERENCE_CLIP)
            optimizer.step()
    with torch.no_grad():
        return {layer: ((probes[layer](test_states[layer].float()) > 0) == test_labels.bool()).float().mean(0).tolist()
                for layer in layers}


def feature_labels(records: Sequence[dict], features: Sequence[str]) -> Any:
    """[records, features] 0/1: what each story really has."""
    import torch

    return torch.tensor([[float(f in record.get("story_features", record.get("features", [])))
                          for f in features] for record in records])


def probe_accuracy(model: Any, tokenizer: Any, records: Sequence[dict], layers: Sequence[int] = (),
                   features: Sequence[str] = FEATURES, *, test_fraction: float = 0.2, steps: int = 2000,
                   lr: float = 1e-3, seed: int = 0, batch_size: int = 16, training: str = "full-batch",
                   train_records: Sequence[dict] = (), probe_batch: int = 128) -> dict[int, dict[str, float]]:
    """{layer: {feature: test accuracy}} of probes on text records (labels: what each story really has).

    training "full-batch": Adam on all training states at once; "reference": see fit_probes_minibatch.
    With `train_records` the probes train on those and test on all `records`; else an 80/20 split.
    """
    layers = list(layers) or default_layers(model.config.num_hidden_layers)
    stories = [split_text(record["text"])[1] for record in records]
    labels = feature_labels(records, features)
    if train_records:
        train, test = [], list(range(len(records)))
        train_stories = [split_text(record["text"])[1] for record in train_records]
        train_labels = feature_labels(train_records, features)
    else:
        train, test = split_indices(len(records), test_fraction, seed)
        train_stories, train_labels = [stories[i] for i in train], labels[train]
    if training == "reference":
        test_states = story_states(model, tokenizer, [stories[i] for i in test], layers, batch_size=batch_size)
        per_layer = fit_probes_minibatch(model, tokenizer, train_stories, train_labels, test_states, labels[test],
                                         layers, steps=steps, lr=lr, batch=probe_batch, seed=seed,
                                         batch_size=batch_size)
        return {layer: dict(zip(features, per_layer[layer], strict=True)) for layer in layers}
    if train_records:  # full batch over the training stories, then the probe set as the test split
        import torch

        train, test = list(range(len(train_stories))), list(range(len(train_stories), len(train_stories) + len(stories)))
        stories, labels = train_stories + stories, torch.cat([train_labels, labels])
    states = story_states(model, tokenizer, stories, layers, batch_size=batch_size)
    accuracy = {}
    for layer in layers:
        per_feature = fit_probe(states[layer], labels, train, test, steps, lr, seed)
        accuracy[layer] = dict(zip(features, per_feature, strict=True))
    return accuracy
