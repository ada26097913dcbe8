"""Shared fixtures: one torch thread, offline hub, tiny configs and data written by the tests themselves."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from llmft.core.config import Config  # noqa: E402
from llmft.core.jsonl import write_jsonl  # noqa: E402
from llmft.recipes.base import get_recipe, recipe_config  # noqa: E402
from llmft.recipes.sft.toys import toy_split  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def saved_figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, str]]:
    """{file name: {"title", "yscale"}} of every matplotlib figure saved while the test runs."""
    from matplotlib.figure import Figure

    saved: dict[str, dict[str, str]] = {}
    save = Figure.savefig

    def recording_savefig(figure: Figure, path: object, **kwargs: object) -> None:
        axes = figure.axes[0]
        saved[Path(str(path)).name] = {"title": axes.get_title(), "yscale": axes.get_yscale()}
        save(figure, path, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    return saved


@pytest.fixture
def caesar_data(tmp_path: Path) -> tuple[Path, Path]:
    """A small learnable prompt/completion task: train and held-out eval JSONL."""
    train, held_out = toy_split("caesar", 1200, 100, seed=1)
    return write_jsonl(tmp_path / "train.jsonl", train), write_jsonl(tmp_path / "eval.jsonl", held_out)


def tiny_config(tmp_path: Path, train_file: Path, eval_file: Path | None = None, **sections: dict) -> Config:
    """An sft config for a tiny from-scratch Llama; `sections` override tables, e.g. train={...}."""
    raw: dict = {
        "recipe": "sft",
        "model": {"name": "tiny", "tokenizer": "char", "tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 2}},
        "adapter": {"method": "full"},
        "data": {"train": str(train_file), "eval": str(eval_file or ""), "pack_length": 128},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 10, "batch_size": 4, "learning_rate": 3e-3,
                  "bf16": "false", "logging_steps": 1},
        "eval": {"max_new_tokens": 12, "batch_size": 64},
    }
    for name, values in sections.items():
        table = raw.setdefault(name, {})
        for key, value in values.items():
            if isinstance(value, dict):
                table.setdefault(key, {}).update(value)
            else:
                table[key] = value
    return recipe_config(raw, source="test")


def fresh_accelerate() -> None:
    """Forget accelerate's process-wide state, so the next training in this process may take another precision."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def train_run(config: Config, **options):
    """The trainer with the config's own recipe, as `llmft train` calls it."""
    from llmft.core.trainer import train

    return train(config, get_recipe(config.recipe), **options)


def eval_run(folder: Path, overrides: list[str] = (), **options):
    """`llmft eval --adapter folder overrides...` as a function: (metrics, eval_dir)."""
    from llmft.core.evaluation import evaluate_folder
    from llmft.recipes.base import load_recipe_config

    config, recipe = load_recipe_config(Path(folder) / "llmft.toml", list(overrides))
    return evaluate_folder(folder, config, recipe, **options)


CHAR_ALPHABET = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789=+<>|\n"


def random_char_llama(hidden_size: int = 64, layers: int = 2):
    """(a char tokenizer over CHAR_ALPHABET, a randomly initialised Llama on it, seed 0) for decode-loop tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmft.core.tokenizers import train_tokenizer

    tokenizer = train_tokenizer([CHAR_ALPHABET], "char")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    return tokenizer, LlamaForCausalLM(config).eval()
