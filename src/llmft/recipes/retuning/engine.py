"""Recursive inference over any Generator, batched in waves (PAPERS.md 1.3, with the training strings of 1.6).

A context generates until EOS. If its text holds `Call: <sub>\\n`, it is suspended and `<sub>\\nSolution: `
starts a fresh child context one level deeper; when the child finishes, its answer comes back to the parent as
`Return: <answer>\\nAnswer: ` (parity: `\\nReturn: `, after the call's own newline; DP indices: `Return `
without a colon) and the parent resumes. Every ready context of every problem goes into one `generate` call
(a wave), so the number of calls grows with the recursion depth, not with the number of problems.

A malformed call, a call past the depth cap or more calls than the task makes in one context marks that
problem wrong (with the reason in `Trace.error`) and the others go on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmft.core.generation import Generator

CALL = "Call: "
# Reference caps: 2 x size for addition (digits) and parity (list length), 35 for DP.
DP_DEPTH_CAP = 35


@dataclass
class Trace:
    """One problem's recursion: every generation in order, the root's final text and what was counted."""

    prompt: str
    text: str = ""  # the root context at the end: prompt, calls, returns and its final completion
    answer: str = ""  # the final answer parsed from `text` ("" when the problem failed)
    error: str = ""  # why the problem failed: malformed call, depth cap, runaway calls; "" if it finished
    calls: int = 0  # sub-calls made, all levels
    depth: int = 0  # deepest level reached (the root is 0)
    generated_tokens: int = 0  # by the generator's tokenizer when it has one, else characters
    steps: list[dict] = field(default_factory=list)  # every generation: {"depth", "prompt", "completion"}

    @property
    def completion(self) -> str:
        """What the root context says after its prompt."""
        return self.text[len(self.prompt):]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Context:
    problem: int
    depth: int
    text: str
    parent: _Context | None = None
    calls: int = 0


def problem_size(task: str, prompt: str) -> int:
    """The size a prompt states: digits of the longer operand, or the length of its first list (0 if none)."""
    if task == "addition":
        match = re.match(r"\s*(\d+) \+ (\d+)", prompt)
        return max(len(match.group(1)), len(match.group(2))) if match else 0
    match = re.search(r"\[([^\]]*)\]", prompt)
    return len(match.group(1).split(",")) if match and match.group(1).strip() else 0


def depth_cap(task: str, size: int) -> int:
    """Contexts may go as deep as cap - 1 (the root is depth 0), as in the reference notebooks."""
    return DP_DEPTH_CAP if task == "dp" or size <= 0 else 2 * size


def split_call(completion: str) -> tuple[str, str] | None:
    """(completion through the end of its last call line, the sub-prompt text), or None without a call.

    A call missing its final newline is accepted; text after the call line is dropped (the model should
    have stopped at EOS there; the reference kept it in the parent's context).
    """
    at = completion.rfind(CALL)
    if at < 0:
        return None
    end = completion.find("\n", at)
    if end < 0:
        return completion + "\n", completion[at + len(CALL):]
    return completion[:end + 1], completion[at + len(CALL):end]


def return_prefix(task: str, context: str) -> str:
    """What precedes the sub-answer when a context resumes: the training strings, not the notebooks' (1.6)."""
    if task == "parity":
        return "\nReturn: "
    if task == "dp" and context.startswith("Create chosen indices array"):
        return "Return "
    return "Return: "


def sub_answer(task: str, completion: str) -> str:
    """The answer a finished child hands back: addition `Carry c, Output d`, parity its last word, DP the text
    after its last `\\nAnswer: `."""
    if task == "parity":
        return completion.strip().split(" ")[-1]
    if task == "dp":
        return completion.split("\nAnswer: ")[-1].strip()
    return completion.strip()


def final_answer(task: str, fmt: str, text: str) -> str:
    """The answer as the reference parses it, from the root's full text (recursive) or the completion.

    addition: `Carry c, Output d` -> d with a leading 1 when c is 1 (baseline: the text); parity: the last
    word; DP: recursive the text after the last `Return: `, scratchpad the list after the last `=`, baseline
    the text.
    """
    text = text.strip()
    if task == "addition" and fmt != "baseline":
        words = text.split(" ")
        if len(words) < 3:
            return text
        carry, output = words[-3][:-1], words[-1]
        return carry + output if carry == "1" else output
    if task == "parity":
        return text.split(" ")[-1]
    if task == "dp" and fmt == "recursive":
        return text.split("Return: ")[-1].split("\n")[0].strip()
    if task == "dp" and fmt == "scratchpad":
        answer = text.split("=")[-1].strip()
        return answer[:-1] if answer.endswith(".") else answer
    return text


def _max_calls(task: str, context: _Context) -> int:
    """Calls one context may make: two at the DP top level (dp array, then indices), one everywhere else."""
    return 2 if task == "dp" and context.parent is None else 1


def run_recursion(
    generator: Generator,
    prompts: Sequence[str],
    task: str,
    *,
    max_depth: int | Sequence[int] = 0,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
    sequential: bool = False,
    on_done: Callable[[int, Trace], None] | None = None,
) -> list[Trace]:
    """Solve every prompt recursively, one `generate` call per wave of ready contexts.

    max_depth: one cap for all, one per prompt, or 0 for the reference's cap from each prompt's size.
    Greedy by default: the reference sampled at T=0.01 (a hard-coded T=0.6 for parity and the scratchpads).
    sequential: the reference's loop instead (one problem at a time, every generation at batch 1).
    on_done(index, trace) runs as each problem finishes, e.g. to append it to a results log.
    """
    caps = _caps(task, prompts, max_depth)
    if sequential:
        return run_sequential(generator, prompts, task, max_depth=caps, max_new_tokens=max_new_tokens,
                              temperature=temperature, seed=seed, on_done=on_done)
    traces = [Trace(prompt=prompt) for prompt in prompts]
    ready = [_Context(index, 0, prompt) for index, prompt in enumerate(prompts)]
    wave = 0
    while ready:
        outputs = generator.generate([c.text for c in ready], max_new_tokens=max_new_tokens,
                                     temperature=temperature, seed=seed + wave)
        wave += 1
        following: list[_Context] = []
        for context, output, tokens in zip(ready, outputs, _count_tokens(generator, outputs), strict=True):
            trace = traces[context.problem]
            trace.steps.append({"depth": context.depth, "prompt": context.text, "completion": output})
            trace.generated_tokens += tokens
            follow = _advance(task, context, output, trace, caps[context.problem])
            if follow is not None:
                following.append(follow)
            elif on_done is not None:
                on_done(context.problem, trace)
        ready = following
    return traces


def run_sequential(
    generator: Generator,
    prompts: Sequence[str],
    task: str,
    *,
    max_depth: int | Sequence[int] = 0,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
    on_done: Callable[[int, Trace], None] | None = None,
) -> list[Trace]:
    """The reference's way: one problem at a time, each context its own `generate` call at batch 1."""
    caps = _caps(task, prompts, max_depth)
    traces = []
    for index, prompt in enumerate(prompts):
        (trace,) = run_recursion(generator, [prompt], task, max_depth=caps[index],
                                 max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
        traces.append(trace)
        if on_done is not None:
            on_done(index, trace)
    return traces


def run_direct(
    generator: Generator,
    prompts: Sequence[str],
    task: str,
    fmt: str,
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
) -> list[Trace]:
    """Scratchpad and baseline: one generation per prompt, parsed as the reference parses that format."""
    outputs = generator.generate(list(prompts), max_new_tokens=max_new_tokens, temperature=temperature,
                                 seed=seed)
    return [Trace(prompt=prompt, text=prompt + output, answer=final_answer(task, fmt, output),
                  generated_tokens=tokens, steps=[{"depth": 0, "prompt": prompt, "completion": output}])
            for prompt, output, tokens in zip(prompts, outputs, _count_tokens(generator, outputs),
                                              strict=True)]


def _advance(task: str, context: _Context, completion: str, trace: Trace, cap: int) -> _Context | None:
    """The context to run next for this problem after `completion`, or None when the problem is over."""
    call = split_call(completion)
    if call is not None:
        kept, sub = call
        if not sub.strip():
            return _fail(trace, context, f"malformed call at depth {context.depth}: {completion[:80]!r}")
        if context.calls >= _max_calls(task, context):
            return _fail(trace, context, f"runaway: call number {context.calls + 1} in one context at depth "
                                         f"{context.depth}")
        if context.depth + 1 >= cap:
            return _fail(trace, context, f"depth cap {cap} reached")
        context.text += kept
        context.calls += 1
        trace.calls += 1
        trace.depth = max(trace.depth, context.depth + 1)
        return _Context(context.problem, context.depth + 1, sub + "\nSolution: ", parent=context)
    context.text += completion
    parent = context.parent
    if parent is None:
        return _finish(task, trace, context.text)
    parent.text += return_prefix(task, parent.text) + sub_answer(task, completion) + "\nAnswer: "
    if task == "dp" and parent.parent is None and parent.calls == 2:
        # The DP top level has no step after its second return: the answer is that return (as the reference).
        return _finish(task, trace, parent.text)
    return parent


def _finish(task: str, trace: Trace, text: str) -> None:
    trace.text = text
    trace.answer = final_answer(task, "recursive", text)
    return None


def _fail(trace: Trace, context: _Context, reason: str) -> None:
    root = context
    while root.parent is not None:
        root = root.parent
    trace.text = root.text
    trace.error = reason
    return None


def _caps(task: str, prompts: Sequence[str], max_depth: int | Sequence[int]) -> list[int]:
    if isinstance(max_depth, int):
        return [max_depth or depth_cap(task, problem_size(task, p)) for p in prompts]
    if len(max_depth) != len(prompts):
        raise ValueError(f"max_depth has {len(max_depth)} entries for {len(prompts)} prompts")
    return [cap or depth_cap(task, problem_size(task, p)) for cap, p in zip(max_depth, prompts, strict=True)]


def _count_tokens(generator: Any, texts: Sequence[str]) -> list[int]:
    """Generated tokens by the generator's tokenizer if it has one, else characters."""
    tokenizer = getattr(generator, "tokenizer", None)
    if tokenizer is None or not texts:
        return [len(text) for text in texts]
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
