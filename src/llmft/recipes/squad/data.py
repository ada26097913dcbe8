"""SQuAD v2 as the reference's chat: a system prompt, an instruction with context and question, and an
assistant turn of optional pause tokens followed by a JSON block (teticio/llama-squad, create_squad_dataset.py).

Loading stays at the edges (`load_splits`); everything else maps SQuAD rows to records without I/O.
A SQuAD row is the hub schema: {"id", "title", "context", "question", "answers": {"text", "answer_start"}}.
"""

from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path
from typing import Any

from llmft.core.errors import LlmftError

HUB_NAME = "rajpurkar/squad_v2"
VALIDATION_RATIO = 0.005  # held out of `train` for validation, as the reference
SPLIT_SEED = 42  # the reference's seed for that split
NO_ANSWER = "?"

# config.yaml's system_prompt; its YAML block scalar keeps the final newline (Llama 3's template trims it).
SYSTEM_PROMPT = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being "
    "safe. Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal "
    "content. Please ensure that your responses are socially unbiased and positive in nature.\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of answering "
    "something not correct. If you don't know the answer to a question, please don't share false information.\n"
)

JSON_FORMAT = '```json\n{\n  "answer": ...\n}\n```'


def context_and_question(context: str, question: str) -> str:
    """How every single-turn prompt ends; alone, the user turn of `make-data --no-instruction`."""
    return f"Context: {context}\nQuestion: {question}"


# create_squad_dataset.py indents its templates by 20 spaces inside the source and calls textwrap.dedent
# after filling in context and question.
TEMPLATE_INDENT = " " * 20
CONTEXT, QUESTION = "\x00context\x00", "\x00question\x00"


def fill_template(template: str, context: str, question: str, dedent_quirk: bool = True) -> str:
    """The template with context and question filled in. dedent_quirk: as the reference, which dedents after
    filling in, so a context or question holding a newline keeps the 20-space indent on every template line
    (and dedent blanks whitespace-only lines); without a newline both ways give the same text."""
    if dedent_quirk:
        template = "\n".join(TEMPLATE_INDENT + line for line in template.split("\n"))
    text = template.replace(CONTEXT, context).replace(QUESTION, question)
    return textwrap.dedent(text) if dedent_quirk else text


def single_turn_instruction(context: str, question: str, dedent_quirk: bool = True) -> str:
    """The user turn of the single-turn prompt."""
    template = (
        "Extract from the following context the minimal span word for word that best answers the question. "
        "Think step by step and explain your reasoning. Then give the answer in JSON format as follows:\n"
        f"{JSON_FORMAT}\n"
        f'If the answer is not in the context, the answer should be "{NO_ANSWER}".\n'
        + context_and_question(CONTEXT, QUESTION)
    )
    return fill_template(template, context, question, dedent_quirk)


def has_answer_instruction(context: str, question: str, dedent_quirk: bool = True) -> str:
    """Turn 1 of the multi-turn prompt ("Does the the" is the reference's own typo, kept)."""
    template = (
        "Does the the following context contain enough information to be able to answer the question? "
        "Think step by step and explain your reasoning. Then give the answer in JSON format as follows:\n"
        '```json\n{\n  "answer": ... # "yes" or "no"\n}\n```\n'
        + context_and_question(CONTEXT, QUESTION)
    )
    return fill_template(template, context, question, dedent_quirk)


def span_instruction() -> str:
    """Turn 2 of the multi-turn prompt."""
    return (
        "If the question has an answer in the context, extract the minimal span word for word from the context "
        f'that best answers the question, otherwise the answer should be "{NO_ANSWER}". Think step by step and '
        "explain your reasoning. Then give the answer in JSON format as follows:\n"
        f"{JSON_FORMAT}"
    )


def pause_tokens(k: int, distinct: bool = True) -> list[str]:
    """The pause tokens the tokenizer gains: k distinct <blah_0> .. <blah_{k-1}>, or the one <blah> that
    the reference's multiple_reasoning_tokens=False repeats k times (none when k is 0)."""
    if distinct or k == 0:
        return [f"<blah_{i}>" for i in range(k)]
    return ["<blah>"]


def pause_text(k: int, distinct: bool = True) -> str:
    """What opens each assistant turn: the k pause tokens in order."""
    return "".join(pause_tokens(k)) if distinct else "<blah>" * k


def force_prefix(pause: str) -> str:
    """How every assistant turn opens: the pause tokens, then the JSON fence (the reference's force-answer)."""
    return f"{pause}\n```json"


def assistant_answer(answer: str, pause: str) -> str:
    """The assistant turn: pause tokens, then the answer as a JSON block.

    json.dumps keeps its default ASCII escaping ("Beyonc\\u00e9"), as the reference trained; parsing undoes it.
    """
    return f'{force_prefix(pause)}\n{{\n  "answer": {json.dumps(answer)}\n}}\n```'


def gold_answers(row: dict[str, Any]) -> list[str]:
    """All gold spans of a SQuAD row, or ["?"] when the question has no answer."""
    return list(row["answers"]["text"]) or [NO_ANSWER]


def squad_messages(row: dict[str, Any], pause: str, multi_turn: bool, system_prompt: str = SYSTEM_PROMPT,
                   instruction: bool = True, dedent_quirk: bool = True) -> list[dict[str, str]]:
    """The chat for one SQuAD row; the target is the first gold span (the reference trains on answers[0]).

    An empty system_prompt leaves out the system turn (the reference reads it from config.yaml);
    instruction=False (single turn only) leaves just "Context: ...\nQuestion: ..." in the user turn;
    dedent_quirk: see fill_template.
    """
    target = gold_answers(row)[0]
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    if not multi_turn:
        ask = single_turn_instruction(row["context"], row["question"], dedent_quirk) if instruction \
            else context_and_question(row["context"], row["question"])
        return [
            *system,
            {"role": "user", "content": ask},
            {"role": "assistant", "content": assistant_answer(target, pause)},
        ]
    if not instruction:
        raise LlmftError("--no-instruction is for single-turn data: the multi-turn prompts are instructions")
    answerable = "yes" if row["answers"]["text"] else "no"
    return [
        *system,
        {"role": "user", "content": has_answer_instruction(row["context"], row["question"], dedent_quirk)},
        {"role": "assistant", "content": assistant_answer(answerable, pause)},
        {"role": "user", "content": span_instruction()},
        {"role": "assistant", "content": assistant_answer(target, pause)},
    ]


def squad_record(row: dict[str, Any], pause: str, multi_turn: bool, system_prompt: str = SYSTEM_PROMPT,
                 instruction: bool = True, dedent_quirk: bool = True) -> dict[str, Any]:
    """One JSONL record: the chat, every gold answer (["?"] for none), id and whether it is unanswerable."""
    return {
        "id": str(row["id"]),
        "messages": squad_messages(row, pause, multi_turn, system_prompt, instruction, dedent_quirk),
        "answers": gold_answers(row),
        "is_impossible": not row["answers"]["text"],
    }


def with_passages(records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with each distinct context added once as a `{"text": context}` record after its first
    question (trained on every token: language modelling on the passages)."""
    out, seen = [], set()
    for record, row in zip(records, rows, strict=True):
        out.append(record)
        if row["context"] not in seen:
            seen.add(row["context"])
            out.append({"text": row["context"]})
    return out


def subset(rows: list[dict[str, Any]], n: int, rng: random.Random) -> list[dict[str, Any]]:
    """A random n-row subset in the original order; all rows when n is 0 or too large."""
    if n <= 0 or n >= len(rows):
        return rows
    keep = sorted(rng.sample(range(len(rows)), n))
    return [rows[i] for i in keep]


# --------------------------------------------------------------------------------------------------
# Loading: the hub, a saved `datasets` folder, or official SQuAD v2 JSON files


def rows_from_official_json(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten an official SQuAD v2 file ({"data": [{"title", "paragraphs": [{"context", "qas"}]}]}) into rows."""
    rows = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                rows.append({
                    "id": qa["id"],
                    "title": article.get("title", ""),
                    "context": paragraph["context"],
                    "question": qa["question"],
                    "answers": {"text": [a["text"] for a in answers],
                                "answer_start": [a["answer_start"] for a in answers]},
                })
    return rows


def load_splits(source: str, test_source: str = "", split_seed: int = SPLIT_SEED) -> dict[str, list[dict]]:
    """SQuAD rows as {"train", "val", "test"}: train minus 0.5% validation (datasets' own train_test_split,
    so the hub gives the reference's exact split); test = the official validation split.

    source: "hub", a saved DatasetDict folder (train + validation), or one split (a saved Dataset folder or
    an official JSON file), which then only gives train/val; test_source supplies (or replaces) the test split.
    """
    if source == "hub":
        from llmft.recipes.squad.hub import load_hub_dataset

        splits = dict(load_hub_dataset(HUB_NAME, what="make-data squad --source hub").items())
    else:
        splits = _load_local(source)
    if test_source:
        local = _load_local(test_source)
        if not {"validation", "train"} & set(local):
            raise LlmftError(f"--test-source {test_source}: no 'validation' or 'train' split")
        splits["validation"] = local["validation"] if "validation" in local else local["train"]
    if "train" not in splits:
        raise LlmftError(f"--source {source}: no 'train' split (found: {', '.join(splits) or 'none'})")
    for name, split in splits.items():
        missing = {"id", "context", "question", "answers"} - set(split.column_names)
        if missing:
            raise LlmftError(f"--source {source}: split '{name}' lacks SQuAD columns: {', '.join(sorted(missing))}")
    held = splits["train"].train_test_split(test_size=VALIDATION_RATIO, seed=split_seed)
    out = {"train": held["train"].to_list(), "val": held["test"].to_list()}
    if splits.get("validation") is not None:
        out["test"] = splits["validation"].to_list()
    return out


def _load_local(path_text: str) -> dict[str, Any]:
    """A local source as {"train": Dataset[, "validation": Dataset]}; a single split counts as train."""
    import datasets

    path = Path(path_text)
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            rows = rows_from_official_json(data)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise LlmftError(f"{path}: not an official SQuAD v2 JSON file ({type(exc).__name__}: {exc})") from None
        return {"train": datasets.Dataset.from_list(rows, features=squad_features())}
    if not path.is_dir():
        raise LlmftError(f"--source {path_text}: no such file or folder (or use --source hub)")
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise LlmftError(f"{path}: not a saved `datasets` folder ({exc})") from None
    if isinstance(loaded, datasets.DatasetDict):
        return dict(loaded)
    return {"train": loaded}


def squad_features() -> Any:
    """The hub's column types (so empty answer lists still type as strings)."""
    import datasets

    return datasets.Features({
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": {"text": datasets.List(datasets.Value("string")),
                    "answer_start": datasets.List(datasets.Value("int32"))},
    })
