"""Re-Tuning data: exact strings of PAPERS.md 1.1 and the reference notebooks, samplers and resampling."""

from __future__ import annotations

import collections
import itertools
import random

from llmft.recipes.retuning.data import (
    addition_baseline_example,
    addition_cells,
    addition_recursive_examples,
    addition_scratchpad_example,
    eval_records,
    parity_baseline_example,
    parity_flat_counts,
    parity_recursive_examples,
    parity_scratchpad_example,
    resample_addition,
    resample_dp,
    resample_dp_flat,
    resample_parity,
    resample_parity_flat,
    sample_addition_pairs,
    sample_bit_lists,
    sample_dp_arrays,
    sample_problems,
    training_records,
)
from llmft.recipes.retuning.dp import (
    dp_baseline_example,
    dp_recursive_examples,
    dp_scratchpad_example,
    dp_solve,
)


class FixedRandom(random.Random):
    """random() returns the given values in turn (cycling), to force the resampling coin flips."""

    def __init__(self, *values: float):
        super().__init__(0)
        self.values = itertools.cycle(values)

    def random(self) -> float:
        return next(self.values)


def pairs(records: list[dict]) -> list[tuple[str, str]]:
    return [(r["prompt"], r["completion"]) for r in records]


def test_addition_1234_plus_578_is_the_papers_five_examples_plus_the_rest():
    got = pairs(addition_recursive_examples(1234, 578))
    assert got == [
        ("4 + 8\nSolution: ", "Carry 1, Output 2"),
        ("34 + 78\nSolution: ", "Call: 4 + 8\n"),
        ("34 + 78\nSolution: Call: 4 + 8\nReturn: Carry 1, Output 2\nAnswer: ", "Carry 1, Output 12"),
        ("234 + 578\nSolution: ", "Call: 34 + 78\n"),
        ("234 + 578\nSolution: Call: 34 + 78\nReturn: Carry 1, Output 12\nAnswer: ", "Carry 0, Output 812"),
        ("1234 + 0578\nSolution: ", "Call: 234 + 578\n"),
        (
            "1234 + 0578\nSolution: Call: 234 + 578\nReturn: Carry 0, Output 812\nAnswer: ",
            "Carry 0, Output 1812",
        ),
    ]
    sizes = [r["size"] for r in addition_recursive_examples(1234, 578)]
    assert sizes == [1, 2, 2, 3, 3, 4, 4]


def test_addition_keeps_leading_zeros_and_pads_the_output():
    got = pairs(addition_recursive_examples(9999, 1))
    assert ("99 + 01\nSolution: ", "Call: 9 + 1\n") in got
    assert ("999 + 001\nSolution: ", "Call: 99 + 01\n") in got
    assert got[-1] == (
        "9999 + 0001\nSolution: Call: 999 + 001\nReturn: Carry 1, Output 000\nAnswer: ",
        "Carry 1, Output 0000",
    )
    scratch = addition_scratchpad_example(9999, 1)
    assert (scratch["prompt"], scratch["completion"]) == (
        "9999 + 0001\nSolution: ",
        "Carry 1, Output 0\nCarry 1, Output 00\nCarry 1, Output 000\nCarry 1, Output 0000",
    )
    base = addition_baseline_example(1234, 578)
    assert (base["prompt"], base["completion"]) == ("1234 + 0578\nAnswer: ", "1812")


def test_parity_examples_match_the_listing_with_the_doubled_newline():
    assert pairs(parity_recursive_examples([1, 0, 1])) == [
        ("What is the parity of [1, 0, 1]?\nSolution: ", "Call: What is the parity of [0, 1]?\n"),
        (
            "What is the parity of [1, 0, 1]?\nSolution: Call: What is the parity of [0, 1]?\n"
            "\nReturn: 1\nAnswer: ",
            "0",
        ),
        ("What is the parity of [0, 1]?\nSolution: ", "Call: What is the parity of [1]?\n"),
        (
            "What is the parity of [0, 1]?\nSolution: Call: What is the parity of [1]?\n"
            "\nReturn: 1\nAnswer: ",
            "1",
        ),
        ("What is the parity of [1]?\nSolution: ", "1"),
    ]
    scratch = parity_scratchpad_example([1, 0, 1])
    assert scratch["completion"] == "Compute one element at a time. 1 1 0"
    assert scratch["prompt"] == "What is the parity of [1, 0, 1]?\nSolution: "
    base = parity_baseline_example([1, 1, 0, 1])
    assert (base["prompt"], base["completion"]) == ("What is the parity of [1, 1, 0, 1]?\nAnswer: ", "1")


def test_dp_solver_on_the_papers_example():
    assert dp_solve([3, -2, 4]) == ([1, 2, 1], [7, 4, 4], [True, False, True])
    assert dp_solve([-3]) == ([2], [0], [True])


def test_dp_solver_is_the_lexicographically_smallest_best_selection():
    for length in range(1, 4):
        for arr in itertools.product(range(-5, 6), repeat=length):
            best = min(
                (-sum(a for a, m in zip(arr, mask, strict=True) if m == 1), list(mask))
                for mask in itertools.product([1, 2], repeat=length)
                if not any(mask[i] == mask[i + 1] == 1 for i in range(length - 1))
            )
            assert dp_solve(list(arr))[0] == best[1], arr


def test_dp_recursive_examples_match_the_listing():
    got = pairs(dp_recursive_examples([3, -2, 4]))
    top = "Compute the maximum sum of nonadjacent subsequences of [3, -2, 4]\nSolution: "
    indices = "Create chosen indices array: sum array [7, 4, 4], item array [3, -2, 4], can use item True\n"
    second = "Create chosen indices array: sum array [4, 4], item array [-2, 4], can use item False\n"
    call = (
        "If there is only 1 item, return 1 if we should use it else 2. "
        "If we should use the first item to get "
        "the sum, call False else True. Call: " + second
    )
    listing = [
        (top, "Call: Create dp array [3, -2, 4]\n"),
        (top + "Call: Create dp array [3, -2, 4]\nReturn: [7, 4, 4]\nAnswer: ", "Call: " + indices),
        (
            "Create dp array [3, -2, 4]\nSolution: ",
            "Call with array minus first element. Call: Create dp array [-2, 4]\n",
        ),
        (
            "Create dp array [3, -2, 4]\nSolution: Call with array minus first element. "
            "Call: Create dp array [-2, 4]\n"
            "Return: [4, 4]\nAnswer: ",
            "Append max(return[0], array[0] + return[1]) to return.\nAnswer: [7, 4, 4]",
        ),
        ("Create dp array [4]\nSolution: ", "Return [0] if negative else element.\nAnswer: [4]"),
        (indices + "Solution: ", call),
        (
            indices + "Solution: " + call + "Return [2, 1]\nAnswer: ",
            "Append 1 if False else 2.\nAnswer: [1, 2, 1]",
        ),
        (
            "Create chosen indices array: sum array [4], item array [4], can use item True\nSolution: ",
            "If there is only 1 item, return 1 if we should use it else 2.\nAnswer: [1]",
        ),
    ]
    for example in listing:
        assert example in got
    # 2 at the top, 2 per level plus a base case for the dp array and for the indices.
    assert len(got) == 2 + 5 + 5
    assert len(set(got)) == len(got)


def test_dp_scratchpad_and_baseline_strings():
    scratch = dp_scratchpad_example([3, 2, 1, 5, 2])
    assert scratch["prompt"] == "Question: Let's solve input = [3, 2, 1, 5, 2]."
    assert scratch["completion"] == (
        "Scratchpad: dp[4] = max(input[4], 0) = max(2, 0) = 2\n"
        "dp[3] = max(input[3], input[4], 0) = max(5, 2, 0) = 5\n"
        "dp[2] = max(dp[3], input[2] + dp[4], 0) = max(5, 1 + 2, 0) = 5\n"
        "dp[1] = max(dp[2], input[1] + dp[3], 0) = max(5, 2 + 5, 0) = 7\n"
        "dp[0] = max(dp[1], input[0] + dp[2], 0) = max(7, 3 + 5, 0) = 8\n\n"
        "Finally, we reconstruct the lexicographically smallest subsequence that fulfills the task "
        "objective by "
        'selecting numbers as follows. We store the result on a list named "output".\n\n'
        "Let can_use_next_item = True.\n"
        "Since dp[0] == input[0] + dp[2] (8 == 3 + 5) and can_use_next_item == True, we store output[0] = 1. "
        "We update can_use_next_item = False.\n"
        "Since dp[1] != input[1] + dp[3] (7 != 2 + 5) or can_use_next_item == False, we store output[1] = 2. "
        "We update can_use_next_item = True.\n"
        "Since dp[2] != input[2] + dp[4] (5 != 1 + 2) or can_use_next_item == False, we store output[2] = 2. "
        "We update can_use_next_item = True.\n"
        "Since dp[3] == input[3] (5 == 5) and can_use_next_item == True, we store output[3] = 1. "
        "We update can_use_next_item = False.\n"
        "Since dp[4] != input[4] (2 != 2) or can_use_next_item == False, we store output[4] = 2.\n\n"
        "Reconstructing all together, output=[1, 2, 2, 1, 2]."
    )
    base = dp_baseline_example([3, -2, 4])
    assert base["prompt"] == (
        "Given a sequence of integers, find a subsequence with the highest sum, such that no two numbers "
        "in the subsequence are adjacent in the original sequence.\n\n"
        'Output a list with "1" for chosen numbers and "2" '
        "for unchosen ones. If multiple solutions exist, select the lexicographically smallest. "
        "Input = [3, -2, 4].\nAnswer: "
    )
    assert base["completion"] == "[1, 2, 1]"


def test_reference_sampler_sizes():
    assert len(addition_cells(1, 15)) * 1000 == 304_000
    assert len(addition_cells(1, 5)) == 15 + 6  # all i <= j cells, plus the band from 3 digits
    assert sum(parity_flat_counts(1, 21).values()) == 101_912
    assert len(sample_dp_arrays(random.Random(0), 2, 5)) == 177_144


def test_samplers_respect_sizes_and_caps():
    rng = random.Random(0)
    got = sample_addition_pairs(rng, 2, 4, n=500)
    assert len(got) == 500
    for a, b in got:
        assert 2 <= len(str(a)) <= 5 and len(str(a)) <= len(str(b)) + 1
    lists = sample_bit_lists(rng, 3, 100)
    assert len(lists) == 8 and len({tuple(x) for x in lists}) == 8
    arrays = sample_dp_arrays(rng, 2, 5, n=300)
    assert len({tuple(a) for a in arrays}) == 300
    assert all(2 <= len(a) <= 5 and all(-5 <= v <= 5 for v in a) for a in arrays)


def test_addition_resampling_reads_stripped_lengths_to_drop_and_printed_lengths_to_copy():
    prompts = [
        "5 + 3\nSolution: ",
        "05 + 13\nSolution: ",
        "034 + 078\nSolution: ",
        "123 + 456\nSolution: ",
        "5 + 3\nSolution: ",
    ]
    records = [{"prompt": p, "completion": "x", "task": "addition", "size": 0} for p in prompts]
    counts = collections.Counter(r["prompt"] for r in resample_addition(records, FixedRandom(0.0)))
    assert counts == {"5 + 3\nSolution: ": 1000, "05 + 13\nSolution: ": 5, "034 + 078\nSolution: ": 1}
    kept = collections.Counter(r["prompt"] for r in resample_addition(records, FixedRandom(0.99)))
    assert kept["123 + 456\nSolution: "] == 1


def test_parity_and_dp_resampling():
    def records(sizes: list[int]) -> list[dict]:
        return [{"prompt": f"p{i}", "completion": "c", "size": s} for i, s in enumerate(sizes)]

    counts = collections.Counter(
        r["size"] for r in resample_parity(records([1, 2, 8, 9, 11, 12]), FixedRandom(0.95))
    )
    assert counts == {1: 900, 2: 240, 8: 4, 9: 1, 11: 4, 12: 1}
    assert resample_parity(records([11, 17]), FixedRandom(0.5)) == []
    # 17 long: survives the 90% drop at 0.95, then is dropped with p = 0.1 + 0.25 = 0.35.
    assert resample_parity(records([17]), FixedRandom(0.95, 0.3)) == []
    assert len(resample_parity(records([17]), FixedRandom(0.95, 0.4))) == 1
    counts = collections.Counter(r["size"] for r in resample_dp(records([1, 2, 3, 4, 5]), FixedRandom(0.5)))
    assert counts == {1: 250, 2: 30, 3: 4, 4: 1}
    assert len(resample_dp(records([5]), FixedRandom(0.9))) == 1
    flat = collections.Counter(r["size"] for r in resample_parity_flat(records([1, 4, 9, 14, 15])))
    assert flat == {1: 60, 4: 20, 9: 10, 14: 4, 15: 1}
    assert collections.Counter(r["size"] for r in resample_dp_flat(records([2, 3, 4, 5]))) == {
        2: 100,
        3: 10,
        4: 3,
        5: 1,
    }


def test_training_records_without_resampling_are_exactly_the_examples():
    records = training_records("addition", "recursive", random.Random(3), 1, 3, n=20, resampling=False)
    problems = sample_problems("addition", "recursive", random.Random(3), 1, 3, n=20)
    expected = collections.Counter(
        (r["prompt"], r["completion"]) for a, b in problems for r in addition_recursive_examples(a, b)
    )
    assert collections.Counter(pairs(records)) == expected
    resampled = training_records("addition", "recursive", random.Random(3), 1, 3, n=20)
    base_cases = [r for r in resampled if r["size"] == 1]
    assert len(base_cases) == 1000 * len({r["prompt"] for r in base_cases})


def test_eval_records_cover_twice_the_training_range_interleaved():
    records = eval_records("addition", "recursive", random.Random(0), range(1, 7), 4, 3)
    assert [r["size"] for r in records[:6]] == [1, 2, 3, 4, 5, 6]
    assert collections.Counter(r["size"] for r in records) == {s: 4 for s in range(1, 7)}
    for record in records:
        a, b = record["prompt"].split("\n")[0].split(" + ")
        assert len(a) == len(b) == record["size"]
        assert record["answer"] == str(int(a) + int(b))
        assert record["format"] == "recursive" and record["train_max_size"] == 3
    dp = eval_records("dp", "baseline", random.Random(0), [3], 2, 5)
    assert dp[0]["prompt"].startswith("Given a sequence of integers") and dp[0]["answer"].startswith("[")
    parity = eval_records("parity", "scratchpad", random.Random(0), [5], 2, 5)
    assert parity[0]["prompt"].endswith("?\nSolution: ") and parity[0]["answer"] in {"0", "1"}
