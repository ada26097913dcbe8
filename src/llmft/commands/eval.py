"""`llmft eval --adapter DIR [--adapter DIR ...] [key=value ...]`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("eval")
@click.option("--adapter", "folders", multiple=True, required=True, type=click.Path(),
              help="A run's final/ or checkpoint-N/ folder (or an export); repeat to compare runs.")
@click.option("--backend", type=click.Choice(["hf", "vllm"]), default=None, help="Generation backend.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: <run>/eval/<folder>); with several runs, the comparison plot's folder.")
@click.argument("overrides", nargs=-1)
def eval_command(folders: tuple[str, ...], backend: str | None, out: str | None, overrides: tuple[str, ...]) -> None:
    """Run the recipe's own evaluation; writes results.jsonl, metrics.json and plots, prints a table.

    \b
    llmft eval --adapter runs/sft-tiny/final
    llmft eval --adapter runs/sft-tiny/final eval.max_examples=50 eval.batch_size=32
    llmft eval --adapter runs/add-rec/final --adapter runs/add-base/final --out compare/
    """
    from llmft.core.evaluation import evaluate_folder, metrics_table
    from llmft.recipes.base import get_recipe

    extra = list(overrides) + ([f"eval.backend={backend!r}".replace("'", '"')] if backend else [])
    results: dict[str, dict] = {}
    for folder in folders:
        metrics, eval_dir = evaluate_folder(folder, extra, out if len(folders) == 1 else None)
        label = f"{Path(folder).parent.name}/{Path(folder).name}"
        results[label] = metrics
        click.echo(f"{label}: results in {eval_dir}")
    click.echo(metrics_table(results))
    if len(folders) > 1:
        recipe = get_recipe(next(iter(results.values()))["recipe"])
        if hasattr(recipe, "compare"):
            plot = recipe.compare(results, Path(out or "eval-compare"))
            click.echo(f"comparison plot: {plot}")
