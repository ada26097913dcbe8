"""Re-Tuning's miniature for `llmft reproduce retuning`: addition, parity and DP, each trained from scratch as
recursive (Re-Tuning), scratchpad and baseline on the same preset and budget, evaluated by size.

The full run is the CPU presets' own settings (recipes/retuning-{addition,parity,dp}-tiny.toml, with the data
commands their first lines give); `--quick` trains smaller sizes for fewer steps. Seeds vary the training
(`train.seed`); every seed trains on the same data.
"""

from __future__ import annotations

from pathlib import Path

from llmft.core.jsonl import read_json
from llmft.recipes.retuning.data import FORMATS, TASKS
from llmft.reproduce.claims import mean
from llmft.reproduce.plan import Claim, Plan, Settings, Stage, Table

# Pasewark et al. 2024, LLaMA-7B, averaged over addition, parity and DP (Re-Tuning minus the other format).
PAPER_GAIN = {"baseline": 37.4, "scratchpad": 34.5}

# Per task: make-data options, eval.max_new_tokens per format, and the training overrides on the preset.
FULL = {
    "addition": {"data": ["--min-size", "3", "--max-size", "5", "--n", "20000", "--no-resample"],
                 "tokens": {"recursive": 40, "scratchpad": 200, "baseline": 40}, "train": []},
    "parity": {"data": ["--max-size", "8"], "tokens": {"recursive": 100, "scratchpad": 100, "baseline": 20},
               "train": []},
    "dp": {"data": ["--max-size", "4", "--n", "3000", "--eval-n", "50"],
           "tokens": {"recursive": 300, "scratchpad": 2400, "baseline": 40}, "train": []},
}
QUICK_TRAIN = ["train.save_steps=0", "train.logging_steps=50"]
QUICK = {
    "addition": {"data": ["--min-size", "1", "--max-size", "3", "--eval-max-size", "4", "--n", "4000",
                          "--no-resample", "--eval-n", "20"],
                 "tokens": {"recursive": 30, "scratchpad": 100, "baseline": 30},
                 "train": ["train.max_steps=150", "train.batch_size=16", "train.warmup_steps=20", *QUICK_TRAIN]},
    # Lists of up to 6 bits: at this budget 8-bit lists left every format at chance (0.5).
    "parity": {"data": ["--max-size", "6", "--eval-max-size", "8", "--eval-n", "20"],
               "tokens": {"recursive": 60, "scratchpad": 60, "baseline": 20},
               "train": ["train.max_steps=170", "train.batch_size=32", *QUICK_TRAIN]},
    # Scored on the trained sizes only: a size-4 scratchpad (~1,000 characters) would not fit its tokens.
    "dp": {"data": ["--max-size", "3", "--eval-max-size", "3", "--n", "1000", "--eval-n", "10"],
           "tokens": {"recursive": 240, "scratchpad": 800, "baseline": 30},
           "train": ["train.max_steps=20", *QUICK_TRAIN]},
}
# Relative cost of each task's training and evaluation (for the time-left estimate).
WEIGHT = {"addition": 2.0, "parity": 2.0, "dp": 2.0}


def plan(settings: Settings) -> Plan:
    """The nine runs (three tasks x three formats) per seed, data made once per task and format."""
    from llmft.commands.recipes import preset_dir

    settings_by_task = QUICK if settings.quick else FULL
    stages: list[Stage] = []
    for task in TASKS:
        task_settings = settings_by_task[task]
        preset = preset_dir() / f"retuning-{task}-{'llama' if settings.preset == 'paper' else 'tiny'}.toml"
        for fmt in FORMATS:
            data = settings.out / "data" / f"{task}-{fmt}"
            make = ["make-data", "retuning", "--task", task, "--format", fmt, "--out", str(data), "--overwrite"]
            if settings.preset != "paper":
                make += task_settings["data"]
            stages.append(Stage(f"data-{task}-{fmt}", tuple(make), 0.1))
            for seed in settings.seeds:
                run = run_folder(settings.out, task, fmt, seed)
                train = ["train", str(preset), "--overwrite", f"retuning.format={fmt}",
                         f"data.train={data / 'train.jsonl'}", f"data.eval={data / 'eval.jsonl'}",
                         f"train.output_dir={run}", f"train.seed={seed}"]
                if settings.preset != "paper":
                    train += [f"eval.max_new_tokens={task_settings['tokens'][fmt]}", *task_settings["train"]]
                stages.append(Stage(f"train-{task}-{fmt}-s{seed}", (*train, *settings.overrides), WEIGHT[task],
                                    after=(f"data-{task}-{fmt}",)))
                stages.append(Stage(f"eval-{task}-{fmt}-s{seed}", ("eval", "--adapter", str(run / "final")),
                                    WEIGHT[task] / 2, after=(f"train-{task}-{fmt}-s{seed}",)))
    return Plan("retuning", "Re-Tuning (Pasewark et al., ACL 2024)", SUMMARY, stages,
                collect=lambda out: collect(out, settings.seeds), claims=CLAIMS, draw=draw,
                notes=NOTES + (QUICK_NOTE if settings.quick else ""))


def run_folder(out: Path, task: str, fmt: str, seed: int) -> Path:
    return out / "runs" / f"{task}-{fmt}-s{seed}"


def mean_accuracy(metrics: dict, beyond: bool) -> float | None:
    """Unweighted mean of accuracy_by_size over the trained sizes, or over the sizes beyond them."""
    train_max = int(metrics["train_max_size"])
    values = [acc for size, acc in metrics["accuracy_by_size"].items() if (int(size) > train_max) == beyond]
    return sum(values) / len(values) if values else None


def collect(out: Path, seeds: list[int] | tuple[int, ...]) -> list[Table]:
    """Per task accuracy by size; the formats in and beyond the trained sizes; Re-Tuning's gains."""
    summary = Table("formats", "Each format inside and beyond the trained sizes (mean accuracy over the sizes)",
                    ["trained sizes", "beyond"], seeds=len(seeds))
    gains = Table("gains", "Re-Tuning's gain in points (mean over the tasks of each run's all-size accuracy)",
                  ["this run"], paper={f"over {other}": f"+{gain}" for other, gain in PAPER_GAIN.items()},
                  paper_header="paper, LLaMA-7B", digits=1, seeds=len(seeds))
    by_size: list[Table] = []
    for task in TASKS:
        table = Table(f"{task}-by-size", f"{task}: accuracy by size", list(FORMATS), seeds=len(seeds))
        found = {}
        for fmt in FORMATS:
            for seed in seeds:
                path = run_folder(out, task, fmt, seed) / "eval" / "final" / "metrics.json"
                if not path.exists():
                    continue
                metrics = read_json(path, what="metrics file")
                found[(fmt, seed)] = metrics
                train_max = int(metrics["train_max_size"])
                for size, acc in sorted(metrics["accuracy_by_size"].items(), key=lambda item: int(item[0])):
                    label = f"{size} ({'trained' if int(size) <= train_max else 'beyond'})"
                    table.add(label, fmt, acc)
                summary.add(f"{task} {fmt}", "trained sizes", mean_accuracy(metrics, False))
                summary.add(f"{task} {fmt}", "beyond", mean_accuracy(metrics, True))
        by_size.append(table)
        for seed in seeds:
            if ("recursive", seed) not in found:
                continue
            for other in PAPER_GAIN:
                if (other, seed) in found:
                    gain = 100 * (found[("recursive", seed)]["accuracy"] - found[(other, seed)]["accuracy"])
                    gains.cells.setdefault(f"over {other}", {}).setdefault(f"{task}", []).append(gain)
    # The gain averaged over the tasks, per seed (each seed's runs of every task).
    for per_task in gains.cells.values():
        complete = [values for values in per_task.values() if len(values) == len(seeds)]
        if len(complete) == len(TASKS):
            per_task["this run"] = [mean([values[i] for values in complete]) for i in range(len(seeds))]
    gains.columns = ["this run", *TASKS]
    return [summary, gains, *by_size]


def draw(tables: list[Table], out: Path) -> list[Path]:
    """One plot per task: accuracy by size per format, the seeds' spread shaded, the trained sizes grey."""
    from llmft.reproduce.plots import spread_lines

    paths = []
    for table in tables:
        if not table.name.endswith("-by-size") or not table.cells:
            continue
        sizes = [int(row.split()[0]) for row in table.cells]
        trained = [int(row.split()[0]) for row in table.cells if "trained" in row]
        series = {fmt: ([s for s, row in zip(sizes, table.cells) if table.values(row, fmt)],
                        [table.values(row, fmt) for row in table.cells if table.values(row, fmt)])
                  for fmt in table.columns}
        paths.append(spread_lines(out / f"{table.name}.png", {k: v for k, v in series.items() if v[0]},
                                  title=table.title + " (mean, min-max over seeds)", xlabel="size",
                                  ylabel="accuracy", shade=(min(trained) - 0.5, max(trained) + 0.5) if trained else None,
                                  shade_label="trained sizes"))
    return paths


def _gain(tables: dict[str, Table], other: str) -> bool | None:
    values = tables["gains"].values(f"over {other}", "this run")
    return None if not values else all(v > 0 for v in values)


def _beyond(tables: dict[str, Table], task: str, column: str, margin: float) -> bool | None:
    table = tables["formats"]
    recursive = table.values(f"{task} recursive", column)
    others = [table.values(f"{task} {fmt}", column) for fmt in ("scratchpad", "baseline")]
    if not recursive or any(len(o) != len(recursive) for o in others):
        return None
    return all(r > max(o[i] for o in others) + margin for i, r in enumerate(recursive))


def _paper_size(tables: dict[str, Table]) -> bool | None:
    means = {other: tables["gains"].values(f"over {other}", "this run") for other in PAPER_GAIN}
    if not all(means.values()):
        return None
    return all(mean(means[other]) >= PAPER_GAIN[other] - 10 for other in PAPER_GAIN)


CLAIMS = [
    Claim("Re-Tuning beats the baseline on average over the three tasks, on every seed",
          lambda t: _gain(t, "baseline")),
    Claim("Re-Tuning beats the scratchpad on average over the three tasks, on every seed",
          lambda t: _gain(t, "scratchpad")),
    Claim("parity: the recursive model extrapolates past its trained sizes (mean beyond them 0.2 above both "
          "other formats, on every seed)", lambda t: _beyond(t, "parity", "beyond", 0.2)),
    Claim("addition: inside the trained sizes the recursive model is above both other formats on every seed",
          lambda t: _beyond(t, "addition", "trained sizes", 0.0)),
    Claim("addition: the recursive model extrapolates past its trained sizes (0.2 above both other formats "
          "beyond them, on every seed)", lambda t: _beyond(t, "addition", "beyond", 0.2)),
    Claim("DP: inside the trained sizes the recursive model is above both other formats on every seed",
          lambda t: _beyond(t, "dp", "trained sizes", 0.0)),
    Claim("the gains reach the paper's size (mean within 10 points of +37.4 over baseline and +34.5 over "
          "scratchpad)", _paper_size),
]

SUMMARY = ("Three tasks (addition, parity, maximum-sum non-adjacent subsequence), each in the three formats the "
           "paper compares: recursive (Re-Tuning: the model calls itself on the subproblem), scratchpad (the "
           "whole trace in one sequence) and baseline (the answer alone). A tiny Llama (char tokenizer) is "
           "trained from scratch per task and format on the same preset and budget and scored on sizes up "
           "to twice the largest trained one.")
NOTES = ("The paper fine-tunes LLaMA-7B/13B with LoRA on sizes up to 15 digits (addition), 21 bits (parity) and 5 "
         "(DP); its abstract gives the gains averaged over the three tasks (+37.4 and +34.5 points for "
         "LLaMA-7B). Its per-length curves are not published as tables, so only the averaged gains stand "
         "beside this table. Here the models are 0.8M-parameter Llamas trained from scratch on CPU: the "
         "comparison of formats on one budget is the paper's, the scale is not. The gains are each run's "
         "accuracy over all its evaluated sizes (in and beyond the trained ones), averaged over the tasks.")
QUICK_NOTE = (" `--quick` trains addition for 150 steps of 16 rows on 1-3 digit problems (the full run: 1,600 of 32 "
              "on 3-5 digits), parity for 170 steps of 32 rows on lists of up to 6 bits (900 of 64, up to 8) and DP "
              "for 20 steps of 8 rows on arrays of up to 3 (250 of 8, up to 4), each scored on fewer problems and "
              "sizes (DP on its trained sizes only). At that budget only parity is learnt: addition and DP show "
              "the formats side by side, not what they can reach.")
