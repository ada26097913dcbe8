"""The memreason miniature for `llmft reproduce memreason`: a tiny Llama from scratch on the synthetic task,
with planning tokens (`<memory_i>` / `<reason_i>`), with the same steps as plain chain-of-thought text, and with
the answer alone (recipes/memreason-tiny.toml). Seeds vary the training; the questions are one set.
"""

from __future__ import annotations

from pathlib import Path

from llmft.core.jsonl import read_json
from llmft.reproduce.plan import Claim, Plan, Settings, Stage, Table

VARIANTS = {"tokens": "planning tokens (P=2, S=2)", "cot": "plain chain-of-thought text", "answer-only": "answer only"}
KINDS = {"older": "older (T/F)", "same_town": "same town (T/F)", "oldest": "oldest (A/B/C)"}
SYNTHETIC, HELD_OUT = 4000, 200
QUICK = ["train.max_steps=600", "train.save_steps=0"]
# The reference's released outputs, recomputed (Llama-2-7b-chat with planning tokens, best test epoch).
PAPER = {VARIANTS["tokens"]: "StrategyQA 0.707, CommonsenseQA 0.715, TruthfulQA 0.774 (Llama-2-7b-chat)"}


def plan(settings: Settings) -> Plan:
    """Per variant its data once; per seed a training and an evaluation."""
    from llmft.commands.recipes import preset_dir

    if settings.preset == "paper":
        from llmft.core.errors import LlmftError

        raise LlmftError("reproduce memreason --preset paper: the paper's runs need the reference's data from the "
                         "hub; run recipes/memreason-strategyqa-llama2.toml (docs/recipes/memreason.md)")
    stages: list[Stage] = []
    for variant in VARIANTS:
        data = settings.out / "data" / variant
        stages.append(Stage(f"data-{variant}", (
            "make-data", "memreason", "--synthetic", str(SYNTHETIC), "--synthetic-test", str(HELD_OUT),
            "--variant", variant, "--num-prefix-tokens", "2", "--num-special-tokens", "2", "--out", str(data),
            "--overwrite"), 0.1))
        for seed in settings.seeds:
            run = run_folder(settings.out, variant, seed)
            stages.append(Stage(f"train-{variant}-s{seed}", (
                "train", str(preset_dir() / "memreason-tiny.toml"), "--overwrite", f"memreason.variant={variant}",
                f"data.train={data / 'train.jsonl'}", f"data.eval={data / 'test.jsonl'}", f"train.output_dir={run}",
                f"train.seed={seed}", *(QUICK if settings.quick else []), *settings.overrides), 2.0,
                after=(f"data-{variant}",)))
            stages.append(Stage(f"eval-{variant}-s{seed}", ("eval", "--adapter", str(run / "final")), 1.0,
                                after=(f"train-{variant}-s{seed}",)))
    return Plan("memreason", "Disentangling memory and reasoning (planning tokens)", SUMMARY, stages,
                collect=lambda folder: collect(folder, settings.seeds), claims=CLAIMS, draw=draw, notes=NOTES)


def run_folder(out: Path, variant: str, seed: int) -> Path:
    return out / "runs" / f"{variant}-s{seed}"


def collect(out: Path, seeds: list[int] | tuple[int, ...]) -> list[Table]:
    """Accuracy, accuracy by question kind, chance and step-type agreement per variant."""
    table = Table("accuracy", f"Accuracy on the {HELD_OUT} held-out questions",
                  ["accuracy", *KINDS.values(), "chance", "step types = tags"], paper=PAPER,
                  paper_header="paper (real data, 7B)", seeds=len(seeds), digits=3)
    for variant, label in VARIANTS.items():
        for seed in seeds:
            path = run_folder(out, variant, seed) / "eval" / "final" / "metrics.json"
            if not path.exists():
                continue
            metrics = read_json(path, what="metrics file")
            table.add(label, "accuracy", metrics["accuracy"])
            for kind, column in KINDS.items():
                table.add(label, column, metrics.get("accuracy_by_kind", {}).get(kind))
            table.add(label, "chance", metrics.get("chance"))
            table.add(label, "step types = tags", metrics.get("step_type_agreement"))
    return [table]


def draw(tables: list[Table], out: Path) -> list[Path]:
    """Bars per question kind and overall, one per variant, the seeds' spread as whiskers."""
    from llmft.reproduce.plots import spread_bars

    table = tables[0]
    groups = ["accuracy", *KINDS.values()]
    bars = {row: [table.cells[row].get(g, []) for g in groups] for row in table.cells}
    if not bars:
        return []
    return [spread_bars(out / "accuracy.png", groups, bars, title="memreason miniature (mean, min-max over seeds)",
                        ylabel="accuracy")]


def _above_chance(label: str, margin: float):
    def check(tables: dict[str, Table]) -> bool | None:
        acc, chance = tables["accuracy"].values(label, "accuracy"), tables["accuracy"].values(label, "chance")
        return None if not acc or len(acc) != len(chance) else all(a > c + margin for a, c in zip(acc, chance))
    return check


def _beats(better: str, worse: str):
    def check(tables: dict[str, Table]) -> bool | None:
        a, b = tables["accuracy"].values(better, "accuracy"), tables["accuracy"].values(worse, "accuracy")
        return None if not a or len(a) != len(b) else all(x > y for x, y in zip(a, b))
    return check


def _tagged(tables: dict[str, Table]) -> bool | None:
    values = tables["accuracy"].values(VARIANTS["tokens"], "step types = tags")
    return None if not values else all(v > 0.95 for v in values)


CLAIMS = [
    Claim("with planning tokens the model answers 0.25 above chance on questions about people never asked about "
          "together (every seed)", _above_chance(VARIANTS["tokens"], 0.25)),
    Claim("the generated steps carry the right token: <memory> for recalled facts, <reason> for reasoning "
          "(step types agree with the tags > 0.95, every seed)", _tagged),
    Claim("planning tokens beat the answer alone (every seed)", _beats(VARIANTS["tokens"], VARIANTS["answer-only"])),
    Claim("planning tokens beat the same steps as plain text (every seed)", _beats(VARIANTS["tokens"], VARIANTS["cot"])),
    Claim("plain chain-of-thought text beats the answer alone (every seed)",
          _beats(VARIANTS["cot"], VARIANTS["answer-only"])),
]

SUMMARY = ("A 2-layer, 64-wide Llama trained from scratch (character tokenizer) on 4,000 synthetic questions about "
           "20 invented people (age and home town): \"Is X older than Y?\", \"Do X and Y live in the same town?\", "
           "\"Who is the oldest?\". Every answer needs recalled facts ([rag] steps) and a reasoning step; the 200 "
           "held-out questions ask about people never asked about together. Three variants on the same questions "
           "and budget: planning tokens before each step, the steps as plain text, the answer alone.")
NOTES = ("The reference fine-tunes 7-8B chat models with LoRA and trained token rows on StrategyQA, CommonsenseQA and "
         "TruthfulQA and reports the best test epoch; its figures stand beside the planning-token row only, as it "
         "reports no plain-text or answer-only run on the same budget. Here the model is tiny and trained from "
         "scratch on an offline task, so the comparison of variants is ours and the scale is not the paper's.")
