"""What the model sees: the chat template's rendering of a record, which of its tokens train, and the
force-answer prompt evaluation completes. Training and evaluation go through the same renderings.

Masking uses character offsets from our own rendering (where the template puts each assistant message),
not a search for a response-header string as the reference's collator does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmft.core.data import IGNORE, TokenizedExample
from llmft.core.errors import LlmftError
from llmft.recipes.squad.data import force_prefix

# Stands in for message content to find where the template puts it; no real text contains it.
MARK = "\u2063<<llmft-squad-mark>>\u2063"


@dataclass(frozen=True)
class AnswerSpan:
    """Character offsets in the rendered chat: the trained answer [start, end) of one assistant turn (its
    pause tokens excluded) and where that turn's rendering ends (its end-of-turn marker included)."""

    start: int
    end: int
    turn_end: int


def render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """The chat template's text for messages."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def answer_spans(tokenizer: Any, messages: list[dict[str, str]], pause: str) -> tuple[str, list[AnswerSpan]]:
    """The rendered conversation and the span of every assistant answer in it (the reference trains every
    assistant turn). Each assistant message must open with the pause tokens `pause`."""
    text = render(tokenizer, messages)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        content = message["content"]
        if not content.startswith(force_prefix(pause)):
            found = content.split("```json", 1)[0]
            raise LlmftError(
                f"assistant turn opens with {found!r} but squad.num_pause_tokens asks for {pause!r} "
                "(make the data with the same --num-pause-tokens as the config; with make-data --show, pass --config)"
            )
        head = render(tokenizer, [*messages[:index], {"role": "assistant", "content": MARK}])
        opening = head[:head.rfind(MARK)]
        turn_end = len(text) if index == len(messages) - 1 else len(render(tokenizer, messages[:index + 1]))
        if not text.startswith(opening) or turn_end > len(text):
            raise LlmftError("the chat template does not render a conversation as the sum of its turns; "
                             "set model.chat_template to one that does")
        start = len(opening)
        if text.startswith(content, start):
            spans.append(AnswerSpan(start + len(pause), start + len(content), turn_end))
            continue
        # The template trimmed the message (Llama 3 does): the leading "\n" is gone when there are no pauses.
        answer = content[len(pause):].strip()
        found_at = text.find(answer, start, turn_end)
        if found_at < 0:
            raise LlmftError("the chat template changes the assistant message beyond trimming it; cannot mask")
        spans.append(AnswerSpan(found_at, found_at + len(answer), turn_end))
    return text, spans


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """Special token ids (EOS, <|eot_id|>, ...): a turn's end-of-turn marker ends at the first of them."""
    ids = set(tokenizer.all_special_ids)
    ids |= {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    return ids


def tokenize_chat(tokenizer: Any, messages: list[dict[str, str]], pause: str, max_length: int) -> TokenizedExample:
    """Token ids of the rendered chat; labels only on each assistant answer and its end-of-turn token.

    The prompt and the pause tokens carry no label. The end-of-turn token is trained: the reference set
    pad = eos, so the collator masked every <|eot_id|> and its model never learnt to stop.
    """
    text, spans = answer_spans(tokenizer, messages, pause)
    bos = tokenizer.bos_token
    encoded = tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)), return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    stops = end_of_turn_ids(tokenizer)
    labels = [IGNORE] * len(ids)
    for span in spans:
        for j, (begin, _) in enumerate(offsets):
            if span.start <= begin < span.end:
                labels[j] = ids[j]
        # After the answer: the template's end-of-turn tokens, up to and including the first special one.
        for j, (begin, finish) in enumerate(offsets):
            if span.end <= begin < span.turn_end and finish > begin:
                labels[j] = ids[j]
                if ids[j] in stops:
                    break
    if len(ids) > max_length:
        # The answer sits at the end: keep it, cut the prompt from the left.
        ids, labels = ids[-max_length:], labels[-max_length:]
    return TokenizedExample(ids, labels)


def answer_prompt(tokenizer: Any, history: list[dict[str, str]], pause: str, force_answer: bool = True) -> str:
    """The prompt for the next assistant turn after `history`.

    force_answer: the turn's opening (pause tokens + "\\n```json") rendered through the template, so the
    prompt is exactly what training saw before the answer. The reference appended that opening after the
    template's output instead, which on Llama 3 without pauses gives "\\n\\n\\n```json" where training (whose
    messages the template trims) had "\\n\\n```json". Without force_answer: the plain generation prompt.
    """
    if not force_answer:
        return render(tokenizer, history, add_generation_prompt=True)
    head = render(tokenizer, [*history, {"role": "assistant", "content": force_prefix(pause) + MARK}])
    return head[:head.rfind(MARK)]


def turn_opening(tokenizer: Any, pause: str) -> str:
    """The force-answer opening as the template renders it after its own generation prompt, for prompts
    built elsewhere (`llmft serve`); the bare opening when the template cannot tell."""
    history = [{"role": "user", "content": "?"}]
    generation_prompt = render(tokenizer, history, add_generation_prompt=True)
    forced = answer_prompt(tokenizer, history, pause)
    return forced[len(generation_prompt):] if forced.startswith(generation_prompt) else force_prefix(pause)
