"""Fine-tune-CoT's miniature for `llmft reproduce cot-teacher`: per task a tiny teacher trained on worked
solutions (recipes/cot-teacher-teacher-tiny.toml) is asked Zero-shot-CoT; its correct rationales train
from-scratch students, compared on one budget with a vanilla student: Fine-tune-CoT (K=1, T=0) and diverse
reasoning (K=4, T=0.7), on Last Letter, Coin Flip and the arithmetic generator.

Seeds vary the questions drawn (500, split 350/150), the teacher's and the students' training and the teacher's
samples; the teacher's lessons are one set (seed 99, never the students' questions' seed).
"""

from __future__ import annotations

import re
from pathlib import Path

from llmft.core.jsonl import read_json
from llmft.reproduce.claims import every_seed
from llmft.reproduce.plan import Claim, Plan, Settings, Stage, Table

TASKS = {"last_letter_concatenation": "Last Letter", "coin_flip": "Coin Flip", "multiarith": "arithmetic"}
STUDENTS = {"vanilla": "vanilla fine-tune", "k1": "Fine-tune-CoT K=1", "k4": "diverse reasoning K=4"}
# Difficulty (names / people / largest number) and steps: the teacher's few enough to leave mistakes, the
# students' the same for every student of a task.
FULL = {"last_letter_concatenation": {"size": 3, "teacher_steps": 1100, "student_steps": 1500},
        "coin_flip": {"size": 4, "teacher_steps": 180, "student_steps": 800},
        "multiarith": {"size": 9, "teacher_steps": 2000, "student_steps": 1500}}
# The teachers train as in the full run (fewer steps leave a teacher that answers almost nothing right).
QUICK = {"last_letter_concatenation": {"size": 3, "teacher_steps": 1100, "student_steps": 800},
         "coin_flip": {"size": 4, "teacher_steps": 180, "student_steps": 300},
         "multiarith": {"size": 9, "teacher_steps": 2000, "student_steps": 800}}
# `--quick`: the report reads the students' final accuracy only, so no held-out loss during training; and 64
# tokens for the teacher's rationales and the students' answers (the kept rationales are at most ~52 tokens).
QUICK_STUDENT = ["train.eval_steps=0", "eval.max_new_tokens=64"]
QUICK_TOKENS, FULL_TOKENS = 64, 128
SAMPLES = 500
TEACHER_SEED = 99
# The reference's results.ipynb (best test epoch of 20, text-davinci-002 teacher, 4-word Last Letter), % accuracy:
# teacher Zero-shot-CoT; Flan-T5-large and GPT-2 students: vanilla / Fine-tune-CoT / + diverse reasoning.
PAPER = {"Last Letter": "teacher 57.7; Flan-T5-L 53.3 / 64.0 / 65.3; GPT-2 1.3 / 4.7 / 6.0",
         "Coin Flip": "teacher 90.0; Flan-T5-L 100 / 100 / 100; GPT-2 60.0 / 77.3 / 76.0",
         "arithmetic": "teacher 78.8 (MultiArith); Flan-T5-L 18.9 / 14.4 / 20.0; GPT-2 12.2 / 8.3 / 17.8"}
KEPT = re.compile(r"teacher correct (\d+) of (\d+) questions, kept (\d+) records")


def plan(settings: Settings) -> Plan:
    """Per task: the teacher's lessons once; per seed a teacher, its K=1 and K=4 answers, three students."""
    from llmft.commands.recipes import preset_dir

    if settings.preset == "paper":
        from llmft.core.errors import LlmftError

        raise LlmftError("reproduce cot-teacher --preset paper: the paper's teacher is an API model; run "
                         "make-data cot-teacher --teacher URL with recipes/cot-teacher-flan-t5.toml or "
                         "cot-teacher-gpt2.toml (docs/recipes/cot-teacher.md)")
    out, presets = settings.out, preset_dir()
    stages: list[Stage] = []
    for task, opts in (QUICK if settings.quick else FULL).items():
        size = ["--task", task, "--size", str(opts["size"])]
        lessons = out / "data" / task / "teacher-lessons"
        stages.append(Stage(f"data-{task}-teacher-lessons", ("make-data", "cot-teacher", *size, "--teacher-train",
                                                             "--seed", str(TEACHER_SEED), "--out", str(lessons),
                                                             "--overwrite"), 0.1))
        for seed in settings.seeds:
            teacher = out / "runs" / f"{task}-teacher-s{seed}"
            stages.append(Stage(f"train-{task}-teacher-s{seed}", (
                "train", str(presets / "cot-teacher-teacher-tiny.toml"), "--overwrite",
                f"data.train={lessons / 'train.jsonl'}", f"train.output_dir={teacher}",
                f"train.max_steps={opts['teacher_steps']}", f"train.seed={seed}", *settings.overrides),
                opts["teacher_steps"] / 1000, after=(f"data-{task}-teacher-lessons",)))
            tokens = QUICK_TOKENS if settings.quick else FULL_TOKENS
            ask = [*size, "--n", str(SAMPLES), "--seed", str(seed), "--max-tokens", str(tokens), "--batch-size", "64",
                   "--overwrite"]
            students = {
                "vanilla": ["--format", "ft_token"],
                "k1": ["--teacher", str(teacher / "final"), "--samples", "1"],
                "k4": ["--teacher", str(teacher / "final"), "--samples", "4", "--temperature", "0.7"],
            }
            for name, options in students.items():
                data = data_folder(out, task, name, seed)
                needs = () if name == "vanilla" else (f"train-{task}-teacher-s{seed}",)
                stages.append(Stage(f"data-{task}-{name}-s{seed}", ("make-data", "cot-teacher", *ask, *options,
                                                                    "--out", str(data)), 0.3, after=needs))
            for name in students:
                data, run = data_folder(out, task, name, seed), out / "runs" / f"{task}-{name}-s{seed}"
                stages.append(Stage(f"train-{task}-{name}-s{seed}", (
                    "train", str(presets / "cot-teacher-tiny.toml"), "--overwrite",
                    f"data.train={data / 'train.jsonl'}", f"data.eval={data / 'eval.jsonl'}",
                    f"train.output_dir={run}", f"train.max_steps={opts['student_steps']}", f"train.seed={seed}",
                    *(QUICK_STUDENT if settings.quick else []), *settings.overrides), opts["student_steps"] / 1000, after=(f"data-{task}-{name}-s{seed}",)))
                stages.append(Stage(f"eval-{task}-{name}-s{seed}", ("eval", "--adapter", str(run / "final")), 0.2,
                                    after=(f"train-{task}-{name}-s{seed}",)))
    return Plan("cot-teacher", "Fine-tune-CoT (Ho et al., ACL 2023)", SUMMARY, stages,
                collect=lambda folder: collect(folder, settings.seeds), claims=CLAIMS, draw=draw,
                notes=NOTES + (QUICK_NOTE if settings.quick else ""))


def data_folder(out: Path, task: str, student: str, seed: int) -> Path:
    return out / "data" / task / f"{student}-s{seed}"


def collect(out: Path, seeds: list[int] | tuple[int, ...]) -> list[Table]:
    """Accuracy (%) of the teacher (K=1 answers on the train split) and the three students; training records."""
    accuracy = Table("accuracy", "Test accuracy, % (150 held-out questions per task and seed)",
                     ["teacher (train split, T=0)", *STUDENTS.values()], paper=PAPER,
                     paper_header="paper (vanilla / Fine-tune-CoT / + diverse)", digits=1,
                     seeds=len(seeds))
    records = Table("records", "Training records per student (the teacher's correct rationales for K=1 and K=4)",
                    list(STUDENTS.values()), digits=0, seeds=len(seeds))
    for task, label in TASKS.items():
        for seed in seeds:
            kept = _kept(out / "logs" / f"data-{task}-k1-s{seed}.log")
            if kept:
                accuracy.add(label, "teacher (train split, T=0)", 100 * kept[0] / kept[1])
            for name, column in STUDENTS.items():
                metrics = out / "runs" / f"{task}-{name}-s{seed}" / "eval" / "final" / "metrics.json"
                if metrics.exists():
                    accuracy.add(label, column, 100 * read_json(metrics, what="metrics file")["accuracy"])
                train = data_folder(out, task, name, seed) / "train.jsonl"
                if train.exists():
                    records.add(label, column, sum(1 for line in open(train, encoding="utf-8") if line.strip()))
    return [accuracy, records]


def _kept(log: Path) -> tuple[int, int, int] | None:
    """(questions the teacher got right, questions asked, records kept) from make-data's line in its log."""
    if not log.exists():
        return None
    match = KEPT.search(log.read_text(encoding="utf-8", errors="replace"))
    return tuple(int(g) for g in match.groups()) if match else None  # type: ignore[return-value]


def draw(tables: list[Table], out: Path) -> list[Path]:
    """Per-task bars of the three students (and the teacher), the seeds' spread as whiskers and dots."""
    from llmft.reproduce.plots import spread_bars

    table = next(t for t in tables if t.name == "accuracy")
    groups = [label for label in TASKS.values() if label in table.cells]
    if not groups:
        return []
    bars = {column: [table.values(g, column) for g in groups] for column in table.columns}
    return [spread_bars(out / "accuracy.png", groups, bars, title="Fine-tune-CoT: accuracy (mean, min-max over seeds)",
                        ylabel="accuracy, %", ylim=(0, 102))]


def _above(task: str, better: str, worse: str, margin: float = 0.0):
    return lambda t: every_seed(t["accuracy"], (TASKS[task], STUDENTS[better]), (TASKS[task], STUDENTS[worse]), margin)


def _all_above(task: str, floor: float):
    def check(tables: dict[str, Table]) -> bool | None:
        cells = [tables["accuracy"].values(TASKS[task], column) for column in STUDENTS.values()]
        return None if not all(cells) else all(v > floor for values in cells for v in values)
    return check


def _teacher_errs(tables: dict[str, Table]) -> bool | None:
    values = [v for label in TASKS.values() for v in tables["accuracy"].values(label, "teacher (train split, T=0)")]
    return None if not values else all(5 < v < 98 for v in values)


CLAIMS = [
    Claim("the teachers err (5-98% of training questions right, every task and seed): students learn from an "
          "imperfect teacher's filtered rationales", _teacher_errs),
    Claim("Last Letter: Fine-tune-CoT K=1 beats vanilla fine-tune by 10 points on every seed",
          _above("last_letter_concatenation", "k1", "vanilla", 10)),
    Claim("Last Letter: diverse reasoning K=4 beats vanilla fine-tune by 10 points on every seed",
          _above("last_letter_concatenation", "k4", "vanilla", 10)),
    Claim("Last Letter: diverse reasoning K=4 beats K=1 on every seed", _above("last_letter_concatenation", "k4", "k1")),
    Claim("Coin Flip: every student above 75% on every seed", _all_above("coin_flip", 75)),
    Claim("Coin Flip: diverse reasoning K=4 beats K=1 on every seed", _above("coin_flip", "k4", "k1")),
    Claim("Coin Flip: Fine-tune-CoT K=1 beats vanilla fine-tune on every seed (the reference's GPT-2 students)",
          _above("coin_flip", "k1", "vanilla")),
    Claim("arithmetic: diverse reasoning K=4 beats K=1 on every seed", _above("multiarith", "k4", "k1")),
    Claim("arithmetic: diverse reasoning K=4 beats vanilla fine-tune on every seed", _above("multiarith", "k4", "vanilla")),
]

SUMMARY = ("Per task, a tiny teacher (a 0.2M-parameter Llama, 600-piece BPE) trained briefly on worked solutions in "
           "the two Zero-shot-CoT steps answers the 350 training questions (`make-data cot-teacher --teacher "
           "RUN/final`); its correct rationales train from-scratch students of the same size, each for the same "
           "steps: vanilla fine-tune on the 350 gold answers, Fine-tune-CoT on the K=1 rationales (T=0) and "
           "diverse reasoning on the K=4 rationales (T=0.7). Accuracy on the 150 held-out questions, final model.")
NOTES = ("The reference distils text-davinci-002 (175B) into pretrained Flan-T5, GPT-2 and GPT-3 students and "
         "reports the best test epoch of 20; here teacher and students are tiny models trained from scratch, "
         "Last Letter uses 3 names (the reference 4), the arithmetic problems are our generator's (numbers 2-9, "
         "two operations), not MultiArith, and every student gets the same steps (the reference's diverse "
         "students train the same epochs on K times the data). The paper's column lists its Flan-T5-large and "
         "GPT-2 students as vanilla / Fine-tune-CoT / + diverse reasoning (K=4 is not the paper's K).")
QUICK_NOTE = (" `--quick` trains the students for 800 steps on Last Letter and the arithmetic task and 300 on Coin "
              "Flip (the full run: 1,500, 1,500 and 800; the teachers as in the full run) and gives the teacher's "
              "rationales and the students' answers 64 new tokens (128).")
