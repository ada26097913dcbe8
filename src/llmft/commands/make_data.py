"""`llmft make-data RECIPE [options]`: one sub-command per registered recipe."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from llmft.core.bounds import at_least, between, out_of_range
from llmft.core.errors import LlmftError
from llmft.core.writes import guarded_writes

COMMON_BOUNDS = {"seed": between(0, 2**32 - 1), "show": at_least(0)}


class RecipeCommands(click.Group):
    """Sub-commands built from the recipe registry, so a new recipe needs no change here."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from llmft.recipes.base import load_all

        return sorted(load_all())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        from llmft.recipes.base import RECIPES, load_all

        load_all()
        if name not in RECIPES:
            return None
        return _recipe_command(RECIPES[name])


def _recipe_command(recipe: Any) -> click.Command:
    params = list(recipe.make_data_params()) + [
        click.Option(["--out"], type=click.Path(file_okay=False), default=None,
                     help="Output folder (default: the recipe's folder under data/)."),
        click.Option(["--seed"], type=int, default=0, show_default=True, help="Random seed."),
        click.Option(["--show"], type=int, default=0, metavar="N",
                     help="Print N tokenised training examples: trained tokens green (or [[in brackets]])."),
        click.Option(["--config", "show_config"], type=click.Path(dir_okay=False), default=None,
                     help="With --show: tokenise as this recipe TOML would (its tokenizer and tokens)."),
        click.Option(["--overwrite"], is_flag=True,
                     help="Replace existing files llmft did not write (an input is never overwritten)."),
    ]

    def run(out: str | None, seed: int, show: int, show_config: str | None, overwrite: bool,
            **options: Any) -> None:
        flags = {p.name: p.opts[0] for p in params}
        errors = out_of_range({**options, "seed": seed, "show": show}, {**recipe.option_bounds, **COMMON_BOUNDS},
                              lambda key: flags[key])
        if errors:
            raise LlmftError("; ".join(errors))
        # Every option naming an existing file is an input: nothing may be written over it.
        inputs = [value for value in options.values() if _is_file(value)]
        with guarded_writes(inputs, overwrite):
            paths = recipe.make_data(Path(out) if out else None, seed, **options)
        for split, path in paths.items():
            click.echo(f"{split}: {path} ({_count_lines(path):,} records)")
        if show:
            if "train" not in paths:
                raise LlmftError(f"--show prints training examples, but this make-data {recipe.name} call wrote none "
                                 f"({', '.join(paths)})")
            _show(recipe, paths["train"], show, show_config)

    example = recipe.example or f"llmft make-data {recipe.name} --show 3"
    return click.Command(recipe.name, callback=run, params=params, help=recipe.summary, short_help=recipe.summary,
                         epilog=f"Example: {example}")


def _is_file(value: Any) -> bool:
    """Whether an option's value names an existing file (a long text option is not a path)."""
    if not isinstance(value, str) or not value or "\n" in value:
        return False
    try:
        return Path(value).is_file()
    except OSError:
        return False


def _count_lines(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def _show(recipe: Any, train_path: Path, count: int, config_file: str | None) -> None:
    """Print the first `count` training examples tokenised exactly as `llmft train` would (same tokenizer
    builder, same recipe rule, same file): with --config, as that TOML's run; else with the defaults."""
    from llmft.core.inspect import render_example
    from llmft.core.model_setup import build_tokenizer, training_examples
    from llmft.recipes.base import load_recipe_config, recipe_config

    if config_file:
        config, owner = load_recipe_config(config_file, [f"data.train={json.dumps(str(train_path))}"])
        if owner.name != recipe.name:
            raise LlmftError(f"--config {config_file} is for recipe '{config.recipe}', not '{recipe.name}'")
    else:
        config = recipe_config({"recipe": recipe.name, "data": {"train": str(train_path)}})
    tokenizer = build_tokenizer(config, recipe)
    color = sys.stdout.isatty()
    for index, example in enumerate(training_examples(config, recipe, tokenizer, limit=count)):
        click.echo(f"--- example {index + 1}: {len(example)} tokens, {example.trained} trained "
                   f"({'green' if color else '[[bracketed]]'})")
        click.echo(render_example(tokenizer, example, color))


make_data_group = RecipeCommands(
    "make-data",
    help="Write a recipe's training and evaluation data as JSONL.\n\n"
         "\b\nllmft make-data retuning --task addition --format recursive --min-size 3 --max-size 5 --n 20000 "
         "--no-resample\nllmft make-data sft --toy reverse --n 2000 --show 2",
)
