"""The hand-written Llama forward: its logits are the model's own forward's, bit for bit, for a padded prefill
and step after step; models it does not reproduce exactly (adapters, biases, hooks) are left to the model."""

from __future__ import annotations

import pytest
import torch

from llmft.core.continuous import kv_cache
from llmft.core.continuous.llama_step import LlamaStep
from tests.conftest import random_char_llama


@pytest.fixture(scope="module")
def model():
    return random_char_llama()[1]


def test_step_logits_equal_the_model_forward_with_padded_rows(model):
    step = LlamaStep.for_model(model)
    assert step is not None
    torch.manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding, as the engine's running batch has
    mask[2, :7] = 0
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    theirs, ours = kv_cache.new_cache(), kv_cache.new_cache()
    with torch.inference_mode():
        expected = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=theirs,
                         use_cache=True, logits_to_keep=1).logits[:, -1].float()
        assert torch.equal(step(ids, positions, mask, ours), expected)  # the prefill
        token, position = ids[:, -1:], positions[:, -1:]
        for _ in range(12):
            mask = torch.cat([mask, mask.new_ones((3, 1))], dim=1)
            position = position + 1
            past = theirs.get_seq_length()
            expected = model(input_ids=token, attention_mask=mask, position_ids=position, cache=theirs,
                             use_cache=True, cache_position=torch.arange(past, past + 1)).logits[:, -1].float()
            got = step(token, position, mask, ours)
            assert torch.equal(got, expected)
            token = expected.argmax(-1, keepdim=True)
    assert ours.get_seq_length() == theirs.get_seq_length() == 9 + 12


def test_models_it_does_not_reproduce_go_through_their_forward(model):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{**model.config.to_dict(), "attention_bias": True})
    assert LlamaStep.for_model(LlamaForCausalLM(config)) is None  # biased projections
    lora = get_peft_model(random_char_llama()[1], LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert LlamaStep.for_model(lora) is None  # an adapter wraps the model
    assert LlamaStep.for_model(lora.get_base_model()) is None  # and its Linear layers
    hooked = random_char_llama()[1]
    hooked.register_forward_hook(lambda *args: None)
    assert LlamaStep.for_model(hooked) is None
