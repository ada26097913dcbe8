"""The teacher: Zero-shot-CoT's two steps through any Generator (an OpenAI-compatible endpoint or a local run),
K samples per question for diverse reasoning, saved as a CompletionDataset after every batch so an interrupted
run re-asks nothing; then the student training records from the samples whose final answer is right."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmft.core.errors import LlmftError
from llmft.core.results import batches
from llmft.recipes.cot_teacher.completions import (
    load_completions,
    new_completions,
    save_completions,
    select_samples,
)
from llmft.recipes.cot_teacher.formats import ModelType, student_record, zs_cot_step1, zs_cot_step2


@dataclass
class TeacherSettings:
    """How the teacher is asked (the reference: 128 tokens per step, T=0 for one sample, T=0.7 for diverse)."""

    samples: int = 1  # completions per question (diverse reasoning when > 1)
    temperature: float = 0.0  # step 1 (the rationale); step 2 (the answer) is always greedy
    max_tokens: int = 128
    batch_size: int = 20  # the reference's requests held 20 prompts
    seed: int = 0
    stop: tuple[str, ...] = ("END",)  # the reference sends stop="END" with every teacher request
    # Requests in flight at once (an endpoint answers one prompt per request); 1 = one generate() per batch.
    concurrency: int = 1


def completion_key(settings: TeacherSettings) -> str:
    """The reference's names: `zs_cot` at T=0, `zs_cot_t70` at T=0.7 (`t` + temperature x 100 in general)."""
    return "zs_cot" if settings.temperature == 0 else f"zs_cot_t{round(settings.temperature * 100)}"


def run_teacher(generator: Any, samples: Sequence[dict[str, Any]], path: str | Path, *, task: str,
                teacher_name: str, settings: TeacherSettings,
                on_batch: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Ask the teacher about every sample (a Dataset's data rows) and return the CompletionDataset at `path`.

    Resumable: answers the file at `path` holds for the same question under the same settings are kept and
    never asked again; a question whose text changed is asked afresh. `on_batch(done, total)` reports progress
    after each saved batch.
    """
    path = Path(path)
    key = completion_key(settings)
    asked = _asked_how(settings)
    if path.exists():
        completions = load_completions(path)
        meta = completions["metadata"]
        expected = {"dataset_key": task, "base_model": teacher_name, "completion_key": key, **asked}
        for field, value in expected.items():
            if field in meta and meta[field] != value:
                raise LlmftError(f"{path}: holds {field} {json.dumps(meta[field])}, not {json.dumps(value)}; "
                                 "use another --out")
        meta.update(asked)
    else:
        completions = new_completions(teacher_name, key, task, "zs_cot", reasoning_temperature=settings.temperature,
                                      temperature=0.0, **asked)
    _populate(completions, samples, settings.samples)
    save_completions(completions, path)
    rows = [c for sample in samples for c in completions["data"][sample["sample_index"]][:settings.samples]]
    total = 2 * len(rows)

    def ask(todo: list[dict], prompt_key: str, out_key: str, temperature: float, seed: int) -> None:
        for start, batch in batches(todo, settings.batch_size):
            texts, error = _generate(generator, [row[prompt_key] for row in batch], settings.concurrency,
                                     max_new_tokens=settings.max_tokens, stop=list(settings.stop),
                                     temperature=temperature, seed=seed * 1_000_003 + start)
            for row, text in zip(batch, texts):
                if text is not None:
                    row[out_key] = text
                    # The Generator protocol gives no finish reason: null (the reference stores "stop"/"length").
                    row["reasoning_finish_reason" if out_key == "reasoning_completion" else "finish_reason"] = None
            # Saved before any error propagates: answers that came back are never asked for again.
            save_completions(completions, path)
            if error is not None:
                raise error
            if on_batch is not None:
                on_batch(sum(("reasoning_completion" in r) + ("completion" in r) for r in rows), total)

    # Step 1, one pass per completion index, each with its own seed so the K samples of a question differ.
    for index in range(settings.samples):
        todo = [r for r in rows if r["completion_index"] == index and "reasoning_completion" not in r]
        ask(todo, "reasoning_prompt", "reasoning_completion", settings.temperature, settings.seed * 1000 + index)
    for row in rows:
        if "completion" not in row and "prompt" not in row:
            row["prompt"] = zs_cot_step2(row["reasoning_prompt"], row["reasoning_completion"])
    ask([r for r in rows if "completion" not in r], "prompt", "completion", 0.0, settings.seed)
    return completions


def _asked_how(settings: TeacherSettings) -> dict[str, Any]:
    """The settings besides the question that decide an answer: lengths, stop strings, and the seed when sampled."""
    how: dict[str, Any] = {"reasoning_max_tokens": settings.max_tokens, "max_tokens": settings.max_tokens,
                           "stop": list(settings.stop)}
    if settings.temperature > 0:
        how["seed"] = settings.seed
    return how


def _generate(generator: Any, prompts: list[str], concurrency: int,
              **kwargs: Any) -> tuple[list[str | None], BaseException | None]:
    """(texts, first error): one call for the batch, or (concurrency > 1) one call per prompt from a thread
    pool; a prompt whose call failed gets None, the answers that came back are kept."""
    if concurrency <= 1:
        texts = generator.generate(prompts, **kwargs)
        if len(texts) != len(prompts):
            raise LlmftError(f"teacher returned {len(texts)} completions for {len(prompts)} prompts")
        return list(texts), None
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(generator.generate, [p], **kwargs) for p in prompts]
    out: list[str | None] = []
    error = None
    for future in futures:
        if future.exception() is not None:
            error = error or future.exception()
            out.append(None)
        else:
            out.append(future.result()[0])
    return out, error


def _populate(completions: dict[str, Any], samples: Sequence[dict[str, Any]], count: int) -> None:
    """Ensure `count` completion rows per sample, each with its question, gold answer and step-1 prompt."""
    for sample in samples:
        index = sample["sample_index"]
        rows = completions["data"].setdefault(index, [])
        while len(rows) < count:
            rows.append({})
        for position, row in enumerate(rows):
            if (row.get("question"), row.get("answer")) != (sample["question"], sample["answer"]):
                row.clear()  # answers to another question at this index (a new dataset): asked again
            row.update(sample_index=index, completion_index=position, question=sample["question"],
                       answer=sample["answer"])
            row.setdefault("reasoning_prompt", zs_cot_step1(sample["question"]))


def teacher_accuracy(completions: dict[str, Any], sample_indices: Sequence[int],
                     completion_indices: Sequence[int]) -> float:
    """Share of the selected teacher samples whose final answer is right (the filter's keep rate)."""
    everything = select_samples(completions, sample_indices, completion_indices)
    kept = select_samples(completions, sample_indices, completion_indices, only_correct=True)
    return len(kept) / max(len(everything), 1)


def correct_questions(completions: dict[str, Any], train_indices: Sequence[int], samples: int) -> int:
    """How many questions have at least one right final answer among their first `samples` teacher samples."""
    kept = select_samples(completions, train_indices, list(range(samples)), only_correct=True)
    return len({sample["sample_index"] for sample in kept})


def student_records(completions: dict[str, Any], train_indices: Sequence[int], samples: int,
                    model_type: ModelType, template: str = "ft_cot_token") -> list[dict[str, Any]]:
    """Fine-tune-CoT training records: every correct teacher sample among the first `samples` per question, in
    a CoT template (rationale = the teacher's step-1 text, answer = the gold answer)."""
    kept = select_samples(completions, train_indices, list(range(samples)), only_correct=True)
    return [student_record(sample, template, model_type) for sample in kept]
