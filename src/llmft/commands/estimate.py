"""`llmft estimate --adapter META_RUN [estimate.key=value ...]`."""

from __future__ import annotations

import click


@click.command("estimate")
@click.option("--adapter", "folder", required=True, type=click.Path(),
              help="The meta-initialisation: a run's final/ or checkpoint-N/ trained on all the data.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: <run>/estimate/<folder>); the gradient cache lives there too.")
@click.argument("overrides", nargs=-1)
def estimate_command(folder: str, out: str | None, overrides: tuple[str, ...]) -> None:
    """Estimate fine-tuning the run on data subsets without training (GradEx); rank the data groups.

    \b
    llmft estimate --adapter runs/meta/final estimate.group_by=task
    llmft estimate --adapter runs/meta/final estimate.group_by=task estimate.number_of_subsets=100 \\
        estimate.project_dimension=400 estimate.scale=0.1
    llmft estimate --adapter runs/meta/final estimate.group_by=task 'estimate.subsets=[["add","sort"]]'
    """
    from pathlib import Path

    from llmft.core import runs
    from llmft.core.inference import read_run_config
    from llmft.estimate.run import run_estimate
    from llmft.recipes.base import load_recipe_config

    read_run_config(folder)  # a clear error for a missing or foreign folder
    config, recipe = load_recipe_config(Path(folder) / runs.CONFIG_NAME, overrides)
    _, out_dir = run_estimate(folder, config, recipe, out)
    click.echo((out_dir / "table.txt").read_text().rstrip())
    click.echo(f"results in {out_dir}")
