"""`uft`: feature-tagged TinyStories, deletion and recovery fine-tuning, and what the model still knows
(Jain, Kirk et al., "Mechanistically analyzing the effects of fine-tuning on procedurally defined tasks")."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import click

from llmft.core.bounds import Range, above, at_least, between
from llmft.core.errors import LlmftError
from llmft.core.jsonl import write_jsonl
from llmft.recipes.base import Recipe
from llmft.recipes.uft.transforms import Transforms, dataset_name, deletion_suite

DEFAULT_OUT = Path("data/uft")
# The reference trains its tokenizer on 10 of the 50 shards, about this many stories.
TOKENIZER_TEXTS = 500_000


@dataclass
class UftConfig:
    """[uft]: the feature under study, the evaluation sets, the generation score and the probes."""

    BOUNDS: ClassVar[dict[str, Range]] = {
        "loss_examples": at_least(0), "n_generations": at_least(0), "temperature": at_least(0),
        "story_tokens": at_least(1), "judge_shots": at_least(0), "probe_examples": at_least(1),
        "probe_steps": at_least(0), "probe_lr": above(0), "probe_batch": at_least(1)}

    feature: str = "Twist"  # the deleted (and recovered) feature
    # Loss sets (JSONL of text records); "" = skipped, except id_set which defaults to data.eval.
    id_set: str = ""
    task_set: str = ""  # stories with the feature (recovery-<F>)
    complement_set: str = ""  # stories without it (filter-<F>)
    adversarial_set: str = ""  # without it but requested (filter-adv-<F>)
    loss_examples: int = 512  # records per loss set; 0 = all
    # Generation score: prompts requesting the feature (default: the adversarial set), sampled, judged.
    prompt_set: str = ""
    n_generations: int = 16  # the reference scores 16 stories per point; 0 = no generation score
    temperature: float = 1.0  # the reference samples at T=1 without top-k
    story_tokens: int = 350  # new tokens per story
    judge: Literal["rules", "endpoint"] = "rules"  # rules: exact on procedural stories only
    judge_url: str = ""  # an OpenAI-compatible server, e.g. https://api.openai.com
    judge_model: str = "gpt-3.5-turbo"
    judge_key_env: str = "OPENAI_API_KEY"  # environment variable holding the API key ("" = none)
    judge_shots: int = 2  # few-shot examples per answer from the task/complement sets; 0 = zero-shot
    # A file in the reference's shots.txt form (worked examples separated by blank lines): its first
    # 2 x judge_shots blank-line-separated blocks are the prompt's examples, as the reference reads its cache.
    judge_shots_file: str = ""
    # Reference's recovery-curve steps are [0, 30, 270, 3000]; [] = no curve. Step 0 is model.name.
    recovery_steps: list[int] = field(default_factory=list)
    # Linear probes on the frozen model (story only, mean of the last 10 token states).
    probes: bool = True
    probe_set: str = ""  # "" = id_set
    probe_examples: int = 1000
    probe_layers: list[int] = field(default_factory=list)  # [] = after each block but the last
    probe_steps: int = 2000
    probe_lr: float = 1e-3
    # "reference": AdamW (weight decay 0.1, betas 0.9/0.95), clip 1, probe_batch fresh stories a step;
    # "full-batch": Adam on all the training split's states at every step.
    probe_training: Literal["reference", "full-batch"] = "reference"
    probe_batch: int = 128
    # The stories the probes train on (the reference: pretrain-all's train split, read from the start, at most
    # probe_steps x probe_batch); they then test on all probe_set records. "" = 80/20 split of probe_set.
    probe_train_set: str = ""


def _options() -> list[click.Parameter]:
    return [
        click.Option(["--stories"], default="procedural", show_default=True,
                     help="'procedural', 'hub' (roneneldan/TinyStories instruct tarball), a folder of its JSON "
                          "shards or the TinyStories_all_data.tar.gz file."),
        click.Option(["--n-stories"], type=int, default=20000, show_default=True,
                     help="Training stories (procedural), or the most to read (0 = all)."),
        click.Option(["--n-eval"], type=int, default=1000, show_default=True,
                     help="Held-out stories (the first ones read, shard 0 first, as the reference's test shard)."),
        click.Option(["--feature-rate"], type=float, default=0.3, show_default=True,
                     help="Procedural stories: the chance of each feature."),
        click.Option(["--filtering"], default="", help="e.g. features!=Twist or features=Twist,words=ball."),
        click.Option(["--mix-match"], default="", help="e.g. features=Foreshadowing:Twist (relabel)."),
        click.Option(["--adversarial-training"], default="", help="e.g. features=Twist:1.0."),
        click.Option(["--refusal"], default="", help="e.g. features=Twist:1.0."),
        click.Option(["--preset"], type=click.Choice(["deletion-suite"]), default=None,
                     help="Write the reference's data sets (tw_fs.sh) for --feature-delete/--feature-irrelevant."),
        click.Option(["--feature-delete"], default="Twist", show_default=True),
        click.Option(["--feature-irrelevant"], default="Foreshadowing", show_default=True),
        click.Option(["--name"], default="", help="Data set folder name (default: from the transforms)."),
        click.Option(["--vocab-size"], type=int, default=0,
                     help="Also train a BPE tokenizer of this size on the training texts into "
                          "<out>/tokenizer-<N>/ (the reference: 8192); 0 = none."),
    ]


class UftRecipe(Recipe):
    name = "uft"
    summary = "Feature-tagged TinyStories: deletion and recovery fine-tuning, generation score, probes."
    config_section = UftConfig
    option_bounds = {"n_stories": at_least(0), "n_eval": at_least(0), "feature_rate": between(0, 1), "vocab_size": at_least(0)}

    def make_data_params(self) -> list[click.Parameter]:
        return _options()

    def make_data(self, out: Path | None, seed: int, stories: str = "procedural", n_stories: int = 20000,
                  n_eval: int = 1000, feature_rate: float = 0.3, filtering: str = "", mix_match: str = "",
                  adversarial_training: str = "", refusal: str = "", preset: str | None = None,
                  feature_delete: str = "Twist", feature_irrelevant: str = "Foreshadowing", name: str = "",
                  vocab_size: int = 0) -> dict[str, Path]:
        """Write <out>/<data set>/{train,eval}.jsonl for one transform spec or the whole deletion suite."""
        from llmft.recipes.uft.text import text_record

        flags = {"filtering": filtering, "mix_match": mix_match, "adversarial_training": adversarial_training,
                 "refusal": refusal}
        if preset == "deletion-suite":
            if any(flags.values()) or name:
                raise LlmftError("make-data uft: --preset deletion-suite writes its own transforms and names; "
                                 "drop --filtering/--mix-match/--adversarial-training/--refusal/--name")
            specs = deletion_suite(feature_delete, feature_irrelevant)
        else:
            specs = {name or dataset_name(**flags): flags}
        transforms = {set_name: Transforms.parse(**spec) for set_name, spec in specs.items()}
        train_stories, eval_stories = source_stories(stories, n_stories, n_eval, seed, feature_rate)
        out = out or DEFAULT_OUT
        paths: dict[str, Path] = {}
        first_train: list[dict] = []
        for index, (set_name, transform) in enumerate(transforms.items()):
            split_records = {}
            for split, pool in (("train", train_stories), ("eval", eval_stories)):
                # Seeded by the transforms, not the folder name: the same flags give the same records.
                flags_set = sorted((k, v) for k, v in specs[set_name].items() if v)
                rng = random.Random(f"{seed}/{split}/{flags_set}")
                split_records[split] = [text_record(s, rng) for s in transform.apply(pool, rng)]
            if not split_records["train"]:
                raise LlmftError(f"make-data uft: data set '{set_name}' has no training stories left "
                                 f"after its transforms")
            first_train = first_train or split_records["train"]
            for split, records in split_records.items():
                # The first set (pretrain-all in the suite) is also `train`/`eval`, for `--show`.
                key = split if index == 0 else f"{set_name}/{split}"
                paths[key] = write_jsonl(out / set_name / f"{split}.jsonl", records)
        if vocab_size:
            from llmft.recipes.uft.text import train_story_tokenizer

            tokenizer = train_story_tokenizer([r["text"] for r in first_train[:TOKENIZER_TEXTS]], vocab_size)
            tokenizer.save_pretrained(out / f"tokenizer-{vocab_size}")
        return paths

    def needs_model(self, config: Any) -> bool:
        """Losses and probes read the model's logits and hidden states."""
        return True

    def evaluate(self, generator: Any, config: Any, eval_dir: Path, **options: Any) -> dict:
        """Losses on the ID/Task/Complement/Adversarial sets, generation score, recovery curve, probes."""
        from llmft.recipes.uft.evaluate import evaluate_uft

        return evaluate_uft(generator, config, self.section(config), eval_dir)

    def compare(self, metrics_by_run: dict[str, dict], out_dir: Path) -> Path:
        """Recovery curves of several runs (and their table) in out_dir."""
        from llmft.recipes.uft.evaluate import compare_runs

        return compare_runs(metrics_by_run, out_dir)


def source_stories(source: str, n_stories: int, n_eval: int, seed: int,
                   feature_rate: float = 0.3) -> tuple[list[dict], list[dict]]:
    """(train, held-out) story records: procedural, or read (the first n_eval read are held out)."""
    if n_eval < 0 or n_stories < 0:
        raise LlmftError("make-data uft: --n-stories and --n-eval must not be negative")
    if source == "procedural":
        from llmft.recipes.uft.stories import generate_stories

        if not n_stories:
            raise LlmftError("make-data uft: --n-stories must be positive for procedural stories")
        return (generate_stories(n_stories, random.Random(f"{seed}/train"), feature_rate),
                generate_stories(n_eval, random.Random(f"{seed}/eval"), feature_rate))
    from llmft.recipes.uft.stories import load_stories

    stories = load_stories(source, limit=n_stories + n_eval if n_stories else 0)
    if len(stories) <= n_eval:
        raise LlmftError(f"make-data uft: {source} has {len(stories)} stories, not more than --n-eval {n_eval}")
    return stories[n_eval:], stories[:n_eval]
