"""The reference's answer extraction per dataset, accuracy, and how often generated step types match the tags.

StrategyQA: `The answer is: (\\-?[0-9\\.\\,]+|true|false)` (case-insensitive search, the match kept as written,
commas removed), so "true" never equals "True". CommonsenseQA (A-E) / TruthfulQA (A-N): the first letter after
the last "The answer is:", upper-cased; with no such phrase, the last letter anywhere in the upper-cased text.
A prediction is correct when it equals the same extraction applied to the gold completion (is_correct).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

INVALID = "[invalid]"
TRUE_FALSE = re.compile(r"The answer is: (\-?[0-9\.\,]+|true|false)", re.IGNORECASE)
LETTERS = {"commonsenseqa": "ABCDE", "truthfulqa": "ABCDEFGHIJKLMN"}
STEP_TOKEN = re.compile(r"<(memory|reason|answer|assignment)_\d+>")
PREFIX_TOKEN = re.compile(r"<prefix_\d+>")
COT_TAG = re.compile(r"^\s*\[(rag|reason)\]:", re.MULTILINE)
OPTION = re.compile(r"(?:^|\s)([A-N])\.")


def extract_answer(completion: str, dataset: str) -> str:
    """The answer the reference reads from a completion, or "[invalid]"."""
    if dataset not in LETTERS:  # strategyqa and the synthetic True/False questions
        match = TRUE_FALSE.search(completion)
        return match.group(1).strip().replace(",", "") if match else INVALID
    parts = completion.split("The answer is:")
    letters = re.findall("|".join(LETTERS[dataset]), parts[-1].strip().upper())
    if len(parts) > 1:
        return letters[0] if letters else INVALID
    return letters[-1] if letters else INVALID


def answer_rule(record: dict) -> str:
    """Which extraction a record uses: its dataset's; synthetic records by their answer's form."""
    dataset = record.get("dataset", "strategyqa")
    if dataset == "synthetic":
        return "strategyqa" if record["answer"] in ("True", "False") else "commonsenseqa"
    return dataset


def parse_steps(text: str, variant: str) -> list[dict]:
    """Generated steps with their types: planning tokens name the type of the text after them ("cot": the
    line's [rag]/[reason] tag); the answer block is not a step."""
    steps = []
    if variant == "tokens":
        for block in PREFIX_TOKEN.split(text):
            kinds = STEP_TOKEN.findall(block)
            body = STEP_TOKEN.sub("", block).strip()
            if not kinds and not body:
                continue
            kind = kinds[0] if kinds else "untyped"
            if kind != "answer":
                steps.append({"type": kind, "text": body})
    elif variant == "cot":
        for line in text.split("\n"):
            match = COT_TAG.match(line)
            if match:
                steps.append({"type": "memory" if match.group(1) == "rag" else "reason",
                              "text": line[match.end():].strip()})
    return steps


def type_agreement(generated: list[str], reference: list[str | None]) -> tuple[int, int] | None:
    """(positions where the generated type equals the reference tag, max of the two lengths); None when the
    reference has an untagged step."""
    if not reference or any(tag is None for tag in reference):
        return None
    matches = sum(1 for g, r in zip(generated, reference) if g == r)
    return matches, max(len(generated), len(reference))


def chance(record: dict) -> float:
    """Accuracy of a uniform guess: 1/2 for True/False, 1/options for a lettered question."""
    if record["answer"] in ("True", "False"):
        return 0.5
    return 1 / max(len(set(OPTION.findall(record["question"]))), 1)


def select(records: list[dict], limit: int, seed: int) -> list[int]:
    """Indices to evaluate: all, or `limit` drawn WITHOUT replacement (the reference drew with replacement)."""
    indices = list(range(len(records)))
    if limit and limit < len(records):
        indices = sorted(random.Random(seed).sample(indices, limit))
    return indices


def score_row(record: dict, prompt: str, output: str) -> dict:
    """One result row: extracted answer, generated steps with their types, agreement with the tags."""
    rule = answer_rule(record)
    prediction = extract_answer(output, rule)
    gold = extract_answer(record["completion"], rule)
    # The prefix tokens that end the prompt open the first step.
    opening = prompt[len(record["prompt"]):] if prompt.startswith(record["prompt"]) else ""
    steps = parse_steps(opening + output, record["variant"])
    agreement = None if record["variant"] == "answer-only" else type_agreement(
        [s["type"] for s in steps], [s["tag"] for s in record["steps"]])
    return {"question": record["question"], "answer": record["answer"], "prediction": prediction,
            "correct": prediction == gold and gold != INVALID, "kind": record.get("kind") or rule,
            "chance": chance(record), "generated": output, "steps": steps,
            "reference_steps": [{"type": s["tag"], "text": s["text"]} for s in record["steps"]],
            "type_agreement": agreement}


def summarize(rows: list[dict]) -> dict[str, Any]:
    """Accuracy, invalid answers, chance, accuracy by kind; step-type agreement (matching positions over the
    longer of generated and reference lists, summed over rows) and the share of rows that match exactly."""
    n = len(rows)
    by_kind: dict[str, list[int]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(int(row["correct"]))
    metrics: dict[str, Any] = {
        "n": n,
        "accuracy": sum(r["correct"] for r in rows) / max(n, 1),
        "invalid": sum(r["prediction"] == INVALID for r in rows),
        "chance": sum(r["chance"] for r in rows) / max(n, 1),
        "accuracy_by_kind": {k: sum(v) / len(v) for k, v in sorted(by_kind.items())},
    }
    compared = [r["type_agreement"] for r in rows if r["type_agreement"] is not None]
    if compared:
        metrics["step_type_agreement"] = sum(a for a, _ in compared) / max(sum(b for _, b in compared), 1)
        metrics["step_types_exact"] = sum(a == b for a, b in compared) / len(compared)
    return metrics


def evaluate_memreason(generator: Any, config: Any, section: Any, eval_dir: Path, chunk: int = 256) -> dict:
    """Greedy (eval.temperature, 0 by default: set explicitly, never the model's own generation config)
    generation on data.eval; results.jsonl resumes by example index; returns metrics."""
    from llmft.core import runs
    from llmft.core.errors import LlmftError
    from llmft.core.generation import Sampling
    from llmft.core.jsonl import read_jsonl
    from llmft.core.results import evaluate_batched
    from llmft.recipes.memreason.data import eval_prompt

    records = read_jsonl(config.data.eval, what="data.eval")
    if not records:
        raise LlmftError(f"data.eval: {config.data.eval} has no records")
    for line, record in enumerate(records, 1):
        check_record(record, section, f"data.eval: {config.data.eval}: line {line}")
    indices = select(records, config.eval.max_examples, config.eval.seed)
    prompts = {i: eval_prompt(records[i]["prompt"], records[i]["variant"], records[i].get("num_prefix_tokens", 0))
               for i in indices}
    sampling = Sampling.from_eval(config.eval)
    rows = evaluate_batched(eval_dir / runs.RESULTS_NAME, indices, chunk,
                            lambda batch: generator.generate([prompts[i] for i in batch], **sampling.kwargs()),
                            lambda i, output: score_row(records[i], prompts[i], output))
    metrics = summarize(rows)
    metrics["variant"] = records[indices[0]]["variant"]
    metrics["temperature"] = config.eval.temperature
    metrics["report_best_on_test"] = section.report_best_on_test
    return metrics


def check_record(record: dict, section: Any, where: str) -> None:
    """A record made for another variant or other planning tokens than the config says is a user error."""
    from llmft.core.errors import LlmftError

    for key in ("prompt", "completion", "question", "answer", "variant", "steps"):
        if key not in record:
            raise LlmftError(f"{where}: record has no '{key}' (make it with `llmft make-data memreason`)")
    if record["variant"] != section.variant:
        raise LlmftError(f"{where}: made with --variant {record['variant']}, but memreason.variant = "
                         f"{section.variant}")
    if record["variant"] == "tokens" and (record["num_prefix_tokens"], record["num_special_tokens"]) != (
            section.num_prefix_tokens, section.num_special_tokens):
        raise LlmftError(
            f"{where}: made with --num-prefix-tokens {record['num_prefix_tokens']} --num-special-tokens "
            f"{record['num_special_tokens']}, but memreason.num_prefix_tokens = {section.num_prefix_tokens}, "
            f"memreason.num_special_tokens = {section.num_special_tokens} (make-data --show: pass --config)")


def compare_table(metrics_by_run: dict[str, dict]) -> str:
    """Markdown table of accuracy per run; the best run on the test split only when every run asked for it."""
    lines = ["| run | variant | accuracy | chance | step-type agreement | n |", "|---|---|---|---|---|---|"]
    for name, m in metrics_by_run.items():
        agreement = m.get("step_type_agreement")
        lines.append(f"| {name} | {m.get('variant', '')} | {m['accuracy']:.3f} | {m.get('chance', 0):.3f} | "
                     f"{'' if agreement is None else f'{agreement:.3f}'} | {m.get('n', '')} |")
    if metrics_by_run and all(m.get("report_best_on_test") for m in metrics_by_run.values()):
        best = max(metrics_by_run, key=lambda k: metrics_by_run[k]["accuracy"])
        lines += ["", f"BEST CHECKPOINT SELECTED ON THE TEST SPLIT (as the reference's README reports; optimistic, "
                      f"not a held-out estimate): {best} = {metrics_by_run[best]['accuracy']:.3f}"]
    return "\n".join(lines) + "\n"
