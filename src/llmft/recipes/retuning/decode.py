"""What a retuning run answers when served: the recursion's final answer, its trace in `extra`.

A bare problem (`1234 + 578`) is put in the training prompt format first (`1234 + 0578\\nSolution: `).
Request options (the `llmft` object): `recursion` (default true); false = one plain generation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmft.core.errors import LlmftError
from llmft.recipes.retuning.data import addition_prompt, pad_operands
from llmft.recipes.retuning.engine import final_answer, run_recursion

if TYPE_CHECKING:
    from llmft.core.generation import Decoded, Generator, Sampling

OPTIONS = ("recursion",)
SOLUTION = "\nSolution: "


def serving_prompt(task: str, prompt: str) -> str:
    """The prompt as training wrote it: bare `a + b` zero-padded, `\\nSolution: ` added when missing."""
    if prompt.endswith(SOLUTION):
        return prompt
    if task == "addition":
        match = re.fullmatch(r"\s*(\d+)\s*\+\s*(\d+)\s*[=?]?\s*", prompt)
        if match:
            return addition_prompt(*pad_operands(int(match.group(1)), int(match.group(2))))
    return prompt.rstrip() + SOLUTION


def read_options(options: Mapping[str, Any] | None) -> bool:
    """Whether to recurse; an unknown option or a non-boolean value is a one-line error."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise LlmftError(f"unknown llmft option(s) {', '.join(unknown)}; the retuning recipe reads: "
                         f"{', '.join(OPTIONS)}")
    recursion = options.get("recursion", True)
    if not isinstance(recursion, bool):
        raise LlmftError(f"llmft.recursion must be true or false, got {recursion!r}")
    return recursion


def decode(generator: Generator, prompts: Sequence[str], task: str, fmt: str, max_depth: int,
           sampling: Sampling, options: Mapping[str, Any] | None = None) -> list[Decoded]:
    """Recursive format (unless `recursion` is false): the final answer as text, the trace in extra."""
    from llmft.core.generation import Decoded

    recursion = read_options(options) and fmt == "recursive"
    prompts = [serving_prompt(task, p) for p in prompts]
    if not recursion:
        texts = generator.generate(prompts, **sampling.kwargs())
        # The answer parses only from a whole scratchpad/baseline text; a recursive one stops at its call.
        return [Decoded(text, {"recursion": False, "prompt": prompt,
                               **({"answer": final_answer(task, fmt, text)} if fmt != "recursive" else {})})
                for prompt, text in zip(prompts, texts)]
    traces = run_recursion(generator, prompts, task, max_depth=max_depth, max_new_tokens=sampling.max_new_tokens,
                           temperature=sampling.temperature, seed=sampling.seed)
    return [Decoded(trace.answer if not trace.error else trace.completion,
                    {"recursion": True, "prompt": trace.prompt, "answer": trace.answer, "error": trace.error,
                     "calls": trace.calls, "depth": trace.depth, "generated_tokens": trace.generated_tokens,
                     "transcript": trace.completion, "steps": trace.steps, "finish_reason": "stop"})
            for trace in traces]
