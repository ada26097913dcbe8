"""The continuous-batching engine: rows that join a running batch answer as they do alone (greedy and seeded),
their KV cache stays right across joins and leaves, digit-aligned positions hold, and callers can stream,
cancel and read logprobs."""

from __future__ import annotations

import threading
import time

import pytest

from llmft.core.continuous.engine import Cancelled, ContinuousEngine
from llmft.core.continuous.generator import ContinuousGenerator, DecodeContext, decode_context
from llmft.core.continuous.row_text import skipped_ids
from llmft.core.generation import HFGenerator
from llmft.core.positions import DigitAlignment, PositionRules
from tests.conftest import random_char_llama

PROMPTS = ["abc", "hello world 12", "x", "the quick brown fox jumps", "1+2=", "zz", "4096 + 17 =", "q"]


@pytest.fixture(scope="module")
def tiny():
    return random_char_llama()


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return tiny[0]


@pytest.fixture(scope="module")
def model(tiny):
    return tiny[1]


def generator(model, tokenizer, positions=None, max_batch=4) -> ContinuousGenerator:
    return ContinuousGenerator(ContinuousEngine(model, tokenizer, max_batch=max_batch),
                               HFGenerator(model, tokenizer, 32, positions), positions=positions)


def staggered(gen: ContinuousGenerator, prompts: list[str], **kwargs) -> list[str]:
    """Each prompt from its own thread, the first alone and the others once it has decoded a few steps."""
    out: list = [None] * len(prompts)

    def ask(i: int) -> None:
        out[i] = gen.generate([prompts[i]], **kwargs)[0]

    first = threading.Thread(target=ask, args=(0,))
    steps = gen.engine.steps
    first.start()
    while gen.engine.steps < steps + 3:
        time.sleep(0.001)
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(1, len(prompts))]
    for thread in threads:
        thread.start()
        time.sleep(0.002)
    for thread in [first, *threads]:
        thread.join()
    return out


def test_rows_that_join_and_leave_answer_as_alone(model, tokenizer):
    """Greedy answers equal transformers' generate one prompt at a time, batched from the start, and joining
    a running batch mid-way; the batch really grew and shrank."""
    alone = [HFGenerator(model, tokenizer, 1).generate([p], max_new_tokens=40)[0] for p in PROMPTS]
    gen = generator(model, tokenizer)
    assert gen.generate(PROMPTS, max_new_tokens=40) == alone  # 8 rows through a batch of 4: rows join as others end
    steps = gen.engine.steps
    assert staggered(gen, [PROMPTS[3], *PROMPTS], max_new_tokens=40) == [alone[3], *alone]
    sizes = list(gen.engine.batch_sizes)[steps - gen.engine.steps:]
    assert sizes[0] == 1 and max(sizes) == 4 and sizes[-1] < 4
    assert gen.engine.load() == (0, 0)


def test_seeded_samples_and_stop_strings_are_the_same_batched(model, tokenizer):
    gen = generator(model, tokenizer)
    kwargs = {"max_new_tokens": 30, "temperature": 1.0, "seed": 7}
    alone = [gen.generate([p], **kwargs)[0] for p in PROMPTS[:4]]
    assert staggered(gen, PROMPTS[:4], **kwargs) == alone
    assert len(set(gen.generate([PROMPTS[0]] * 3, **kwargs))) > 1  # n copies of one prompt draw differently
    full = gen.generate(PROMPTS[:1], max_new_tokens=30)[0]
    stop = full[5:7]
    assert gen.generate(PROMPTS[:1], max_new_tokens=30, stop=[stop])[0] == full[:full.find(stop)]


def test_digit_aligned_positions_match_the_stepwise_decoder(model, tokenizer):
    digits = frozenset(tokenizer.convert_tokens_to_ids(list("0123456789")))
    rules = PositionRules(DigitAlignment(digits, stride=8))
    assert rules.own_decoding
    prompts = ["4096 + 17 =", "12 + 3 =", "7 + 785 ="]
    expected = [HFGenerator(model, tokenizer, 1, rules).generate([p], max_new_tokens=20)[0] for p in prompts]
    assert staggered(generator(model, tokenizer, rules), prompts, max_new_tokens=20) == expected


def test_streamed_text_logprobs_and_scores_agree(model, tokenizer):
    """Pieces handed on as rows generate join to the text; each generated token's logprob equals the one a
    full forward over prompt + completion gives (the padded, joined KV cache reads like a fresh one)."""
    gen = generator(model, tokenizer)
    pieces: list[list[str]] = [[], []]
    context = DecodeContext(on_text=[pieces[0].append, pieces[1].append], top_logprobs=3)
    with decode_context(context):
        texts = gen.generate(PROMPTS[2:4], max_new_tokens=25)
    assert ["".join(p) for p in pieces] == texts and all(len(p) > 5 for p in pieces)
    for prompt, result in zip(PROMPTS[2:4], context.results):
        ids = tokenizer(prompt)["input_ids"]
        scored = gen.score([ids + result.token_ids], top=3)[0][len(ids):]
        assert [s.token for s in scored] == result.token_ids
        assert [round(s.logprob, 4) for s in scored] == [round(g.logprob, 4) for g in result.logprobs]
        assert all(g.top[0][1] >= g.logprob and len(g.top) == 3 for g in result.logprobs)


def test_a_cancelled_caller_leaves_the_batch(model, tokenizer):
    gen = generator(model, tokenizer)
    context = DecodeContext()
    errors: list = []

    def ask() -> None:
        with decode_context(context):
            try:
                gen.generate(["abc"], max_new_tokens=400)
            except Cancelled as exc:
                errors.append(exc)

    thread = threading.Thread(target=ask)
    thread.start()
    while gen.engine.load()[1] == 0:
        time.sleep(0.001)
    context.cancelled.set()
    thread.join(10)
    assert errors and gen.engine.load() == (0, 0) and gen.engine.steps < 399


def test_special_tokens_are_skipped_except_the_kept(tokenizer):
    skipped = skipped_ids(tokenizer, kept=["<|user|>"])
    assert tokenizer.bos_token_id in skipped and tokenizer.convert_tokens_to_ids("<|assistant|>") in skipped
    assert tokenizer.convert_tokens_to_ids("<|user|>") not in skipped
    assert tokenizer.convert_tokens_to_ids("a") not in skipped


def test_prompts_that_arrive_together_are_prefilled_in_chunks_oldest_first():
    from types import SimpleNamespace

    from llmft.core.continuous.engine import prefill_chunks

    rows = [SimpleNamespace(ids=[0] * n) for n in (40, 50, 30, 100, 20, 300, 10, 5)]
    chunks = prefill_chunks(rows, 128)
    assert [[len(r.ids) for r in chunk] for chunk in chunks] == [[40, 50], [30], [100], [20], [300], [10, 5]]
    assert [row for chunk in chunks for row in chunk] == rows  # every row once, in arrival order
    assert prefill_chunks([], 128) == []
