import random

import pytest
import torch

from llmft.core.tokenizers import train_tokenizer
from llmft.recipes.uft.probes import default_layers, fit_probe, probe_accuracy, split_indices, story_states
from llmft.recipes.uft.stories import generate_stories
from llmft.recipes.uft.text import text_record

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    stories = generate_stories(40, random.Random(0))
    records = [text_record(s, random.Random(i)) for i, s in enumerate(stories)]
    tokenizer = train_tokenizer([r["text"] for r in records], "bpe", vocab_size=400)
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval(), tokenizer, records


def test_probe_finds_a_linearly_encoded_feature_and_not_random_labels():
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(400, 16, generator=generator)
    encoded = torch.randint(0, 2, (400,), generator=generator).float()
    states[:, 3] += 3 * (2 * encoded - 1)  # the feature moves the state along one direction
    noise = torch.randint(0, 2, (400,), generator=generator).float()
    labels = torch.stack([encoded, noise], dim=1)
    train, test = split_indices(400, 0.25, seed=0)
    accuracy = fit_probe(states, labels, train, test, steps=300, lr=5e-2)
    assert accuracy[0] > 0.97
    assert 0.35 < accuracy[1] < 0.65


def test_split_is_disjoint_and_seeded():
    train, test = split_indices(10, 0.2, seed=1)
    assert sorted(train + test) == list(range(10)) and len(test) == 2
    assert split_indices(10, 0.2, seed=1) == (train, test)
    assert default_layers(12) == list(range(1, 12)) and default_layers(1) == [1]


def test_story_states_average_the_last_ten_real_tokens(tiny):
    model, tokenizer, _ = tiny
    stories = ["Tom ran to the park and played with a big red ball all day long.", "Sue sat."]
    pooled = story_states(model, tokenizer, stories, layers=[1, 2], batch_size=2)
    assert pooled[1].shape == (2, 32)
    for row, story in enumerate(stories):
        ids = torch.tensor([tokenizer(story)["input_ids"]])
        assert ids[0, 0] == tokenizer.bos_token_id
        with torch.no_grad():
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
        for layer in (1, 2):
            expected = hidden[layer][0, -10:].mean(0)
            assert torch.allclose(pooled[layer][row], expected, atol=1e-5)


def test_probe_accuracy_reports_every_layer_and_feature(tiny):
    model, tokenizer, records = tiny
    accuracy = probe_accuracy(model, tokenizer, records, steps=20, lr=1e-2)
    assert list(accuracy) == [1]  # 2 blocks: after block 1 only, as the reference's n_layers - 1 probes
    assert list(accuracy[1]) == ["Dialogue", "Twist", "BadEnding", "MoralValue", "Foreshadowing", "Conflict"]
    assert all(0.0 <= value <= 1.0 for value in accuracy[1].values())
    # 8 test stories: every accuracy is a multiple of 1/8.
    assert all(abs(value * 8 - round(value * 8)) < 1e-6 for value in accuracy[1].values())
