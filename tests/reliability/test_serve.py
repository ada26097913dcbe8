"""serve: no request body reaches a 500, strict request types, limits on rows and body time, seeded answers
the same batched or alone, and a SIGTERM that answers every request (in full, or 503 in OpenAI's shape)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from llmft.commands.serve import served_models
from llmft.core.jsonl import write_jsonl
from llmft.recipes.sft.toys import toy_split
from llmft.serve.app import create_app
from tests.conftest import REPO, tiny_config, train_run
from tests.serve.conftest import serving

PROMPT = "shift abc ="


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny sft run (3 steps): its final/ folder."""
    root = tmp_path_factory.mktemp("serve-run")
    records, _ = toy_split("caesar", 200, 0, seed=1)
    train_run(tiny_config(root, write_jsonl(root / "train.jsonl", records), train={"max_steps": 3}), progress=False)
    return root / "run" / "final"


@pytest.fixture(scope="module")
def url(run):
    with serving(create_app(served_models([f"m={run}"]), body_timeout_s=1.0)) as base:
        yield base


def post(url: str, body: dict | str) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.post(f"{url}/v1/completions", content=content, headers={"Content-Type": "application/json"},
                      timeout=120)


def greedy(url: str, prompt: str = PROMPT, **extra) -> str:
    reply = post(url, {"model": "m", "prompt": prompt, "max_tokens": 6, "temperature": 0, **extra})
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["text"]


@pytest.mark.parametrize(("extra", "param", "needle"), [
    ({"max_tokens": True}, "max_tokens", "valid integer"),
    ({"n": "2"}, "n", "valid integer"),
    ({"stream": "yes"}, "stream", "valid boolean"),
    ({"temperature": "0.5"}, "temperature", "valid number"),
    ({"seed": 2**64}, "seed", "less than 9223372036854775808"),
    ({"stop": ["x" * 900_000]}, "stop", "longer than 1000 characters"),
    ({"prompt": ["a"] * 5000}, "prompt", "5000 prompts x n 1 = 5000 completions; one request asks for at most 512"),
    ({"prompt": ["a"] * 100, "n": 6}, "prompt", "at most 512"),
])
def test_bad_request_values_are_openai_shaped_400s(url, extra, param, needle):
    reply = post(url, {"model": "m", "prompt": PROMPT, "max_tokens": 4, **extra})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and needle in error["message"] and error["type"] == "invalid_request_error"


def test_a_lone_surrogate_is_a_400(url):
    reply = post(url, '{"model": "m", "prompt": "ab\\ud800c", "max_tokens": 3}')
    assert reply.status_code == 400 and "lone surrogate" in reply.json()["error"]["message"]
    reply = post(url, '{"model": "m", "prompt": "abc", "max_tokens": 3, "stop": ["\\udfff"]}')
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "stop"


def test_values_that_used_to_500_now_answer(url):
    plain = greedy(url)
    # Letters the run's character vocabulary lacks: no token can spell the stop string, so it never cuts.
    assert greedy(url, stop=["zz"]) == plain and greedy(url, stop=["QQ", "\u4e2d"]) == plain
    cold = post(url, {"model": "m", "prompt": PROMPT, "max_tokens": 6, "temperature": 1e-300, "seed": 3})
    assert cold.status_code == 200 and cold.json()["choices"][0]["text"] == plain  # as cold as greedy
    edge = post(url, {"model": "m", "prompt": PROMPT, "max_tokens": 6, "temperature": 0.9, "seed": 2**63 - 1})
    assert edge.status_code == 200


def test_a_seeded_sample_is_the_same_alone_and_among_16_requests(url):
    body = {"model": "m", "prompt": [PROMPT, "shift xyz ="], "max_tokens": 8, "temperature": 1.0, "seed": 7,
            "n": 2}
    alone = post(url, body).json()["choices"]
    others = [{**body, "prompt": f"shift {c * 3} =", "seed": i} for i, c in enumerate("bcdefghijklmnop")]
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda b: post(url, b), [*others[:8], body, *others[8:]]))
    assert all(r.status_code == 200 for r in replies)
    assert replies[8].json()["choices"] == alone
    assert len({c["text"] for c in alone}) > 1  # sampled: the test would see a changed draw


def test_headers_then_nothing_gets_408_within_the_body_timeout(url):
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n")
        started = time.monotonic()
        answer = ""
        while "}}" not in answer and (chunk := sock.recv(4096)):
            answer += chunk.decode()
    assert answer.startswith("HTTP/1.1 408") and '"code": "request_timeout"' in answer
    assert time.monotonic() - started < 10


def test_sigterm_answers_every_request_in_full_or_503(run):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "llmft", "serve", "--adapter", f"m={run}", "--port", "0",
                             "--max-batch", "4"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        port, lines = None, []
        while port is None:
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
            if match := re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line):
                port = int(match.group(1))
        base = f"http://127.0.0.1:{port}"
        replies: list = []

        def ask(i: int) -> None:  # other max_tokens each: ten batches of 32 sampled rows, one after another
            replies.append(post(base, {"model": "m", "prompt": [PROMPT] * 4, "max_tokens": 300 - i, "n": 8,
                                       "temperature": 1.0}))

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(10)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while httpx.get(f"{base}/health").json()["queued"] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(300)
        assert proc.wait(120) == 0
        log = proc.stderr.read()
    finally:
        proc.kill()
    codes = sorted(r.status_code for r in replies)
    assert len(codes) == 10 and set(codes) <= {200, 503} and 503 in codes and 200 in codes, codes
    for reply in replies:
        body = reply.json()
        if reply.status_code == 200:
            assert len(body["choices"]) == 32
        else:
            assert body["error"]["code"] == "shutting_down" and body["error"]["type"] == "server_error"
    assert "Traceback" not in log
