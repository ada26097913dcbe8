"""The squad miniature for `llmft reproduce squad`: a tiny Llama trained from scratch on invented SQuAD v2-style
questions (a third unanswerable) answers in llama-squad's JSON (recipes/squad-tiny.toml, its data command).
Seeds vary the training; the questions are one set.
"""

from __future__ import annotations

from pathlib import Path

from llmft.core.jsonl import read_json
from llmft.reproduce.plan import Claim, Plan, Settings, Stage, Table

SCORES = {"valid_json": "valid JSON", "exact_match": "exact match", "no_answer": "no-answer", "has_answer": "has-answer"}
FULL = {"synthetic": 40000, "train": [], "eval": 400}
QUICK = {"synthetic": 10000, "train": ["train.max_steps=1500", "train.save_steps=0"], "eval": 200}
# teticio/llama-squad's README (SQuAD v2 validation): its released Llama-3-8B run, and Llama-2-7b at 8 epochs.
PAPER = {"tiny Llama, from scratch": "Llama-3-8B 5 <blah_n>, 3 ep: 100.00 / 80.13 / 86.24 / 74.00; "
                                     "Llama-2-7b 8 ep: 98.83 / 73.11 / 79.90 / 66.30"}


def plan(settings: Settings) -> Plan:
    """The data once; per seed one training and one evaluation (the first `eval` questions)."""
    from llmft.commands.recipes import preset_dir

    size = QUICK if settings.quick else FULL
    data = settings.out / "data"
    stages = [Stage("data", ("make-data", "squad", "--synthetic", str(size["synthetic"]), "--system-prompt", "",
                             "--no-instruction", "--passages", "--out", str(data), "--overwrite"), 0.2)]
    paper = settings.preset == "paper"
    preset = preset_dir() / ("squad-llama3.toml" if paper else "squad-tiny.toml")
    if paper:
        stages = [Stage("data", ("make-data", "squad", "--out", str(data), "--overwrite"), 0.2)]
    for seed in settings.seeds:
        run = settings.out / "runs" / f"squad-s{seed}"
        train = ["train", str(preset), "--overwrite", f"train.output_dir={run}", f"train.seed={seed}",
                 f"eval.max_examples={size['eval']}"]
        if not paper:
            train += [f"data.train={data / 'train.jsonl'}", f"data.eval={data / 'test.jsonl'}",
                      f"data.heldout={data / 'val.jsonl'}", *size["train"]]
        stages.append(Stage(f"train-s{seed}", (*train, *settings.overrides), 5.0, after=("data",)))
        stages.append(Stage(f"eval-s{seed}", ("eval", "--adapter", str(run / "final")), 1.0,
                            after=(f"train-s{seed}",)))
    return Plan("squad", "SQuAD v2 answered in JSON (teticio/llama-squad)", SUMMARY, stages,
                collect=lambda folder: collect(folder, settings.seeds), claims=CLAIMS, draw=draw, notes=NOTES)


def collect(out: Path, seeds: list[int] | tuple[int, ...]) -> list[Table]:
    """Valid JSON, exact match, and exact match on the unanswerable and the answerable questions, %."""
    table = Table("scores", "Held-out questions, %", list(SCORES.values()), paper=PAPER,
                  paper_header="paper (valid JSON / EM / no-ans / has-ans)", seeds=len(seeds), digits=1)
    for seed in seeds:
        path = out / "runs" / f"squad-s{seed}" / "eval" / "final" / "metrics.json"
        if path.exists():
            metrics = read_json(path, what="metrics file")
            for key, column in SCORES.items():
                table.add("tiny Llama, from scratch", column, metrics.get(key))
    return [table]


def draw(tables: list[Table], out: Path) -> list[Path]:
    from llmft.reproduce.plots import spread_bars

    table = tables[0]
    if not table.cells:
        return []
    groups = list(SCORES.values())
    bars = {row: [table.cells[row].get(g, []) for g in groups] for row in table.cells}
    return [spread_bars(out / "scores.png", groups, bars, title="squad miniature (mean, min-max over seeds)",
                        ylabel="%", ylim=(0, 102))]


def _at_least(column: str, floor: float):
    def check(tables: dict[str, Table]) -> bool | None:
        values = tables["scores"].values("tiny Llama, from scratch", column)
        return None if not values else all(v >= floor for v in values)
    return check


CLAIMS = [
    Claim("fine-tuning makes the answers valid JSON (>= 95%, every seed)", _at_least("valid JSON", 95)),
    Claim("exact match reaches the released model's range (>= 80%, every seed)", _at_least("exact match", 80)),
    Claim("it learns to abstain: the unanswerable questions above 70% (every seed)", _at_least("no-answer", 70)),
    Claim("and still answers: the answerable questions above 70% (every seed)", _at_least("has-answer", 70)),
]

SUMMARY = ("A tiny Llama trained from scratch on invented towns and companies, SQuAD v2-style (a third of the "
           "questions unanswerable), answering in llama-squad's JSON with its loss masking; scored as the "
           "reference scores: valid JSON, exact match, and exact match on the unanswerable and answerable "
           "questions.")
NOTES = ("The reference fine-tunes Llama-2/3 chat models with QLoRA on the real SQuAD v2 and scores the "
         "validation split; here the passages are invented and short, the model tiny and untrained before, so "
         "the percentages measure the recipe's format and masking on an easier task, not the paper's model.")
