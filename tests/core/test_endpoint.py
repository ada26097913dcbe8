"""The OpenAI-compatible client against an in-test HTTP server: retries, errors, both endpoints."""

import pytest

from llmft.core.endpoint import Endpoint, EndpointGenerator, api_url
from llmft.core.errors import LlmftError
from tests.openai_stub import StubServer


class Scripted:
    """Fails the first `failures` requests with `status`, then answers in the OpenAI format."""

    failures, status, seen = 0, 503, []

    @staticmethod
    def respond(request):
        body = request["body"]
        if Scripted.failures > 0:
            Scripted.failures -= 1
            return Scripted.status, {"error": {"message": "slow down\nsecond line", "type": "x"}}
        n = body.get("n", 1)
        if request["path"].endswith("/chat/completions"):
            text = body["messages"][-1]["content"].upper()
            choices = [{"index": i, "message": {"role": "assistant", "content": f"{text}{i}"}} for i in range(n)]
        else:
            choices = [{"index": i, "text": f"{body['prompt']}!{i}"} for i in reversed(range(n))]
        return 200, {"choices": choices}


@pytest.fixture
def server():
    Scripted.failures, Scripted.status = 0, 503
    stub = StubServer(Scripted.respond)
    Scripted.seen = stub.requests
    with stub as url:
        yield url


def test_urls():
    assert api_url("http://h:1", "completions") == "http://h:1/v1/completions"
    assert api_url("http://h:1/v1/", "chat/completions") == "http://h:1/v1/chat/completions"
    assert api_url("http://h:1/v1/chat/completions", "completions") == "http://h:1/v1/completions"


def test_retries_429_then_answers_with_the_key_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("MY_KEY", "k-1")
    Scripted.failures, Scripted.status = 2, 429
    endpoint = Endpoint(server, "teacher", api_key_env="MY_KEY", backoff=0.01)
    assert endpoint.complete("Q", max_tokens=5, n=2, temperature=0.7) == ["Q!0", "Q!1"]  # sorted by index
    assert len(Scripted.seen) == 3 and all(s["auth"] == "Bearer k-1" for s in Scripted.seen)
    assert Scripted.seen[-1]["body"] == {"model": "teacher", "prompt": "Q", "max_tokens": 5, "n": 2,
                                         "temperature": 0.7}


def test_errors_are_one_line(server):
    Scripted.failures, Scripted.status = 10, 500
    with pytest.raises(LlmftError, match=r"HTTP 500 slow down$"):
        Endpoint(server, "m", max_retries=1, backoff=0.01).chat([{"role": "user", "content": "hi"}])
    assert len(Scripted.seen) == 2
    Scripted.failures, Scripted.status = 1, 401
    with pytest.raises(LlmftError, match="HTTP 401"):
        Endpoint(server, "m", backoff=0.01).complete("x")
    assert len(Scripted.seen) == 3  # 401 is not retried
    with pytest.raises(LlmftError, match="unreachable after 2 tries"):
        Endpoint("http://127.0.0.1:9", "m", max_retries=1, backoff=0.01, timeout=2).complete("x")


def test_generator_over_chat_and_completions(server):
    chat = EndpointGenerator(Endpoint(server, "m", backoff=0.01), mode="chat")
    assert chat.generate(["ab", "cd"], max_new_tokens=3) == ["AB0", "CD0"]
    plain = EndpointGenerator(Endpoint(server, "m", backoff=0.01))
    assert plain.generate(["x"], n=2, temperature=0.7, stop=["\n"]) == ["x!0", "x!1"]
    assert Scripted.seen[-1]["body"]["stop"] == ["\n"]
    with pytest.raises(LlmftError, match="num_beams"):
        plain.generate(["x"], num_beams=2)
