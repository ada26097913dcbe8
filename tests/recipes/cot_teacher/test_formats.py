"""Templates equal the reference's strings; splits and files match the reference's formats."""

import json

import pytest

from llmft.core.errors import LlmftError
from llmft.recipes.cot_teacher.completions import (
    completion_path,
    load_completions,
    new_completions,
    save_completions,
    select_samples,
)
from llmft.recipes.cot_teacher.formats import (
    check_template,
    student_input,
    student_label,
    zs_cot_step1,
    zs_cot_step2,
)
from llmft.recipes.cot_teacher.generators import few_shot_prompt, generate_samples
from llmft.recipes.cot_teacher.tasks import (
    DATASET_SIZES,
    default_split,
    load_dataset,
    make_dataset,
    save_dataset,
)

SAMPLE = {"sample_index": 3, "question": " How many? ", "answer": " 7 ", "reasoning_completion": "\n3 + 4 = 7. "}


def test_teacher_prompts():
    step1 = zs_cot_step1(" What is 3 + 4? ")
    assert step1 == "Q: What is 3 + 4?\nA: Let's think step by step."
    # Both parts stripped and joined with nothing between, as the reference's Formatter does.
    assert zs_cot_step2(step1, " 3 plus 4 is 7. ") == (
        "Q: What is 3 + 4?\nA: Let's think step by step.3 plus 4 is 7.\nTherefore, the answer is")


def test_student_templates():
    assert student_input(SAMPLE, "ft_cot_token", "decoder") == "How many? ###"
    assert student_label(SAMPLE, "ft_cot_token", "decoder") == " 3 + 4 = 7. --> 7"
    assert student_input(SAMPLE, "ft_cot_token", "encoder_decoder") == "How many?"
    assert student_label(SAMPLE, "ft_cot_token", "encoder_decoder") == "3 + 4 = 7. --> 7"
    assert student_label(SAMPLE, "ft_token", "decoder") == " 7"
    assert student_label(SAMPLE, "ft_token", "encoder_decoder") == "7"
    assert student_input(SAMPLE, "zs", "decoder") == "Q: How many?\n\nA:"
    assert student_input(SAMPLE, "zs", "encoder_decoder") == "question: How many?"
    assert student_input(SAMPLE, "fs_cot", "decoder", "Q: a\nA: b The answer is c.") == (
        "Q: a\nA: b The answer is c.\nQ: How many?\nA:")
    with pytest.raises(ValueError):
        student_label(SAMPLE, "zs", "decoder")


def test_natural_and_gpt3_templates():
    # The reference's ft_cot_natural strings (its label says "Therefore the answer is", without a comma).
    assert student_input(SAMPLE, "ft_cot_natural", "decoder") == "Q: How many?\n\nA: Let's think step by step.\n\n"
    assert student_label(SAMPLE, "ft_cot_natural", "decoder") == " 3 + 4 = 7.\n\nTherefore the answer is 7"
    # The paper's GPT-3 strings (format.py's REPRODUCTION NOTE), fields left unstripped.
    assert student_input(SAMPLE, "ft_cot_token_gpt3", "decoder") == " How many? \n\n###\n\n"
    assert student_label(SAMPLE, "ft_cot_token_gpt3", "decoder") == " \n3 + 4 = 7. \n\n-->\n\n 7 "
    for template in ("ft_cot_natural", "ft_cot_token_gpt3"):
        with pytest.raises(LlmftError, match=f"--format {template}: not defined for --model-type encoder_decoder"):
            check_template(template, "encoder_decoder")
    check_template("ft_cot_token", "encoder_decoder")


def test_default_splits_match_the_reference_files():
    # First test indices and sizes of the reference's data/split/*__default.json (read at @a2ca4d2).
    train, test = default_split("coin_flip")
    assert (len(train), len(test), test[:5]) == (350, 150, [0, 9, 11, 23, 25])
    train, test = default_split("multiarith")
    assert (len(train), len(test), test[:5]) == (420, 180, [3, 9, 11, 13, 16])
    train, test = default_split("strategy_qa")
    assert (len(train), len(test), test[:5]) == (1603, 687, [0, 3, 7, 21, 24])
    train, test = default_split("aqua")
    assert (len(train), len(test), train[:5], test[0]) == (10000, 254, [9, 17, 23, 25, 26], 97467)
    train, test = default_split("gsm8k")
    assert (len(train), test[0]) == (7473, 7473)
    assert sum(map(len, default_split("commonsense_qa"))) == DATASET_SIZES["commonsense_qa"]


def test_dataset_file_round_trip(tmp_path):
    samples = generate_samples("coin_flip", 5, seed=0)
    path = save_dataset(make_dataset("coin_flip", samples), tmp_path / "coin_flip.json")
    loaded = load_dataset(path, "coin_flip")
    assert [s["sample_index"] for s in loaded["data"]] == [0, 1, 2, 3, 4]
    assert loaded["data"][2]["answer"] == samples[2]["answer"] in ("yes", "no")
    with pytest.raises(LlmftError, match="dataset_key is 'coin_flip', expected 'gsm8k'"):
        load_dataset(path, "gsm8k")
    path.write_text(json.dumps({"metadata": {"dataset_key": "coin_flip"}, "data": [{"question": "q"}]}))
    with pytest.raises(LlmftError, match=r"data\[0\] has no 'sample_index'"):
        load_dataset(path)


def test_completion_dataset_reads_the_reference_layout(tmp_path):
    # A file shaped like the reference's released teacher data (string keys, metadata, extra fields).
    raw = {"metadata": {"base_model": "text-davinci-002", "dataset_key": "multiarith", "completion_key": "zs_cot",
                        "finetune_key": None, "train_key": None, "epoch": None, "prediction_template": "zs_cot",
                        "reasoning_temperature": 0, "reasoning_max_tokens": 128},
           "data": {"0": [{"sample_index": 0, "completion_index": 0, "question": "q0", "answer": "8",
                           "reasoning_prompt": "Q: q0\nA: Let's think step by step.", "reasoning_completion": " r",
                           "prompt": "p", "completion": " 8.", "finish_reason": "stop"}],
                    "5": [{"sample_index": 5, "completion_index": 0, "question": "q5", "answer": "3",
                           "prompt": "p", "completion": " 2 or 3", "finish_reason": "stop"}]}}
    path = completion_path(tmp_path, "text-davinci-002", "zs_cot", "multiarith")
    assert path.relative_to(tmp_path).as_posix() == "B_text-davinci-002__C_zs_cot/D_multiarith.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(raw))
    loaded = load_completions(path)
    assert sorted(loaded["data"]) == [0, 5]
    # zs_cot has no prefix: the first candidate decides (2, wrong for sample 5).
    assert [c["sample_index"] for c in select_samples(loaded, only_correct=True)] == [0]
    save_completions(loaded, tmp_path / "copy.json")
    assert json.loads((tmp_path / "copy.json").read_text()) == raw
    again = new_completions("t", "zs_cot", "coin_flip", "zs_cot")
    assert again["metadata"]["epoch"] is None and again["data"] == {}


def test_generators_answer_their_own_questions():
    from llmft.recipes.cot_teacher.parsing import is_correct

    for task in ("last_letter_concatenation", "coin_flip", "multiarith"):
        samples = generate_samples(task, 50, seed=1)
        assert samples == generate_samples(task, 50, seed=1)
        # A worked exemplar ("{rationale} The answer is {answer}.") parses back to the gold answer.
        for s in samples:
            assert is_correct(task, f"{s['rationale']} The answer is {s['answer']}.", s["answer"], "fs_cot"), s
    letters = generate_samples("last_letter_concatenation", 1, seed=0)[0]
    names = letters["question"].split('"')[1].split()
    assert len(names) == 4 and letters["answer"] == "".join(n[-1] for n in names)
    coin = generate_samples("coin_flip", 200, seed=0)
    assert 60 < sum(s["answer"] == "yes" for s in coin) < 140
    prompt = few_shot_prompt(coin[:2])
    assert prompt.count("Q: ") == 2 and prompt.endswith(f"The answer is {coin[1]['answer']}.")


def test_a_decoder_only_format_for_t5_is_one_error_line(tmp_path):
    from click.testing import CliRunner

    from llmft.cli import cli

    result = CliRunner().invoke(cli, ["make-data", "cot-teacher", "--task", "coin_flip", "--n", "20", "--format",
                                      "ft_cot_natural", "--model-type", "encoder_decoder", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --format ft_cot_natural: not defined for --model-type encoder_decoder (decoder students only)"]
    assert not list(tmp_path.iterdir())  # nothing written
