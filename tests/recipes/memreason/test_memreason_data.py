"""memreason data: the reference's sequence layout token for token, step types, reporting, loading, synthetic."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from llmft.core.data import IGNORE
from llmft.core.errors import LlmftError
from llmft.core.tokenizers import train_tokenizer
from llmft.recipes.memreason.data import (
    Report,
    build_records,
    eval_prompt,
    load_reference,
    step_types,
    strip_tags,
)
from llmft.recipes.memreason.masking import tokenize_reference
from llmft.recipes.memreason.synthetic import synthetic_splits
from llmft.recipes.memreason.tokens import all_tokens, init_sources, token_text

RECORD = {
    "question": "Was ship that recovered Apollo 13 named after a World War II battle?",
    "answer": "True",
    "cot_steps": ["[rag]: The ship was the USS Iwo Jima.", "[reason]: Iwo Jima was a battle, so yes."],
    "split": "test",
}


def build(record: dict, dataset: str = "strategyqa", variant: str = "tokens", p: int = 2, s: int = 4,
          report: Report | None = None) -> list[dict]:
    return build_records([("f.json#0", record)], dataset, variant, p, s, report or Report())


def test_tokens_and_their_text_follow_the_reference_order() -> None:
    assert all_tokens(2, 1) == ["<prefix_0>", "<prefix_1>", "<answer_0>", "<assignment_0>", "<reason_0>",
                                "<memory_0>"]
    assert token_text(2, 2)["memory"] == " <memory_0> <memory_1>"
    assert all_tokens(3, 0) == ["<prefix_0>", "<prefix_1>", "<prefix_2>"]


def test_sequence_layout_equals_prepare_data() -> None:
    (record,) = build(RECORD, p=2, s=2)
    assert record["prompt"] == "Question: " + RECORD["question"] + "\n "
    assert record["completion"] == (
        " <prefix_0> <prefix_1> <memory_0> <memory_1> The ship was the USS Iwo Jima.\n"
        " <prefix_0> <prefix_1> <reason_0> <reason_1> Iwo Jima was a battle, so yes.\n"
        " <prefix_0> <prefix_1> <answer_0> <answer_1> The answer is: True\n")
    assert eval_prompt(record["prompt"], "tokens", 2) == record["prompt"] + " <prefix_0> <prefix_1>"
    assert [(s["tag"], s["type"]) for s in record["steps"]] == [("memory", "memory"), ("reason", "reason")]
    (cot,) = build(RECORD, variant="cot")
    assert cot["completion"] == ("[rag]: The ship was the USS Iwo Jima. \n[reason]: Iwo Jima was a battle, so yes.\n"
                                 " The answer is: True\n ")
    assert eval_prompt(cot["prompt"], "cot", 2) == cot["prompt"]
    (bare,) = build(RECORD, variant="answer-only")
    assert bare["completion"] == " The answer is: True\n "


def test_token_ids_and_loss_mask_token_for_token() -> None:
    """x + y tokenised whole, EOS appended, the first len(x) - 1 labels masked (the prompt's last token trains)."""
    tokenizer = train_tokenizer(["Question: Ab?\n Xy.\n The answer is: True"], "char", extra_tokens=all_tokens(1, 1))
    record = build({"question": "Ab?", "answer": "True", "cot_steps": ["[rag]: Xy."], "split": "train"}, p=1, s=1)[0]
    example = tokenize_reference(tokenizer, record["prompt"], record["completion"], 512)

    def ids(*pieces: str) -> list[int]:
        out = []
        for piece in pieces:
            if piece.startswith("<") and piece.endswith(">"):
                out.append(tokenizer.convert_tokens_to_ids(piece))
            else:
                out += [tokenizer.convert_tokens_to_ids(ch) for ch in piece]
        return out

    prompt = [tokenizer.bos_token_id] + ids("Question: Ab?\n ")
    target = ids(" ", "<prefix_0>", " ", "<memory_0>", " Xy.\n", " ", "<prefix_0>", " ", "<answer_0>",
                 " The answer is: True\n") + [tokenizer.eos_token_id]
    assert example.input_ids == prompt + target
    assert example.labels == [IGNORE] * (len(prompt) - 1) + [prompt[-1]] + target
    fixed = tokenize_reference(tokenizer, record["prompt"], record["completion"], 512, False)
    assert fixed.labels == [IGNORE] * len(prompt) + target
    cut = tokenize_reference(tokenizer, record["prompt"], record["completion"], len(prompt) + 3)
    assert cut.input_ids == prompt + target[:3] + [tokenizer.eos_token_id]


def test_init_sources_use_the_literal_word_or_unk() -> None:
    tokenizer = train_tokenizer(["memory reason"], "bpe", vocab_size=300, extra_tokens=all_tokens(1, 1))
    sources = init_sources(tokenizer, 1, 1)
    vocab = tokenizer.get_vocab()
    assert "memory" in vocab  # a whole-word token in this tokenizer
    assert sources["<memory_0>"] == [vocab["memory"]]
    assert sources["<prefix_0>"] == [tokenizer.unk_token_id]  # no such token: the reference falls back to unk


def test_step_types_are_positional_like_the_reference() -> None:
    assert step_types("q", ["[rag]: a", "[reason]: b"]) == ["memory", "reason"]
    # An unknown tag is skipped: the next tag's type moves up, the last step is untyped ("assignment").
    assert step_types("q", ["[fact]: a", "[reason]: b"]) == ["reason", "assignment"]
    assert step_types("q", ["[rag]: a\n[reason]: b"]) is None  # more tags than steps: the reference exits
    assert strip_tags("[reason] and [rag]: x [rag]: y") == "x y"


def test_empty_and_untagged_records_are_reported_not_silently_dropped() -> None:
    report = Report()
    rows = [("a.json#0", {**RECORD, "cot_steps": []}), ("a.json#1", RECORD),
            ("a.json#2", {**RECORD, "cot_steps": ["[reason] and [rag]: x", "[rag]: y"]})]
    out = build_records(rows, "strategyqa", "tokens", 2, 4, report)
    assert len(out) == 2  # StrategyQA: the reference leaves the empty one out
    assert report.lines() == [
        "1 record(s) with no steps (left out, as the reference does) (first: a.json#0)",
        "1 record(s) with a step not tagged [rag]/[reason] (types assigned by position, as the reference) "
        "(first: a.json#2)"]
    assert out[1]["steps"][0]["tag"] is None and out[1]["steps"][0]["type"] == "memory"
    report = Report()
    (csqa,) = build({"question": "Question: Where? Options: A.bank B.mall", "answer": "A", "cot_steps": [],
                     "split": "test"}, dataset="commonsenseqa", p=1, s=1, report=report)
    assert csqa["question"] == "Where? Options: A.bank B.mall"  # the leading "Question: " goes once
    assert csqa["completion"] == " <prefix_0> <assignment_0> \n <prefix_0> <answer_0> The answer is: A\n"
    assert report.lines() == ["1 record(s) with no steps (first: f.json#0)"]


def test_load_reference_reads_the_reference_schema_with_datasets(tmp_path: Path) -> None:
    train = tmp_path / "StrategyQA_train_clean.json"
    test = tmp_path / "StrategyQA_test_clean.json"
    train.write_text(json.dumps([{**RECORD, "split": "train"}, {**RECORD, "split": "dev"}], indent=4))
    test.write_text(json.dumps([RECORD, {**RECORD, "answer": "False"}], indent=4))
    report = Report()
    splits = load_reference("strategyqa", [str(train), str(test)], report)
    assert {k: len(v) for k, v in splits.items()} == {"train": 1, "test": 2}
    assert splits["test"][1] == (f"{test}#1", {**RECORD, "answer": "False"})
    assert report.problems["with no train/test split (left out, as the reference does)"] == [1, f"{train}#1"]
    with pytest.raises(LlmftError, match="file not found"):
        load_reference("strategyqa", [str(tmp_path / "missing.json")], Report())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"question": "q", "answer": "True"}]))
    with pytest.raises(LlmftError, match=r"bad.json#0: record has no 'cot_steps'"):
        load_reference("strategyqa", [str(bad)], Report())


def test_make_data_cli_writes_train_and_eval(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from llmft.cli import cli

    source = tmp_path / "tqa.json"
    source.write_text(json.dumps([
        {"question": "Which? A. x B. y", "answer": "B", "cot_steps": ["[reason]: think", "[rag]: y is true"],
         "split": "train"},
        {"question": "Which? A. x B. y C. z", "answer": "C", "cot_steps": [], "split": "test"}]))
    result = CliRunner().invoke(cli, ["make-data", "memreason", "--dataset", "truthfulqa", "--input", str(source),
                                       "--num-prefix-tokens", "3", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "1 record(s) with no steps" in result.output
    train = json.loads((tmp_path / "out" / "train.jsonl").read_text())
    assert train["completion"].startswith(" <prefix_0> <prefix_1> <prefix_2> <reason_0>")
    assert (tmp_path / "out" / "test.jsonl").is_file()


def test_synthetic_held_out_questions_recombine_seen_facts() -> None:
    splits = synthetic_splits(3000, 150, random.Random(0))
    train, test = splits["train"], splits["test"]
    assert len(test) == 150 and all(r["split"] == "test" for r in test)

    def people(record: dict) -> frozenset:
        return frozenset(s.split(": ")[1].split(" ")[0] for s in record["cot_steps"] if s.startswith("[rag]"))

    seen_groups = {people(r) for r in train}
    seen_facts = {s for r in train for s in r["cot_steps"] if s.startswith("[rag]")}
    assert not any(people(r) in seen_groups for r in test)  # never asked about together in training
    assert all(s in seen_facts for r in test for s in r["cot_steps"] if s.startswith("[rag]"))
    for record in train + test:  # recall steps first, one reasoning step last, as tagged
        tags = [s.split("]")[0] + "]" for s in record["cot_steps"]]
        assert tags == ["[rag]"] * (len(tags) - 1) + ["[reason]"]
    kinds = {k: sum(r["kind"] == k for r in train) / len(train) for k in ("older", "same_town", "oldest")}
    assert all(abs(share - 1 / 3) < 0.05 for share in kinds.values())
    same = [r["answer"] for r in train if r["kind"] == "same_town"]
    assert abs(same.count("True") / len(same) - 0.5) < 0.05
    (older,) = [r for r in train[:50] if r["kind"] == "older"][:1]
    a, b = older["question"][3:-1].split(" older than ")
    ages = [int(s.split(" is ")[1].split()[0]) for s in older["cot_steps"][:2]]
    assert older["answer"] == str(ages[0] > ages[1]) and a in older["cot_steps"][0] and b in older["cot_steps"][1]


def test_hub_reads_the_reference_repository_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--input hub` names the reference's train and test files at its commit (no download in the test)."""
    from llmft.recipes.memreason import data

    asked: list[str] = []
    monkeypatch.setattr(data, "_read_json", lambda name: asked.append(name) or [RECORD])
    splits = load_reference("commonsenseqa", ["hub"], Report())
    assert asked == [data.HUB_BASE + "commonsense_qa_train_clean_CC.json",
                     data.HUB_BASE + "commonsense_qa_test_clean_CC.json"]
    assert data.HUB_BASE.startswith("https://raw.githubusercontent.com/MingyuJ666/Disentangling-Memory-and-Reasoning/")
    assert len(splits["test"]) == 2
