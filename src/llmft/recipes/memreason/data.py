"""Reference JSON records -> {memory}/{reason} step records and the sequences `prepare_data` builds.

Reference records: {"question", "answer", "cot_steps": ["[rag]: ...", "[reason]: ..."], "split"}. Sequences
(preprocess.py, BaseAgentData.prepare_data with the "memory" step-type predictor), with T = tokens.token_text:
  x = "Question: " + q + "\\n "             (evaluation prompts append T["prefix"])
  y = for each step: T["prefix"] + T[type] + " " + step without its tag + "\\n"
      then T["prefix"] + T["answer"] + " The answer is: " + answer + "\\n"
Variant "cot" is the reference's run without planning tokens (add_soft_prompts False): the tagged steps
joined by " \\n", then "\\n The answer is: " + answer + "\\n ". Variant "answer-only" (ours) keeps only
" The answer is: " + answer + "\\n ".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llmft.core.errors import LlmftError
from llmft.core.jsonl import read_jsonl
from llmft.recipes.memreason.tokens import TAGS, absorb_space_before_tokens, token_text

DATASETS = ("strategyqa", "commonsenseqa", "truthfulqa")
VARIANTS = ("tokens", "cot", "answer-only")
# The reference's files at the commit PAPERS.md describes (load_data/dataset_folder/).
HUB_FILES = {
    "strategyqa": {"train": "StrategyQA_train_clean.json", "test": "StrategyQA_test_clean.json"},
    "commonsenseqa": {"train": "commonsense_qa_train_clean_CC.json", "test": "commonsense_qa_test_clean_CC.json"},
    "truthfulqa": {"train": "truthful_qa_train_clean_CC.json", "test": "truthful_qa_test_clean_CC.json"},
}
HUB_BASE = ("https://raw.githubusercontent.com/MingyuJ666/Disentangling-Memory-and-Reasoning/"
            "1a2aa58/load_data/dataset_folder/")
TAG_LINE = re.compile(r"^\[(.*?)\]:", re.MULTILINE)
ANY_TAG = re.compile(r"\[.*?\]: ")


@dataclass
class Report:
    """Records the construction changed or left out: {problem: [count, first "file#index"]}."""

    problems: dict[str, list] = field(default_factory=dict)

    def add(self, problem: str, where: str) -> None:
        entry = self.problems.setdefault(problem, [0, where])
        entry[0] += 1

    def lines(self) -> list[str]:
        return [f"{count} record(s) {problem} (first: {first})" for problem, (count, first) in self.problems.items()]


def parse_record(record: dict, dataset: str) -> tuple[str, list[str], str]:
    """(question, steps, answer) as the reference's parse_q_a reads them."""
    question, steps, answer = str(record["question"]), list(record.get("cot_steps") or []), str(record["answer"])
    if dataset == "commonsenseqa":
        question = question.replace("Question: ", "", 1)
    if dataset in ("commonsenseqa", "truthfulqa") and not steps:
        steps = [""]  # the reference's stand-in: one empty untyped step
    return question, steps, answer


def predicted_types(question: str, steps: Sequence[str]) -> list[str]:
    """The reference's StepType.predict: tags at line starts of the joined text, "[rag]" -> memory; other tags
    are skipped, so later steps take the types of earlier ones (positional, as in the reference)."""
    text = "Question: " + question + " \n" + " \n".join(steps) + " \n"
    return [TAGS[tag] for tag in TAG_LINE.findall(text) if tag in TAGS]


def step_types(question: str, steps: Sequence[str]) -> list[str] | None:
    """Each step's type (memory, reason, or assignment for an untyped step); None where the reference aborts
    (more tags than steps)."""
    predicted = predicted_types(question, steps)
    if len(predicted) > len(steps):
        return None
    return predicted + ["assignment"] * (len(steps) - len(predicted))


def strip_tags(step: str) -> str:
    """The step text without "[tag]: " (the reference removes every such bracket, non-greedily)."""
    return ANY_TAG.sub("", step)


def prompt_text(question: str) -> str:
    return "Question: " + question + "\n "


def target_text(steps: Sequence[str], types: Sequence[str], answer: str, variant: str, num_prefix: int,
                num_special: int) -> str:
    """The completion y for one record (see the module docstring)."""
    if variant == "answer-only":
        return " The answer is: " + answer + "\n "
    if variant == "cot":
        return " \n".join(steps) + "\n" + " The answer is: " + answer + "\n "
    text = token_text(num_prefix, num_special)
    y = ""
    for step, kind in zip(steps, types):
        y += text["prefix"] + (text[kind] if num_special > 0 else "") + " " + strip_tags(step) + "\n"
    y += text["prefix"] + (text["answer"] if num_special > 0 else "")
    return y + " The answer is: " + answer + "\n"


def eval_prompt(prompt: str, variant: str, num_prefix: int, absorb_space: bool = False) -> str:
    """Test-time prompt: the planning-token variant appends the prefix tokens (as the reference); with
    `absorb_space` the space before each goes, as the reference's Llama-2 tokenizer took it into the token."""
    text = prompt + (token_text(num_prefix, 0)["prefix"] if variant == "tokens" else "")
    return absorb_space_before_tokens(text) if absorb_space else text


def build_records(rows: Iterable[tuple[str, dict]], dataset: str, variant: str, num_prefix: int,
                  num_special: int, report: Report) -> list[dict]:
    """JSONL records (prompt, completion, structured steps) from (where, reference record) pairs."""
    if variant not in VARIANTS:
        raise LlmftError(f"--variant: '{variant}' is not one of {', '.join(VARIANTS)}")
    out = []
    for where, record in rows:
        question, steps, answer = parse_record(record, dataset)
        raw = list(record.get("cot_steps") or [])
        if not raw:
            report.add("with no steps" + (" (left out, as the reference does)" if dataset == "strategyqa"
                                          and variant == "tokens" else ""), where)
            if dataset == "strategyqa" and variant == "tokens":
                continue
        types = step_types(question, steps)
        if types is None:
            if variant == "tokens":
                report.add("with more tags than steps (left out; the reference exits)", where)
                continue
            types = predicted_types(question, steps)[:len(steps)]  # the reference never types cot steps
        tagged = [m.group(1) if (m := re.match(r"\[(.*?)\]:", s)) else None for s in raw]
        if raw and any(t not in TAGS for t in tagged):
            report.add("with a step not tagged [rag]/[reason] (types assigned by position, as the reference)", where)
        out.append({
            "prompt": prompt_text(question),
            "completion": target_text(steps, types, answer, variant, num_prefix, num_special),
            "question": question,
            "answer": answer,
            "dataset": dataset,
            "variant": variant,
            "num_prefix_tokens": num_prefix,
            "num_special_tokens": num_special,
            # The reference's tags (None: untagged), and the type the sequence gives each step.
            "steps": [{"tag": TAGS.get(t or ""), "type": k, "text": strip_tags(s)}
                      for t, k, s in zip(tagged + [None] * (len(steps) - len(tagged)), types, steps)],
            "source": where,
            **({"kind": record["kind"]} if "kind" in record else {}),
        })
    return out


# --------------------------------------------------------------------------------------------------
# Loading


def load_reference(dataset: str, inputs: Sequence[str], report: Report) -> dict[str, list[tuple[str, dict]]]:
    """{split: [(where, record)]} from the reference's JSON files (local paths or "hub": the reference
    repository's files), split by each record's "split" field, read with `datasets`' json builder."""
    if dataset not in DATASETS:
        raise LlmftError(f"--dataset: '{dataset}' is not one of {', '.join(DATASETS)}")
    if not inputs:
        raise LlmftError("make-data memreason: give --input FILE (the reference's JSON), --input hub, or --synthetic N")
    files: list[str] = []
    for item in inputs:
        if item == "hub":
            files += [HUB_BASE + name for name in HUB_FILES[dataset].values()]
        elif not Path(item).is_file():
            raise LlmftError(f"--input: file not found: {item}")
        else:
            files.append(item)
    splits: dict[str, list[tuple[str, dict]]] = {}
    for name in files:
        for index, record in enumerate(_read_json(name)):
            where = f"{name}#{index}"
            check_reference_record(record, where)
            split = record.get("split")
            if split not in ("train", "test"):
                report.add("with no train/test split (left out, as the reference does)", where)
                continue
            splits.setdefault(split, []).append((where, record))
    return splits


def check_reference_record(record: dict, where: str) -> None:
    """The reference's schema, strictly: a missing key or null (the json builder fills absent keys with null)
    would otherwise train "None", and a string of steps would be split into characters."""
    for key in ("question", "answer", "cot_steps"):
        if key not in record or (record[key] is None and key != "cot_steps"):
            raise LlmftError(f"--input: {where}: record has no '{key}' (expected the reference's schema)")
    if not isinstance(record["question"], str):
        raise LlmftError(f"--input: {where}: 'question' must be a string, got {record['question']!r}")
    if not isinstance(record["answer"], (str, bool, int, float)):
        raise LlmftError(f"--input: {where}: 'answer' must be a string, number or boolean, got {record['answer']!r}")
    steps = record["cot_steps"]
    if steps is not None and (not isinstance(steps, list) or not all(isinstance(x, str) for x in steps)):
        raise LlmftError(f"--input: {where}: 'cot_steps' must be a list of strings, got {steps!r:.60}")
    empty = [number for number, step in enumerate(steps or [], 1) if not strip_tags(step).strip()]
    if empty:
        raise LlmftError(f"--input: {where}: step {empty[0]} of 'cot_steps' is empty")


def _read_json(name: str) -> list[dict]:
    """One file's records: a JSON list or JSON lines; a URL through datasets' json builder (it downloads)."""
    if Path(name).is_file():
        try:
            raw = json.loads(Path(name).read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise LlmftError(f"--input: {name}: not UTF-8 (byte {exc.start}: {exc.reason})") from None
        except json.JSONDecodeError:
            return read_jsonl(name, what="--input")
        records = raw if isinstance(raw, list) else [raw]
        bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
        if bad is not None:
            raise LlmftError(f"--input: {name}#{bad}: a record must be a JSON object")
        return records
    import datasets

    datasets.disable_progress_bars()
    try:
        data = datasets.load_dataset("json", data_files={"records": name}, split="records")
    except Exception as exc:  # datasets raises many types for an unreadable file
        raise LlmftError(f"--input: cannot read {name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                         ) from None
    return [dict(row) for row in data]
