"""The wave engine with scripted generators: rules that read a context and write the next step, no model."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence

from llmft.recipes.retuning.data import (
    addition_prompt,
    addition_recursive_examples,
    pad_operands,
    parity_prompt,
    parity_recursive_examples,
)
from llmft.recipes.retuning.dp import dp_answer, dp_prompt, dp_recursive_examples
from llmft.recipes.retuning.engine import (
    depth_cap,
    final_answer,
    problem_size,
    run_direct,
    run_recursion,
    run_sequential,
)

INDICES = r"Create chosen indices array: sum array (\[.*?\]), item array (\[.*?\]), can use item (True|False)"
INDICES_HINT = (
    "If there is only 1 item, return 1 if we should use it else 2. If we should use the first item to "
    "get the sum, call False else True. "
)


def next_step(context: str) -> str:
    """What a perfect Re-Tuning model writes next, computed from the context (and the returned value) alone.

    A context that does not follow the training strings exactly gets "confused", so answers come out wrong.
    """
    head, _, rest = context.partition("\nSolution: ")
    if m := re.fullmatch(r"(\d+) \+ (\d+)", head):
        a, b = m.groups()
        if not rest:
            if len(a) == 1:
                total = int(a) + int(b)
                return f"Carry {total // 10}, Output {total % 10}"
            return f"Call: {a[1:]} + {b[1:]}\n"
        r = re.fullmatch(rf"Call: {a[1:]} \+ {b[1:]}\nReturn: Carry ([01]), Output (\d+)\nAnswer: ", rest)
        if not r:
            return "confused"
        total = int(a[0]) + int(b[0]) + int(r.group(1))
        return f"Carry {total // 10}, Output {total % 10}{r.group(2)}"
    if m := re.fullmatch(r"What is the parity of (\[[01, ]*\])\?", head):
        bits = json.loads(m.group(1))
        if not rest:
            return str(bits[0]) if len(bits) == 1 else f"Call: What is the parity of {bits[1:]}?\n"
        r = re.fullmatch(
            rf"Call: What is the parity of {re.escape(str(bits[1:]))}\?\n\nReturn: ([01])\nAnswer: ", rest
        )
        return str((bits[0] + int(r.group(1))) % 2) if r else "confused"
    if m := re.fullmatch(r"Compute the maximum sum of nonadjacent subsequences of (\[.*\])", head):
        arr = json.loads(m.group(1))
        if not rest:
            return f"Call: Create dp array {arr}\n"
        r = re.fullmatch(rf"Call: Create dp array {re.escape(str(arr))}\nReturn: (\[.*\])\nAnswer: ", rest)
        if not r:
            return "confused"
        return (
            f"Call: Create chosen indices array: sum array {r.group(1)}, item array {arr}, "
            "can use item True\n"
        )
    if m := re.fullmatch(r"Create dp array (\[.*\])", head):
        arr = json.loads(m.group(1))
        if not rest:
            if len(arr) == 1:
                return f"Return [0] if negative else element.\nAnswer: [{max(arr[0], 0)}]"
            return f"Call with array minus first element. Call: Create dp array {arr[1:]}\n"
        r = re.fullmatch(
            rf"Call with array minus first element\. Call: Create dp array {re.escape(str(arr[1:]))}\n"
            r"Return: (\[.*\])\nAnswer: ",
            rest,
        )
        if not r:
            return "confused"
        after = json.loads(r.group(1))
        value = max(after[0], arr[0] + (after[1] if len(after) > 1 else 0), 0)
        return f"Append max(return[0], array[0] + return[1]) to return.\nAnswer: {[value] + after}"
    if m := re.fullmatch(INDICES, head):
        sums, items, can_use = json.loads(m.group(1)), json.loads(m.group(2)), m.group(3) == "True"
        if not rest:
            use = can_use and sums[0] == items[0] + (sums[2] if len(sums) > 2 else 0)
            if len(sums) == 1:
                chosen = 1 if use else 2
                return f"If there is only 1 item, return 1 if we should use it else 2.\nAnswer: [{chosen}]"
            return (
                INDICES_HINT + f"Call: Create chosen indices array: sum array {sums[1:]}, item array "
                f"{items[1:]}, can use item {not use}\n"
            )
        # The training string has "Return " without a colon here.
        r = re.fullmatch(re.escape(INDICES_HINT) + "Call: " + INDICES + r"\nReturn (\[.*\])\nAnswer: ", rest)
        if not r:
            return "confused"
        used = r.group(3) == "False"
        return f"Append 1 if False else 2.\nAnswer: {[1 if used else 2] + json.loads(r.group(4))}"
    return "confused"


class ScriptedGenerator:
    """A Generator whose completions come from a rule; records the size of every `generate` call."""

    def __init__(self, rule: Callable[[str], str] = next_step):
        self.rule = rule
        self.batches: list[int] = []

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 64,
        stop: Sequence[str] = (),
        num_beams: int = 1,
        temperature: float = 0.0,
        seed: int = 0,
        top_p: float = 1.0,
    ) -> list[str]:
        self.batches.append(len(prompts))
        return [self.rule(prompt) for prompt in prompts]


def addition_problems(digits: int, count: int, seed: int = 0) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [
        (rng.randint(10 ** (digits - 1), 10**digits - 1), rng.randint(10 ** (digits - 1), 10**digits - 1))
        for _ in range(count)
    ]


def test_addition_of_12_digits_through_deep_recursion():
    problems = addition_problems(12, 10)
    generator = ScriptedGenerator()
    traces = run_recursion(generator, [addition_prompt(*pad_operands(a, b)) for a, b in problems], "addition")
    assert [t.answer for t in traces] == [str(a + b) for a, b in problems]
    assert all(t.error == "" and t.calls == 11 and t.depth == 11 for t in traces)
    assert len(traces[0].steps) == 2 * 12 - 1
    assert traces[0].text.startswith(traces[0].prompt + "Call: ")


def test_parity_of_length_15():
    rng = random.Random(1)
    lists = [[rng.randint(0, 1) for _ in range(15)] for _ in range(8)]
    traces = run_recursion(ScriptedGenerator(), [parity_prompt(bits) for bits in lists], "parity")
    assert [t.answer for t in traces] == [str(sum(bits) % 2) for bits in lists]
    assert all(t.calls == 14 and t.depth == 14 and not t.error for t in traces)
    assert "?\n\nReturn: " in traces[0].text


def test_dp_of_length_6_stops_after_the_second_return():
    rng = random.Random(2)
    arrays = [[rng.randint(-5, 5) for _ in range(6)] for _ in range(8)]
    traces = run_recursion(ScriptedGenerator(), [dp_prompt(arr) for arr in arrays], "dp")
    assert [t.answer for t in traces] == [dp_answer(arr) for arr in arrays]
    # Top level: dp array (6 levels deep) then indices (6 levels deep).
    assert all(t.calls == 12 and t.depth == 6 and not t.error for t in traces)
    assert traces[0].text.endswith(f"Return: {dp_answer(arrays[0])}\nAnswer: ")
    assert any("\nReturn [" in step["prompt"] for step in traces[0].steps)


def test_contexts_are_exactly_the_training_prompts():
    """A generator knowing only the training examples solves the problems: inference uses training strings."""
    examples = (
        addition_recursive_examples(1234, 578)
        + parity_recursive_examples([1, 0, 1, 1, 0])
        + dp_recursive_examples([3, -2, 4, 1])
    )
    table = {r["prompt"]: r["completion"] for r in examples}
    generator = ScriptedGenerator(lambda prompt: table.get(prompt, "unknown prompt"))
    assert run_recursion(generator, ["1234 + 0578\nSolution: "], "addition")[0].answer == "1812"
    assert run_recursion(generator, [parity_prompt([1, 0, 1, 1, 0])], "parity")[0].answer == "1"
    assert run_recursion(generator, [dp_prompt([3, -2, 4, 1])], "dp")[0].answer == dp_answer([3, -2, 4, 1])


def test_generate_calls_grow_with_depth_not_with_problems():
    prompts = [addition_prompt(*pad_operands(a, b)) for a, b in addition_problems(8, 64)]
    one, many = ScriptedGenerator(), ScriptedGenerator()
    run_recursion(one, prompts[:1], "addition")
    waves = run_recursion(many, prompts, "addition")
    assert len(one.batches) == len(many.batches) == 2 * 8 - 1
    assert many.batches == [64] * 15
    reference_style = ScriptedGenerator()
    sequential = run_sequential(reference_style, prompts, "addition")
    assert reference_style.batches == [1] * (64 * 15)
    assert [t.answer for t in sequential] == [t.answer for t in waves]
    assert [
        t.to_dict() for t in run_recursion(ScriptedGenerator(), prompts[:3], "addition", sequential=True)
    ] == [t.to_dict() for t in sequential[:3]]


def test_problems_of_different_sizes_share_waves():
    prompts = [
        addition_prompt(*pad_operands(a, b)) for a, b in addition_problems(3, 2) + addition_problems(6, 2)
    ]
    generator = ScriptedGenerator()
    finished: list[int] = []
    traces = run_recursion(
        generator, prompts, "addition", on_done=lambda index, trace: finished.append(index)
    )
    assert generator.batches == [4] * 5 + [2] * 6
    assert sorted(finished[:2]) == [0, 1] and sorted(finished) == [0, 1, 2, 3]
    assert all(not t.error for t in traces)


def test_depth_cap_fails_only_the_runaway_problem():
    def runaway(prompt: str) -> str:
        head = prompt.split("\n")[0]
        return f"Call: {head}\n" if head.startswith("9") else next_step(prompt)

    generator = ScriptedGenerator(runaway)
    traces = run_recursion(generator, ["912 + 345\nSolution: ", "123 + 456\nSolution: "], "addition")
    assert traces[0].error == f"depth cap {depth_cap('addition', 3)} reached" and traces[0].answer == ""
    assert traces[0].depth == 5 and len(traces[0].steps) == 6  # depths 0..5 generate; the call to 6 fails
    assert traces[1].answer == "579" and not traces[1].error
    capped = run_recursion(ScriptedGenerator(runaway), ["912 + 345\nSolution: "], "addition", max_depth=2)
    assert capped[0].error == "depth cap 2 reached" and len(capped[0].steps) == 2


def test_second_call_in_one_context_is_a_runaway():
    def calls_again(prompt: str) -> str:
        return "Call: 1 + 1\n" if prompt.endswith("Answer: ") else next_step(prompt)

    (trace,) = run_recursion(ScriptedGenerator(calls_again), ["12 + 34\nSolution: "], "addition")
    assert trace.error.startswith("runaway") and trace.calls == 1


def test_malformed_calls_and_garbage():
    def malformed(prompt: str) -> str:
        return "Call: \n" if prompt.startswith("5") else next_step(prompt)

    traces = run_recursion(
        ScriptedGenerator(malformed), ["55 + 11\nSolution: ", "44 + 11\nSolution: "], "addition"
    )
    assert traces[0].error.startswith("malformed call") and traces[0].answer == ""
    assert traces[1].answer == "55"
    (garbage,) = run_recursion(ScriptedGenerator(lambda prompt: "#$%&"), ["44 + 11\nSolution: "], "addition")
    assert garbage.error == "" and garbage.answer == "#$%&" and garbage.calls == 0


def test_call_without_newline_or_with_a_hallucinated_tail_is_accepted():
    def no_newline(prompt: str) -> str:
        return next_step(prompt).rstrip("\n")

    def chatty(prompt: str) -> str:
        step = next_step(prompt)
        return (
            step + "Return: Carry 1, Output 99\nAnswer: Carry 1, Output 999"
            if step.startswith("Call")
            else step
        )

    for rule in (no_newline, chatty):
        (trace,) = run_recursion(ScriptedGenerator(rule), ["987 + 654\nSolution: "], "addition")
        assert trace.answer == "1641" and not trace.error
        assert trace.text == (
            "987 + 654\nSolution: Call: 87 + 54\nReturn: Carry 1, Output 41\nAnswer: Carry 1, Output 641"
        )


def test_generated_tokens_by_tokenizer_or_characters():
    (trace,) = run_recursion(ScriptedGenerator(), ["12 + 34\nSolution: "], "addition")
    assert trace.generated_tokens == sum(len(step["completion"]) for step in trace.steps)

    class WordTokenizer:
        def __call__(self, texts: list[str], add_special_tokens: bool = True) -> dict:
            return {"input_ids": [text.split() for text in texts]}

    generator = ScriptedGenerator()
    generator.tokenizer = WordTokenizer()
    (trace,) = run_recursion(generator, ["12 + 34\nSolution: "], "addition")
    # "Call: 2 + 4\n" (4 words), "Carry 0, Output 6" (4), "Carry 0, Output 46" (4)
    assert trace.generated_tokens == 12


def test_run_direct_parses_each_format():
    generator = ScriptedGenerator(lambda prompt: "Carry 1, Output 0\nCarry 1, Output 00")
    (trace,) = run_direct(generator, ["99 + 01\nSolution: "], "addition", "scratchpad")
    assert trace.answer == "100" and trace.steps == [
        {"depth": 0, "prompt": "99 + 01\nSolution: ", "completion": "Carry 1, Output 0\nCarry 1, Output 00"}
    ]


def test_answer_parsing_per_task_and_format():
    assert (
        final_answer("addition", "recursive", "1234 + 0578\nSolution: ...\nAnswer: Carry 0, Output 1812")
        == "1812"
    )
    assert final_answer("addition", "scratchpad", "Carry 1, Output 0\nCarry 1, Output 0000") == "10000"
    assert final_answer("addition", "baseline", " 1812") == "1812"
    assert final_answer("parity", "recursive", "...\nReturn: 1\nAnswer: 0") == "0"
    assert final_answer("parity", "scratchpad", "Compute one element at a time. 1 1 0") == "0"
    assert (
        final_answer("dp", "recursive", "x\nReturn: [7, 4, 4]\nAnswer: Call: y\nReturn: [1, 2, 1]\nAnswer: ")
        == "[1, 2, 1]"
    )
    assert (
        final_answer("dp", "scratchpad", "...\n\nReconstructing all together, output=[1, 2, 2, 1, 2].")
        == "[1, 2, 2, 1, 2]"
    )
    assert final_answer("dp", "baseline", "[1, 2, 1]") == "[1, 2, 1]"


def test_problem_size_and_reference_depth_caps():
    assert problem_size("addition", "1234 + 0578\nSolution: ") == 4
    assert problem_size("parity", parity_prompt([1, 0, 1])) == 3
    assert problem_size("dp", dp_prompt([3, -2, 4, 1])) == 4
    assert (depth_cap("addition", 4), depth_cap("parity", 3), depth_cap("dp", 4)) == (8, 6, 35)


def test_waves_equal_the_reference_loop_on_a_real_hf_generator():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmft.core.generation import HFGenerator
    from llmft.core.tokenizers import train_tokenizer

    torch.set_num_threads(1)
    tokenizer = train_tokenizer(["0123456789 +\nSolution:CallReturnAnswerry,Op"], "char")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    generator = HFGenerator(LlamaForCausalLM(config).eval(), tokenizer, batch_size=4)
    prompts = ["12 + 34\nSolution: ", "9 + 1\nSolution: ", "123 + 456\nSolution: "]
    waves = run_recursion(generator, prompts, "addition", max_new_tokens=6)
    reference = run_sequential(generator, prompts, "addition", max_new_tokens=6)
    assert [t.to_dict() for t in waves] == [t.to_dict() for t in reference]
    for trace in waves:
        counts = [
            len(tokenizer(step["completion"], add_special_tokens=False)["input_ids"]) for step in trace.steps
        ]
        assert trace.generated_tokens == sum(counts) and max(counts) <= 6
