"""make-data: bad options and inputs give one `error:` line and write nothing; teacher answers are never
paired with another question, a null answer is never stored, and a teacher request has a total deadline."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmft.cli import cli
from llmft.core.jsonl import read_jsonl
from tests.openai_stub import OpenAIStub, QuietHTTPServer
from tests.reliability.battery import one_error

COIN = ["make-data", "cot-teacher", "--task", "coin_flip", "--n", "20"]
GOOD = {"question": "Is Ann older than Bo?", "answer": True, "split": "train",
        "cot_steps": ["[rag]: Ann is 30 and Bo is 20.", "[reason]: 30 > 20, so yes."]}


def written(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize(("options", "needle"), [
    (["--n", "-5"], "--n must be >= 0, got -5"),
    (["--size", "-3"], "--size must be >= 0, got -3"),
    (["--max-tokens", "0"], "--max-tokens must be >= 1, got 0"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--batch-size", "-2"], "--batch-size must be >= 1, got -2"),
    (["--temperature", "-1"], "--temperature must be >= 0, got -1.0"),
    (["--samples", "0"], "--samples must be >= 1, got 0"),
    (["--request-deadline", "0"], "--request-deadline must be > 0, got 0.0"),
    (["--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
])
def test_cot_teacher_options_out_of_range(tmp_path, options, needle):
    out = tmp_path / "d"
    one_error([*COIN, "--format", "ft_token", *options, "--out", out], needle)
    assert written(out) == []


@pytest.mark.parametrize(("content", "needle"), [
    ('{"train": ["1", "2"], "test": [3]}', "'train' must be a list of integer sample indices"),
    ("not json", "not JSON"),
    ('{"train": [0, 1, 2, 3], "test": [3, 4]}', "1 test indices are also in train (first: 3)"),
    ('{"train": [0, 1], "test": [2, 99]}', "split index 99 is out of range for 20 samples"),
    ('[1, 2]', "needs 'train' and 'test' index lists"),
])
def test_cot_teacher_bad_split_files(tmp_path, content, needle):
    split = tmp_path / "split.json"
    split.write_text(content)
    out = tmp_path / "d"
    one_error([*COIN, "--format", "ft_token", "--split", split, "--out", out], needle)
    assert written(out) == []


def test_cot_teacher_few_shot_prompts_missing_or_not_json(tmp_path):
    out = tmp_path / "d"
    one_error([*COIN, "--format", "fs_cot", "--few-shot-prompts", tmp_path / "none.json", "--out", out],
              "--few-shot-prompts file not found")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    one_error([*COIN, "--format", "fs_cot", "--few-shot-prompts", bad, "--out", out], "not JSON")
    bad.write_text('{"coin_flip": {"prompt": 7}}')
    one_error([*COIN, "--format", "fs_cot", "--few-shot-prompts", bad, "--out", out], "no prompt for 'coin_flip'")
    assert written(out) == []


@pytest.mark.parametrize(("record", "needle"), [
    ({k: v for k, v in GOOD.items() if k != "question"}, "record has no 'question'"),
    ({k: v for k, v in GOOD.items() if k != "answer"}, "record has no 'answer'"),
    (dict(GOOD, answer=None), "record has no 'answer'"),
    (dict(GOOD, question=7), "'question' must be a string, got 7"),
    (dict(GOOD, cot_steps="[rag]: Ann is 30."), "'cot_steps' must be a list of strings"),
    (dict(GOOD, cot_steps=[1, 2]), "'cot_steps' must be a list of strings, got [1, 2]"),
    (dict(GOOD, cot_steps=["[rag]: Ann is 30.", "[reason]: "]), "step 2 of 'cot_steps' is empty"),
])
def test_memreason_records_outside_the_schema(tmp_path, record, needle):
    source = tmp_path / "in.json"
    source.write_text(json.dumps([GOOD, record]))
    out = tmp_path / "d"
    one_error(["make-data", "memreason", "--input", source, "--out", out], f"in.json#1: {needle}")
    assert written(out) == []


def test_memreason_inputs_not_utf8_and_bad_options(tmp_path):
    source = tmp_path / "in.json"
    source.write_bytes(json.dumps([dict(GOOD, question="caf\u00e9?")], ensure_ascii=False).encode("latin-1"))
    out = tmp_path / "d"
    one_error(["make-data", "memreason", "--input", source, "--out", out], "in.json: not UTF-8")
    one_error(["make-data", "memreason", "--synthetic", "-1", "--out", out], "--synthetic must be >= 0")
    one_error(["make-data", "memreason", "--synthetic", "5", "--num-prefix-tokens", "0", "--out", out],
              "--num-prefix-tokens must be >= 1, got 0")
    assert written(out) == []


def test_memreason_good_records_with_any_metadata_train_their_own_text(tmp_path):
    source = tmp_path / "in.json"
    source.write_text(json.dumps([dict(GOOD, metadata=[1, 2]), dict(GOOD, question="Is Bo older?", answer=False,
                                                                     metadata={"a": 1})]))
    result = CliRunner().invoke(cli, ["make-data", "memreason", "--input", str(source), "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    rows = read_jsonl(tmp_path / "d" / "train.jsonl")
    assert [r["prompt"] for r in rows] == ["Question: Is Ann older than Bo?\n ", "Question: Is Bo older?\n "]
    assert [r["completion"].endswith(f"The answer is: {a}\n") for r, a in zip(rows, ("True", "False"))] == [True] * 2
    assert not any("None" in r["completion"] for r in rows)


class KnowingTeacher:
    """Step 1: a rationale naming its question; step 2: the right answer, or null where `null` says."""

    def __init__(self, answers: dict[str, str], null: bool = False):
        self.answers, self.null, self.asked = answers, null, []

    def generate(self, prompts, **kwargs):
        self.asked += prompts
        out = []
        for prompt in prompts:
            question = prompt.split("\n")[0][3:]
            if prompt.endswith("Therefore, the answer is"):
                out.append(None if self.null else f" {self.answers[question]}.")
            else:
                out.append(f" Thinking about <{question}>.")
        return out


def coin_answers(tmp_path: Path, seed: int) -> dict[str, str]:
    out = tmp_path / f"questions-{seed}"
    assert CliRunner().invoke(cli, [*COIN, "--format", "ft_token", "--seed", str(seed), "--out", str(out)]).exit_code == 0
    return {s["question"]: s["answer"] for s in json.loads((out / "dataset.json").read_text())["data"]}


def ask(url: str, out: Path, seed: int) -> object:
    return CliRunner().invoke(cli, [*COIN, "--teacher", url, "--teacher-model", "t", "--batch-size", "4",
                                    "--seed", str(seed), "--out", str(out)])


def test_a_new_seed_asks_the_teacher_about_its_new_questions(tmp_path):
    first, second_questions = coin_answers(tmp_path, 0), coin_answers(tmp_path, 1)
    assert set(first) != set(second_questions)
    answers = {**first, **second_questions}
    out = tmp_path / "d"
    teacher = KnowingTeacher(answers)
    with OpenAIStub(teacher, quiet=0.02) as url:
        assert ask(url, out, 0).exit_code == 0
        asked_first = len(teacher.asked)
        second = ask(url, out, 1)
    assert second.exit_code == 0, second.output
    assert len(teacher.asked) > asked_first  # the seed-1 questions were asked, not answered from seed 0's file
    rows = read_jsonl(out / "train.jsonl")
    questions = {s["sample_index"]: s["question"] for s in json.loads((out / "dataset.json").read_text())["data"]}
    assert rows and all(f"<{questions[r['sample_index']]}>" in r["completion"] for r in rows)


def test_a_null_teacher_answer_is_an_error_and_is_asked_again(tmp_path):
    answers = coin_answers(tmp_path, 0)
    out = tmp_path / "d"
    with OpenAIStub(KnowingTeacher(answers, null=True), quiet=0.02) as url:
        result = ask(url, out, 0)
    assert result.exit_code == 2 and "choice's text is null, not text" in result.stderr
    assert "Traceback" not in result.output and not (out / "train.jsonl").exists()
    stored = json.loads(next((out / "teacher").rglob("*.json")).read_text())
    assert not any("completion" in row for rows in stored["data"].values() for row in rows)
    teacher = KnowingTeacher(answers)
    with OpenAIStub(teacher, quiet=0.02) as url:
        again = ask(url, out, 0)
    assert again.exit_code == 0, again.output
    assert sum(p.endswith("Therefore, the answer is") for p in teacher.asked) == 14  # every step 2 asked again
    assert not any("None" in r["completion"] for r in read_jsonl(out / "train.jsonl"))


def test_a_dripping_teacher_meets_the_total_deadline():
    from llmft.core.endpoint import Endpoint
    from llmft.core.errors import LlmftError

    class Drip(BaseHTTPRequestHandler):
        def log_message(self, *args):
            return None

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(40):  # one byte every 0.25 s: each read is quick, the whole reply 10 s
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.25)

    server = QuietHTTPServer(("127.0.0.1", 0), Drip)  # the client leaves after 1 s: broken pipes are expected
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = Endpoint(f"http://127.0.0.1:{server.server_address[1]}", "m", timeout=5, deadline=1.0,
                            max_retries=0)
        start = time.monotonic()
        with pytest.raises(LlmftError, match="unreachable after 1 tries: the reply did not finish before"):
            endpoint.complete("hi")
        assert time.monotonic() - start < 3
    finally:
        server.shutdown()
        server.server_close()
    help_text = CliRunner().invoke(cli, ["make-data", "cot-teacher", "--help"]).output
    assert "--request-deadline" in help_text and "Total deadline per teacher request" in help_text
