"""Original releases -> the reference's Dataset samples, on small files in each source's schema."""

import json

import pytest

from llmft.core.errors import LlmftError
from llmft.recipes.cot_teacher.sources import load_source


def write(path, data, lines=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in data) if lines else json.dumps(data))
    return path


def test_equation_tasks(tmp_path):
    rows = [{"iIndex": 0, "sQuestion": " Sam had 9 dimes. His dad gave him 7. How many now? ", "lSolutions": [16.0],
             "lEquations": ["X=9+7"]}]
    path = write(tmp_path / "q.json", rows)
    assert load_source("multiarith", path) == [{"question": "Sam had 9 dimes. His dad gave him 7. How many now?",
                                                "answer": "16"}]
    assert load_source("addsub", path)[0]["answer"] == "16.0"
    assert load_source("single_eq", path)[0]["question"].startswith(" Sam")  # SingleEq was not stripped


def test_gsm8k_aqua_svamp(tmp_path):
    gsm = [{"question": "q1", "answer": "2 + 2 = <<2+2=4>>4\nSo 1,004.\n#### 1,004"}]
    write(tmp_path / "gsm" / "train.jsonl", gsm, lines=True)
    write(tmp_path / "gsm" / "test.jsonl", gsm, lines=True)
    samples = load_source("gsm8k", tmp_path / "gsm")
    assert len(samples) == 2 and samples[0]["answer"] == "1,004"
    assert samples[0]["rationale"] == "2 + 2 = <<2+2=4>>4\nSo 1,004."
    aqua = [{"question": " Mean of 15 numbers is 40. Add 10 to each? ", "options": ["A)50", "B)45", "C)65", "D)78",
                                                                                   "E)64"],
             "rationale": " +10 each. ", "correct": "A"}]
    write(tmp_path / "aqua" / "train.json", aqua, lines=True)
    write(tmp_path / "aqua" / "test.json", aqua, lines=True)
    first = load_source("aqua", tmp_path / "aqua")[0]
    assert first == {"question": "Mean of 15 numbers is 40. Add 10 to each? Answer choices: (A) 50, (B) 45, "
                                 "(C) 65, (D) 78, (E) 64.", "answer": "A", "rationale": "+10 each."}
    svamp = write(tmp_path / "svamp.json", [{"Body": "Each pack has 3 pens. ", "Question": " How many in 4 packs?",
                                             "Answer": 12.0}])
    assert load_source("svamp", svamp) == [{"question": "Each pack has 3 pens. How many in 4 packs?",
                                            "answer": "12.0"}]


def test_multiple_choice_and_yes_no(tmp_path):
    csqa = [{"answerKey": "B", "question": {"stem": "Where is ink absorbed? ", "choices": [
        {"label": c, "text": t} for c, t in zip("ABCDE", ["pocket", "blotter", "well", "desk", "hand"])]}}]
    write(tmp_path / "csqa" / "train_rand_split.jsonl", csqa, lines=True)
    write(tmp_path / "csqa" / "dev_rand_split.jsonl", csqa, lines=True)
    assert load_source("commonsense_qa", tmp_path / "csqa")[1]["answer"] == "B"
    sqa = write(tmp_path / "sqa.json", {"examples": [
        {"input": "Do hamsters feed animals? ", "target_scores": {"Yes": 1, "No": 0}, "target": "Yes. Prey."}]})
    assert load_source("strategy_qa", sqa) == [{"question": "Do hamsters feed animals?", "answer": "Yes",
                                                "rationale": "Prey."}]
    objects = write(tmp_path / "objects.json", {"examples": [
        {"input": "Alice has a ball. ", "target_scores": {"ball.": 0, "hat.": 1, "box.": 0}}]})
    assert load_source("tracking_shuffled_objects", objects) == [{
        "question": "Alice has a ball.\nWhich choice is true? Answer choices: (A) ball, (B) hat, (C) box.",
        "answer": "B"}]
    date = write(tmp_path / "date.json", {"examples": [
        {"input": "Today is 01/02/2020. Tomorrow?", "target_scores": {f"0{i}/03/2020": int(i == 1)
                                                                      for i in range(1, 7)}}]})
    shuffled = load_source("date_understanding", date)[0]
    # The options are permuted with RandomState(0); the answer letter follows the right option.
    letter = shuffled["answer"]
    assert f"({letter}) 01/03/2020" in shuffled["question"]
    assert shuffled["question"].count("/03/2020") == 6
    coin = write(tmp_path / "coin.json", {"examples": [{"question": "A coin is heads up. ...", "answer": "no"}]})
    assert load_source("coin_flip", coin) == [{"question": "A coin is heads up. ...", "answer": "no"}]
    with pytest.raises(LlmftError, match="not in the original strategy_qa layout"):
        load_source("strategy_qa", coin)
