"""`llmft train RECIPE.toml [key=value ...]`."""

from __future__ import annotations

from pathlib import Path

import click

from llmft.core import runs
from llmft.core.checkpoints import changed_keys
from llmft.core.config import Config, config_to_toml
from llmft.core.errors import LlmftError
from llmft.recipes.base import load_recipe_config


@click.command("train")
@click.argument("config_file", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Print the resolved config and exit.")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in train.output_dir.")
@click.option("--overwrite", is_flag=True, help="Replace a finished or started run in train.output_dir.")
@click.option("--allow-changes", is_flag=True,
              help="With --resume: accept overrides that change training (learning rate, data, batch size...).")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs still go to metrics.jsonl).")
def train_command(config_file: str, overrides: tuple[str, ...], dry_run: bool, resume: bool, overwrite: bool,
                  allow_changes: bool, no_progress: bool) -> None:
    """Fine-tune (LoRA, QLoRA, prompt tuning, full) or pretrain as a recipe TOML says.

    \b
    llmft train recipes/sft-tiny.toml train.learning_rate=1e-3 train.max_steps=200
    llmft train recipes/sft-tiny.toml --resume
    torchrun --nproc_per_node 2 -m llmft train recipes/sft-tiny.toml      # 2 CPU processes
    accelerate launch -m llmft train recipes/squad-llama3.toml            # GPUs
    """
    if resume and overwrite:
        raise LlmftError("--resume and --overwrite contradict each other; pass one")
    config, recipe = load_recipe_config(config_file, list(overrides))
    if resume:
        config = _resumed_config(config, list(overrides), allow_changes)
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


def _resumed_config(given: Config, overrides: list[str], allow_changes: bool) -> Config:
    """--resume continues the run as it was started: its saved llmft.toml plus this command's overrides.

    Overrides that change what trains (not just how long or how often it saves) are refused unless
    --allow-changes; a preset edited since the start is ignored, and said so.
    """
    saved_path = Path(given.train.output_dir) / runs.CONFIG_NAME
    if not saved_path.is_file():
        return given  # nothing started yet: the trainer says there is no checkpoint
    saved, _ = load_recipe_config(saved_path)
    config, _ = load_recipe_config(saved_path, overrides)
    changed = changed_keys(saved, config)
    if changed and not allow_changes:
        raise LlmftError(f"--resume: the run was started with other {', '.join(changed)} ({saved_path}); "
                         "resuming would mix two settings: pass --allow-changes to do it anyway, or start a new run")
    edited = changed_keys(saved, given)
    if edited and not changed:
        click.echo(f"resuming with the run's saved config ({saved_path}); {given.source} now differs in "
                   f"{', '.join(edited)}, which is ignored", err=True)
    return config
