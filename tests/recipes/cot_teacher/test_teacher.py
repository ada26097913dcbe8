"""The teacher's two steps, filtering by final answer, diverse samples, and resume after an interruption."""

from collections import Counter

import pytest

from llmft.recipes.cot_teacher.completions import load_completions
from llmft.recipes.cot_teacher.teacher import TeacherSettings, run_teacher, student_records, teacher_accuracy


class ScriptedTeacher:
    """Answers step 1 with a rationale and step 2 with a final answer chosen by the script; can die mid-run."""

    def __init__(self, answers, die_after=None, history=None):
        self.answers = answers  # question -> list of final answers, one per completion index
        self.asked = []
        self.history = [] if history is None else history  # every prompt any teacher was asked
        self.calls = 0
        self.die_after = die_after
        self.stops = []  # the stop strings of every call

    def generate(self, prompts, *, max_new_tokens=64, stop=(), num_beams=1, temperature=0.0, seed=0, top_p=1.0):
        self.stops.append(stop)
        if self.die_after is not None and self.calls >= self.die_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.asked += prompts
        out = []
        self.history += prompts
        for prompt in prompts:
            question = prompt.split("\n")[0][3:]
            if prompt.endswith("Therefore, the answer is"):
                index = int(prompt.split("[sample ")[1].split("]")[0])
                out.append(f" {self.answers[question][index]}.")
            else:
                index = sum(p == prompt for p in self.history) - 1
                out.append(f" Some reasoning [sample {index}] at T={temperature}.")
        return out


SAMPLES = [{"sample_index": i, "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(5)]


def scripted_answers(k):
    # sample i: completion j right when (i + j) is even
    return {s["question"]: [s["answer"] if (s["sample_index"] + j) % 2 == 0 else "0" for j in range(k)]
            for s in SAMPLES}


def test_two_steps_and_filtering(tmp_path):
    teacher = ScriptedTeacher(scripted_answers(1))
    path = tmp_path / "teacher.json"
    completions = run_teacher(teacher, SAMPLES, path, task="multiarith", teacher_name="scripted",
                              settings=TeacherSettings(batch_size=2))
    assert teacher.asked[0] == "Q: What is 0 + 1?\nA: Let's think step by step."
    assert teacher.asked[5] == ("Q: What is 0 + 1?\nA: Let's think step by step."
                                "Some reasoning [sample 0] at T=0.0.\nTherefore, the answer is")
    assert len(teacher.asked) == 10 and teacher.calls == 6  # 3 batches per step
    assert teacher.stops == [["END"]] * 6  # the reference sends stop="END" with both steps
    assert load_completions(path) == completions
    assert completions["metadata"]["completion_key"] == "zs_cot"
    records = student_records(completions, [0, 1, 2, 3, 4], samples=1, model_type="decoder")
    assert [r["sample_index"] for r in records] == [0, 2, 4]
    assert records[1] == {"prompt": "What is 2 + 1? ###",
                          "completion": " Some reasoning [sample 0] at T=0.0. --> 3",
                          "sample_index": 2, "completion_index": 0, "answer": "3"}
    assert teacher_accuracy(completions, [0, 1, 2, 3, 4], [0]) == pytest.approx(3 / 5)


def test_diverse_reasoning_keeps_every_correct_sample(tmp_path):
    teacher = ScriptedTeacher(scripted_answers(4))
    settings = TeacherSettings(samples=4, temperature=0.7, batch_size=8)
    completions = run_teacher(teacher, SAMPLES, tmp_path / "t.json", task="multiarith", teacher_name="scripted",
                              settings=settings)
    assert completions["metadata"]["completion_key"] == "zs_cot_t70"
    assert all(len(completions["data"][i]) == 4 for i in range(5))
    records = student_records(completions, [0, 1, 2, 3, 4], samples=4, model_type="encoder_decoder")
    assert len(records) == 10  # (i + j) even for half of the 20 samples
    assert {(r["sample_index"], r["completion_index"]) for r in records} == {
        (i, j) for i in range(5) for j in range(4) if (i + j) % 2 == 0}
    assert records[0]["prompt"] == "What is 0 + 1?" and records[0]["completion"].endswith(" --> 1")
    # Only the first k samples count when fewer are asked for (K=1 from the same file).
    assert len(student_records(completions, [0, 1, 2, 3, 4], samples=1, model_type="decoder")) == 3


def test_resume_asks_nothing_twice(tmp_path):
    path = tmp_path / "teacher.json"
    settings = TeacherSettings(samples=2, temperature=0.7, batch_size=3)
    history = []
    dying = ScriptedTeacher(scripted_answers(2), die_after=3, history=history)
    with pytest.raises(KeyboardInterrupt):
        run_teacher(dying, SAMPLES, path, task="multiarith", teacher_name="scripted", settings=settings)
    assert len(dying.asked) == 8  # samples 0-4 then 0-2 of the second pass (batches of 3 + 2 + 3)
    resumed = ScriptedTeacher(scripted_answers(2), history=history)
    completions = run_teacher(resumed, SAMPLES, path, task="multiarith", teacher_name="scripted", settings=settings)
    # 10 rationale requests (each question twice: K = 2) + 10 distinct answer prompts; nothing asked again.
    assert len(history) == 20
    rationale_prompts = Counter(p for p in history if p.endswith("step."))
    assert len(rationale_prompts) == 5 and set(rationale_prompts.values()) == {2}
    assert len({p for p in history if p.endswith("answer is")}) == 10
    assert {c["reasoning_completion"] for rows in completions["data"].values() for c in rows} == {
        f" Some reasoning [sample {j}] at T=0.7." for j in (0, 1)}
    assert all("completion" in c for rows in completions["data"].values() for c in rows)
    again = ScriptedTeacher(scripted_answers(2))
    run_teacher(again, SAMPLES, path, task="multiarith", teacher_name="scripted", settings=settings)
    assert again.asked == []


def test_http_teacher_filters_and_resumes(tmp_path):
    """make-data against an OpenAI-format HTTP server: exactly the right samples kept; a run cut off by
    server errors resumes without asking anything twice."""
    from tests.openai_stub import OpenAIStub

    from llmft.core.errors import LlmftError
    from llmft.core.jsonl import read_jsonl
    from llmft.recipes.cot_teacher.make_data import make_student_data
    from llmft.recipes.cot_teacher.tasks import default_split, load_dataset

    out = tmp_path / "data"
    make_student_data(out, 0, task="multiarith", n=20, template="ft_token")  # writes dataset.json
    dataset = load_dataset(out / "dataset.json")
    train_idx, _ = default_split("multiarith", 20)
    questions = {s["question"]: s for s in dataset["data"]}
    # Right for even sample indices at completion 0, for odd ones at completion 1.
    answers = {q: [s["answer"] if (s["sample_index"] + j) % 2 == 0 else "-1" for j in range(2)]
               for q, s in questions.items()}
    history = []
    common = dict(task="multiarith", n=20, teacher_model="tiny/teacher", samples=2, temperature=0.7, batch_size=4)
    with OpenAIStub(ScriptedTeacher(answers, history=history), fail_after=9, quiet=0.02) as url:
        with pytest.raises(LlmftError, match="HTTP 400"):
            make_student_data(out, 0, teacher=url, **common)
    served = ScriptedTeacher(answers, history=history)
    with OpenAIStub(served, quiet=0.02) as url:
        paths = make_student_data(out, 0, teacher=url, **common)
        assert served.stops and all(stop == ["END"] for stop in served.stops)  # the reference's stop="END"
        unstopped = ScriptedTeacher(answers)
    with OpenAIStub(unstopped, quiet=0.02) as url:
        make_student_data(tmp_path / "unstopped", 0, teacher=url, stop=("",), **common)
        assert unstopped.stops and all(stop == [] for stop in unstopped.stops)  # --stop '' sends none
    assert len(train_idx) == 14
    # 14 questions x 2 samples: 28 rationale + 28 answer requests in all, none repeated.
    assert len(history) == 56 and len({p for p in history if p.endswith("answer is")}) == 28
    records = read_jsonl(paths["train"])
    assert sorted((r["sample_index"], r["completion_index"]) for r in records) == sorted(
        (i, i % 2) for i in train_idx)
    assert all(r["completion"].endswith(f" --> {questions_by_index(dataset)[r['sample_index']]}") for r in records)
    assert (out / "teacher" / "B_tiny_teacher__C_zs_cot_t70" / "D_multiarith.json").is_file()


def questions_by_index(dataset):
    return {s["sample_index"]: s["answer"] for s in dataset["data"]}


def test_make_data_command_reports_the_teacher_and_fails_clean(tmp_path):
    """`make-data cot-teacher --teacher URL`: a progress line per saved batch, then the teacher's count; a call
    that fails leaves its output folder as it was (a new one is not created, an old one keeps its files)."""
    from click.testing import CliRunner
    from tests.openai_stub import OpenAIStub

    from llmft.cli import cli
    from llmft.core.jsonl import read_jsonl
    from llmft.recipes.cot_teacher.make_data import make_student_data
    from llmft.recipes.cot_teacher.tasks import default_split, load_dataset

    scratch = tmp_path / "scratch"
    make_student_data(scratch, 0, task="multiarith", n=20, template="ft_token")
    dataset = load_dataset(scratch / "dataset.json")
    train_idx, _ = default_split("multiarith", 20)
    answers = {s["question"]: [s["answer"] if s["sample_index"] % 3 else "-1"] for s in dataset["data"]}
    right = sum(1 for i in train_idx if i % 3)
    runner = CliRunner()
    common = ["make-data", "cot-teacher", "--task", "multiarith", "--n", "20", "--batch-size", "4"]

    out = tmp_path / "new"
    failed = runner.invoke(cli, [*common, "--teacher", "http://127.0.0.1:9/v1", "--out", str(out)])
    assert failed.exit_code == 2 and failed.stderr.strip() == (
        "error: --teacher-model is required with an endpoint URL (the model name to ask for)")
    assert not out.exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "notes.txt").write_text("mine\n")
    failed = runner.invoke(cli, [*common, "--teacher", "http://127.0.0.1:9/v1", "--out", str(old)])
    assert failed.exit_code == 2 and sorted(p.name for p in old.iterdir()) == ["notes.txt"]

    with OpenAIStub(ScriptedTeacher(answers), quiet=0.02) as url:
        result = runner.invoke(cli, [*common, "--teacher", url, "--teacher-model", "t", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.stderr.strip().splitlines()
    progress = [line for line in lines if line.startswith("teacher: ")]
    assert len(train_idx) == 14 and len(progress) == 8  # 4 batches of rationales, 4 of answers
    assert progress[0].startswith("teacher: 4/28 answers") and progress[-1].startswith("teacher: 28/28 answers")
    assert lines[-1] == f"teacher correct {right} of 14 questions, kept {right} records"
    assert len(read_jsonl(out / "train.jsonl")) == right


def test_teacher_train_writes_worked_solutions_in_the_two_zero_shot_cot_steps(tmp_path):
    """`make-data cot-teacher --teacher-train`: per generated sample, the step-1 prompt -> its rationale and the
    step-2 prompt (step 1 + rationale + answer trigger) -> its answer, the strings the teacher is later asked."""
    from click.testing import CliRunner

    from llmft.cli import cli
    from llmft.core.jsonl import read_jsonl
    from llmft.recipes.cot_teacher.formats import zs_cot_step1, zs_cot_step2
    from llmft.recipes.cot_teacher.generators import generate_samples

    runner = CliRunner()
    result = runner.invoke(cli, ["make-data", "cot-teacher", "--task", "last_letter_concatenation", "--size", "3",
                                 "--n", "10", "--teacher-train", "--seed", "99", "--out", str(tmp_path / "lessons")])
    assert result.exit_code == 0, result.output
    records = read_jsonl(tmp_path / "lessons" / "train.jsonl")
    samples = generate_samples("last_letter_concatenation", 10, 99, 3)
    assert len(records) == 20 and not (tmp_path / "lessons" / "eval.jsonl").exists()
    first, second = records[0], records[1]
    step1 = zs_cot_step1(samples[0]["question"])
    assert first["prompt"] == step1 and first["completion"] == " " + samples[0]["rationale"]
    assert second["prompt"] == zs_cot_step2(step1, samples[0]["rationale"])
    assert second["completion"] == f" {samples[0]['answer']}." and first["task"] == "last_letter_concatenation"
    failed = runner.invoke(cli, ["make-data", "cot-teacher", "--task", "gsm8k", "--teacher-train",
                                 "--out", str(tmp_path / "none")])
    assert failed.exit_code == 2 and "--teacher-train: only" in failed.stderr
