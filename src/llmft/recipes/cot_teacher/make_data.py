"""`llmft make-data cot-teacher`: the task's dataset and split, the teacher's completions (asked or read), and the
student's train.jsonl / eval.jsonl in the chosen format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from llmft.core.errors import LlmftError
from llmft.core.jsonl import read_json, write_jsonl
from llmft.core.progress import Progress
from llmft.recipes.cot_teacher.completions import completion_path, load_completions
from llmft.recipes.cot_teacher.formats import (
    COT_TEMPLATES,
    check_template,
    student_input,
    student_record,
    zs_cot_step1,
    zs_cot_step2,
)
from llmft.recipes.cot_teacher.generators import GENERATORS, few_shot_prompt, generate_samples
from llmft.recipes.cot_teacher.tasks import (
    DATASET_SIZES,
    default_split,
    load_dataset,
    load_split,
    make_dataset,
    save_dataset,
    select,
)
from llmft.recipes.cot_teacher.teacher import (
    TeacherSettings,
    completion_key,
    correct_questions,
    run_teacher,
    student_records,
)


def task_dataset(task: str, dataset_file: str | None, source: str | None, n: int, size: int,
                 seed: int) -> dict[str, Any]:
    """The reference's Dataset file, the task's original release, or a generated one (procedural tasks)."""
    if dataset_file:
        return load_dataset(dataset_file, task)
    if source:
        from llmft.recipes.cot_teacher.sources import load_source

        return make_dataset(task, load_source(task, source))
    if task not in GENERATORS:
        raise LlmftError(f"--task {task}: give --dataset (the reference's dataset/{task}.json) or --source; only "
                         f"{', '.join(GENERATORS)} can be generated")
    return make_dataset(task, generate_samples(task, n or DATASET_SIZES[task], seed, size))


def teacher_generator(teacher: str, model: str, chat: bool, batch_size: int,
                      deadline: float = 300.0) -> tuple[Any, str]:
    """(Generator, name for the completions file) for an endpoint URL or a llmft run folder."""
    if teacher.startswith(("http://", "https://")):
        from llmft.core.endpoint import Endpoint, EndpointGenerator

        if not model:
            raise LlmftError("--teacher-model is required with an endpoint URL (the model name to ask for)")
        endpoint = Endpoint(teacher, model, deadline=deadline)
        return EndpointGenerator(endpoint, mode="chat" if chat else "completions"), model.replace("/", "_")
    folder = Path(teacher)
    if not folder.is_dir():
        raise LlmftError(f"--teacher: '{teacher}' is neither an http(s) URL nor a run folder")
    from llmft.core.generation import HFGenerator
    from llmft.core.inference import load_for_inference

    _, tokenizer, network = load_for_inference(folder)
    return HFGenerator(network, tokenizer, batch_size=batch_size), folder.parent.name or folder.name


def make_student_data(out: Path, seed: int, *, task: str, dataset_file: str | None = None,
                      source: str | None = None, n: int = 0,
                      size: int = 0, split_file: str | None = None, teacher: str | None = None,
                      teacher_model: str = "", teacher_chat: bool = False, completions_file: str | None = None,
                      samples: int = 1, temperature: float | None = None, max_tokens: int = 128,
                      batch_size: int = 20, stop: tuple[str, ...] = ("END",), template: str = "ft_cot_token",
                      model_type: str = "decoder", few_shot_prompts: str | None = None,
                      request_deadline: float = 300.0) -> dict[str, Path]:
    check_template(template, model_type)
    dataset = task_dataset(task, dataset_file, source, n, size, seed)
    train_idx, test_idx = load_split(split_file) if split_file else default_split(task, len(dataset["data"]))
    select(dataset, train_idx + test_idx)  # every index in range before anything is written
    exemplars = _few_shot(task, few_shot_prompts, select(dataset, train_idx)) if template == "fs_cot" else ""
    if not dataset_file:
        save_dataset(dataset, out / "dataset.json")
    paths: dict[str, Path] = {}
    if template in COT_TEMPLATES:
        settings = TeacherSettings(samples=samples, max_tokens=max_tokens, batch_size=batch_size, seed=seed,
                                   temperature=(0.0 if samples == 1 else 0.7) if temperature is None else temperature,
                                   stop=tuple(s for s in stop if s))
        if teacher:
            generator, name = teacher_generator(teacher, teacher_model, teacher_chat, batch_size, request_deadline)
            if teacher.startswith(("http://", "https://")):
                settings.concurrency = batch_size  # the batch's prompts as parallel requests
            path = Path(completions_file) if completions_file else completion_path(
                out / "teacher", name, completion_key(settings), task)
            answers = 2 * samples * len(train_idx)  # a rationale and a final answer per sample
            # One line per saved batch off a terminal (both steps); a bar on one.
            with Progress(answers, "teacher", unit="answers", lines=answers, min_seconds=0) as bar:
                completions = run_teacher(generator, select(dataset, train_idx), path, task=task,
                                          teacher_name=name, settings=settings,
                                          on_batch=lambda done, total: bar.update(done - bar.done))
        elif completions_file:
            completions = load_completions(completions_file)
            if completions["metadata"]["dataset_key"] != task:
                raise LlmftError(f"--completions {completions_file} is for '{completions['metadata']['dataset_key']}'")
        else:
            raise LlmftError(f"--format {template} needs --teacher (to ask) or --completions (a teacher's file)")
        train = student_records(completions, train_idx, samples, model_type, template)
        click.echo(f"teacher correct {correct_questions(completions, train_idx, samples)} of {len(train_idx)} "
                   f"questions, kept {len(train)} records", err=True)
        if not train:
            raise LlmftError("the teacher answered no training question correctly; nothing to fine-tune on")
        paths["train"] = write_jsonl(out / "train.jsonl", [dict(r, task=task) for r in train])
    elif template == "ft_token":
        train = [student_record(s, "ft_token", model_type) for s in select(dataset, train_idx)]
        paths["train"] = write_jsonl(out / "train.jsonl", [dict(r, task=task) for r in train])
    held_out = [{"prompt": student_input(s, template, model_type, exemplars), "answer": s["answer"],
                 "sample_index": s["sample_index"], "task": task, "template": template}
                for s in select(dataset, test_idx)]
    paths["eval"] = write_jsonl(out / "eval.jsonl", held_out)
    return paths


def teacher_records(samples: list[dict[str, Any]]) -> list[dict[str, str]]:
    """A teacher's lessons: each worked solution as the two Zero-shot-CoT steps the teacher is asked in, the
    rationale after step 1's "Let's think step by step", then the answer after step 2's "Therefore, the answer"."""
    records = []
    for sample in samples:
        step1 = zs_cot_step1(sample["question"])
        records.append({"prompt": step1, "completion": " " + sample["rationale"]})
        records.append({"prompt": zs_cot_step2(step1, sample["rationale"]), "completion": f" {sample['answer']}."})
    return records


def make_teacher_data(out: Path, seed: int, *, task: str, n: int = 0, size: int = 0) -> dict[str, Path]:
    """`make-data cot-teacher --teacher-train`: train.jsonl of worked solutions (generated tasks only) for a
    teacher trained here (recipes/cot-teacher-teacher-tiny.toml); use another --seed than the students' data."""
    if task not in GENERATORS:
        raise LlmftError(f"--teacher-train: only {', '.join(GENERATORS)} have worked solutions to train a teacher on")
    samples = generate_samples(task, n or 3000, seed, size)
    return {"train": write_jsonl(out / "train.jsonl", [dict(r, task=task) for r in teacher_records(samples)])}


def _few_shot(task: str, prompts_file: str | None, train: list[dict[str, Any]]) -> str:
    if prompts_file:
        raw = read_json(prompts_file, what="--few-shot-prompts file")
        if not isinstance(raw, dict) or not isinstance(raw.get(task), dict) or not isinstance(
                raw[task].get("prompt"), str):
            raise LlmftError(f"--few-shot-prompts {prompts_file}: no prompt for '{task}'")
        return raw[task]["prompt"]
    worked = [s for s in train if s.get("rationale")]
    if len(worked) < 8:
        raise LlmftError(f"--format fs_cot: give --few-shot-prompts (the reference's few_shot_cot_prompts.json); "
                         f"'{task}' has no worked training samples to draw 8 exemplars from")
    return few_shot_prompt(worked[:8])
