"""DP task: the maximum-sum non-adjacent subsequence (Dziri et al.'s "Faith and Fate" task), its solver and
its recursive, scratchpad and baseline strings, exactly as the Re-Tuning reference writes them.

Elements are integers in [-5, 5]; the answer marks each element 1 (chosen) or 2 (not chosen), taking the
lexicographically smallest list among the best ones.
"""

from __future__ import annotations

from typing import Any

Record = dict[str, Any]

BASELINE_PROMPT = (
    "Given a sequence of integers, find a subsequence with the highest sum, such that no two numbers in the "
    'subsequence are adjacent in the original sequence.\n\nOutput a list with "1" for chosen numbers and "2" '
    "for unchosen ones. If multiple solutions exist, select the lexicographically smallest. "
    "Input = {}.\nAnswer: "
)
INDICES_CALL = "Create chosen indices array: sum array {}, item array {}, can use item {}\n"
INDICES_BASE = "If there is only 1 item, return 1 if we should use it else 2."


def dp_solve(arr: list[int]) -> tuple[list[int], list[int], list[bool]]:
    """(chosen indices as 1/2, dp sums, the can-use flag before each index) for a non-empty array.

    dp[i] = max(dp[i+1], arr[i] + dp[i+2], 0) with dp past the end 0, which is the reference's special cases
    for the last two entries written as one rule; backtracking is the reference's greedy with its flag.
    Fixed on purpose: the reference's code marks a 1-element array twice ([3] -> [1, 2]); here [3] -> [1].
    """
    n = len(arr)
    dp = [0] * (n + 2)
    for i in range(n - 1, -1, -1):
        dp[i] = max(dp[i + 1], arr[i] + dp[i + 2], 0)
    chosen, flags, can_use = [], [], True
    for i in range(n):
        flags.append(can_use)
        use = can_use and dp[i] == arr[i] + dp[i + 2]
        chosen.append(1 if use else 2)
        can_use = not use
    return chosen, dp[:n], flags


def dp_answer(arr: list[int]) -> str:
    """The answer string compared at evaluation, e.g. `[1, 2, 1]`."""
    return str(dp_solve(arr)[0])


def dp_prompt(arr: list[int]) -> str:
    return f"Compute the maximum sum of nonadjacent subsequences of {arr}\nSolution: "


def dp_recursive_examples(arr: list[int]) -> list[Record]:
    """Top level (two calls: dp array, then chosen indices), the dp-array recursion and the indices recursion.

    The top level has no example after its second return: evaluation reads the answer from that return.
    """
    chosen, dp, flags = dp_solve(arr)
    n = len(arr)

    def record(prompt: str, completion: str, size: int) -> Record:
        return {"prompt": prompt, "completion": completion, "task": "dp", "size": size}

    top = dp_prompt(arr)
    dp_call = f"Call: Create dp array {arr}\n"
    records = [
        record(top, dp_call, n),
        record(top + dp_call + f"Return: {dp}\nAnswer: ", "Call: " + INDICES_CALL.format(dp, arr, True), n),
    ]
    for i in range(n - 1):
        prompt = f"Create dp array {arr[i:]}\nSolution: "
        call = f"Call with array minus first element. Call: Create dp array {arr[i + 1:]}\n"
        records.append(record(prompt, call, n - i))
        answer = f"Append max(return[0], array[0] + return[1]) to return.\nAnswer: {dp[i:]}"
        records.append(record(prompt + call + f"Return: {dp[i + 1:]}\nAnswer: ", answer, n - i))
    records.append(record(f"Create dp array {arr[-1:]}\nSolution: ",
                          f"Return [0] if negative else element.\nAnswer: {dp[-1:]}", 1))
    for i in range(n - 1):
        prompt = INDICES_CALL.format(dp[i:], arr[i:], flags[i]) + "Solution: "
        call = (INDICES_BASE + " If we should use the first item to get the sum, call False else True. Call: "
                + INDICES_CALL.format(dp[i + 1:], arr[i + 1:], flags[i + 1]))
        records.append(record(prompt, call, n - i))
        # The reference trains "Return [..]" without a colon here (its inference inserts "Return: "); see 1.6.
        records.append(record(prompt + call + f"Return {chosen[i + 1:]}\nAnswer: ",
                              f"Append 1 if False else 2.\nAnswer: {chosen[i:]}", n - i))
    records.append(record(INDICES_CALL.format(dp[-1:], arr[-1:], flags[-1]) + "Solution: ",
                          INDICES_BASE + f"\nAnswer: {chosen[-1:]}", 1))
    return records


def dp_scratchpad_prompt(arr: list[int]) -> str:
    return f"Question: Let's solve input = {arr}."


def dp_scratchpad_example(arr: list[int]) -> Record:
    """The Faith-and-Fate style trace: dp from the right, then the reconstruction one index at a time."""
    chosen, dp, _ = dp_solve(arr)
    n = len(arr)
    text = f"Scratchpad: dp[{n - 1}] = max(input[{n - 1}], 0) = max({arr[n - 1]}, 0) = {dp[n - 1]}\n"
    if n >= 2:
        text += (f"dp[{n - 2}] = max(input[{n - 2}], input[{n - 1}], 0) = "
                 f"max({arr[n - 2]}, {arr[n - 1]}, 0) = {dp[n - 2]}\n")
    for i in range(n - 3, -1, -1):
        text += (f"dp[{i}] = max(dp[{i + 1}], input[{i}] + dp[{i + 2}], 0) = "
                 f"max({dp[i + 1]}, {arr[i]} + {dp[i + 2]}, 0) = {dp[i]}\n")
    text += ("\nFinally, we reconstruct the lexicographically smallest subsequence that fulfills the task "
             'objective by selecting numbers as follows. We store the result on a list named "output".\n\n'
             "Let can_use_next_item = True.\n")
    for i in range(n):
        used = chosen[i] == 1
        # The reference prints "!=" on every not-chosen line, also when the values are equal (2 != 2).
        op = "==" if used else "!="
        if i < n - 2:
            test = f"dp[{i}] {op} input[{i}] + dp[{i + 2}] ({dp[i]} {op} {arr[i]} + {dp[i + 2]})"
        else:
            test = f"dp[{i}] {op} input[{i}] ({dp[i]} {op} {arr[i]})"
        if used:
            text += f"Since {test} and can_use_next_item == True, we store output[{i}] = 1."
            text += " We update can_use_next_item = False.\n" if i < n - 1 else "\n"
        else:
            text += f"Since {test} or can_use_next_item == False, we store output[{i}] = 2."
            text += " We update can_use_next_item = True.\n" if i < n - 1 else "\n"
    text += f"\nReconstructing all together, output={chosen}."
    return {"prompt": dp_scratchpad_prompt(arr), "completion": text, "task": "dp", "size": n}


def dp_baseline_prompt(arr: list[int]) -> str:
    return BASELINE_PROMPT.format(arr)


def dp_baseline_example(arr: list[int]) -> Record:
    return {"prompt": dp_baseline_prompt(arr), "completion": dp_answer(arr), "task": "dp", "size": len(arr)}
