"""The Evaluator's parsing per task, on hand-made completions."""

import pytest

from llmft.recipes.cot_teacher.parsing import (
    candidates,
    clean_answer,
    is_correct,
    parse_prediction,
    score_completion,
)


@pytest.mark.parametrize("task, completion, answer, expected", [
    # math: commas dropped, first candidate after the prefix
    ("gsm8k", "She pays 1,200 + 34 = 1,234. --> 1,234", "1,234", True),
    ("gsm8k", "7 + 11 = 18 --> 18.0", "18", False),  # GSM8K compares strings: "18.0" != "18"
    ("multiarith", "6 + 12 = 18 --> 18.0", "18", False),
    ("svamp", "6 + 12 = 18 --> 18.0", "18", True),  # SVAMP compares floats
    ("addsub", "--> 2.50 dollars", "2.5", True),
    ("single_eq", "x is -3 --> -3", "-3.0", True),
    ("multiarith", "5 apples and 3 pears make 8", "8", True),  # prefix missing: last candidate
    ("multiarith", "5 apples and 8 pears make 3", "8", False),
    ("gsm8k", "no number here -->", "3", False),
    # letters
    ("aqua", "The answer must be C --> (B)", "B", True),
    ("commonsense_qa", "Ducks --> E", "E", True),
    ("date_understanding", "--> F) 01/01/2020", "F", True),
    ("date_understanding", "A bit of reasoning, and then F", "F", True),  # last candidate without the prefix
    ("tracking_shuffled_objects", "--> D or C", "C", True),  # D is no candidate for three objects
    # yes/no
    ("coin_flip", 'odd number of flips --> "No."', "no", True),
    ("coin_flip", "flipped twice. So yes, it is", "yes", True),
    ("coin_flip", "--> yes!", "yes", False),  # "!" is not one of the characters the reference blanks
    ("strategy_qa", "--> Yes.", "Yes", True),
    ("strategy_qa", "no, because... --> yes", "No", False),
    # last letter: the whole text after the prefix, quotes, dots and whitespace removed, case kept
    ("last_letter_concatenation", 'The letters are y, n --> "ynny".', "ynny", True),
    ("last_letter_concatenation", "--> Ynny", "ynny", False),
    ("last_letter_concatenation", "ynny", "ynny", True),  # no prefix: the whole string
])
def test_ft_cot_token_parsing(task, completion, answer, expected):
    assert is_correct(task, completion, answer, "ft_cot_token") is expected


def test_no_prefix_templates_take_the_first_candidate():
    assert parse_prediction("multiarith", " 12 apples, not 13", "zs_cot") == "12"
    assert parse_prediction("multiarith", " 12 apples, not 13", "ft_token") == "12"
    assert parse_prediction("coin_flip", " no. Well, yes", "zs") == "no"


def test_few_shot_prefix():
    text = "2 + 3 = 5. The answer is 5.\nQ: 1 + 1?\nA: The answer is 2."
    assert parse_prediction("multiarith", text, "fs_cot") == "5"
    assert parse_prediction("multiarith", "first 4 then 9", "fs_cot") == "9"


def test_candidates_and_gold_cleaning():
    assert candidates("gsm8k", "1,000 and -2.5 and 3.") == ["1000", "-2.5", "3"]
    assert candidates("svamp", "1,000 and -2.5") == [1000.0, -2.5]
    assert candidates("strategy_qa", "Yes:no,maybe\nNO.") == ["yes", "no", "no"]
    assert clean_answer("gsm8k", "1,234") == "1234"
    assert clean_answer("single_eq", "16.0") == 16.0
    assert clean_answer("strategy_qa", "Yes") == "yes"
    assert clean_answer("coin_flip", "yes") == "yes"
    with pytest.raises(ValueError):
        candidates("mmlu", "A")


def test_score_fields():
    scored = score_completion("multiarith", "3 + 4 = 7 --> 7 or 8", "8", "ft_cot_token")
    assert scored == {"prediction": "7", "correct": False, "contains_answer": True, "correct_format": True}
    scored = score_completion("multiarith", "3 + 4 = 7", "7", "ft_cot_token")
    assert scored["correct"] and not scored["correct_format"]


def test_natural_and_gpt3_parsing():
    # ft_cot_natural: the Evaluator's prefix has a comma the label lacks, so a student writing the label is
    # scored on the last candidate (the reference's behaviour, kept).
    scored = score_completion("multiarith", " 3 + 4 = 7\n\nTherefore the answer is 7 or 8", "7", "ft_cot_natural")
    assert scored == {"prediction": "8", "correct": False, "contains_answer": True, "correct_format": False}
    scored = score_completion("multiarith", " 3 + 4 = 7. Therefore, the answer is 7 or 8", "7", "ft_cot_natural")
    assert scored["prediction"] == "7" and scored["correct"] and scored["correct_format"]
    scored = score_completion("multiarith", " 3 + 4 = 7\n\n-->\n\n7 or 8", "7", "ft_cot_token_gpt3")
    assert scored["prediction"] == "7" and scored["correct"] and scored["correct_format"]
