"""`llmft recipes`: the installed recipes and the preset TOMLs, one line each."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from llmft.core.config import DEFAULT_RECIPE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def preset_dir() -> Path:
    """./recipes when it exists (a clone or your own presets), else the presets beside the installed package."""
    here = Path("recipes")
    if here.is_dir() and any(here.glob("*.toml")):
        return here
    return Path(__file__).resolve().parents[3] / "recipes"


def describe_preset(path: Path) -> tuple[str, str, str]:
    """(recipe, command, description) of a preset: its `recipe` key, first comment line, next comment line."""
    text = path.read_text(encoding="utf-8")
    comments = [line[1:].strip() for line in text.splitlines() if line.startswith("#")]
    command = comments[0] if comments else ""
    paragraph: list[str] = []
    for comment in comments[1:]:
        if not comment and paragraph:
            break
        if comment:
            paragraph.append(comment)
    description = _first_sentence(" ".join(paragraph))
    try:
        recipe = str(tomllib.loads(text).get("recipe", DEFAULT_RECIPE))
    except tomllib.TOMLDecodeError:
        recipe = "?"
    return recipe, command, description


def _first_sentence(text: str, limit: int = 110) -> str:
    """The text up to its first full stop, shortened at a comma or space to `limit` characters."""
    end = text.find(". ")
    sentence = text[:end + 1] if end >= 0 else text
    if len(sentence) <= limit:
        return sentence
    cut = sentence.rfind(", ", 0, limit)
    cut = cut if cut > limit // 2 else sentence.rfind(" ", 0, limit)
    return sentence[:cut].rstrip(",;:") + " ..."


@click.command("recipes")
@click.option("--commands", "show_commands", is_flag=True, help="Show each preset's full command instead.")
def recipes_command(show_commands: bool) -> None:
    """List the recipes and their preset TOMLs (what each is for, or with --commands how to run it).

    \b
    llmft recipes
    llmft recipes --commands
    """
    from llmft.recipes.base import load_all

    recipes = load_all()
    folder = preset_dir()
    presets = [(path, *describe_preset(path)) for path in sorted(folder.glob("*.toml"))]
    shown = Path("recipes") if folder == Path("recipes") else folder
    width = max([2 + len(str(shown / p.name)) for p, *_ in presets] + [len(n) for n in recipes] + [8])
    for name, recipe in sorted(recipes.items()):
        click.echo(f"{name:<{width}}  {recipe.summary}")
        for path, owner, command, description in presets:
            if owner == name:
                click.echo(f"  {str(shown / path.name):<{width - 2}}  {command if show_commands else description}")
    orphans = [p for p, owner, *_ in presets if owner not in recipes]
    for path in orphans:
        click.echo(f"{str(shown / path.name):<{width}}  (recipe not installed)")
