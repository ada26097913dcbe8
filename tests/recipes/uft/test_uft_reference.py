"""uft against its reference (RobertKirk/tinystories-wrappers @5c3ccbe): probe training as
base91M_tw_probe_aws.py, the judge's cached shots, and the GPU presets' optimizer."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from llmft.core.errors import LlmftError
from llmft.core.tokenizers import train_tokenizer
from llmft.recipes.base import load_recipe_config
from llmft.recipes.uft.judge import (
    FEW_SHOT_PROMPT,
    QUESTIONS,
    Shot,
    cached_shots,
    classifier_prompt,
    shots_text,
)
from llmft.recipes.uft.probes import REFERENCE_BETAS, REFERENCE_WEIGHT_DECAY, probe_accuracy

REPO = Path(__file__).resolve().parents[3]


class CueModel(torch.nn.Module):
    """A stand-in for a frozen model whose states mark the cue character '#' (dimension 0) next to a
    constant (dimension 1, which lets a bias-free probe set its threshold) and noise; it counts the rows
    it reads."""

    def __init__(self, cue_id: int):
        super().__init__()
        self.cue_id = cue_id
        self.config = SimpleNamespace(num_hidden_layers=2)
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.rows = 0

    def forward(self, input_ids, attention_mask, output_hidden_states):
        self.rows += input_ids.shape[0]
        generator = torch.Generator().manual_seed(int(input_ids.sum()))
        states = torch.randn(*input_ids.shape, 6, generator=generator) * 0.1
        states[..., 0] = (input_ids == self.cue_id).float() * 10
        states[..., 1] = -1.0
        return SimpleNamespace(hidden_states=[states, states, states])


def _records(n: int, rng: random.Random) -> list[dict]:
    records = []
    for index in range(n):
        twist = rng.random() < 0.5
        story = f"Story {index} went on{' ' + '#' * 3 if twist else ''}."
        features = (["Twist"] if twist else []) + (["Dialogue"] if rng.random() < 0.5 else [])
        records.append({"text": f"Features: \nStory: {story}", "story_features": features})
    return records


def test_reference_probe_training_reads_fresh_stories_and_learns_the_cue():
    rng = random.Random(0)
    train, test = _records(640, rng), _records(64, rng)
    tokenizer = train_tokenizer([r["text"] for r in train + test], "char")
    model = CueModel(tokenizer.convert_tokens_to_ids("#"))
    accuracy = probe_accuracy(model, tokenizer, test, layers=[1], features=["Twist", "Dialogue"], steps=40,
                              lr=0.1, training="reference", train_records=train, probe_batch=16)
    assert model.rows == 64 + 40 * 16  # the test states once, then 16 new stories a step: each read once
    assert accuracy[1]["Twist"] >= 0.95
    assert accuracy[1]["Dialogue"] < 0.8  # a label the states do not carry stays near chance


def test_full_batch_probes_can_train_on_their_own_set_too():
    rng = random.Random(2)
    train, test = _records(200, rng), _records(50, rng)
    tokenizer = train_tokenizer([r["text"] for r in train + test], "char")
    model = CueModel(tokenizer.convert_tokens_to_ids("#"))
    accuracy = probe_accuracy(model, tokenizer, test, layers=[1], features=["Twist"], steps=100, lr=0.1,
                              training="full-batch", train_records=train)
    assert model.rows == 250 and accuracy[1]["Twist"] >= 0.95


def test_reference_probe_optimizer_is_llama2c_adamw(monkeypatch):
    seen = {}
    original = torch.optim.AdamW

    def recording(params, **kwargs):
        seen.update(kwargs)
        return original(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", recording)
    rng = random.Random(1)
    records = _records(40, rng)
    tokenizer = train_tokenizer([r["text"] for r in records], "char")
    probe_accuracy(CueModel(tokenizer.convert_tokens_to_ids("#")), tokenizer, records, layers=[1], steps=2,
                   training="reference", probe_batch=8)
    assert (seen["betas"], seen["weight_decay"], seen["lr"]) == ((0.9, 0.95), 0.1, 1e-3)
    assert (REFERENCE_BETAS, REFERENCE_WEIGHT_DECAY) == ((0.9, 0.95), 0.1)


def test_cached_shots_are_read_as_the_reference_reads_shots_txt():
    """make_shots(from_cache=True): the first 2 x n blank-line-separated blocks of shots.txt, rejoined."""
    shots = [Shot("A frog became a prince.", "The frog turns out to be a prince.", True),
             Shot("Sam ran home.\n\nHe slept.", "Sam runs home.", False)]
    text = shots_text(shots)
    assert text == ("\n<story>\nA frog became a prince.\n</story>\n<reasoning>The frog turns out to be a prince."
                    "</reasoning>\n<answer>Yes</answer>\n\n<story>\nSam ran home.\n\nHe slept.\n</story>\n"
                    "<reasoning>Sam runs home.</reasoning>\n<answer>No</answer>\n")
    # The second story's blank line splits it: with n = 1 the reference keeps the first shot and half the second.
    assert cached_shots(text, 1) == text.split("\n\n")[0] + "\n\n" + text.split("\n\n")[1]
    assert cached_shots(text, 1).endswith("<story>\nSam ran home.")
    assert cached_shots(text, 2) == text  # three blocks: all kept
    prompt = classifier_prompt("Tom met a dragon.", "Twist", examples=cached_shots(text, 1))
    question = QUESTIONS["Twist"]
    assert prompt == FEW_SHOT_PROMPT.format(question=question, shots=cached_shots(text, 1), story="Tom met a dragon.")


def test_make_judge_uses_the_shots_file(tmp_path):
    from llmft.recipes.uft.evaluate import make_judge
    from llmft.recipes.uft.recipe import UftConfig

    shots = tmp_path / "shots.txt"
    shots.write_text("one\n\ntwo\n\nthree\n\nfour\n\nfive", encoding="utf-8")
    section = UftConfig(judge="endpoint", judge_url="http://127.0.0.1:9", judge_shots_file=str(shots),
                        judge_key_env="")
    assert make_judge(section).shots_text == "one\n\ntwo\n\nthree\n\nfour"
    with pytest.raises(LlmftError, match="judge_shots_file: file not found"):
        make_judge(UftConfig(judge="endpoint", judge_url="http://x", judge_shots_file=str(tmp_path / "no")))


@pytest.mark.parametrize("name", ["uft-pretrain-8m", "uft-pretrain-30m", "uft-pretrain-91m", "uft-deletion",
                                  "uft-recovery"])
def test_gpu_presets_use_llama2c_betas_and_reference_probes(name):
    config, _ = load_recipe_config(REPO / "recipes" / f"{name}.toml")
    assert (config.train.adam_beta1, config.train.adam_beta2) == (0.9, 0.95)
    assert (config.train.weight_decay, config.train.max_grad_norm) == (0.1, 1.0)
    if config.section.probes:
        section = config.section
        assert (section.probe_training, section.probe_batch, section.probe_steps, section.probe_lr) == \
            ("reference", 128, 2000, 1e-3)
        assert section.probe_train_set.endswith("pretrain-all/train.jsonl") and section.probe_examples == 1280
