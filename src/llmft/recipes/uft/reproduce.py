"""The uft miniature for `llmft reproduce uft`: pretrain a tiny Llama with and without Twist, delete Twist by
fine-tuning (filtering + adversarial), recover it by reverse fine-tuning (reFT), and probe the deleted model.

Full: the presets as they are (recipes/uft-{pretrain,deletion,recovery}-tiny.toml); `--quick` pretrains for
fewer steps and scores fewer generations. Seeds vary the training of every run; the stories are one set.
"""

from __future__ import annotations

from pathlib import Path

from llmft.core.jsonl import read_json, read_jsonl
from llmft.reproduce.plan import Claim, Plan, Settings, Stage, Table

# Runs: (preset, training set, base run or "" for from scratch).
RUNS = {
    "pretrain": ("pretrain", "pretrain-all", ""),
    "pretrain-no-twist": ("pretrain", "filter-Twist", ""),
    "deletion": ("deletion", "filter-adv-Twist", "pretrain"),
    "recovery": ("recovery", "recovery-Twist", "deletion"),
    "recovery-no-twist": ("recovery", "recovery-Twist", "pretrain-no-twist"),
}
# The report reads the scores and the probe, not the losses: `--quick` drops the held-out loss during training
# and scores 64 stories' losses per set.
QUICK_COMMON = ["train.eval_steps=0", "uft.n_generations=24", "uft.loss_examples=64"]
QUICK = {"pretrain": ["train.max_steps=600", "train.save_steps=0", *QUICK_COMMON],
         "deletion": ["train.max_steps=150", "train.save_steps=0", *QUICK_COMMON],
         "recovery": QUICK_COMMON}
WEIGHT = {"pretrain": 3.0, "deletion": 1.0, "recovery": 2.0}
# The published table (tinystories_final.ipynb): Twist generation score at reFT iterations 0 / 30 / 270 (91M
# model, lr 1e-5 deletion).
PAPER = {"deleted (filtering + adversarial)": "0.12 / 0.44 / 0.81", "never pretrained on Twist": "0.12 / 0.31 / 0.44"}
STEPS = ("0", "30", "270")


def plan(settings: Settings) -> Plan:
    """One data set; per seed five trainings (pretrain x2, deletion, reFT x2) and their evaluations."""
    from llmft.commands.recipes import preset_dir

    out, data = settings.out, settings.out / "data"
    if settings.preset == "paper":
        from llmft.core.errors import LlmftError

        raise LlmftError("reproduce uft --preset paper: the paper-size flow needs the TinyStories data and an API "
                         "judge; run recipes/uft-pretrain-91m.toml, uft-deletion.toml and uft-recovery.toml "
                         "(docs/recipes/uft.md)")
    sets = [f"data.eval={data}/pretrain-all/eval.jsonl", f"uft.task_set={data}/recovery-Twist/eval.jsonl",
            f"uft.complement_set={data}/filter-Twist/eval.jsonl",
            f"uft.adversarial_set={data}/filter-adv-Twist/eval.jsonl"]
    stages = [Stage("data", ("make-data", "uft", "--preset", "deletion-suite", "--out", str(data), "--overwrite"),
                    0.3)]
    for seed in settings.seeds:
        for name, (preset, train_set, base) in RUNS.items():
            run = run_folder(out, name, seed)
            argv = ["train", str(preset_dir() / f"uft-{preset}-tiny.toml"), "--overwrite", *sets,
                    f"data.train={data}/{train_set}/train.jsonl", f"train.output_dir={run}", f"train.seed={seed}"]
            if base:
                argv.append(f"model.name={run_folder(out, base, seed) / 'final'}")
            if settings.quick:
                argv += QUICK[preset]
            needs = ("data", f"train-{base}-s{seed}") if base else ("data",)
            stages.append(Stage(f"train-{name}-s{seed}", (*argv, *settings.overrides), WEIGHT[preset], after=needs))
        for name in RUNS:
            stages.append(Stage(f"eval-{name}-s{seed}", ("eval", "--adapter", str(run_folder(out, name, seed) / "final")),
                                1.0, after=(f"train-{name}-s{seed}",)))
    return Plan("uft", "What fine-tuning deletes (Jain, Kirk et al., ICLR 2024)", SUMMARY, stages,
                collect=lambda folder: collect(folder, settings.seeds), claims=CLAIMS, draw=draw,
                notes=NOTES + (QUICK_NOTE if settings.quick else ""))


def run_folder(out: Path, name: str, seed: int) -> Path:
    return out / "runs" / f"{name}-s{seed}"


def collect(out: Path, seeds: list[int] | tuple[int, ...]) -> list[Table]:
    """The Twist generation score of each run, the reFT curves, and the Twist probe on the deleted model."""
    scores = Table("scores", "Twist generation score (share of generated stories with a twist when one is asked)",
                   ["Twist score"], seeds=len(seeds))
    curves = Table("recovery", "The reFT recovery curve: Twist generation score after N steps of reFT",
                   [f"step {s}" for s in STEPS], paper=PAPER, paper_header="paper, 91M (steps 0 / 30 / 270)",
                   seeds=len(seeds))
    probe = Table("probe", "Twist probe on the deleted model: best layer's test accuracy against the majority rate",
                  ["probe accuracy", "majority rate"], seeds=len(seeds))
    labels = {"pretrain": "pretrained with Twist", "pretrain-no-twist": "pretrained without Twist",
              "deletion": "after deletion", "recovery": "after 270 steps of reFT"}
    majority = _majority_rate(out / "data" / "pretrain-all" / "eval.jsonl")
    for seed in seeds:
        metrics = {name: _metrics(out, name, seed) for name in RUNS}
        for name, label in labels.items():
            if metrics[name]:
                scores.add(label, "Twist score", metrics[name].get("generation_score"))
        for name, label in (("recovery", "deleted (filtering + adversarial)"),
                            ("recovery-no-twist", "never pretrained on Twist")):
            for step in STEPS:
                curves.add(label, f"step {step}", (metrics[name] or {}).get(f"recovery/{step}"))
        layers = [v for k, v in (metrics["deletion"] or {}).items() if k.startswith("probe/Twist/")]
        if layers:
            probe.add("deleted model", "probe accuracy", max(layers))
            probe.add("deleted model", "majority rate", majority)
    return [scores, curves, probe]


def _metrics(out: Path, name: str, seed: int) -> dict | None:
    path = run_folder(out, name, seed) / "eval" / "final" / "metrics.json"
    return read_json(path, what="metrics file") if path.exists() else None


def _majority_rate(eval_file: Path) -> float | None:
    """The Twist majority rate of the probes' test split (the split probe_accuracy draws: eval.seed 0, 20%)."""
    from llmft.recipes.uft.probes import split_indices

    if not eval_file.exists():
        return None
    records = read_jsonl(eval_file)[:1000]
    _, test = split_indices(len(records), 0.2, seed=0)
    rate = sum("Twist" in records[i]["story_features"] for i in test) / len(test)
    return max(rate, 1 - rate)


def draw(tables: list[Table], out: Path) -> list[Path]:
    """The reFT recovery curve of the deleted model and of the model never pretrained on Twist."""
    from llmft.reproduce.plots import spread_lines

    table = next(t for t in tables if t.name == "recovery")
    series = {row: ([int(s) for s in STEPS], [table.cells[row][f"step {s}"] for s in STEPS])
              for row in table.cells if all(table.cells[row].get(f"step {s}") for s in STEPS)}
    if not series:
        return []
    return [spread_lines(out / "recovery.png", series, title="reFT on Twist stories (mean, min-max over seeds)",
                         xlabel="reFT steps", ylabel="Twist generation score")]


def _every(tables: dict[str, Table], high: tuple[str, str, str], low: tuple[str, str, str], margin: float):
    a, b = tables[high[0]].values(high[1], high[2]), tables[low[0]].values(low[1], low[2])
    return None if not a or len(a) != len(b) else all(x >= y + margin for x, y in zip(a, b))


CLAIMS = [
    Claim("pretraining with Twist teaches it (score 0.5 above the model pretrained without, every seed)",
          lambda t: _every(t, ("scores", "pretrained with Twist", "Twist score"),
                           ("scores", "pretrained without Twist", "Twist score"), 0.5)),
    Claim("fine-tuning deletes Twist from generation (0.5 below the pretrained model, every seed)",
          lambda t: _every(t, ("scores", "pretrained with Twist", "Twist score"),
                           ("scores", "after deletion", "Twist score"), 0.5)),
    Claim("30 steps of reFT revive it (0.5 above the deleted model, every seed)",
          lambda t: _every(t, ("recovery", "deleted (filtering + adversarial)", "step 30"),
                           ("recovery", "deleted (filtering + adversarial)", "step 0"), 0.5)),
    Claim("it comes back far faster than it is learnt (after 30 steps 0.5 above the model never pretrained on "
          "Twist, every seed)",
          lambda t: _every(t, ("recovery", "deleted (filtering + adversarial)", "step 30"),
                           ("recovery", "never pretrained on Twist", "step 30"), 0.5)),
    Claim("Twist stays linearly decodable after deletion (probe 0.1 above the majority rate, every seed)",
          lambda t: _every(t, ("probe", "deleted model", "probe accuracy"),
                           ("probe", "deleted model", "majority rate"), 0.1)),
]

SUMMARY = ("A tiny Llama (64 hidden, 3 layers, BPE 1024) pretrained from scratch on procedural feature-tagged "
           "stories, with Twist and without it; Twist deleted by fine-tuning on Twist-free stories whose prompts "
           "ask for it (filtering + adversarial); then reverse fine-tuning (reFT) on Twist stories, from the "
           "deleted model and from the model never pretrained on Twist. The score is the share of generated "
           "stories with a twist when the prompt asks for one (a rule-based checker, not an API judge); the probe "
           "is a linear head on the deleted model's hidden states.")
NOTES = ("The paper's runs are llama2.c models (8M-91M) on TinyStories judged by gpt-3.5-turbo; the published "
         "table gives the Twist score after 0, 30, 270 and 3000 reFT iterations, shown beside the curve for the "
         "91M model deleted at lr 1e-5. Here the stories are procedural and the judge a checker that agrees with "
         "the generator's labels; the reading (a deleted capability returns in a few steps and stays decodable) "
         "is the paper's, the sizes are not.")
QUICK_NOTE = (" `--quick` pretrains for 600 steps (the full run: 1,000), deletes for 150 (200) and scores 24 "
              "generated stories per model (64); reFT keeps its 270 steps. At 450 pretraining steps Twist was "
              "learnt too weakly (0.40, 0.25-0.58) for the first two claims.")
