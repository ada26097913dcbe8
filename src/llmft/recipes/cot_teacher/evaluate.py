"""Student evaluation: greedy generation on the test split, the Evaluator's parsing, accuracy per task; the
outputs are also written as a CompletionDataset (the reference's format)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmft.core import runs
from llmft.core.errors import LlmftError
from llmft.core.generation import Sampling
from llmft.core.results import eval_records, evaluate_batched
from llmft.recipes.cot_teacher.completions import new_completions, save_completions
from llmft.recipes.cot_teacher.parsing import score_completion


def evaluate_student(generator: Any, config: Any, section: Any, eval_dir: Path) -> dict[str, Any]:
    """Accuracy, contains_answer and correct_format over data.eval (records written by make-data)."""
    if not config.data.eval:
        raise LlmftError("data.eval is not set: point it at the eval.jsonl that `llmft make-data cot-teacher` wrote")
    records = eval_records(config)
    for line, record in enumerate(records, start=1):
        if "prompt" not in record or "answer" not in record:
            raise LlmftError(f"data.eval: {config.data.eval}: line {line} needs 'prompt' and 'answer'")
    task = section.task or (records[0].get("task") if records else "")
    template = section.template or (records[0].get("template") if records else "")
    if not task or not template:
        raise LlmftError("[cot-teacher] task and template are not set and data.eval records do not name them")
    sampling = Sampling.from_eval(config.eval)

    def answer(chunk: list[int]) -> list[str]:
        return generator.generate([records[i]["prompt"] for i in chunk], **sampling.kwargs())

    def row(i: int, output: str) -> dict[str, Any]:
        record = records[i]
        return {"sample_index": record.get("sample_index"), "prompt": record["prompt"], "completion": output,
                "answer": record["answer"], **score_completion(task, output, record["answer"], template)}

    done = evaluate_batched(eval_dir / runs.RESULTS_NAME, range(len(records)), config.eval.batch_size, answer, row)
    _write_completions(done, task, template, config, eval_dir)
    n = max(len(done), 1)
    return {
        "task": task,
        "template": template,
        "accuracy": sum(r["correct"] for r in done) / n,
        "contains_answer": sum(r["contains_answer"] for r in done) / n,
        "correct_format": sum(r["correct_format"] for r in done) / n,
        "n": len(done),
    }


def _write_completions(rows: list[dict], task: str, template: str, config: Any, eval_dir: Path) -> None:
    completions = new_completions(config.model.name, template, task, template, train_key=config.recipe)
    for position, row in enumerate(rows):
        index = row["sample_index"] if row["sample_index"] is not None else position
        completions["data"].setdefault(index, []).append({
            "sample_index": index, "completion_index": len(completions["data"].get(index, [])),
            "answer": row["answer"], "prompt": row["prompt"], "completion": row["completion"]})
    save_completions(completions, eval_dir / "completions.json")


def best_epoch_on_test(run_dir: str | Path, current: dict[str, float]) -> dict[str, Any]:
    """The reference's reported figure: the best test accuracy over the evaluated checkpoints of one run
    (`<run>/eval/checkpoint-*/metrics.json`, plus `current`). Optimistic: the test set picks the epoch."""
    found = dict(current)
    for metrics_file in sorted(Path(run_dir, "eval").glob("*/metrics.json")):
        name = metrics_file.parent.name
        if name not in found and (name == runs.FINAL_NAME or name.startswith(runs.CHECKPOINT_PREFIX)):
            found[name] = json.loads(metrics_file.read_text())["accuracy"]
    best = max(found, key=lambda name: found[name])
    return {"best_epoch_on_test_accuracy": found[best], "best_epoch_on_test_checkpoint": best,
            "checkpoints_evaluated": len(found)}
