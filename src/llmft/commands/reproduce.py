"""`llmft reproduce PAPER`: a paper's miniature, over seeds, as one command that writes DIR/report.md."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from llmft.core.errors import LlmftError
from llmft.reproduce.plan import Settings

PAPER_NAMES = ["retuning", "squad", "uft", "memreason", "cot-teacher", "estimate"]


def parse_seeds(text: str) -> list[int]:
    """`0,1,2` -> [0, 1, 2]; anything else is a one-line error."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise LlmftError(f"--seeds: expected comma-separated integers like 0,1,2, got '{text}'") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise LlmftError(f"--seeds: expected distinct non-negative integers like 0,1,2, got '{text}'")
    return seeds


@click.command("reproduce")
@click.argument("paper", type=click.Choice(PAPER_NAMES))
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--seeds", default="0,1,2", show_default=True, help="Seeds to run, comma-separated.")
@click.option("--quick", is_flag=True, help="Fewer steps: the shape of every claim in minutes (CPU).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for data, runs and report.md (default: reproduce/PAPER, reproduce/PAPER-quick).")
@click.option("--preset", type=click.Choice(["tiny", "paper"]), default="tiny", show_default=True,
              help="tiny: the CPU presets; paper: the paper-size model presets (needs a GPU).")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Stages run at once, each training on one torch thread unless it runs alone (default: the "
                   "usable cores; 1: one after another).")
def reproduce_command(paper: str, overrides: tuple[str, ...], seeds: str, quick: bool, out: str | None,
                      preset: str, jobs: int | None) -> None:
    """Run a paper's miniature over seeds and write DIR/report.md beside the paper's figures.

    \b
    llmft reproduce memreason --quick                  # fewer steps: the shape of each claim
    llmft reproduce cot-teacher --seeds 0,1,2          # the full miniature, the report the README cites
    llmft reproduce retuning --quick train.bf16=false  # KEY=VALUE goes to every training stage
    llmft reproduce uft --quick --jobs 1               # one stage at a time, torch's own threads

    A killed run resumes: rerun the same command and every finished stage is skipped.
    """
    bad = [item for item in overrides if "=" not in item]
    if bad:
        raise LlmftError(f"expected KEY=VALUE, got '{bad[0]}'")
    folder = Path(out) if out else Path("reproduce") / (paper + ("-quick" if quick else ""))
    from llmft.reproduce.runner import default_jobs

    settings = Settings(out=folder, seeds=parse_seeds(seeds), quick=quick, preset=preset, overrides=overrides,
                        jobs=jobs or default_jobs())
    if preset == "paper":
        _require_gpu()
    _check_same_settings(settings, paper)
    _run(paper, settings)


def _require_gpu() -> None:
    import torch

    if not torch.cuda.is_available():
        raise LlmftError("--preset paper trains the paper-size models and needs a CUDA GPU; this machine has "
                         "none (leave --preset out for the CPU presets)")


def _check_same_settings(settings: Settings, paper: str) -> None:
    """A folder holds one plan: rerunning with other settings would mix runs, so it is an error."""
    from llmft.core.runs import atomic_write_json

    wanted = {"paper": paper, "seeds": list(settings.seeds), "quick": settings.quick,
              "preset": settings.preset, "overrides": list(settings.overrides)}
    path = settings.out / "settings.json"
    if path.exists():
        found = json.loads(path.read_text(encoding="utf-8"))
        if found != wanted:
            raise LlmftError(f"--out {settings.out} holds a run with other settings ({path}: {found}); "
                             "rerun with those or choose another --out")
    else:
        atomic_write_json(path, wanted)


def _run(paper: str, settings: Settings) -> None:
    from llmft.reproduce.papers import build_plan
    from llmft.reproduce.report import write_report
    from llmft.reproduce.runner import run_stages

    plan = build_plan(paper, settings)
    click.echo(f"{plan.title}: {len(plan.stages)} stages into {settings.out}, up to {settings.jobs} at once")
    records = run_stages(plan.stages, settings.out, echo=lambda line: click.echo(line, err=True), jobs=settings.jobs)
    tables = plan.collect(settings.out)
    plots = plan.draw(tables, settings.out / "plots")
    command = shlex.join(["llmft", "reproduce", *sys.argv[sys.argv.index(paper):]]) if paper in sys.argv else \
        f"llmft reproduce {paper}"
    report = write_report(plan, settings, tables, plots, records, command)
    click.echo(f"report: {report}")
