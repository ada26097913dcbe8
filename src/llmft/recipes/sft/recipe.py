"""`sft`: a user's prompt/completion JSONL (or a toy task), trained on the completion, scored by exact match."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from llmft.core import runs
from llmft.core.bounds import Range, at_least
from llmft.core.errors import LlmftError
from llmft.core.generation import Sampling
from llmft.core.jsonl import read_jsonl, write_jsonl
from llmft.core.plots import eval_sets, score_bars
from llmft.core.results import eval_records, evaluate_batched
from llmft.recipes.base import Recipe
from llmft.recipes.sft.toys import TOYS, toy_mixture

PLOT = "exact_match.png"


@dataclass
class SftSection:
    """[sft]: how completions are compared."""

    strip: bool = True  # compare with surrounding whitespace removed


class SftRecipe(Recipe):
    name = "sft"
    summary = "Any prompt/completion JSONL (or a toy task); eval = exact match of the completion."
    config_section = SftSection
    option_bounds = {"n": at_least(1), "eval_n": at_least(1), "eval_fraction": Range(0, 1, low_open=True, high_open=True)}
    example = "llmft make-data sft --toy caesar --n 2000 --show 3"

    def make_data_params(self) -> list[click.Parameter]:
        return [
            click.Option(["--input", "input_file"], type=click.Path(dir_okay=False), default=None,
                         help="Your prompt/completion JSONL, split into train and eval."),
            click.Option(["--toy"], default=None, metavar="TASK[,TASK...]",
                         help=f"Generate a small learnable task instead ({', '.join(sorted(TOYS))}); several, "
                              "comma-separated, mix their records, each tagged with its \"task\"."),
            click.Option(["--n"], type=int, default=2000, show_default=True, help="Training records (toy)."),
            click.Option(["--eval-n"], type=int, default=200, show_default=True, help="Eval records (toy)."),
            click.Option(["--eval-fraction"], type=float, default=0.1, show_default=True,
                         help="Share of --input held out for eval."),
        ]

    def make_data(self, out: Path | None, seed: int, input_file: str | None = None, toy: str | None = None,
                  n: int = 2000, eval_n: int = 200, eval_fraction: float = 0.1) -> dict[str, Path]:
        if bool(input_file) == bool(toy):
            raise LlmftError("make-data sft: give exactly one of --input FILE or --toy TASK")
        if toy:
            train, held_out = toy_mixture(toy, n, eval_n, seed)
            out = out or Path("data/sft") / toy.replace(",", "-")
        else:
            records = read_jsonl(input_file, what="--input")
            for line, record in enumerate(records, start=1):
                if not ("prompt" in record and "completion" in record):
                    raise LlmftError(f"--input: {input_file}: line {line} needs 'prompt' and 'completion'")
            if len(records) < 2:
                raise LlmftError(f"--input: {input_file} has {len(records)} record(s); need 2 or more to split")
            random.Random(seed).shuffle(records)
            cut = min(max(1, int(len(records) * eval_fraction)), len(records) - 1)
            held_out, train = records[:cut], records[cut:]
            out = out or Path("data/sft") / Path(input_file).stem
        return {"train": write_jsonl(out / "train.jsonl", train), "eval": write_jsonl(out / "eval.jsonl", held_out)}

    def evaluate(self, generator: Any, config: Any, eval_dir: Path, **options: Any) -> dict:
        """Exact match of the generated completion against the reference, greedy by default."""
        if not config.data.eval:
            raise LlmftError("data.eval is not set: the sft recipe scores held-out prompt/completion records")
        records = eval_records(config)
        strip = self.section(config).strip
        sampling = Sampling.from_eval(config.eval)

        def answer(chunk: list[int]) -> list[str]:
            return generator.generate([records[i]["prompt"] for i in chunk], **sampling.kwargs())

        def row(i: int, output: str) -> dict[str, Any]:
            reference = records[i]["completion"]
            correct = output.strip() == reference.strip() if strip else output == reference
            return {"prompt": records[i]["prompt"], "output": output, "reference": reference, "correct": correct}

        done = evaluate_batched(eval_dir / runs.RESULTS_NAME, range(len(records)), config.eval.batch_size, answer, row)
        metrics = {"exact_match": sum(r["correct"] for r in done) / max(len(done), 1), "n": len(done)}
        score_bars(eval_dir / PLOT, {"this run": metrics}, {"exact_match": "exact match"},
                   title=f"sft: exact match on {config.data.eval}")
        return metrics

    def compare(self, metrics_by_run: dict[str, dict], out_dir: Path) -> Path:
        """Exact match of several runs as bars, one per run; the title names the eval sets they were scored on."""
        return score_bars(Path(out_dir) / PLOT, metrics_by_run, {"exact_match": "exact match"},
                          title=f"sft: exact match on {eval_sets(metrics_by_run)}")
