"""The memreason recipe object: make-data options, the [memreason] section, tokens, masking, evaluation."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import click

from llmft.core.bounds import Range, at_least
from llmft.core.errors import LlmftError
from llmft.recipes.base import Recipe

if TYPE_CHECKING:
    from llmft.core.generation import Decoded, Sampling


@dataclass
class MemreasonConfig:
    """[memreason]: the data variant and planning tokens (equal to the make-data options), loss mask, reporting."""

    BOUNDS: ClassVar[dict[str, Range]] = {"num_prefix_tokens": at_least(1), "num_special_tokens": at_least(0)}

    # tokens: planning tokens (the method); cot: tagged steps as plain text; answer-only: no steps.
    variant: Literal["tokens", "cot", "answer-only"] = "tokens"
    num_prefix_tokens: int = 2  # P: <prefix_0..P-1> open every step (README StrategyQA run: 2)
    num_special_tokens: int = 4  # S: <memory_i>, <reason_i>, <answer_i>, <assignment_i> per kind (README: 4)
    # The reference masks len(prompt) - 1 tokens, so the prompt's last token is trained (an off-by-one).
    # true reproduces it; false masks the whole prompt.
    loss_on_last_prompt_token: bool = True
    # true: the reference's Llama-2 token ids (its tokenizer took the space before each planning token into the
    # token), in training and in evaluation and serving prompts; for sentencepiece-style tokenizers (Llama-2).
    # false: the text as the tokenizer encodes it, which are the reference's ids for byte-level ones (Llama-3, Qwen).
    absorb_space_before_token: bool = False
    # The reference padded with id 0 where the tokenizer had no pad token (Llama-2: <unk>; Llama-3: "!") and its
    # collator hid every token with that id from attention, a real "!" too; each one in the prompt also shortened
    # the masked span by one. 0 reproduces that (needs data.packing = "none"); -1: no token is hidden.
    reference_pad_id: int = -1
    # `llmft eval` on several checkpoints: name the best one ON THE TEST SPLIT, labelled as such (what the
    # reference's README reports). Off by default: it is an optimistic, selected-on-test figure.
    report_best_on_test: bool = False
    # true: `accuracy` reads the answer from prompt + generation, as the reference did (a CommonsenseQA or
    # TruthfulQA output with no "The answer is:" takes the prompt's last letter). Both figures are always reported.
    score_with_prompt: bool = False


class MemreasonRecipe(Recipe):
    """Disentangling memory and reasoning: CoT steps typed by trained <memory_i>/<reason_i> tokens."""

    name = "memreason"
    # The folder recipes/memreason-tiny.toml reads (data/memreason/synthetic-tokens-p2s2).
    example = "llmft make-data memreason --synthetic 4000 --num-prefix-tokens 2 --num-special-tokens 2"
    summary = ("Memory/reasoning steps as trained planning tokens (Jin et al. 2025); StrategyQA, "
               "CommonsenseQA, TruthfulQA from the reference's JSON, or --synthetic N offline.")
    config_section = MemreasonConfig
    option_bounds = {"synthetic": at_least(0), "synthetic_test": at_least(0), "num_prefix_tokens": at_least(1),
                     "num_special_tokens": at_least(0)}

    def make_data_params(self) -> list[click.Parameter]:
        from llmft.recipes.memreason.data import DATASETS, VARIANTS

        return [
            click.Option(["--dataset"], type=click.Choice(DATASETS), default="strategyqa", show_default=True,
                         help="Which reference data set (its answer extraction and question format)."),
            click.Option(["--input", "inputs"], multiple=True, metavar="FILE|hub",
                         help="The reference's JSON file(s) {question, answer, cot_steps, split}; repeat for "
                              "train and test. 'hub': the reference repository's files (downloads)."),
            click.Option(["--synthetic"], type=int, default=0, metavar="N",
                         help="Instead: N offline questions about invented people (ages, towns) that need "
                              "recall and a reasoning step."),
            click.Option(["--synthetic-test"], type=int, default=200, show_default=True, metavar="N",
                         help="Held-out synthetic questions (people never asked about together in training)."),
            click.Option(["--variant"], type=click.Choice(VARIANTS), default="tokens", show_default=True,
                         help="tokens: planning tokens (the method); cot: the reference's run without them "
                              "(tagged steps as text); answer-only: no steps."),
            click.Option(["--num-prefix-tokens"], type=int, default=2, show_default=True,
                         help="P (set memreason.num_prefix_tokens to the same)."),
            click.Option(["--num-special-tokens"], type=int, default=4, show_default=True,
                         help="S (set memreason.num_special_tokens to the same)."),
        ]

    def make_data(self, out: Path | None, seed: int, **options: Any) -> dict[str, Path]:
        from llmft.core.jsonl import write_jsonl
        from llmft.recipes.memreason.data import Report, build_records, load_reference
        from llmft.recipes.memreason.synthetic import synthetic_splits

        p, s = options.get("num_prefix_tokens", 2), options.get("num_special_tokens", 4)
        synthetic, variant = options.get("synthetic", 0), options.get("variant", "tokens")
        report = Report()
        if synthetic:
            raw = synthetic_splits(synthetic, options.get("synthetic_test", 200), random.Random(seed))
            splits = {k: [(f"synthetic-{k}#{i}", r) for i, r in enumerate(v)] for k, v in raw.items()}
            dataset = "synthetic"
        else:
            dataset = options.get("dataset", "strategyqa")
            splits = load_reference(dataset, options.get("inputs", ()), report)
        records = {split: build_records(rows, dataset, variant, p, s, report) for split, rows in splits.items()}
        for line in report.lines():
            click.echo(f"memreason: {line}", err=True)
        if not records.get("train") and not records.get("test"):
            raise LlmftError("make-data memreason: no records with a train or test split")
        folder = out or Path("data") / "memreason" / (dataset + f"-{variant}" + (f"-p{p}s{s}" if variant == "tokens"
                                                                                   else ""))
        paths = {split: write_jsonl(folder / f"{split}.jsonl", rows) for split, rows in records.items() if rows}
        if "test" in paths:
            paths["eval"] = paths.pop("test")
        return paths

    def special_tokens(self, config: Any) -> list[str]:
        from llmft.recipes.memreason.tokens import all_tokens

        section = self.section(config)
        if section.variant != "tokens":
            return []
        return all_tokens(section.num_prefix_tokens, section.num_special_tokens)

    def token_init(self, config: Any, tokenizer: Any) -> dict[str, list[int]]:
        """New rows start as the literal word's rows ("memory", "reason", ...), as the reference."""
        from llmft.recipes.memreason.tokens import init_sources

        section = self.section(config)
        if section.variant != "tokens":
            return {}
        return init_sources(tokenizer, section.num_prefix_tokens, section.num_special_tokens)

    def tokenize(self, record: dict, tokenizer: Any, config: Any) -> Any:
        from llmft.recipes.memreason.evaluate import check_record
        from llmft.recipes.memreason.masking import tokenize_reference

        if "steps" not in record:
            return None
        section = self.section(config)
        check_record(record, section, f"data.train: {record.get('source', 'a record')}")
        if section.reference_pad_id >= 0 and config.data.packing == "rows":
            raise LlmftError('memreason.reference_pad_id hides tokens from attention: set data.packing = "none" '
                             "(the reference trained one example per row)")
        return tokenize_reference(tokenizer, record["prompt"], record["completion"], config.data.max_length,
                                  section.loss_on_last_prompt_token, section.absorb_space_before_token,
                                  section.reference_pad_id)

    def evaluate(self, generator: Any, config: Any, eval_dir: Path, **options: Any) -> dict:
        from llmft.recipes.memreason.evaluate import evaluate_memreason

        if not config.data.eval:
            raise LlmftError("data.eval is not set: point it at a test.jsonl from `llmft make-data memreason`")
        return evaluate_memreason(generator, config, self.section(config), eval_dir)

    def decode(self, generator: Any, prompts: Sequence[str], config: Any, sampling: Sampling,
               **options: Any) -> list[Decoded]:
        """Prompts ("Question: ...\n ") get the prefix tokens appended, as at evaluation; the text keeps the
        planning tokens, and `extra.steps` lists each generated step with its type (memory / reason)."""
        from llmft.core.generation import Decoded
        from llmft.recipes.memreason.evaluate import parse_steps
        from llmft.recipes.memreason.tokens import absorb_space_before_tokens, token_text

        section = self.section(config)
        opening = token_text(section.num_prefix_tokens, 0)["prefix"] if section.variant == "tokens" else ""
        full = [p if p.endswith(opening) else p + opening for p in prompts]
        if section.absorb_space_before_token:
            full = [absorb_space_before_tokens(p) for p in full]
        outputs = generator.generate(full, **sampling.kwargs())
        return [Decoded(text, {"steps": parse_steps(opening + text, section.variant)}) for text in outputs]

    def compare(self, metrics_by_run: dict[str, dict], out_dir: Path) -> Path:
        """table.md (accuracy, chance, step types per run) and the plot of the same, whose path is returned."""
        from llmft.core.runs import atomic_write_text
        from llmft.recipes.memreason.evaluate import compare_plot, compare_table

        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "table.md", compare_table(metrics_by_run))
        return compare_plot(metrics_by_run, out_dir)
