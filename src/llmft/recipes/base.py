"""The recipe contract (a Protocol, not a base class) and the registry recipes add themselves to."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import click

from llmft.core.errors import LlmftError, did_you_mean

if TYPE_CHECKING:
    from llmft.core.config import Config
    from llmft.core.data import TokenizedExample
    from llmft.core.generation import Generator


class Recipe(Protocol):
    """What a paper's package provides. Recipe modules import no torch at import time."""

    name: str
    summary: str
    # Dataclass for the recipe's own TOML section `[<name>]`, or None.
    config_section: type | None
    # Extra click options for `llmft make-data <name>`; `--out`, `--seed` and `--show` are added by the CLI.
    make_data_params: list[click.Parameter]

    def make_data(self, out: Path, seed: int, **options: Any) -> dict[str, Path]:
        """Write the recipe's JSONL files under `out`; return {split name: path}."""
        ...

    def special_tokens(self, config: Config) -> list[str]:
        """Tokens the recipe adds to the tokenizer (their embeddings train with prompt tuning)."""
        ...

    def tokenize(self, record: dict, tokenizer: Any, config: Config) -> TokenizedExample | None:
        """Recipe-specific tokenisation with loss mask, or None to use core's prompt/completion/text rule."""
        ...

    def evaluate(self, generator: Generator, config: Config, eval_dir: Path, **options: Any) -> dict:
        """Run the paper's evaluation, write results.jsonl and plots into eval_dir, return metrics."""
        ...


RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Add a recipe to the registry under its name."""
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    """The registered recipe called `name`; an unknown name is a user error with a suggestion."""
    load_all()
    if name not in RECIPES:
        known = ", ".join(sorted(RECIPES))
        raise LlmftError(f"unknown recipe '{name}'{did_you_mean(name, RECIPES)}; known recipes: {known}")
    return RECIPES[name]


def load_all() -> dict[str, Recipe]:
    """Import every recipe package so each registers itself."""
    import llmft.recipes  # noqa: F401  (its __init__ imports the recipe packages)

    return RECIPES


