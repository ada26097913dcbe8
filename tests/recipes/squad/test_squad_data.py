"""squad data: the reference's exact strings, records, the synthetic generator and the loaders (offline)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from llmft.core.errors import LlmftError
from llmft.core.jsonl import read_jsonl
from llmft.recipes.squad.data import (
    SYSTEM_PROMPT,
    load_splits,
    pause_tokens,
    rows_from_official_json,
    squad_record,
)
from llmft.recipes.squad.recipe import SquadRecipe
from llmft.recipes.squad.synthetic import synthetic_splits

ROW = {
    "id": "56be4db0acb8001400a502ec",
    "title": "Super_Bowl_50",
    "context": "Beyonc\u00e9 rose to fame in the late 1990s.",
    "question": "When did Beyonce start becoming popular?",
    "answers": {"text": ["in the late 1990s", "late 1990s"], "answer_start": [19, 26]},
}
NO_ANSWER_ROW = {**ROW, "id": "q2", "question": "When did Beyonce retire?", "answers": {"text": [], "answer_start": []}}


def test_single_turn_record_has_the_reference_strings():
    record = squad_record(ROW, "", multi_turn=False)
    system, user, assistant = record["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert SYSTEM_PROMPT.startswith("You are a helpful, respectful and honest assistant. Always answer as helpfully")
    assert user["content"] == (
        "Extract from the following context the minimal span word for word that best answers the question. "
        "Think step by step and explain your reasoning. Then give the answer in JSON format as follows:\n"
        '```json\n{\n  "answer": ...\n}\n```\n'
        'If the answer is not in the context, the answer should be "?".\n'
        "Context: Beyonc\u00e9 rose to fame in the late 1990s.\n"
        "Question: When did Beyonce start becoming popular?"
    )
    # The target is answers[0]; all golds stay in "answers".
    assert assistant == {"role": "assistant", "content": '\n```json\n{\n  "answer": "in the late 1990s"\n}\n```'}
    assert record["answers"] == ["in the late 1990s", "late 1990s"]
    assert record["id"] == "56be4db0acb8001400a502ec" and record["is_impossible"] is False


def test_no_answer_gold_is_a_question_mark_and_answers_keep_ascii_escapes():
    record = squad_record(NO_ANSWER_ROW, "<blah_0><blah_1>", multi_turn=False)
    assert record["answers"] == ["?"] and record["is_impossible"] is True
    assert record["messages"][-1]["content"] == '<blah_0><blah_1>\n```json\n{\n  "answer": "?"\n}\n```'
    accented = squad_record({**ROW, "answers": {"text": ["Beyonc\u00e9"], "answer_start": [0]}}, "", False)
    assert '"answer": "Beyonc\\u00e9"' in accented["messages"][-1]["content"]


def test_multi_turn_record_asks_whether_then_what():
    messages = squad_record(NO_ANSWER_ROW, "<blah_0>", multi_turn=True)["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[1]["content"].startswith(
        "Does the the following context contain enough information to be able to answer the question? ")
    assert '"answer": ... # "yes" or "no"' in messages[1]["content"]
    assert messages[2]["content"] == '<blah_0>\n```json\n{\n  "answer": "no"\n}\n```'
    assert messages[3]["content"].startswith("If the question has an answer in the context, extract the minimal")
    assert messages[4]["content"] == '<blah_0>\n```json\n{\n  "answer": "?"\n}\n```'
    assert squad_record(ROW, "", multi_turn=True)["messages"][2]["content"].endswith('"answer": "yes"\n}\n```')


def test_system_turn_and_instruction_can_be_left_out():
    """--system-prompt '' drops the system turn; --no-instruction keeps only the prompt's last two lines."""
    custom = squad_record(ROW, "", multi_turn=False, system_prompt="Be brief.")["messages"]
    assert custom[0] == {"role": "system", "content": "Be brief."}
    messages = squad_record(ROW, "", multi_turn=False, system_prompt="", instruction=False)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == (
        "Context: Beyonc\u00e9 rose to fame in the late 1990s.\nQuestion: When did Beyonce start becoming popular?")
    assert messages[1] == squad_record(ROW, "", multi_turn=False)["messages"][2]
    assert squad_record(ROW, "", True, system_prompt="")["messages"][0]["role"] == "user"
    with pytest.raises(LlmftError, match="--no-instruction is for single-turn data"):
        squad_record(ROW, "", multi_turn=True, instruction=False)


def test_make_data_names_the_short_prompt_variant(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = SquadRecipe().make_data(None, 0, synthetic=20, system_prompt="", no_instruction=True)
    assert paths["train"] == Path("data/squad/synthetic-nosystem-noinstruction/train.jsonl")
    assert read_jsonl(paths["train"])[0]["messages"][0]["content"].startswith("Context: ")
    with pytest.raises(LlmftError, match="--no-instruction is for single-turn data"):
        SquadRecipe().make_data(None, 0, synthetic=20, no_instruction=True, multi_turn=True)


def test_passages_follow_their_first_question_once_each_in_train_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = SquadRecipe().make_data(None, 0, synthetic=30, system_prompt="", no_instruction=True, passages=True)
    assert paths["train"] == Path("data/squad/synthetic-nosystem-noinstruction-passages/train.jsonl")
    train = read_jsonl(paths["train"])
    questions = [r for r in train if "messages" in r]
    texts = [r["text"] for r in train if "text" in r]
    assert len(questions) == 30 and len(texts) == len(set(texts)) == 30  # invented entities: all distinct
    for before, passage in zip(train[::2], train[1::2]):
        assert before["messages"][0]["content"].startswith(f"Context: {passage['text']}\nQuestion: ")
    assert all("messages" in r for r in read_jsonl(paths["eval"]))


def test_pause_tokens_are_distinct():
    assert pause_tokens(3) == ["<blah_0>", "<blah_1>", "<blah_2>"]
    assert pause_tokens(0) == []


def test_synthetic_rows_have_verbatim_spans_and_about_a_third_unanswerable():
    splits = synthetic_splits(600, random.Random(7))
    assert {k: len(v) for k, v in splits.items()} == {"train": 600, "val": 60, "test": 60}
    rows = splits["train"]
    unanswerable = sum(not row["answers"]["text"] for row in rows)
    assert 0.25 < unanswerable / len(rows) < 0.42
    for row in rows:
        for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"], strict=True):
            assert row["context"][start:start + len(text)] == text
    assert any(len(row["answers"]["text"]) == 2 for row in rows)
    assert synthetic_splits(600, random.Random(7)) == splits
    assert len({row["id"] for split in splits.values() for row in split}) == 720


def test_unanswerable_questions_are_about_the_context_entity_unless_strangers_are_asked_for():
    for share, own_entity in ((0.0, True), (1.0, False)):
        rows = synthetic_splits(300, random.Random(3), stranger_share=share)["train"]
        unanswerable = [row for row in rows if not row["answers"]["text"]]
        assert len(unanswerable) > 70
        for row in unanswerable:
            name = row["title"].split(" (")[0]
            (asked,) = [word.rstrip("?") for word in row["question"].split()[1:] if word[0].isupper()]
            assert (asked == name) is own_entity and (asked in row["context"]) is own_entity, row


def _official_json(n: int) -> dict:
    qas = []
    for i in range(n):
        if i % 3 == 2:
            qas.append({"id": f"q{i}", "question": f"What is {i}?", "answers": [], "is_impossible": True,
                        "plausible_answers": [{"text": "x", "answer_start": 0}]})
        else:
            qas.append({"id": f"q{i}", "question": f"What is {i}?", "is_impossible": False,
                        "answers": [{"text": f"number {i}", "answer_start": 4}]})
    context = "The number {i} is here."
    return {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}


def test_official_json_rows_use_the_hub_schema():
    rows = rows_from_official_json(_official_json(3))
    assert rows[0] == {"id": "q0", "title": "T", "context": "The number {i} is here.", "question": "What is 0?",
                       "answers": {"text": ["number 0"], "answer_start": [4]}}
    assert rows[2]["answers"] == {"text": [], "answer_start": []}  # plausible answers are not gold


def _hub_rows(n: int, prefix: str) -> list[dict]:
    return [{"id": f"{prefix}{i}", "title": "T", "context": f"Context {i}.", "question": f"Q{i}?",
             "answers": {"text": [f"Context {i}"] if i % 3 else [], "answer_start": [0] if i % 3 else []}}
            for i in range(n)]


def test_hub_loader_splits_like_the_reference(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    train_file, validation_file = tmp_path / "train.jsonl", tmp_path / "validation.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in _hub_rows(400, "t")), encoding="utf-8")
    validation_file.write_text("".join(json.dumps(r) + "\n" for r in _hub_rows(30, "v")), encoding="utf-8")
    asked = []

    def offline_hub(name: str):
        asked.append(name)
        return datasets.DatasetDict({
            split: datasets.Dataset.from_list([json.loads(line) for line in path.read_text().splitlines()])
            for split, path in {"train": train_file, "validation": validation_file}.items()
        })

    monkeypatch.setattr(datasets, "load_dataset", offline_hub)
    splits = load_splits("hub")
    assert asked == ["rajpurkar/squad_v2"]
    assert len(splits["val"]) == 2 and len(splits["train"]) == 398  # ceil(0.5% of 400)
    assert {r["id"] for r in splits["train"]} | {r["id"] for r in splits["val"]} == {f"t{i}" for i in range(400)}
    assert [r["id"] for r in splits["test"]] == [f"v{i}" for i in range(30)]
    assert load_splits("hub")["val"] == splits["val"]  # seed 42 fixes the split


def test_local_sources_saved_folder_and_official_json(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "squad_v2"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(_hub_rows(200, "t")),
                          "validation": datasets.Dataset.from_list(_hub_rows(5, "v"))}).save_to_disk(str(folder))
    splits = load_splits(str(folder))
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (199, 1, 5)

    dev = tmp_path / "dev-v2.0.json"
    dev.write_text(json.dumps(_official_json(12)), encoding="utf-8")
    single = load_splits(str(dev))
    assert "test" not in single and len(single["train"]) + len(single["val"]) == 12
    assert [r["id"] for r in load_splits(str(folder), test_source=str(dev))["test"]] == [f"q{i}" for i in range(12)]

    with pytest.raises(LlmftError, match="no such file"):
        load_splits(str(tmp_path / "missing"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"paragraphs": [{}]}]}', encoding="utf-8")
    with pytest.raises(LlmftError, match="not an official SQuAD v2 JSON"):
        load_splits(str(bad))


def test_make_data_synthetic_writes_the_record_schema(tmp_path):
    recipe = SquadRecipe()
    paths = recipe.make_data(tmp_path, 3, synthetic=40, num_pause_tokens=2, multi_turn=False, eval_n=7)
    assert set(paths) == {"train", "val", "eval"} and paths["eval"].name == "test.jsonl"
    train, test = read_jsonl(paths["train"]), read_jsonl(paths["eval"])
    assert len(train) == 40 and len(test) == 7
    record = train[0]
    assert set(record) == {"id", "messages", "answers", "is_impossible"}
    assert record["messages"][-1]["content"].startswith("<blah_0><blah_1>\n```json\n{\n")
    assert all((r["answers"] == ["?"]) == r["is_impossible"] for r in train + test)
    again = recipe.make_data(tmp_path / "again", 3, synthetic=40, num_pause_tokens=2, multi_turn=False, eval_n=7)
    assert paths["train"].read_text() == again["train"].read_text()


def test_make_data_from_an_official_file_without_a_test_split_evaluates_on_val(tmp_path):
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps(_official_json(30)), encoding="utf-8")
    paths = SquadRecipe().make_data(tmp_path / "out", 0, source=str(dev), multi_turn=True)
    assert paths["eval"] == paths["val"] and not (tmp_path / "out" / "test.jsonl").exists()
    assert len(read_jsonl(paths["train"])[0]["messages"]) == 5
