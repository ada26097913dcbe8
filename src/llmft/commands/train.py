"""`llmft train RECIPE.toml [key=value ...]`."""

from __future__ import annotations

import click

from llmft.core.config import config_to_toml
from llmft.recipes.base import load_recipe_config


@click.command("train")
@click.argument("config_file", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Print the resolved config and exit.")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in train.output_dir.")
@click.option("--overwrite", is_flag=True, help="Replace a finished or started run in train.output_dir.")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs still go to metrics.jsonl).")
def train_command(config_file: str, overrides: tuple[str, ...], dry_run: bool, resume: bool, overwrite: bool,
                  no_progress: bool) -> None:
    """Fine-tune (LoRA, QLoRA, prompt tuning, full) or pretrain as a recipe TOML says.

    \b
    llmft train recipes/sft-tiny.toml train.learning_rate=1e-3 train.max_steps=200
    llmft train recipes/sft-tiny.toml --resume
    torchrun --nproc_per_node 2 -m llmft train recipes/sft-tiny.toml      # 2 CPU processes
    accelerate launch -m llmft train recipes/squad-llama3.toml            # GPUs
    """
    config, recipe = load_recipe_config(config_file, list(overrides))
    if dry_run:
        click.echo(config_to_toml(config), nl=False)
        return
    from llmft.core.trainer import train

    result = train(config, recipe, resume=resume, overwrite=overwrite, progress=not no_progress)
    if not result.main:
        return  # under torchrun/accelerate the main process reports
    held_out = f", held-out loss {result.eval_losses[max(result.eval_losses)]:.4f}" if result.eval_losses else ""
    click.echo(f"trained {result.steps} steps, final loss {result.final_loss:.4f}{held_out} -> "
               f"{result.output_dir}/final (summary: {result.output_dir}/summary.md)")
