"""An in-test HTTP server speaking the OpenAI completions and chat formats over any Generator."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class OpenAIStub:
    """`with OpenAIStub(generator) as url:` serves POST {url}/completions and {url}/chat/completions;
    `requests` records every request body."""

    def __init__(self, generator: Any, model: str = "teacher"):
        self.generator = generator
        self.model = model
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def __enter__(self) -> str:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.requests.append(body)
                    reply = stub.answer(self.path, body)
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, body: dict) -> dict:
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        n = body.get("n", 1)
        kwargs = {"max_new_tokens": body.get("max_tokens", 16), "stop": stop,
                  "temperature": body.get("temperature", 0.0), "seed": body.get("seed") or 0}
        if path.endswith("/chat/completions"):
            prompt = body["messages"][-1]["content"]
            texts = self.generator.generate([prompt] * n, **kwargs)
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                       for i, t in enumerate(texts)]
            return {"id": "chat-1", "object": "chat.completion", "model": self.model, "choices": choices}
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        texts = self.generator.generate([p for p in prompts for _ in range(n)], **kwargs)
        choices = [{"index": i, "text": t, "finish_reason": "stop", "logprobs": None} for i, t in enumerate(texts)]
        return {"id": "cmpl-1", "object": "text_completion", "model": self.model, "choices": choices,
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
