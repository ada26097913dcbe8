"""`llmft eval --adapter DIR [--adapter DIR ...] [key=value ...]`."""

from __future__ import annotations

from pathlib import Path

import click

from llmft.core import runs


@click.command("eval")
@click.option("--adapter", "folders", multiple=True, required=True, type=click.Path(),
              help="A run's final/ or checkpoint-N/ folder (or an export); repeat to compare runs.")
@click.option("--backend", type=click.Choice(["hf", "vllm"]), default=None, help="Generation backend.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: <run>/eval/<folder>); with several runs, the comparison plot's folder.")
@click.option("--overwrite", is_flag=True, help="Discard earlier results in the output folder instead of resuming.")
@click.argument("overrides", nargs=-1)
def eval_command(folders: tuple[str, ...], backend: str | None, out: str | None, overwrite: bool,
                 overrides: tuple[str, ...]) -> None:
    """Run the recipe's own evaluation; writes results.jsonl, metrics.json and plots, prints a table.

    \b
    llmft eval --adapter runs/sft-tiny/final
    llmft eval --adapter runs/sft-tiny/final eval.max_examples=50 eval.batch_size=32
    llmft eval --adapter runs/sft-tiny/final --adapter runs/sft-lr1e-3/final --out compare/
    """
    from llmft.core.evaluation import evaluate_folder, metrics_table
    from llmft.core.inference import read_run_config
    from llmft.recipes.base import load_recipe_config

    extra = list(overrides) + ([f"eval.backend={backend!r}".replace("'", '"')] if backend else [])
    results: dict[str, dict] = {}
    recipes = []
    for folder in folders:
        read_run_config(folder)  # a clear error for a missing or foreign folder
        config, recipe = load_recipe_config(Path(folder) / runs.CONFIG_NAME, extra)
        metrics, eval_dir = evaluate_folder(folder, config, recipe, out if len(folders) == 1 else None,
                                            overwrite=overwrite)
        label = f"{Path(folder).parent.name}/{Path(folder).name}"
        results[label] = metrics
        recipes.append(recipe)
        click.echo(f"{label}: results in {eval_dir}")
    one_recipe = len({recipe.name for recipe in recipes}) == 1
    report = recipes[0].report(results) if one_recipe else ""
    click.echo(metrics_table(results, nested=not report))
    if report:
        click.echo(report)
    if len(folders) > 1:
        compare_dir = Path(out or "eval-compare")
        compare_dir.mkdir(parents=True, exist_ok=True)
        runs.atomic_write_text(compare_dir / "metrics.txt", metrics_table(results) + "\n"
                               + (f"\n{report}\n" if report else ""))
        click.echo(f"comparison table: {compare_dir / 'metrics.txt'}")
        if not one_recipe:
            click.echo("no comparison plot: the runs come from different recipes")
            return
        plot = recipes[0].compare(results, compare_dir)
        if plot is not None:
            click.echo(f"comparison plot: {plot}")
