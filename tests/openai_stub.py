"""The one in-test OpenAI-compatible HTTP server: `StubServer` answers each POST with a scripted
`respond(request)`, and `OpenAIStub` answers the completions and chat formats over any Generator.

OpenAIStub batches concurrent requests with the same decoding settings (seed included) into one `generate`
call (a server's continuous batching in miniature), so a teacher sending parallel single-prompt requests stays
fast. A batch closes after `quiet` seconds without a new request and is sorted by prompt. Sampled answers can
still differ between runs (the Last Letter K=4 students of four miniature runs differed).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# respond(request) -> (HTTP status, JSON payload, or None for an empty body with the status's own reason).
Respond = Callable[[dict], "tuple[int, dict | None]"]


class QuietHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that stays quiet when a client has gone away (tests that time out on purpose): its
    handler thread's traceback would otherwise land, seconds later, in whatever output another test captures."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class StubServer:
    """`with StubServer(respond) as url:` serves POST on http://127.0.0.1:PORT (a free port); `requests`
    records each one as {"path", "auth", "body"} (auth: the Authorization header)."""

    def __init__(self, respond: Respond):
        self.respond = respond
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def __enter__(self) -> str:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                request = {"path": self.path, "auth": self.headers.get("Authorization"),
                           "body": json.loads(self.rfile.read(int(self.headers["Content-Length"])))}
                with stub.lock:
                    stub.requests.append(request)
                status, payload = stub.respond(request)
                self.send_response(status)
                if payload is None:
                    self.end_headers()
                    return
                data = json.dumps(payload).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class OpenAIStub:
    """`with OpenAIStub(generator) as url:` serves POST {url}/completions and {url}/chat/completions.

    `requests` records every request body; `fail_after` makes every request after that many answer HTTP 400.
    """

    def __init__(self, generator: Any, model: str = "teacher", fail_after: int | None = None, quiet: float = 0.25):
        self.generator = generator
        self.quiet = quiet
        self.model = model
        self.fail_after = fail_after
        self.requests: list[dict] = []
        self.pending: queue.Queue = queue.Queue()

    def __enter__(self) -> str:
        self.server = StubServer(self._respond)
        self.requests = self.server.requests
        threading.Thread(target=self._batcher, daemon=True).start()
        return self.server.__enter__() + "/v1"

    def __exit__(self, *exc: object) -> None:
        self.pending.put(None)
        self.server.__exit__(*exc)

    def _respond(self, request: dict) -> tuple[int, dict]:
        with self.server.lock:
            refuse = self.fail_after is not None and len(self.server.requests) > self.fail_after
        if refuse:
            return 400, {"error": {"message": "scripted failure"}}
        try:
            return 200, self.answer(request["path"], request["body"])
        except Exception as exc:
            return 400, {"error": {"message": f"generator failed: {exc!r}"}}

    def _batcher(self) -> None:
        """Answer queued prompts in batches of equal settings."""
        while True:
            first = self.pending.get()
            if first is None:
                return
            items = [first]
            try:
                while True:
                    item = self.pending.get(timeout=self.quiet)
                    if item is None:
                        self.pending.put(None)
                        break
                    items.append(item)
            except queue.Empty:
                pass
            groups: dict[str, list] = {}
            for item in items:
                groups.setdefault(json.dumps(item[1], sort_keys=True), []).append(item)
            for group in groups.values():
                group.sort(key=lambda item: item[0])
                prompts = [p for item in group for p in item[0]]
                try:
                    texts = self.generator.generate(prompts, **group[0][1])
                except Exception as exc:  # answered as HTTP 400, never left hanging
                    texts = [exc] * len(prompts)
                for item in group:
                    item[2].extend(texts[:len(item[0])])
                    texts = texts[len(item[0]):]
                    item[3].set()

    def _generate(self, prompts: list[str], kwargs: dict) -> list[str]:
        out: list[str] = []
        done = threading.Event()
        self.pending.put((prompts, kwargs, out, done))
        done.wait()
        if out and isinstance(out[0], Exception):
            raise out[0]
        return out

    def answer(self, path: str, body: dict) -> dict:
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        n = body.get("n", 1)
        kwargs = {"max_new_tokens": body.get("max_tokens", 16), "stop": stop,
                  "temperature": body.get("temperature", 0.0), "seed": body.get("seed") or 0}
        if path.endswith("/chat/completions"):
            texts = self._generate([body["messages"][-1]["content"]] * n, kwargs)
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                       for i, t in enumerate(texts)]
            return {"id": "chat-1", "object": "chat.completion", "model": self.model, "choices": choices}
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        texts = self._generate([p for p in prompts for _ in range(n)], kwargs)
        choices = [{"index": i, "text": t, "finish_reason": "stop", "logprobs": None} for i, t in enumerate(texts)]
        return {"id": "cmpl-1", "object": "text_completion", "model": self.model, "choices": choices,
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
