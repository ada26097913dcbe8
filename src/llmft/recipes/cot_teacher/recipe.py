"""`cot-teacher`: Fine-tune-CoT (Ho et al., ACL 2023). A teacher writes Zero-shot-CoT rationales, the ones that
reach the right answer train a small student (`ft_cot_token`), diverse reasoning samples several per question."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from llmft.core.bounds import above, at_least
from llmft.recipes.base import Recipe
from llmft.recipes.cot_teacher.formats import STUDENT_TEMPLATES
from llmft.recipes.cot_teacher.tasks import TASK_KEYS


@dataclass
class CotTeacherConfig:
    """[cot-teacher]: what the student is scored on ("" = what the data.eval records say)."""

    task: str = ""
    # ft_cot_token and ft_cot_token_gpt3 (prefix "-->"), ft_cot_natural ("Therefore, the answer is"), ft_token
    # (vanilla fine-tune), zs (zero-shot) or fs_cot ("The answer is").
    template: str = ""
    # Also report the best test accuracy over this run's evaluated checkpoints (what the reference's tables report;
    # optimistic because the test set picks the epoch). Evaluate each checkpoint-N/ first, then final/.
    best_epoch_on_test: bool = False


class CotTeacherRecipe(Recipe):
    name = "cot-teacher"
    summary = "Fine-tune-CoT (Ho et al. 2023): teacher rationales, filtered by answer, train a small student."
    example = "llmft make-data cot-teacher --task coin_flip --n 200 --format ft_token --show 1"
    config_section = CotTeacherConfig
    option_bounds = {"n": at_least(0), "size": at_least(0), "samples": at_least(1), "temperature": at_least(0),
                     "max_tokens": at_least(1), "batch_size": at_least(1), "request_deadline": above(0)}

    def make_data_params(self) -> list[click.Parameter]:
        return [
            click.Option(["--task"], type=click.Choice(TASK_KEYS), required=True, help="The reference's dataset key."),
            click.Option(["--dataset", "dataset_file"], type=click.Path(dir_okay=False), default=None,
                         help="The task's Dataset JSON (the reference's dataset/<task>.json); procedural tasks "
                              "(last_letter_concatenation, coin_flip, multiarith) are generated when omitted."),
            click.Option(["--source"], type=click.Path(), default=None,
                         help="The task's original release (file or folder), compiled as the reference did."),
            click.Option(["--n"], type=int, default=0, help="Generated samples (0 = the reference dataset's size)."),
            click.Option(["--size"], type=int, default=0,
                         help="Generated difficulty: words, people or largest number (0 = 4, 4, 20)."),
            click.Option(["--split", "split_file"], type=click.Path(dir_okay=False), default=None,
                         help="A reference split file {train, test} (default: the reference's default split)."),
            click.Option(["--teacher"], default=None,
                         help="An OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1) or a llmft run folder."),
            click.Option(["--teacher-model"], default="", help="The model name sent to the endpoint."),
            click.Option(["--chat", "teacher_chat"], is_flag=True, help="Ask the endpoint's chat API, not completions."),
            click.Option(["--completions", "completions_file"], type=click.Path(dir_okay=False), default=None,
                         help="Teacher CompletionDataset to read or resume (default: under --out/teacher/)."),
            click.Option(["--samples"], type=int, default=1, show_default=True,
                         help="Teacher samples per question (diverse reasoning: 8 or 64 at --temperature 0.7)."),
            click.Option(["--temperature"], type=float, default=None,
                         help="Teacher temperature for the rationale (default: 0 for one sample, 0.7 for several)."),
            click.Option(["--max-tokens"], type=int, default=128, show_default=True, help="Teacher tokens per step."),
            click.Option(["--batch-size"], type=int, default=20, show_default=True, help="Prompts per teacher call."),
            click.Option(["--request-deadline"], type=float, default=300.0, show_default=True, metavar="SECONDS",
                         help="Total deadline per teacher request: connecting, waiting and reading the whole reply; "
                              "a request past it fails and is retried like a dropped connection."),
            click.Option(["--stop"], multiple=True, default=("END",), show_default=True,
                         help="Teacher stop string, as the reference sends with every request; --stop '' sends none."),
            click.Option(["--format", "template"], type=click.Choice(STUDENT_TEMPLATES), default="ft_cot_token",
                         show_default=True,
                         help="Student format: Fine-tune-CoT (ft_cot_token; ft_cot_natural: \"Therefore the answer "
                              "is\"; ft_cot_token_gpt3: the paper's GPT-3 strings, unstripped), vanilla fine-tune, "
                              "zero-shot, few-shot."),
            click.Option(["--model-type"], type=click.Choice(["decoder", "encoder_decoder"]), default="decoder",
                         show_default=True, help="Decoder (GPT-2, Llama) or encoder-decoder (T5) student strings."),
            click.Option(["--teacher-train"], is_flag=True,
                         help="Write a teacher's training data instead: worked solutions of --n (default 3000) "
                              "generated samples in the two Zero-shot-CoT steps (recipes/cot-teacher-teacher-tiny.toml "
                              "trains on them; give another --seed than the students' data)."),
            click.Option(["--few-shot-prompts"], type=click.Path(dir_okay=False), default=None,
                         help="fs_cot exemplars: the reference's few_shot_cot_prompts.json (default for generated "
                              "tasks: 8 worked training samples)."),
        ]

    def make_data(self, out: Path | None, seed: int, **options: Any) -> dict[str, Path]:
        from llmft.recipes.cot_teacher.make_data import make_student_data, make_teacher_data

        if options.pop("teacher_train", False):
            return make_teacher_data(out or Path("data/cot-teacher/teacher") / options["task"], seed,
                                     task=options["task"], n=options["n"], size=options["size"])
        out = out or Path("data/cot-teacher") / options["task"]
        return make_student_data(out, seed, **options)

    def evaluate(self, generator: Any, config: Any, eval_dir: Path, **options: Any) -> dict:
        """Accuracy on the test split under the reference's parsing (and, when asked, the best-epoch figure)."""
        from llmft.recipes.cot_teacher.evaluate import best_epoch_on_test, evaluate_student

        section = self.section(config)
        metrics = evaluate_student(generator, config, section, eval_dir)
        if section.best_epoch_on_test:
            metrics.update(best_epoch_on_test(Path(config.train.output_dir), {eval_dir.name: metrics["accuracy"]}))
        return metrics

    def compare(self, metrics_by_run: dict[str, dict], out_dir: Path) -> Path:
        from llmft.recipes.cot_teacher.evaluate import compare

        return compare(metrics_by_run, out_dir)

