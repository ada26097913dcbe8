"""The OpenAI-compatible app over a scripted decode function: wire format, errors, auth, batching, limits."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from llmft.core.errors import LlmftError
from llmft.core.generation import Decoded, Sampling
from llmft.core.tokenizers import train_tokenizer
from llmft.serve.app import create_app
from llmft.serve.batching import Batcher
from llmft.serve.routes import stream_pieces
from llmft.serve.served import ServedModel

from .conftest import client, serving

CONTEXT = 64


class Scripted:
    """decode(prompts, sampling, options): the prompt reversed and upper-cased, cut to max_new_tokens chars."""

    def __init__(self, tag: str = ""):
        self.tag = tag
        self.calls: list[tuple[list[str], Sampling, dict]] = []

    def __call__(self, prompts: list[str], sampling: Sampling, options: dict) -> list[Decoded]:
        self.calls.append((list(prompts), sampling, options))
        if options.get("fail"):
            raise LlmftError("unknown llmft option 'fail'")
        out = []
        for prompt in prompts:
            text = (self.tag + prompt[::-1].upper() + " done")[:sampling.max_new_tokens]
            out.append(Decoded(text, {"options": options} if options else {}))
        return out


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789=+<>|\n"], "char")


def served(tokenizer, name="m", tag="") -> ServedModel:
    return ServedModel(name, Scripted(tag), tokenizer, CONTEXT, Sampling(max_new_tokens=20), {"recipe": "stub"})


def test_models_completion_chat_and_usage(tokenizer):
    a, b = served(tokenizer, "a"), served(tokenizer, "b", tag="b:")
    with serving(create_app([a, b])) as url:
        api = client(url)
        assert [m.id for m in api.models.list().data] == ["a", "b"]
        assert httpx.get(f"{url}/health").json() == {"status": "ok", "models": ["a", "b"], "queued": 0,
                                                   "running": 0}
        done = api.completions.create(model="a", prompt="abc", max_tokens=30, temperature=0)
        assert done.choices[0].text == "CBA done" and done.choices[0].finish_reason == "stop"
        # usage: the char tokenizer counts BOS + 3 prompt tokens and 8 completion tokens.
        assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (4, 8, 12)
        two = api.completions.create(model="b", prompt=["ab", "xyz"], max_tokens=4, n=2)
        assert [c.text for c in two.choices] == ["b:BA", "b:BA", "b:ZY", "b:ZY"]
        assert {c.finish_reason for c in two.choices} == {"length"}
        chat = api.chat.completions.create(model="a", messages=[{"role": "user", "content": "hi"}], max_tokens=50)
        templated = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                                  add_generation_prompt=True)
        assert chat.choices[0].message.content == (templated[::-1].upper() + " done")
        assert chat.choices[0].message.role == "assistant"
    # Omitted settings take the run's defaults (max_new_tokens 20 here); temperature/top_p/seed/stop pass through.
    _, sampling, _ = a.decode.calls[-1]
    assert sampling.max_new_tokens == 50
    call = next(c for c in b.decode.calls if c[0] == ["ab", "ab", "xyz", "xyz"])
    assert call[1].max_new_tokens == 4


def test_sampling_settings_reach_decode(tokenizer):
    model = served(tokenizer)
    with serving(create_app([model])) as url:
        client(url).completions.create(model="m", prompt="q", temperature=0.7, top_p=0.9, seed=5, stop=["x", "y"])
        client(url).completions.create(model="m", prompt="q")
    assert model.decode.calls[0][1] == Sampling(max_new_tokens=20, temperature=0.7, top_p=0.9, seed=5, stop=("x", "y"))
    assert model.decode.calls[1][1] == Sampling(max_new_tokens=20)


def test_streaming_equals_non_streaming(tokenizer):
    with serving(create_app([served(tokenizer)])) as url:
        api = client(url)
        whole = api.completions.create(model="m", prompt="one two  three", max_tokens=40).choices[0].text
        chunks = list(api.completions.create(model="m", prompt="one two  three", max_tokens=40, stream=True,
                                             stream_options={"include_usage": True}))
        assert len(chunks) > 3 and "".join(c.choices[0].text for c in chunks if c.choices) == whole
        assert chunks[-1].usage.completion_tokens == len(whole)
        messages = [{"role": "user", "content": "so it goes"}]
        chat = api.chat.completions.create(model="m", messages=messages, max_tokens=40).choices[0].message.content
        streamed = list(api.chat.completions.create(model="m", messages=messages, max_tokens=40, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in streamed) == chat
        assert streamed[-1].choices[0].finish_reason == "length"  # cut at 40 tokens
        raw = httpx.post(f"{url}/v1/completions", json={"model": "m", "prompt": "a b", "stream": True})
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert raw.text.rstrip().endswith("data: [DONE]")
    assert stream_pieces("a  b\nc ") == ["a  ", "b\n", "c "]


def test_llmft_options_reach_decode_and_come_back(tokenizer):
    model = served(tokenizer)
    with serving(create_app([model])) as url:
        api = client(url)
        done = api.completions.create(model="m", prompt="q", extra_body={"llmft": {"recursion": False}})
        assert done.choices[0].model_extra["llmft"] == {"options": {"recursion": False}}
        assert api.completions.create(model="m", prompt="q").choices[0].model_extra["llmft"] is None
        with pytest.raises(openai.BadRequestError) as bad:
            api.completions.create(model="m", prompt="q", extra_body={"llmft": {"fail": True}})
        assert bad.value.body["message"] == "unknown llmft option 'fail'" and bad.value.body["param"] == "llmft"


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_every_error_is_openai_shaped(tokenizer):
    with serving(create_app([served(tokenizer)], max_body_bytes=4096)) as url:
        post = lambda path, **kw: httpx.post(f"{url}/v1/{path}", **kw)  # noqa: E731
        bad = post("completions", content=b'{"model": "m", "prompt": ', headers={"content-type": "application/json"})
        assert bad.status_code == 400 and error_of(bad)["code"] == "invalid_json"
        missing = post("completions", json={"model": "m"})
        assert missing.status_code == 400 and error_of(missing)["param"] == "prompt"
        assert "missing" in error_of(missing)["message"]
        no_model = post("chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
        assert no_model.status_code == 400 and error_of(no_model)["param"] == "model"
        wrong_type = post("completions", json={"model": "m", "prompt": "x", "max_tokens": "many"})
        assert wrong_type.status_code == 400 and error_of(wrong_type)["param"] == "max_tokens"
        too_long = post("completions", json={"model": "m", "prompt": "a" * CONTEXT})
        assert too_long.status_code == 400 and error_of(too_long)["code"] == "context_length_exceeded"
        assert error_of(too_long)["param"] == "prompt"
        over = post("completions", json={"model": "m", "prompt": "abc", "max_tokens": CONTEXT})
        assert over.status_code == 400 and error_of(over)["param"] == "max_tokens"
        chat_over = post("chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "a" * 60}]})
        assert chat_over.status_code == 400 and error_of(chat_over)["param"] == "messages"
        unknown = post("completions", json={"model": "nope", "prompt": "x"})
        assert unknown.status_code == 404 and error_of(unknown)["code"] == "model_not_found"
        assert httpx.get(f"{url}/v1/models/nope").status_code == 404
        huge = post("completions", json={"model": "m", "prompt": "x" * 5000})
        assert huge.status_code == 413 and error_of(huge)["code"] == "request_too_large"

        def chunked():
            yield b'{"model": "m", "prompt": "'
            yield b"x" * 5000
            yield b'"}'

        streamed_huge = post("completions", content=chunked(), headers={"content-type": "application/json"})
        assert streamed_huge.status_code == 413
        assert post("completions", json={"model": "m", "prompt": "x", "stop": ["a"] * 5}).status_code == 400
        assert post("completions", json={"model": "m", "prompt": "x", "n": 0}).status_code == 400
        with pytest.raises(openai.NotFoundError):
            client(url).completions.create(model="nope", prompt="x")


def test_api_key_is_required_on_v1(tokenizer):
    with serving(create_app([served(tokenizer)], api_key="s3cret")) as url:
        assert client(url, api_key="s3cret").completions.create(model="m", prompt="ab").choices[0].text == "BA done"
        with pytest.raises(openai.AuthenticationError) as wrong:
            client(url, api_key="s3cre").models.list()
        assert wrong.value.status_code == 401 and wrong.value.body["code"] == "invalid_api_key"
        missing = httpx.get(f"{url}/v1/models")
        assert missing.status_code == 401 and error_of(missing)["message"] == "missing API key"
        assert httpx.get(f"{url}/health").status_code == 200


def test_concurrent_requests_share_batches_and_answer_as_alone(tokenizer):
    model = served(tokenizer)
    prompts = [f"p{i}" for i in range(8)]
    with serving(create_app([model], max_batch=8, window_s=0.02)) as url:
        api = client(url)
        alone = {p: api.completions.create(model="m", prompt=p).choices[0].text for p in prompts}
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda p: api.completions.create(model="m", prompt=p).choices[0].text,
                                    prompts * 4))
    assert answers == [alone[p] for p in prompts * 4]
    sizes = [len(call[0]) for call in model.decode.calls[len(prompts):]]
    assert sum(sizes) == 32 and max(sizes) > 1 and max(sizes) <= 8


def test_batcher_groups_by_key_and_skips_cancelled():
    seen: list[tuple[str, list[str]]] = []
    gate = threading.Event()

    def run(key, prompts):
        gate.wait(5)
        seen.append((key, list(prompts)))
        return [f"{key}:{p}" for p in prompts]

    batcher = Batcher(run, max_batch=3, window_s=0.0)
    first = batcher.submit("a", ["0"])  # the worker takes it and waits at the gate
    time.sleep(0.05)
    futures = [batcher.submit(key, [p]) for key, p in [("a", "1"), ("b", "2"), ("a", "3"), ("a", "4"), ("a", "5")]]
    cancelled = batcher.submit("b", ["6"])
    assert cancelled.cancel()
    gate.set()
    assert [f.result(5) for f in [first, *futures]] == [["a:0"], ["a:1"], ["b:2"], ["a:3"], ["a:4"], ["a:5"]]
    batcher.close()
    assert seen == [("a", ["0"]), ("a", ["1", "3", "4"]), ("b", ["2"]), ("a", ["5"])]
    with pytest.raises(RuntimeError):
        batcher.submit("a", ["late"])


def test_batcher_passes_errors_to_every_waiting_request():
    def run(key, prompts):
        raise LlmftError("boom")

    batcher = Batcher(run, max_batch=4)
    futures = [batcher.submit("k", ["x"]) for _ in range(3)]
    for future in futures:
        with pytest.raises(LlmftError, match="boom"):
            future.result(5)
    batcher.close()


def test_a_client_that_leaves_frees_its_place(tokenizer):
    """Queued behind a busy batch, a client that disconnects (plain or streaming) never reaches the model."""
    gate = threading.Event()
    seen: list[list[str]] = []

    def slow(prompts, sampling, options):
        seen.append(list(prompts))
        gate.wait(20)
        return [Decoded(p.upper()) for p in prompts]

    model = ServedModel("m", slow, tokenizer, CONTEXT, Sampling(max_new_tokens=8))
    with serving(create_app([model], window_s=0.0)) as url:
        ask = lambda prompt, **kw: httpx.post(f"{url}/v1/completions", json={"model": "m", "prompt": prompt, **kw},  # noqa: E731
                                              timeout=30)
        busy = ThreadPoolExecutor(1).submit(ask, "first")
        deadline = time.monotonic() + 20
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        for stream in (False, True):
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{url}/v1/completions", json={"model": "m", "prompt": f"gone{stream}", "stream": stream},
                           timeout=0.5).read()
        time.sleep(0.6)  # the server checks for a disconnect every 0.25 s
        gate.set()
        assert busy.result().json()["choices"][0]["text"] == "FIRST"
        assert ask("after").json()["choices"][0]["text"] == "AFTER"
    assert seen == [["first"], ["after"]]
