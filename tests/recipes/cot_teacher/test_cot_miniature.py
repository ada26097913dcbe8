"""Miniature of Fine-tune-CoT's claim on CPU (slow): a real tiny teacher, trained on worked solutions and making
real mistakes, is asked Zero-shot-CoT over HTTP (OpenAI format); its correct rationales train from-scratch
students. Compared on the same budget: Fine-tune-CoT vs vanilla fine-tune, and diverse reasoning K=4 vs K=1, on
Last Letter, Coin Flip and the MultiArith-style generator.

Run: `pytest -m slow tests/recipes/cot_teacher/test_cot_miniature.py -s`; the figures go to stdout and, with
$COT_MINIATURE_OUT set, to that folder (miniature.json and each student's results.jsonl).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from llmft.core.jsonl import read_jsonl, write_jsonl
from llmft.recipes.base import get_recipe, load_recipe_config, recipe_config
from llmft.recipes.cot_teacher.formats import zs_cot_step1, zs_cot_step2
from llmft.recipes.cot_teacher.generators import generate_samples
from llmft.recipes.cot_teacher.make_data import make_student_data

# Per task: difficulty (words / people), teacher training steps (few enough to leave mistakes) and student steps
# (the same for every student of a task). 500 samples split 350/150 as the reference's default split.
SETTINGS = {
    "last_letter_concatenation": {"size": 3, "teacher_steps": 1100, "student_steps": 1500},
    "coin_flip": {"size": 4, "teacher_steps": 180, "student_steps": 800},
    "multiarith": {"size": 9, "teacher_steps": 2000, "student_steps": 1500},  # numbers 2-9, two operations
}
# A BPE tokenizer (600 pieces) trained on the data: names become one or two tokens, as in a real LLM's vocabulary.
MODEL = {"name": "tiny", "tokenizer": "bpe", "vocab_size": 600,
         "tiny": {"hidden_size": 64, "num_layers": 3, "num_heads": 4}}
RECIPE = get_recipe("cot-teacher")


def config(tmp: Path, name: str, train: Path, held_out: Path | None, steps: int, lr: float = 3e-3):
    raw = {
        "recipe": "cot-teacher",
        "model": MODEL,
        "adapter": {"method": "full"},
        "data": {"train": str(train), "eval": str(held_out or ""), "max_length": 512, "packing": "none"},
        "train": {"output_dir": str(tmp / name), "max_steps": steps, "batch_size": 8, "learning_rate": lr,
                  "lr_scheduler": "cosine", "warmup_steps": 30, "bf16": "false", "logging_steps": 50},
        "eval": {"max_new_tokens": 128, "batch_size": 64},
    }
    return recipe_config(raw, source=name)


def teacher_records(samples: list[dict]) -> list[dict]:
    """Worked solutions in the teacher's two Zero-shot-CoT steps: the rationale, then the answer."""
    records = []
    for s in samples:
        step1 = zs_cot_step1(s["question"])
        records.append({"prompt": step1, "completion": " " + s["rationale"]})
        records.append({"prompt": zs_cot_step2(step1, s["rationale"]), "completion": f" {s['answer']}."})
    return records


def run_task(task: str, tmp: Path, keep: Path | None = None) -> dict:
    from tests.openai_stub import OpenAIStub

    from llmft.core.evaluation import evaluate_folder
    from llmft.core.trainer import train

    opts = SETTINGS[task]
    started = time.time()
    worked = generate_samples(task, 3000, seed=99, size=opts["size"])  # the teacher's own lessons
    teacher_data = write_jsonl(tmp / "teacher-train.jsonl", teacher_records(worked))
    train(config(tmp, "teacher", teacher_data, None, opts["teacher_steps"]), RECIPE, progress=False)
    print(task, f"teacher trained {(time.time() - started) / 60:.1f} min", flush=True)

    from llmft.core.generation import HFGenerator
    from llmft.core.inference import load_for_inference

    _, tokenizer, model = load_for_inference(tmp / "teacher" / "final")
    teacher = HFGenerator(model, tokenizer, batch_size=64)
    common = {"task": task, "n": 500, "size": opts["size"], "max_tokens": 128, "batch_size": 64}
    # K=1 at T=0 as the reference's `ft_cot`; K=4 at T=0.7 as `ft_cot_t70_4aug`.
    with OpenAIStub(teacher) as url:
        if os.environ.get("COT_MINIATURE_LOCAL_TEACHER"):  # the run folder instead of HTTP (same Generator)
            url = str(tmp / "teacher" / "final")
        paths = {"k1": make_student_data(tmp / "k1", 0, teacher=url, teacher_model="tiny-teacher", samples=1,
                                         **common),
                 "k4": make_student_data(tmp / "k4", 0, teacher=url, teacher_model="tiny-teacher", samples=4,
                                         temperature=0.7, **common)}
    paths["vanilla"] = make_student_data(tmp / "vanilla", 0, template="ft_token", **common)
    teacher_file = next((tmp / "k1" / "teacher").rglob("*.json"))
    teacher_rows = [c for rows in json.loads(teacher_file.read_text())["data"].values() for c in rows]
    from llmft.recipes.cot_teacher.parsing import is_correct

    teacher_acc = sum(is_correct(task, c["completion"], c["answer"], "zs_cot") for c in teacher_rows) / len(teacher_rows)
    result = {"task": task, "teacher_train_accuracy": teacher_acc,
              "train_records": {k: len(read_jsonl(p["train"])) for k, p in paths.items()}}
    for name, data in paths.items():
        cfg = config(tmp, f"student-{name}", data["train"], data["eval"], opts["student_steps"])
        train(cfg, RECIPE, progress=False)
        folder = tmp / f"student-{name}" / "final"
        metrics, eval_dir = evaluate_folder(folder, *load_recipe_config(folder / "llmft.toml"))
        result[name] = metrics["accuracy"]
        if keep is not None:
            shutil.copy(eval_dir / "results.jsonl", keep / f"{task}-{name}-results.jsonl")
        print(task, name, f"accuracy {metrics['accuracy']:.3f}", f"{(time.time() - started) / 60:.1f} min",
              flush=True)
    result["minutes"] = (time.time() - started) / 60
    return result


@pytest.mark.slow
def test_fine_tune_cot_miniature(tmp_path):
    keep = Path(os.environ["COT_MINIATURE_OUT"]) if os.environ.get("COT_MINIATURE_OUT") else None
    tasks = os.environ.get("COT_MINIATURE_TASKS", ",".join(SETTINGS)).split(",")
    results = {task: run_task(task, tmp_path / task, keep) for task in tasks}
    for r in results.values():
        print(json.dumps(r))
    if keep is not None:
        (keep / "miniature.json").write_text(json.dumps(list(results.values()), indent=2))
    for r in results.values():
        assert 0.05 < r["teacher_train_accuracy"] < 0.98  # a real teacher: right often, wrong sometimes
        assert r["train_records"]["k4"] > r["train_records"]["k1"]
    # What held in every run of the miniature (docs/cot-teacher.md): on Last Letter both Fine-tune-CoT students beat
    # the vanilla one on the same budget (K=4 vs K=1 there moved with the teacher's samples: 41.3 and 33.3 vs 34.7);
    # Coin Flip is learned by all three students, diverse better than one sample; on arithmetic diverse reasoning
    # beats one sample (and vanilla, by 3-9 points, as the reference's Flan-T5 and GPT-2 students on MultiArith).
    if "last_letter_concatenation" in results:
        r = results["last_letter_concatenation"]
        assert min(r["k1"], r["k4"]) > r["vanilla"] + 0.1
    if "coin_flip" in results:
        r = results["coin_flip"]
        assert min(r["k1"], r["k4"], r["vanilla"]) > 0.75 and r["k4"] > r["k1"]
    if "multiarith" in results:
        r = results["multiarith"]
        assert r["k4"] > r["k1"]
