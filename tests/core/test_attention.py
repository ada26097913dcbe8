"""Block-sparse attention over packed rows, and logits computed only where a token is trained."""

from __future__ import annotations

import pytest
import torch

from llmft.core import attention
from llmft.core.attention import allowed_pairs, blocked_attention_forward, key_spans
from llmft.core.scoring import logits_only_where_trained, token_loss_sum, trained_logits_pay


def packed_mask(lengths: list[list[int]]) -> torch.Tensor:
    """The (rows, 1, width, width) block-diagonal causal mask of rows packed with examples of these lengths."""
    width = sum(lengths[0])
    mask = torch.zeros(len(lengths), 1, width, width, dtype=torch.bool)
    for row, examples in enumerate(lengths):
        start = 0
        for n in examples:
            mask[row, 0, start:start + n, start:start + n] = torch.ones(n, n, dtype=torch.bool).tril()
            start += n
    return mask


def test_key_spans_give_each_block_of_queries_the_keys_its_rows_may_see():
    # Row 0: examples of 3, 6, 3 tokens; row 1: 8 and 4. Blocks of 4 queries.
    allowed = packed_mask([[3, 6, 3], [8, 4]])[:, 0]
    assert key_spans(allowed, 4, align=1) == [(0, 4, 0, 4), (4, 8, 0, 8), (8, 12, 3, 12)]
    # Row 1 alone: queries 8-11 are the 4-token example, which starts at 8.
    assert key_spans(allowed[1:], 4, align=1)[2] == (8, 12, 8, 12)
    assert key_spans(allowed[:1], 4, align=1) == [(0, 4, 0, 4), (4, 8, 3, 8), (8, 12, 3, 12)]
    assert key_spans(allowed[:1], 4, align=2)[1] == (4, 8, 2, 8)  # the start rounded down
    assert key_spans(torch.zeros(1, 4, 4, dtype=torch.bool), 2, align=1) == [(0, 2, 0, 0), (2, 4, 0, 0)]


def test_an_additive_mask_allows_the_pairs_its_boolean_twin_does():
    mask = packed_mask([[3, 6, 3]])
    additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    assert torch.equal(allowed_pairs(additive), mask[:, 0])
    assert torch.equal(allowed_pairs(additive.masked_fill(~mask, float("-inf"))), mask[:, 0])


class _Module(torch.nn.Module):
    num_key_value_groups = 2  # 4 query heads share 2 key/value heads


@pytest.mark.parametrize("low_precision", [False, True])
def test_blocked_attention_equals_sdpa_over_the_whole_row(monkeypatch, low_precision):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    monkeypatch.setattr(attention, "BLOCK", 8)
    torch.manual_seed(0)
    mask = packed_mask([[5, 11, 9, 7], [20, 3, 9]])
    query = torch.randn(2, 4, 32, 16, requires_grad=True)
    key, value = (torch.randn(2, 2, 32, 16, requires_grad=True) for _ in range(2))
    module = _Module().eval()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low_precision):
        blocked, _ = blocked_attention_forward(module, query, key, value, mask, scaling=0.25)
        whole, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    assert blocked.shape == whole.shape == (2, 32, 4, 16)
    tolerance = 2e-2 if low_precision else 1e-5
    torch.testing.assert_close(blocked.float(), whole.float(), atol=tolerance, rtol=tolerance)
    blocked_grads = torch.autograd.grad(blocked.float().square().sum(), (query, key, value))
    whole_grads = torch.autograd.grad(whole.float().square().sum(), (query, key, value))
    for mine, theirs in zip(blocked_grads, whole_grads):
        torch.testing.assert_close(mine, theirs, atol=5 * tolerance, rtol=5 * tolerance)


def _tiny_llama(attn: str, vocab: int = 40):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attn_implementation=attn)
    return LlamaForCausalLM(config)


def test_a_llama_with_blocks_gives_sdpa_logits_on_packed_rows(monkeypatch):
    monkeypatch.setattr(attention, "BLOCK", 16)
    spans = []
    monkeypatch.setattr(attention, "key_spans", lambda *a, **k: spans.append(key_spans(*a, **k)) or spans[-1])
    name = attention.register()
    ids = torch.randint(3, 40, (2, 48))
    # Packed rows: position ids restart at each example (without a cache transformers builds the block-diagonal
    # mask, as in training).
    positions = torch.cat([torch.arange(n) for n in (10, 25, 13)]).expand(2, 48).clone()
    positions[1] = torch.cat([torch.arange(n) for n in (30, 18)])
    with torch.no_grad():
        blocked = _tiny_llama(name)(input_ids=ids, position_ids=positions, use_cache=False).logits
        whole = _tiny_llama("sdpa")(input_ids=ids, position_ids=positions, use_cache=False).logits
    torch.testing.assert_close(blocked, whole, atol=1e-5, rtol=1e-5)
    # The blocks ran, and both layers read the spans computed once on their shared mask.
    assert len(spans) == 1 and spans[0] == [(0, 16, 0, 16), (16, 32, 0, 32), (32, 48, 0, 48)]


def test_logits_only_where_trained_give_the_same_loss_and_gradients():
    model = _tiny_llama("sdpa")
    ids = torch.randint(3, 40, (2, 12))
    labels = ids.clone()
    labels[0, :5] = -100  # row 0: a 5-token prompt; row 1: trained from its second token on
    labels[1, 0] = -100
    full = token_loss_sum(model(input_ids=ids).logits, labels)
    full_grads = torch.autograd.grad(full, list(model.parameters()))
    weights = torch.rand(labels.shape)
    with logits_only_where_trained(model, labels, weights) as (targets, kept_weights):
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, (12 - 5) + (12 - 1), 40)
    assert targets.tolist() == [ids[0, 5:].tolist() + ids[1, 1:].tolist()]
    assert kept_weights.tolist() == [weights[0, 5:].tolist() + weights[1, 1:].tolist()]
    gathered = token_loss_sum(logits, targets, shift=False)
    torch.testing.assert_close(gathered, full)
    for mine, theirs in zip(torch.autograd.grad(gathered, list(model.parameters())), full_grads):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=1e-5)
    assert model(input_ids=ids).logits.shape == (2, 12, 40)  # the hook is gone after the block


def test_the_trainer_gathers_logits_only_for_an_output_layer_wider_than_the_hidden_states():
    assert trained_logits_pay(_tiny_llama("sdpa", vocab=40))  # 40 ids > 32 hidden
    assert not trained_logits_pay(_tiny_llama("sdpa", vocab=24))
