"""squad evaluation: parsing, the reference's table on hand-made predictions, SQuAD EM/F1, the eval loop."""

from __future__ import annotations

import json
import re

import pytest

from llmft.core.config import Config
from llmft.core.generation import Sampling
from llmft.core.jsonl import read_jsonl
from llmft.core.tokenizers import train_tokenizer
from llmft.recipes.squad.evaluate import (
    extract_answer,
    is_no_answer,
    normalize_answer,
    squad_scores,
    squad_table,
    summarize_results,
    table_markdown,
    token_f1,
)
from llmft.recipes.squad.recipe import SquadConfig, SquadRecipe

# Hand-made predictions (the text after the force-answer prompt, "}" restored) with hand-computed scores.
PREDICTIONS = [
    # valid, EM with the second of three golds (multi-gold), SQuAD EM 1, F1 1
    {"answers": ["Denver Broncos", "Denver Broncos", "Broncos"], "response": '\n{\n  "answer": "Broncos"\n}'},
    # valid, no EM; normalised "late 1990s" vs "in late 1990s": EM 0, F1 = 2*(1*2/3)/(1+2/3) = 0.8
    {"answers": ["in the late 1990s"], "response": '\n{\n  "answer": "late 1990s"\n}'},
    # no-answer, correct abstention: EM, SQuAD EM 1, F1 1
    {"answers": ["?"], "response": '\n{\n  "answer": "?"\n}'},
    # no-answer, answered anyway: valid, wrong, 0/0
    {"answers": ["?"], "response": '\n{\n  "answer": "France"\n}'},
    # has-answer, no JSON at all: invalid, 0/0
    {"answers": ["France"], "response": "I think it is France"},
    # JSON5 only (bare key, trailing comma): valid; case differs so no raw EM, SQuAD EM 1, F1 1
    {"answers": ["The Normans"], "response": '\n{\n  answer: "the Normans",\n}'},
    # no-answer, no closing brace: invalid, 0/0
    {"answers": ["?"], "response": '\n{\n  "answer": "?"'},
    # valid with text after the object: EM with the second gold, SQuAD 1/1
    {"answers": ["10th century", "the 10th century"], "response": '{"answer": "the 10th century"}\n```'},
]


def test_extract_answer_is_lenient_like_the_reference():
    assert extract_answer('\n{\n  "answer": "Beyonc\\u00e9"\n}') == "Beyonc\u00e9"
    assert extract_answer("{answer: 'x',}") == "x"
    assert extract_answer('{"answer": "a}b"}') is None  # cut at the first "}"
    assert extract_answer('{"answer": null}') is None
    assert extract_answer('{"other": 1} {"answer": "y"}') is None  # only the first object counts
    assert extract_answer('{"answer": 1905}') == 1905
    assert extract_answer("no braces") is None and extract_answer("}{") is None


def test_hand_made_predictions_give_the_hand_computed_table(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in PREDICTIONS), encoding="utf-8")
    metrics = summarize_results(path)
    assert metrics["examples"] == 8
    assert metrics["valid_json"] == pytest.approx(75.0)  # 6 of 8
    assert metrics["exact_match"] == pytest.approx(37.5)  # 3 of 8
    assert metrics["exact_match_valid_json"] == pytest.approx(50.0)  # 3 of 6
    assert metrics["no_answer"] == pytest.approx(100 / 3)  # 1 of 3
    assert metrics["has_answer"] == pytest.approx(40.0)  # 2 of 5
    assert metrics["squad_em"] == pytest.approx(50.0)  # 4 of 8
    assert metrics["squad_f1"] == pytest.approx(60.0)  # (1 + .8 + 1 + 0 + 0 + 1 + 0 + 1) / 8
    assert (metrics["no_answer_examples"], metrics["has_answer_examples"]) == (3, 5)
    table = table_markdown({"hand": metrics})
    assert table.splitlines()[0] == ("| Model | % Valid JSON | % Exact Match | % EM for Valid JSON | % Correct No Answer "
                                     "| % Correct Has Answer | SQuAD EM | SQuAD F1 |")
    assert table.splitlines()[2] == "| hand | 75.00% | 37.50% | 50.00% | 33.33% | 40.00% | 50.00% | 60.00% |"


def test_no_answer_check_is_the_intended_one_not_the_buggy_one():
    assert is_no_answer(["?"]) and not is_no_answer(["?", "x"]) and not is_no_answer(["France"])
    only_answerable = squad_table([{"answers": ["a"], "response": '{"answer": "a"}'}])
    assert only_answerable["no_answer"] is None and only_answerable["has_answer"] == 100.0


def test_normalised_em_and_f1_match_hand_computed_values():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("?") == ""
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)  # p 1, r 2/3
    assert token_f1("cat cat dog", "cat dog dog") == pytest.approx(2 / 3)  # overlap {cat, dog}: p = r = 2/3
    assert token_f1("Paris", "London") == 0.0
    assert squad_scores("France.", ["the France", "Paris"]) == (1, 1.0)
    assert squad_scores("?", ["?"]) == (1, 1.0)  # "?" normalises to "": the official no-answer match
    assert squad_scores("Paris", ["?"]) == (0, 0.0)
    assert squad_scores(None, ["?"]) == (0, 0.0)  # invalid JSON never counts as abstaining
    assert squad_scores(1905, ["1905"]) == (1, 1.0)
    exact, f1 = squad_scores("in 1905 or 1906", ["1905", "in 1906"])
    assert exact == 0 and f1 == pytest.approx(max(2 * (1 / 4) * 1 / (1 / 4 + 1), 2 * (2 / 4) * 1 / (2 / 4 + 1)))


class FakeGenerator:
    """Answers each prompt from a question -> completion table; records every call."""

    def __init__(self, tokenizer, answers: dict[str, str], first_turn: dict[str, str] | None = None):
        self.tokenizer, self.answers, self.first_turn = tokenizer, answers, first_turn or {}
        self.calls: list[tuple[list[str], dict]] = []

    def generate(self, prompts, **options):
        self.calls.append((list(prompts), options))
        out = []
        for prompt in prompts:
            question = re.findall(r"Question: (.*?)</s>", prompt)[-1]
            is_first = prompt.count("<|assistant|>") == 1 and self.first_turn
            out.append((self.first_turn if is_first else self.answers)[question])
        return out


def _setup(tmp_path, multi_turn: bool, k: int = 2):
    paths = SquadRecipe().make_data(tmp_path / "data", 5, synthetic=50, num_pause_tokens=k, multi_turn=multi_turn)
    records = read_jsonl(paths["eval"])
    texts = [m["content"] for r in records for m in r["messages"]] + ["\\u0123456789"]
    tokenizer = train_tokenizer(texts, "char", extra_tokens=[f"<blah_{i}>" for i in range(k)])
    config = Config(recipe="squad", section=SquadConfig(num_pause_tokens=k))
    config.data.eval = str(paths["eval"])
    config.eval.batch_size = 4
    return records, tokenizer, config


def _question(record) -> str:
    return record["messages"][1]["content"].rsplit("Question: ", 1)[1]


def test_evaluate_scores_resumes_and_stops_at_the_brace(tmp_path):
    records, tokenizer, config = _setup(tmp_path, multi_turn=False)
    answers = {_question(r): '\n{\n  "answer": ' + json.dumps(r["answers"][0]) + "\n" for r in records}
    answers[_question(records[0])] = "\nnot json"
    generator = FakeGenerator(tokenizer, answers)
    eval_dir = tmp_path / "eval"
    metrics = SquadRecipe().evaluate(generator, config, eval_dir)
    n = len(records)
    assert metrics["examples"] == n and metrics["valid_json"] == pytest.approx(100 * (n - 1) / n)
    assert metrics["exact_match"] == pytest.approx(100 * (n - 1) / n)
    assert metrics["exact_match_valid_json"] == 100.0
    prompts, options = generator.calls[0]
    assert options["stop"] == ["}"] and options["max_new_tokens"] == config.eval.max_new_tokens
    assert all(p.endswith("<|assistant|>\n<blah_0><blah_1>\n```json") for p in prompts)
    assert len(generator.calls) == -(-n // 4)
    rows = read_jsonl(eval_dir / "results.jsonl")
    assert rows[1]["response"] == answers[_question(records[1])] + "}" and rows[1]["exact_match"] is True
    assert (eval_dir / "table.md").exists() and (eval_dir / "squad.png").exists()

    # Interrupted after all but the last row: a rerun answers only that one and gives the same table.
    (eval_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:-1]), encoding="utf-8")
    again = FakeGenerator(tokenizer, answers)
    assert SquadRecipe().evaluate(again, config, eval_dir) == metrics
    assert [len(p) for p, _ in again.calls] == [1]


def test_multi_turn_evaluation_feeds_back_the_models_first_answer(tmp_path):
    records, tokenizer, config = _setup(tmp_path, multi_turn=True, k=1)
    first = {_question(r): '\n{\n  "answer": "maybe"\n' for r in records}
    answers = {_question(r): '\n{\n  "answer": ' + json.dumps(r["answers"][0]) + "\n" for r in records}

    class TwoTurns(FakeGenerator):
        def generate(self, prompts, **options):
            self.calls.append((list(prompts), options))
            table = self.first_turn if len(self.calls) % 2 else self.answers
            return [table[re.findall(r"Question: (.*?)</s>", p)[0]] for p in prompts]

    generator = TwoTurns(tokenizer, answers, first)
    metrics = SquadRecipe().evaluate(generator, config, tmp_path / "eval")
    assert metrics["exact_match"] == 100.0
    second_turn_prompt = generator.calls[1][0][0]
    assert '<|assistant|>\n<blah_0>\n```json\n{\n  "answer": "maybe"\n}\n```</s>' in second_turn_prompt
    assert second_turn_prompt.endswith("<|assistant|>\n<blah_0>\n```json")
    row = read_jsonl(tmp_path / "eval" / "results.jsonl")[0]
    assert row["turns"][0] == '\n{\n  "answer": "maybe"\n}' and row["response"] == row["turns"][1]


def test_decode_wraps_serve_prompts_in_the_forced_opening(tmp_path):
    records, tokenizer, config = _setup(tmp_path, multi_turn=False)
    record = records[0]
    answers = {_question(record): '\n{\n  "answer": "x"\n'}
    generator = FakeGenerator(tokenizer, answers)
    prompt = tokenizer.apply_chat_template(record["messages"][:-1], tokenize=False, add_generation_prompt=True)
    (decoded,) = SquadRecipe().decode(generator, [prompt], config, Sampling.from_eval(config.eval))
    assert decoded.text == '```json\n{\n  "answer": "x"\n}\n```'
    assert generator.calls[0][0] == [prompt + "<blah_0><blah_1>\n```json"]
