"""Position levers for length generalisation: no positional encoding (NoPE) and randomised positions."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from llmft.core.data import Row, collate, randomize_positions
from llmft.core.errors import LlmftError
from llmft.core.models import rope_parameters
from tests.conftest import tiny_config, train_run


def _llama(positions: str = "rope", attn: str = "sdpa"):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=20, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, attn_implementation=attn,
                         rope_parameters=rope_parameters(SimpleNamespace(positions=positions, rope_theta=10000.0)))
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def test_no_positions_ignores_position_ids_and_survives_a_reload(tmp_path):
    from transformers import LlamaForCausalLM

    ids = torch.tensor([[1, 2, 3, 4, 5]])
    far = torch.tensor([[100, 101, 102, 150, 400]])
    nope, rope = _llama("none"), _llama("rope")
    with torch.no_grad():
        assert torch.equal(nope(ids).logits, nope(ids, position_ids=far).logits)
        assert not torch.allclose(rope(ids).logits, rope(ids, position_ids=far).logits)
        nope.save_pretrained(tmp_path)
        again = LlamaForCausalLM.from_pretrained(tmp_path)
        assert torch.equal(again(ids, position_ids=far).logits, nope(ids).logits)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_random_positions_keep_packed_examples_apart(attn):
    """A packed row with random positions gives each example the logits it has alone at those positions."""
    model = _llama(attn=attn)
    a, b = [1, 2, 3, 4, 5], [6, 7, 8]
    batch = collate([Row(a + b, a + b, [0, 1, 2, 3, 4, 0, 1, 2], 2), Row(b, b, [0, 1, 2])], 0, packed=True)
    drawn = randomize_positions(batch, 64, torch.Generator().manual_seed(0), additive=attn == "eager")
    positions = drawn["position_ids"]
    for start, end in [(0, 5), (5, 8)]:
        segment = positions[0, start:end]
        assert torch.all(segment[1:] > segment[:-1]) and 0 <= segment.min() and segment.max() < 64
    assert not torch.equal(positions[0, :5], torch.arange(5))
    with torch.no_grad():
        packed = model(input_ids=drawn["input_ids"], position_ids=positions,
                       attention_mask=drawn["attention_mask"]).logits
        alone_a = model(input_ids=torch.tensor([a]), position_ids=positions[:1, :5]).logits
        alone_b = model(input_ids=torch.tensor([b]), position_ids=positions[:1, 5:8]).logits
    assert torch.allclose(packed[0, :5], alone_a[0], atol=1e-5)
    assert torch.allclose(packed[0, 5:8], alone_b[0], atol=1e-5)


def test_random_positions_need_a_span_longer_than_the_rows():
    batch = collate([Row([1, 2, 3, 4], [1, 2, 3, 4], [0, 1, 2, 3])], 0, packed=True)
    with pytest.raises(LlmftError, match="train.random_positions"):
        randomize_positions(batch, 3, torch.Generator(), additive=False)


def test_training_with_random_positions_learns_and_resumes_identically(tmp_path, caesar_data):
    train_file, _ = caesar_data
    common = {"train": {"max_steps": 30, "save_steps": 15, "random_positions": 256, "learning_rate": 1e-2}}
    whole = train_run(tiny_config(tmp_path / "a", train_file, **common), progress=False)
    assert sum(whole.losses[-5:]) < 0.8 * sum(whole.losses[:5])  # 2.96 -> 2.13 nats measured
    split = tiny_config(tmp_path / "b", train_file, **common)
    first = train_run(split, stop_after_step=15, progress=False)
    resumed = train_run(split, resume=True, progress=False)
    assert first.losses + resumed.losses == pytest.approx(whole.losses, rel=1e-4)


def test_auto_attention_is_eager_for_narrow_rows_and_sdpa_for_wide(tmp_path, caesar_data):
    from llmft.core.models import EAGER_MAX_WIDTH, attention_for_width

    model = _llama()
    attention_for_width(model, EAGER_MAX_WIDTH)
    assert model.config._attn_implementation == "eager"
    attention_for_width(model, EAGER_MAX_WIDTH + 1)
    assert model.config._attn_implementation == "sdpa"
    train_file, _ = caesar_data
    runs = {attn: train_run(tiny_config(tmp_path / attn, train_file, model={"attn_implementation": attn}),
                            progress=False) for attn in ("auto", "eager")}
    assert runs["auto"].losses == runs["eager"].losses  # rows of 128: the same eager attention, step for step
