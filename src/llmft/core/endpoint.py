"""A client for OpenAI-compatible HTTP endpoints (a provider, vLLM, `llmft serve`): judges and teachers use it.

Plain `urllib` rather than the `openai` package: the base install stays small, and the few calls needed
(chat and completions, retries with backoff, timeouts) fit here with llmft's one-line errors.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, Literal

from llmft.core.errors import LlmftError

RETRY_STATUS = (408, 409, 429, 500, 502, 503, 504)


def api_url(base_url: str, path: str) -> str:
    """`http://host:port`, `.../v1` or a full endpoint URL -> the URL of `/v1/<path>`."""
    url = base_url.rstrip("/")
    for known in ("/chat/completions", "/completions"):
        if url.endswith(known):
            url = url[: -len(known)]
            break
    if not url.endswith("/v1"):
        url += "/v1"
    return f"{url}/{path}"


class Endpoint:
    """One model behind an OpenAI-compatible server; the API key comes from `api_key` or `api_key_env`."""

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", api_key: str | None = None,
                 timeout: float = 60.0, deadline: float = 300.0, max_retries: int = 4, backoff: float = 1.0):
        if not base_url:
            raise LlmftError("endpoint: no URL given (an OpenAI-compatible server, e.g. http://127.0.0.1:8000)")
        self.base_url, self.model = base_url, model
        self.api_key = api_key if api_key is not None else (os.environ.get(api_key_env, "") if api_key_env else "")
        # timeout bounds each socket read; deadline the whole request (connect, headers and every byte of the
        # body), so a server that drips its reply cannot hold a caller forever.
        self.timeout, self.deadline, self.max_retries, self.backoff = timeout, deadline, max_retries, backoff

    def chat(self, messages: Sequence[dict[str, str]], **params: Any) -> list[str]:
        """The assistant message of each choice (`n` of them) for one conversation."""
        reply = self.post("chat/completions", {"messages": list(messages), **_params(params)})
        return [_field(reply, choice, "message", "content") for choice in _choices(reply, self.base_url)]

    def complete(self, prompt: str, **params: Any) -> list[str]:
        """The text of each choice (`n` of them) continuing `prompt`."""
        reply = self.post("completions", {"prompt": prompt, **_params(params)})
        return [_field(reply, choice, "text") for choice in _choices(reply, self.base_url)]

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON to /v1/<path>; retries 429/5xx and connection errors with exponential backoff."""
        url = api_url(self.base_url, path)
        data = json.dumps({"model": self.model, **body}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                deadline = time.monotonic() + self.deadline
                with urllib.request.urlopen(request, timeout=min(self.timeout, self.deadline)) as response:
                    return json.loads(_read_by(response, deadline))
            except urllib.error.HTTPError as exc:
                if exc.code in RETRY_STATUS and not last:
                    time.sleep(_retry_after(exc) or self.backoff * 2 ** attempt)
                    continue
                raise LlmftError(f"endpoint {url}: HTTP {exc.code} {_error_message(exc)}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if not last:
                    time.sleep(self.backoff * 2 ** attempt)
                    continue
                reason = getattr(exc, "reason", exc)
                raise LlmftError(f"endpoint {url} unreachable after {self.max_retries + 1} tries: {reason}") from None
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise LlmftError(f"endpoint {url}: the reply is not JSON") from None
        raise AssertionError("unreachable")  # pragma: no cover


class EndpointGenerator:
    """The Generator protocol over an endpoint: one request per prompt (greedy when temperature is 0)."""

    def __init__(self, endpoint: Endpoint, mode: Literal["completions", "chat"] = "completions"):
        self.endpoint, self.mode = endpoint, mode

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 64, stop: Sequence[str] = (),
                 num_beams: int = 1, temperature: float = 0.0, seed: int = 0, top_p: float = 1.0,
                 n: int = 1) -> list[str]:
        """One completion per prompt (or `n` per prompt, prompt-major, when n > 1)."""
        if num_beams != 1:
            raise LlmftError("endpoint generation: beam search is not part of the OpenAI API (num_beams must be 1)")
        params = {"max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "n": n,
                  "stop": list(stop) or None, "seed": seed}
        out: list[str] = []
        for prompt in prompts:
            if self.mode == "chat":
                out += self.endpoint.chat([{"role": "user", "content": prompt}], **params)
            else:
                out += self.endpoint.complete(prompt, **params)
        return out


def _read_by(response: Any, deadline: float) -> bytes:
    """The whole body, or TimeoutError once the deadline passes (each read returns what one recv brought)."""
    parts = []
    while chunk := response.read1(1 << 16):
        parts.append(chunk)
        if time.monotonic() > deadline:
            raise TimeoutError("the reply did not finish before the request's deadline")
    return b"".join(parts)


def _params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _choices(reply: Any, url: str) -> list[Any]:
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not isinstance(choices, list) or not choices:
        raise LlmftError(f"endpoint {url}: the reply has no choices")
    return sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)


def _field(reply: Any, choice: Any, *path: str) -> Any:
    value = choice
    try:
        for key in path:
            value = value[key]
    except (KeyError, TypeError):
        raise LlmftError(f"endpoint: a choice has no {'.'.join(path)} field") from None
    if not isinstance(value, str):
        raise LlmftError(f"endpoint: a choice's {'.'.join(path)} is {json.dumps(value)}, not text")
    return value


def _retry_after(exc: urllib.error.HTTPError) -> float:
    try:
        return min(float(exc.headers.get("Retry-After", "")), 60.0)
    except (TypeError, ValueError):
        return 0.0


def _error_message(exc: urllib.error.HTTPError) -> str:
    """The server's OpenAI-style `error.message` when it sent one, else the HTTP reason."""
    try:
        body = json.loads(exc.read() or b"{}")
        return str(body["error"]["message"]).splitlines()[0][:200]
    except (ValueError, KeyError, TypeError, OSError):
        return str(exc.reason)
