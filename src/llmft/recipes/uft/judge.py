"""Judges for the generation score: does a story have the feature?

`RulesJudge` reads the cue phrases of procedural stories; `EndpointJudge` asks an OpenAI-compatible
`/v1/chat/completions` endpoint with the reference's classifier prompt (gpt-3.5-turbo at temperature 0).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from llmft.core.endpoint import Endpoint
from llmft.core.errors import LlmftError
from llmft.recipes.uft.checker import has_feature


class Judge(Protocol):
    """Labels stories: True where the story has the feature."""

    def __call__(self, stories: Sequence[str], feature: str) -> list[bool]: ...


class RulesJudge:
    """The rule-based checker (exact on procedural stories)."""

    def __call__(self, stories: Sequence[str], feature: str) -> list[bool]:
        return [has_feature(story, feature) for story in stories]


# The reference only asks about twists; the other questions follow its wording.
QUESTIONS = {
    "Twist": "Does the story have a twist?",
    "Dialogue": "Does the story contain dialogue?",
    "BadEnding": "Does the story have a bad ending?",
    "MoralValue": "Does the story have a moral value?",
    "Foreshadowing": "Does the story contain foreshadowing?",
    "Conflict": "Does the story have a conflict?",
}

# The reference's prompts, verbatim (typos included).
SYSTEM_PROMPT = "You are a helpful assistant, whose role is to answer questions about children's stories."
ZERO_SHOT_PROMPT = """You will be presented with a story written for children.
Your task is to answer the question: {question} Answer only Yes or No.

{story}

{question}"""
SHOT_PROMPT = """
<story>
{story}
</story>
<reasoning>{reasoning}</reasoning>
<answer>{answer}</answer>
"""
FEW_SHOT_PROMPT = """You will be presented with a story written for children.
Your task is to answer the question: {question}
Please first reason step-by-step to work out the answer to the question. Enclose your reasoning in <reasoning> tags.
After your reasoning has finished, answer the question \"{question}\", answering only Yes or No, and surrounding your answer with <answer> tags.
Make sure your you write our your answer inside <answer> tags on a new line after completing your reasoning. Your response must include <answer> tags.
Here are several examples:
{shots}

Here is the story to answer the question about:
<story>
{story}
</story>
"""


@dataclass(frozen=True)
class Shot:
    """A worked example for the few-shot prompt; the reference uses the story's summary as reasoning."""

    story: str
    reasoning: str
    answer: bool


def shots_text(shots: Sequence[Shot]) -> str:
    """Worked examples as the reference writes them into its prompt (and its shots.txt cache)."""
    return "".join(SHOT_PROMPT.format(story=s.story.strip(), reasoning=s.reasoning.strip(),
                                      answer="Yes" if s.answer else "No") for s in shots)


def cached_shots(text: str, n_shots: int) -> str:
    """The reference's reading of its shots.txt: the first 2 x n_shots blank-line-separated blocks, rejoined
    (a story holding a blank line therefore takes two blocks)."""
    return "\n\n".join(text.split("\n\n")[:n_shots * 2])


def classifier_prompt(story: str, feature: str, shots: Sequence[Shot] = (), examples: str = "") -> str:
    """The user message: zero-shot without shots, the reference's few-shot prompt with them; `examples`
    (the text of cached shots) replaces `shots`."""
    question = QUESTIONS[feature]
    text = examples or shots_text(shots)
    if not text:
        return ZERO_SHOT_PROMPT.format(question=question, story=story.strip())
    return FEW_SHOT_PROMPT.format(question=question, shots=text, story=story.strip())


def parse_answer(content: str, question: str) -> bool:
    """Yes/No from a reply: the <answer> tag when there is one, else the reference's rule (the text after
    the last copy of the question: 'yes' in it -> True, else False)."""
    tagged = re.findall(r"<answer>(.*?)</answer>", content, re.IGNORECASE | re.DOTALL)
    tail = tagged[-1] if tagged else content.split(question)[-1]
    return "yes" in tail.strip().lower()


class EndpointJudge:
    """Asks an OpenAI-compatible chat endpoint, one story per request, temperature 0, max 200 tokens."""

    def __init__(self, url: str, model: str = "gpt-3.5-turbo", api_key: str = "", shots: Sequence[Shot] = (),
                 timeout: float = 60.0, retries: int = 3, shots_text: str = ""):
        if not url:
            raise LlmftError("[uft] judge = 'endpoint' needs judge_url (an OpenAI-compatible server)")
        self.endpoint = Endpoint(url, model, api_key=api_key, timeout=timeout, max_retries=retries - 1)
        self.shots = list(shots)
        self.shots_text = shots_text

    def __call__(self, stories: Sequence[str], feature: str) -> list[bool]:
        question = QUESTIONS[feature]
        return [parse_answer(self.ask(classifier_prompt(story, feature, self.shots, self.shots_text)), question)
                for story in stories]

    def ask(self, prompt: str) -> str:
        """The reply text to one user message (with the reference's system prompt)."""
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
        return self.endpoint.chat(messages, temperature=0.0, max_tokens=200)[0]
