"""Scoring functions against values computed by hand from the model's own logits."""

import pytest
import torch

from llmft.core.data import IGNORE, TokenizedExample
from llmft.core.scoring import (
    example_losses,
    option_loglikelihoods,
    per_example_gradients,
    token_loss_sum,
    token_losses,
    trainable_parameters,
)
from llmft.core.tokenizers import train_tokenizer


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(["abc def ghi 0123456789 +=?"], "char")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64))
    return model.eval(), tokenizer


def by_hand(model, example: TokenizedExample) -> tuple[float, int]:
    """Sum of -log p(label) over trained positions, from log_softmax of the logits, and their count."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([example.input_ids])).logits[0].float(), -1)
    total, count = 0.0, 0
    for t in range(1, len(example)):
        if example.labels[t] != IGNORE:
            total -= float(logp[t - 1, example.labels[t]])
            count += 1
    return total, count


def examples(tokenizer):
    a = tokenizer("abc def", add_special_tokens=True)["input_ids"]
    b = tokenizer("12 + 3 = 15", add_special_tokens=True)["input_ids"]
    return [TokenizedExample(a, [IGNORE] * 3 + a[3:]), TokenizedExample(b, [IGNORE] * 6 + b[6:])]


def test_token_losses_and_sum_match_log_softmax(tiny):
    model, tokenizer = tiny
    example = examples(tokenizer)[1]
    ids, labels = torch.tensor([example.input_ids]), torch.tensor([example.labels])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    expected, count = by_hand(model, example)
    per_token = token_losses(logits, labels)
    assert per_token.shape == (1, len(example) - 1)
    assert int((per_token != 0).sum()) == count
    assert float(per_token.sum()) == pytest.approx(expected, rel=1e-5)
    assert float(token_loss_sum(logits, labels)) == pytest.approx(expected, rel=1e-5)


def test_example_losses_mean_and_sum_per_example(tiny):
    model, tokenizer = tiny
    batch = examples(tokenizer)
    hand = [by_hand(model, e) for e in batch]
    sums = example_losses(model, batch, tokenizer.pad_token_id, batch_size=2, reduction="sum")
    means = example_losses(model, batch, tokenizer.pad_token_id, batch_size=1)
    assert sums == pytest.approx([t for t, _ in hand], rel=1e-5)
    assert means == pytest.approx([t / c for t, c in hand], rel=1e-5)


def test_option_loglikelihoods_rank_and_value(tiny):
    model, tokenizer = tiny
    prompt, options = "12 + 3 =", [" 15", " 9"]
    scores = option_loglikelihoods(model, tokenizer, prompt, options)
    for option, score in zip(options, scores):
        prompt_ids = tokenizer(prompt)["input_ids"]
        option_ids = tokenizer(option, add_special_tokens=False)["input_ids"]
        total, count = by_hand(model, TokenizedExample(prompt_ids + option_ids,
                                                       [IGNORE] * len(prompt_ids) + option_ids))
        assert count == len(option_ids)
        assert score == pytest.approx(-total, rel=1e-5)


def test_per_example_gradients_equal_single_backward(tiny):
    model, tokenizer = tiny
    for name, param in model.named_parameters():
        param.requires_grad_("layers.1" in name)  # a subset, as an adapter would train
    batch = examples(tokenizer)
    grads = list(per_example_gradients(model, batch, tokenizer.pad_token_id, reduction="mean"))
    names = [n for n, _ in trainable_parameters(model)]
    assert names and all("layers.1" in n for n in names)
    for example, flat in zip(batch, grads):
        model.zero_grad()
        logits = model(input_ids=torch.tensor([example.input_ids])).logits
        loss = token_loss_sum(logits, torch.tensor([example.labels])) / example.trained
        loss.backward()
        dense = torch.cat([p.grad.reshape(-1) for _, p in trainable_parameters(model)])
        torch.testing.assert_close(flat, dense, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(grads[0], grads[1])
    for param in model.parameters():
        param.requires_grad_(True)
