"""A real tiny Re-Tuning run, trained here on 1-3 digit recursive addition, served: the server's recursion
engine answers 3-digit sums it never saw as whole problems (slow: a few minutes of training on CPU)."""

from __future__ import annotations

import random

import pytest

from llmft.commands.serve import served_models
from llmft.recipes.base import get_recipe, recipe_config
from llmft.serve.app import create_app

from ..conftest import train_run
from .conftest import client, serving


@pytest.mark.slow
def test_a_trained_retuning_run_adds_through_server_side_recursion(tmp_path):
    paths = get_recipe("retuning").make_data(tmp_path / "data", 0, task="addition", fmt="recursive", min_size=1,
                                             max_size=3, n=4000, eval_n=2, resample=False)
    config = recipe_config({
        "recipe": "retuning",
        "retuning": {"task": "addition", "format": "recursive"},
        "model": {"name": "tiny", "tokenizer": "char",
                  "tiny": {"hidden_size": 64, "num_layers": 4, "num_heads": 4, "max_position_embeddings": 256}},
        "adapter": {"method": "full"},
        "data": {"train": str(paths["train"]), "packing": "rows", "pack_length": 256},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1500, "batch_size": 16, "learning_rate": 3e-3,
                  "lr_scheduler": "cosine", "warmup_steps": 20, "bf16": "false"},
        "eval": {"max_new_tokens": 24},
    })
    train_run(config, progress=False)
    rng = random.Random(7)
    problems = [(rng.randint(100, 999), rng.randint(100, 999)) for _ in range(20)]
    app = create_app(served_models([f"adder={tmp_path / 'run' / 'final'}"]))
    with serving(app) as url:
        api = client(url)
        done = api.completions.create(model="adder", prompt=[f"{a} + {b}" for a, b in problems])
        first = api.completions.create(model="adder", prompt="123 + 456", extra_body={"llmft": {"recursion": False}})
    right = [c for c, (a, b) in zip(done.choices, problems) if c.text == str(a + b)]
    assert len(right) >= 18, [(c.text, a + b) for c, (a, b) in zip(done.choices, problems)]
    for choice in right:
        trace = choice.model_extra["llmft"]
        assert (trace["recursion"], trace["calls"], trace["depth"], trace["error"]) == (True, 2, 2, "")
        assert trace["transcript"].startswith("Call: ")
    assert first.choices[0].text.startswith("Call: 23 + 56")
