"""`retuning`: Re-Tuning (Pasewark et al., ACL 2024). The model learns to call itself on a smaller problem
(addition, parity, DP); evaluation runs the recursion and reports accuracy by problem size."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from llmft.core.bounds import at_least
from llmft.core.errors import LlmftError
from llmft.core.jsonl import write_jsonl
from llmft.recipes.base import Recipe
from llmft.recipes.retuning.config import RetuningConfig
from llmft.recipes.retuning.data import FORMATS, TASKS, TRAIN_SIZES, eval_records, training_records

if TYPE_CHECKING:
    from llmft.core.config import Config
    from llmft.core.generation import Decoded, Generator, Sampling


# What `make-data retuning` without --n writes (measured at the defaults), said before the long silent write.
FULL_SET_NOTE = {"addition": "304,000 pairs, 3.68M rows after resampling, ~540 MB, about a minute",
                 "parity": "250,000 lists of up to 21 bits", "dp": "every array of length 2-5"}


class RetuningRecipe(Recipe):
    name = "retuning"
    example = ("llmft make-data retuning --task addition --format recursive --min-size 3 --max-size 5 --n 20000 "
               "--no-resample --show 1")
    summary = "Re-Tuning (Pasewark et al. 2024): recursive addition, parity and DP; accuracy by size."
    config_section = RetuningConfig
    option_bounds = {"min_size": at_least(0), "max_size": at_least(0), "eval_max_size": at_least(0), "n": at_least(0),
                     "eval_n": at_least(1)}
    decode_options = True  # recursion=False
    decode_streams = False  # the text is the recursion's final answer

    def make_data_params(self) -> list[click.Parameter]:
        return _make_data_options()

    def make_data(self, out: Path | None, seed: int, task: str = "addition", fmt: str = "recursive",
                  min_size: int = 0, max_size: int = 0, n: int = 0, eval_n: int = 100,
                  resample: bool = True, eval_max_size: int = 0) -> dict[str, Path]:
        low, high = TRAIN_SIZES[task]
        min_size, max_size = min_size or low, max_size or high
        if not 1 <= min_size <= max_size:
            raise LlmftError("make-data retuning: need 1 <= --min-size <= --max-size, "
                             f"got {min_size} and {max_size}")
        eval_max_size = eval_max_size or 2 * max_size
        if eval_max_size < max_size:
            raise LlmftError(f"make-data retuning: --eval-max-size ({eval_max_size}) must be >= --max-size "
                             f"({max_size})")
        if not n and (min_size, max_size) == (low, high) and resample:
            click.echo(f"make-data retuning: no --n, so this writes the reference's full GPU-size {task} set "
                       f"({FULL_SET_NOTE.get(task, 'every problem')}); for a CPU run pass e.g. "
                       "--max-size 5 --n 20000", err=True)
        try:
            train = training_records(task, fmt, random.Random(seed), min_size, max_size, n, resample)
        except ValueError as exc:
            raise LlmftError(f"make-data retuning: {exc}") from None
        held_out = eval_records(task, fmt, random.Random(f"retuning-eval-{seed}"), range(1, eval_max_size + 1),
                                eval_n, max_size)
        out = out or Path("data/retuning") / f"{task}-{fmt}"
        return {"train": write_jsonl(out / "train.jsonl", train),
                "eval": write_jsonl(out / "eval.jsonl", held_out)}

    def evaluate(self, generator: Generator, config: Config, eval_dir: Path, **options: Any) -> dict:
        """Accuracy by size for the format the run trained on; results.jsonl resumes, plus a PNG plot."""
        from llmft.recipes.retuning.evaluate import run_evaluation

        return run_evaluation(generator, config, self.section(config), eval_dir)

    def compare(self, metrics_by_run: dict[str, dict], out_dir: Path) -> Path:
        from llmft.recipes.retuning.evaluate import compare

        return compare(metrics_by_run, out_dir)

    def report(self, metrics_by_run: dict[str, dict]) -> str:
        """Accuracy by size with each size marked trained or extrapolated."""
        from llmft.recipes.retuning.evaluate import report_table

        return report_table(metrics_by_run)

    def decode(self, generator: Generator, prompts: Sequence[str], config: Config, sampling: Sampling,
               **options: Any) -> list[Decoded]:
        """Recursive runs resolve every `Call:` first (off with recursion=False): the text is the final
        answer, `extra` holds the root's transcript and the whole trace (recipes/retuning/decode.py)."""
        from llmft.recipes.retuning.decode import decode

        section = self.section(config)
        return decode(generator, prompts, section.task, section.format, section.max_depth, sampling, options)


def _make_data_options() -> list[click.Parameter]:
    return [
        click.Option(["--task"], type=click.Choice(TASKS), default="addition", show_default=True,
                     help="addition, parity (of a bit list) or dp (maximum-sum non-adjacent subsequence)."),
        click.Option(["--format", "fmt"], type=click.Choice(FORMATS), default="recursive", show_default=True,
                     help="recursive (Re-Tuning), scratchpad or baseline."),
        click.Option(["--min-size"], type=int, default=0,
                     help="Smallest training size (0 = the reference's: addition 1, parity 1, dp 2)."),
        click.Option(["--max-size"], type=int, default=0,
                     help="Largest training size (0 = the reference's: addition 15, parity 21, dp 5); "
                          "eval covers sizes 1 to --eval-max-size."),
        click.Option(["--eval-max-size"], type=int, default=0,
                     help="Largest eval size (0 = twice --max-size)."),
        click.Option(["--n"], type=int, default=0,
                     help="Training problems to draw (0 = the reference's count: 1000 pairs per digit cell, "
                          "250,000 parity lists, every DP array)."),
        click.Option(["--eval-n"], type=int, default=100, show_default=True, help="Eval problems per size."),
        click.Option(["--resample/--no-resample"], default=True, show_default=True,
                     help="The reference's resampling toward short base cases."),
    ]
