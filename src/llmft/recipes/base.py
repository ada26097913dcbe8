"""The recipe contract and the registry recipes add themselves to.

`Recipe` is a Protocol (torchtune's shape: a recipe is a set of hooks, not a base of shared code), but a
recipe class subclasses it explicitly to inherit the defaults of the hooks most recipes need not write.
Only `commands/` look recipes up; core receives the recipe object.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import click

from llmft.core.errors import LlmftError, did_you_mean

if TYPE_CHECKING:
    from llmft.core.bounds import Range
    from llmft.core.config import Config
    from llmft.core.data import TokenizedExample
    from llmft.core.generation import Decoded, Generator, Sampling


class Recipe(Protocol):
    """What a paper's package provides to the commands, the trainer, the evaluator and the server.

    Recipe modules import no torch at import time.
    """

    name: str
    summary: str  # one line, shown by `llmft make-data --help`
    example: str = ""  # a `llmft make-data <name> ...` line that works offline (the sub-command's --help)
    config_section: type | None = None  # dataclass of the recipe's own TOML section `[<name>]`
    option_bounds: dict[str, Range] = {}  # ranges of the make-data options, by parameter name
    decode_options: bool = False  # whether `decode` reads request options (serve's `llmft` field)
    # Whether `decode`'s text is what one `generate` call writes per prompt (serve then streams it per token).
    decode_streams: bool = True

    def make_data_params(self) -> list[click.Parameter]:
        """Extra options of `llmft make-data <name>` (`--out`, `--seed`, `--show` are added by the CLI)."""
        return []

    def make_data(self, out: Path | None, seed: int, **options: Any) -> dict[str, Path]:
        """Write the recipe's JSONL files under `out` (None = its default folder); return {split: path}."""
        ...

    def special_tokens(self, config: Config) -> list[str]:
        """Tokens the recipe adds to the tokenizer (their embedding rows train)."""
        return []

    def token_init(self, config: Config, tokenizer: Any) -> dict[str, list[int]]:
        """{added token: token ids} whose input/output rows (averaged) a new token's rows start from;
        {} = core's default (the mean of all old rows)."""
        return {}

    def tokenize(self, record: dict, tokenizer: Any, config: Config) -> TokenizedExample | None:
        """Recipe-specific tokenisation with its loss mask, or None for core's prompt/completion/text rule."""
        return None

    def needs_model(self, config: Config) -> bool:
        """Whether `evaluate` reads the model itself (losses, probes), which only the HF backend exposes."""
        return False

    def evaluate(self, generator: Generator, config: Config, eval_dir: Path, **options: Any) -> dict:
        """Run the paper's evaluation, write results.jsonl and plots into eval_dir, return metrics."""
        ...

    def decode(self, generator: Generator, prompts: Sequence[str], config: Config, sampling: Sampling,
               **options: Any) -> list[Decoded]:
        """What a user of the trained model gets for each prompt (serve); plain generation by default.

        `options` are recipe-specific request switches (serve's `llmft` request field), e.g. recursion=False.
        """
        from llmft.core.generation import Decoded

        return [Decoded(text) for text in generator.generate(list(prompts), **sampling.kwargs())]

    def compare(self, metrics_by_run: dict[str, dict], out_dir: Path) -> Path | None:
        """A plot comparing several evaluated runs (`llmft eval --adapter A --adapter B`), or None."""
        return None

    def report(self, metrics_by_run: dict[str, dict]) -> str:
        """A recipe's own table printed after `llmft eval`'s metrics table ("" = none)."""
        return ""

    def section(self, config: Config) -> Any:
        """The run's typed `[<name>]` section (its defaults when the config has none)."""
        if self.config_section is None:
            return None
        if isinstance(config.section, self.config_section):
            return config.section
        if config.section is None:
            return self.config_section()
        raise LlmftError(f"config section [{self.name}] was not read as {self.config_section.__name__}; "
                         "load the config with llmft.recipes.base.load_recipe_config")


RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Add a recipe to the registry under its name."""
    RECIPES[recipe.name] = recipe
    return recipe


def load_all() -> dict[str, Recipe]:
    """Import every recipe package so each registers itself."""
    import llmft.recipes  # noqa: F401  (its __init__ imports the recipe packages)

    return RECIPES


def get_recipe(name: str) -> Recipe:
    """The registered recipe called `name`; an unknown name is a user error with a suggestion."""
    load_all()
    if name not in RECIPES:
        known = ", ".join(sorted(RECIPES))
        raise LlmftError(f"unknown recipe '{name}'{did_you_mean(name, RECIPES)}; known recipes: {known}")
    return RECIPES[name]


def section_types() -> dict[str, type | None]:
    """{recipe name: its section dataclass} for config loading."""
    return {name: recipe.config_section for name, recipe in load_all().items()}


def load_recipe_config(path: str | Path, overrides: Sequence[str] = ()) -> tuple[Config, Recipe]:
    """A recipe TOML read and validated with its recipe's section, and that recipe."""
    from llmft.core.config import load_config

    config = load_config(path, list(overrides), section_types=section_types())
    return config, RECIPES[config.recipe]


def recipe_config(raw: dict[str, Any], overrides: Sequence[str] = (), source: str = "") -> Config:
    """Like load_recipe_config, from nested data (as read from TOML)."""
    from llmft.core.config import config_from_dict

    return config_from_dict(raw, list(overrides), source=source, section_types=section_types())
