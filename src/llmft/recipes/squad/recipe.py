"""The squad recipe object: make-data options, the [squad] config section, masking and evaluation hooks."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import click

from llmft.core.bounds import Range, at_least
from llmft.core.errors import LlmftError
from llmft.recipes.base import Recipe
from llmft.recipes.squad.data import SPLIT_SEED, SYSTEM_PROMPT, pause_text, pause_tokens

if TYPE_CHECKING:
    from llmft.core.generation import Decoded, Sampling


@dataclass
class SquadConfig:
    """[squad]: how the data was made (keep it equal to the make-data options) and how to evaluate."""

    BOUNDS: ClassVar[dict[str, Range]] = {"num_pause_tokens": at_least(0)}

    # k pause tokens <blah_0>..<blah_{k-1}> open every assistant turn (the reference's best run used 5).
    # Their embeddings train (adapter.method "prompt-tuning" or LoRA, which trains new tokens); their
    # positions carry no loss.
    num_pause_tokens: int = 0
    # false: one <blah> token repeated num_pause_tokens times (the reference's multiple_reasoning_tokens=False,
    # its README's 25 and 100 <blah> rows), as make-data --single-pause-token wrote.
    distinct_pause_tokens: bool = True
    # Evaluation prompts end in the pause tokens + "\n```json" and stop at "}" (the reference's default).
    force_answer: bool = True


class SquadRecipe(Recipe):
    """llama-squad: SQuAD v2 as chat prompts answered in JSON, loss on the answer only."""

    name = "squad"
    example = "llmft make-data squad --synthetic 2000 --show 1"
    summary = "SQuAD v2 as chat prompts answered in JSON (llama-squad); --synthetic N works offline."
    config_section = SquadConfig
    decode_streams = False  # the text is the answer's JSON block cut from the completed turn
    option_bounds = {"synthetic": at_least(0), "num_pause_tokens": at_least(0), "train_n": at_least(0), "eval_n": at_least(0)}

    def make_data_params(self) -> list[click.Parameter]:
        return [
            click.Option(["--source"], default="hub", show_default=True, metavar="hub|PATH",
                         help="'hub' (rajpurkar/squad_v2), a saved `datasets` folder, or an official SQuAD v2 "
                              "JSON file (one split: gives train and val only, see --test-source)."),
            click.Option(["--test-source"], default="", metavar="PATH",
                         help="The test split from another file or folder (e.g. dev-v2.0.json)."),
            click.Option(["--synthetic"], type=int, default=0, metavar="N",
                         help="Instead of SQuAD: N invented-entity training questions (+N/10 val and test)."),
            click.Option(["--num-pause-tokens"], type=int, default=0, show_default=True,
                         help="Pause tokens <blah_0>.. before each JSON answer (set squad.num_pause_tokens "
                              "to the same)."),
            click.Option(["--single-pause-token"], is_flag=True,
                         help="One <blah> token repeated --num-pause-tokens times instead of distinct ones (the "
                              "reference's multiple_reasoning_tokens=False; set squad.distinct_pause_tokens = "
                              "false)."),
            click.Option(["--dedent-quirk/--no-dedent-quirk"], default=True, show_default=True,
                         help="Dedent the prompt after filling in context and question, as the reference: a "
                              "context or question with a newline keeps 20 spaces before every template line."),
            click.Option(["--system-prompt"], default=SYSTEM_PROMPT, metavar="TEXT",
                         help="The system turn (default: the reference's, from its config.yaml); '' leaves it "
                              "out."),
            click.Option(["--no-instruction"], is_flag=True,
                         help="User turn = 'Context: ...\\nQuestion: ...' alone, without the reference's "
                              "instruction: short prompts a tiny model from scratch can learn on a CPU "
                              "(recipes/squad-tiny.toml). Single turn only."),
            click.Option(["--passages"], is_flag=True,
                         help="Also write each training context once as a `text` record (every token trained, "
                              "after its first question): language modelling on the passages, a from-scratch "
                              "model's stand-in for pretraining (it learns to copy names). The questions keep "
                              "the answer-only loss."),
            click.Option(["--multi-turn"], is_flag=True,
                         help="Two turns: 'is the answer in the context?' then the span."),
            click.Option(["--train-n"], type=int, default=0, metavar="N", help="Random N training rows (0: all)."),
            click.Option(["--eval-n"], type=int, default=0, metavar="N",
                         help="Random N test rows (0: all; the reference used 1,000 for slow models)."),
            click.Option(["--split-seed"], type=int, default=SPLIT_SEED, show_default=True,
                         help="Seed of the train/validation split (the reference's is 42)."),
        ]

    def make_data(self, out: Path | None, seed: int, **options: Any) -> dict[str, Path]:
        from llmft.core.jsonl import write_jsonl
        from llmft.recipes.squad.data import load_splits, squad_record, subset, with_passages
        from llmft.recipes.squad.synthetic import synthetic_splits

        k, multi_turn = options.get("num_pause_tokens", 0), options.get("multi_turn", False)
        distinct, dedent_quirk = not options.get("single_pause_token", False), options.get("dedent_quirk", True)
        synthetic = options.get("synthetic", 0)
        rng = random.Random(seed)
        if synthetic:
            splits = synthetic_splits(synthetic, rng)
        else:
            splits = load_splits(options.get("source", "hub"), options.get("test_source", ""),
                                 options.get("split_seed", SPLIT_SEED))
        splits["train"] = subset(splits["train"], options.get("train_n", 0), rng)
        if "test" in splits:
            splits["test"] = subset(splits["test"], options.get("eval_n", 0), rng)
        system, instruction = options.get("system_prompt", SYSTEM_PROMPT), not options.get("no_instruction", False)
        passages = options.get("passages", False)
        if multi_turn and not instruction:
            raise LlmftError("--no-instruction is for single-turn data: the multi-turn prompts are instructions")
        variant = ("synthetic" if synthetic else "squad_v2") + \
            (f"-pause{k}" if k and distinct else f"-blah{k}" if k else "") + \
            ("-multiturn" if multi_turn else "") + \
            ("" if system == SYSTEM_PROMPT else "-system" if system else "-nosystem") + \
            ("" if instruction else "-noinstruction") + ("-passages" if passages else "") + \
            ("" if dedent_quirk else "-nodedentquirk")
        folder = out or Path("data") / "squad" / variant
        pause = pause_text(k, distinct)
        records = {split: [squad_record(r, pause, multi_turn, system, instruction, dedent_quirk) for r in rows]
                   for split, rows in splits.items()}
        if passages:
            records["train"] = with_passages(records["train"], splits["train"])
        paths = {split: write_jsonl(folder / f"{split}.jsonl", rows) for split, rows in records.items()}
        paths["eval"] = paths.pop("test", paths["val"])
        return paths

    def special_tokens(self, config: Any) -> list[str]:
        section = self.section(config)
        return pause_tokens(section.num_pause_tokens, section.distinct_pause_tokens)

    def pause(self, config: Any) -> str:
        """The text of the pause tokens that open each assistant turn."""
        section = self.section(config)
        return pause_text(section.num_pause_tokens, section.distinct_pause_tokens)

    def tokenize(self, record: dict, tokenizer: Any, config: Any) -> Any:
        from llmft.recipes.squad.chat import tokenize_chat

        if "messages" not in record:
            return None
        return tokenize_chat(tokenizer, record["messages"], self.pause(config), config.data.max_length)

    def evaluate(self, generator: Any, config: Any, eval_dir: Path, **options: Any) -> dict:
        from llmft.recipes.squad.evaluate import evaluate_squad

        if not config.data.eval:
            raise LlmftError("data.eval is not set: point it at a test.jsonl from `llmft make-data squad`")
        section = self.section(config)
        return evaluate_squad(generator, config, eval_dir, self.pause(config), section.force_answer)

    def decode(self, generator: Any, prompts: Sequence[str], config: Any, sampling: Sampling,
               **options: Any) -> list[Decoded]:
        """Prompts that end in the chat's assistant opening (add_generation_prompt) get the force-answer
        opening and are completed to the closing brace; the text is the answer's JSON block."""
        from llmft.core.generation import Decoded
        from llmft.recipes.squad.chat import turn_opening
        from llmft.recipes.squad.evaluate import complete_turns

        section = self.section(config)
        if not section.force_answer:
            return [Decoded(text) for text in complete_turns(generator, list(prompts), sampling, False)]
        opening = turn_opening(generator.tokenizer, self.pause(config))
        completions = complete_turns(generator, [p + opening for p in prompts], sampling, True)
        return [Decoded(f"```json{text}\n```") for text in completions]

    def compare(self, metrics_by_run: dict[str, dict], out_dir: Path) -> Path:
        from llmft.core.runs import atomic_write_text
        from llmft.recipes.squad.evaluate import plot_table, table_markdown

        atomic_write_text(out_dir / "table.md", table_markdown(metrics_by_run))
        return plot_table(metrics_by_run, out_dir / "squad-compare.png")
