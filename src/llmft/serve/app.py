"""The OpenAI-compatible HTTP app (FastAPI): /v1/models, /v1/completions, /v1/chat/completions, /health.

Every model is a `ServedModel` whose `decode(prompts, sampling, options)` runs on the batcher's worker thread
and returns one `Decoded` per prompt; the command builds it from a run folder and its recipe. `Decoded.extra`
goes into each choice's `llmft` field. Imports fastapi lazily so `llmft` works without the `serve` extra.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations of local classes at runtime.

import asyncio
import copy
import dataclasses
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from llmft.core.batching import Batcher
from llmft.core.errors import LlmftError
from llmft.core.generation import Decoded, Sampling

# decode(prompts, sampling, options from the request's `llmft` object) -> one Decoded per prompt.
DecodeFn = Callable[[list[str], Sampling, dict], list[Decoded]]

MAX_BODY_BYTES = 1 << 20
MAX_N = 16
MAX_STOP = 4


@dataclass
class ServedModel:
    """One name clients can ask for: its decode function, tokenizer (counting, chat template) and limits."""

    name: str
    decode: DecodeFn
    tokenizer: Any
    context_length: int
    defaults: Sampling = field(default_factory=Sampling)  # max_new_tokens and temperature when a request omits them
    info: dict = field(default_factory=dict)  # shown under `llmft` in /v1/models (recipe, folder, base)


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def require_serve_deps() -> None:
    """Import fastapi and uvicorn or fail in one line."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise LlmftError(f"llmft serve needs FastAPI and uvicorn ({exc.name} is missing): "
                         "pip install 'llmft[serve]'") from None


def stream_pieces(text: str) -> list[str]:
    """The text cut before each word (pieces join back to exactly the text), for server-sent events."""
    return [piece for piece in re.split(r"(?<=\s)(?=\S)", text) if piece]


def create_app(models: Sequence[ServedModel], *, api_key: str | None = None, max_batch: int = 32,
               max_body_bytes: int = MAX_BODY_BYTES, window_s: float = 0.005) -> Any:
    """The FastAPI app; its lifespan starts the batcher and, on shutdown, lets queued requests finish."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.exceptions import HTTPException

    by_name = {m.name: m for m in models}
    # The worker thread tokenizes too; a private copy keeps the request path off the Rust tokenizer's borrow.
    counters = {m.name: copy.deepcopy(m.tokenizer) for m in models}

    def run_batch(key: tuple, prompts: list[str]) -> list[Decoded]:
        name, sampling, options_json = key
        return by_name[name].decode(prompts, sampling, json.loads(options_json))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.batcher = Batcher(run_batch, max_batch=max_batch, window_s=window_s)
        try:
            yield
        finally:
            await asyncio.to_thread(app.state.batcher.close)

    app = FastAPI(title="llmft", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    class Request_(BaseModel):
        model_config = ConfigDict(extra="allow")
        model: str
        max_tokens: int | None = Field(None, ge=1)
        temperature: float | None = Field(None, ge=0.0, le=2.0)
        top_p: float | None = Field(None, gt=0.0, le=1.0)
        n: int = Field(1, ge=1, le=MAX_N)
        stream: bool = False
        stream_options: dict[str, Any] | None = None
        stop: str | list[str] | None = None
        seed: int | None = None
        llmft: dict[str, Any] | None = None

    class CompletionRequest(Request_):
        prompt: str | list[str]

    class Message(BaseModel):
        model_config = ConfigDict(extra="allow")
        role: str
        content: str | list[dict[str, Any]] | None = None

    class ChatRequest(Request_):
        messages: list[Message] = Field(min_length=1)
        max_completion_tokens: int | None = Field(None, ge=1)

    # ---------------------------------------------------------------------------------------------- errors

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(part) for part in first.get("loc", ()) if part != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            error = ApiError(400, f"malformed JSON body: {first.get('msg', '')}", code="invalid_json")
        elif first.get("type") == "missing":
            error = ApiError(400, f"missing required field '{param}'", param=param, code="missing_field")
        else:
            error = ApiError(400, f"invalid value for '{param}': {first.get('msg', 'invalid')}", param=param,
                             code="invalid_value")
        return JSONResponse(error.body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(ApiError(exc.status_code, str(exc.detail), code=code).body(),
                            status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(ApiError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error").body(),
                            status_code=500)

    app.add_middleware(Guard, max_bytes=max_body_bytes, api_key=api_key)

    # ----------------------------------------------------------------------------------------- endpoints

    @app.get("/health")
    async def health(request: Request) -> dict:
        batcher = request.app.state.batcher
        return {"status": "ok", "models": list(by_name), "queued": batcher.pending(), "running": batcher.running}

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [_model_card(m) for m in models]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> dict:
        return _model_card(_model(name))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        served = _model(body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if not prompts:
            raise ApiError(400, "'prompt' must not be empty", param="prompt")
        sampling = _sampling(served, body, body.max_tokens)
        counts = [_check_length(served, p, sampling.max_new_tokens, "prompt") for p in prompts]
        future = _submit(request, served, body, sampling, [p for p in prompts for _ in range(body.n)])
        meta = _meta("cmpl", "text_completion", served)
        if body.stream:
            return _sse(_stream_completion(request, future, meta, served, sampling, body, counts))
        decoded = await _wait(request, future)
        choices = [{"index": i, "text": d.text, "logprobs": None,
                    "finish_reason": _finish(served, d, sampling), "llmft": d.extra or None}
                   for i, d in enumerate(decoded)]
        return {**meta, "choices": choices, "usage": _usage(served, counts, decoded)}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request) -> Any:
        served = _model(body.model)
        prompt = _chat_prompt(served, body.messages)
        sampling = _sampling(served, body, body.max_completion_tokens or body.max_tokens)
        counts = [_check_length(served, prompt, sampling.max_new_tokens, "messages")]
        future = _submit(request, served, body, sampling, [prompt] * body.n)
        meta = _meta("chatcmpl", "chat.completion", served)
        if body.stream:
            return _sse(_stream_chat(request, future, meta, served, sampling, body, counts))
        decoded = await _wait(request, future)
        choices = [{"index": i, "message": {"role": "assistant", "content": d.text},
                    "logprobs": None, "finish_reason": _finish(served, d, sampling), "llmft": d.extra or None}
                   for i, d in enumerate(decoded)]
        return {**meta, "choices": choices, "usage": _usage(served, counts, decoded)}

    # ------------------------------------------------------------------------------------------- helpers

    def _model(name: str) -> ServedModel:
        if name not in by_name:
            raise ApiError(404, f"the model '{name}' does not exist; served: {', '.join(by_name)}", param="model",
                           code="model_not_found")
        return by_name[name]

    def _model_card(served: ServedModel) -> dict:
        return {"id": served.name, "object": "model", "created": 0, "owned_by": "llmft",
                "llmft": {**served.info, "context_length": served.context_length}}

    def _sampling(served: ServedModel, body: Request_, max_tokens: int | None) -> Sampling:
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stop) > MAX_STOP or any(not s for s in stop):
            raise ApiError(400, f"'stop' takes up to {MAX_STOP} non-empty strings", param="stop")
        defaults = served.defaults
        return dataclasses.replace(
            defaults,
            max_new_tokens=max_tokens or defaults.max_new_tokens,
            temperature=defaults.temperature if body.temperature is None else body.temperature,
            top_p=defaults.top_p if body.top_p is None else body.top_p,
            seed=defaults.seed if body.seed is None else body.seed,
            stop=tuple(stop),
        )

    def _check_length(served: ServedModel, prompt: str, max_new_tokens: int, param: str) -> int:
        from llmft.core.data import encode_prompt

        tokens = len(encode_prompt(counters[served.name], prompt))
        if tokens > served.context_length or tokens + max_new_tokens > served.context_length:
            over = "prompt" if tokens > served.context_length else "max_tokens"
            raise ApiError(400, f"This model's maximum context length is {served.context_length} tokens. However, "
                                f"you requested {tokens + max_new_tokens} tokens ({tokens} in the {param}, "
                                f"{max_new_tokens} for the completion). Please reduce the {param} or max_tokens.",
                           param=param if over == "prompt" else "max_tokens", code="context_length_exceeded")
        return tokens

    def _chat_prompt(served: ServedModel, messages: list[Message]) -> str:
        tokenizer = counters[served.name]
        if not getattr(tokenizer, "chat_template", None):
            raise ApiError(400, f"the model '{served.name}' has no chat template; use /v1/completions",
                           param="messages", code="no_chat_template")
        plain = []
        for message in messages:
            content = message.content
            if isinstance(content, list):
                if any(part.get("type") != "text" for part in content):
                    raise ApiError(400, "only text content parts are supported", param="messages")
                content = "".join(str(part.get("text", "")) for part in content)
            plain.append({"role": message.role, "content": content or ""})
        try:
            return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # a template's own raise_exception (e.g. roles must alternate)
            raise ApiError(400, f"the chat template rejected the messages: {exc}", param="messages") from None

    def _submit(request: Request, served: ServedModel, body: Request_, sampling: Sampling,
                prompts: list[str]) -> Future:
        options = json.dumps(body.llmft or {}, sort_keys=True)
        key = (served.name, sampling, options)  # Sampling is frozen, so hashable
        try:
            return request.app.state.batcher.submit(key, prompts)
        except RuntimeError:
            raise ApiError(503, "the server is shutting down", "server_error") from None

    async def _wait(request: Request, future: Future) -> list[Decoded]:
        """The batch's results; a client that went away cancels its queued request."""
        waiting = asyncio.wrap_future(future)
        try:
            while not (await asyncio.wait({waiting}, timeout=0.25))[0]:
                if await request.is_disconnected():
                    raise ApiError(499, "the client closed the request", code="client_closed_request")
        except BaseException:  # a disconnect seen here or by the streaming response (cancellation)
            waiting.cancel()  # cancels the queued request; one already in a running batch completes
            raise
        try:
            return waiting.result()
        except LlmftError as exc:
            raise ApiError(400, str(exc).splitlines()[0], param="llmft") from None

    def _finish(served: ServedModel, decoded: Decoded, sampling: Sampling) -> str:
        if "finish_reason" in decoded.extra:
            return str(decoded.extra["finish_reason"])
        return "length" if _completion_tokens(served, decoded) >= sampling.max_new_tokens else "stop"

    def _completion_tokens(served: ServedModel, decoded: Decoded) -> int:
        if "generated_tokens" in decoded.extra:
            return int(decoded.extra["generated_tokens"])
        return len(counters[served.name](decoded.text, add_special_tokens=False)["input_ids"])

    def _usage(served: ServedModel, counts: list[int], decoded: list[Decoded]) -> dict:
        completion = sum(_completion_tokens(served, d) for d in decoded)
        return {"prompt_tokens": sum(counts), "completion_tokens": completion,
                "total_tokens": sum(counts) + completion}

    def _meta(prefix: str, kind: str, served: ServedModel) -> dict:
        return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()),
                "model": served.name}

    def _sse(events: AsyncIterator[dict]) -> Any:
        async def lines() -> AsyncIterator[str]:
            try:
                async for event in events:
                    yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
            except ApiError as exc:
                yield f"data: {json.dumps(exc.body())}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(lines(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _stream_completion(request: Request, future: Future, meta: dict, served: ServedModel,
                                 sampling: Sampling, body: Request_, counts: list[int]) -> AsyncIterator[dict]:
        decoded = await _wait(request, future)
        for i, d in enumerate(decoded):
            for piece in stream_pieces(d.text):
                yield {**meta, "choices": [{"index": i, "text": piece, "logprobs": None, "finish_reason": None}]}
            yield {**meta, "choices": [{"index": i, "text": "", "logprobs": None,
                                        "finish_reason": _finish(served, d, sampling), "llmft": d.extra or None}]}
        if (body.stream_options or {}).get("include_usage"):
            yield {**meta, "choices": [], "usage": _usage(served, counts, decoded)}

    async def _stream_chat(request: Request, future: Future, meta: dict, served: ServedModel,
                           sampling: Sampling, body: Request_, counts: list[int]) -> AsyncIterator[dict]:
        meta = {**meta, "object": "chat.completion.chunk"}
        decoded = await _wait(request, future)
        for i, d in enumerate(decoded):
            yield {**meta, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}]}
            for piece in stream_pieces(d.text):
                yield {**meta, "choices": [{"index": i, "delta": {"content": piece}, "logprobs": None,
                                            "finish_reason": None}]}
            yield {**meta, "choices": [{"index": i, "delta": {}, "logprobs": None,
                                        "finish_reason": _finish(served, d, sampling), "llmft": d.extra or None}]}
        if (body.stream_options or {}).get("include_usage"):
            yield {**meta, "choices": [], "usage": _usage(served, counts, decoded)}

    return app


class Guard:
    """ASGI middleware: the API key on /v1 (constant-time compare) and the body size limit (413).

    Pure ASGI rather than an `@app.middleware` function, whose task group would wrap the too-large signal.
    """

    def __init__(self, app: Any, max_bytes: int, api_key: str | None = None):
        self.app, self.max_bytes = app, max_bytes
        self.expected = api_key.encode() if api_key else None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.expected is not None and scope["path"].startswith("/v1"):
            header = headers.get(b"authorization", b"")
            given = header[7:].strip() if header[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(given, self.expected):
                message = "incorrect API key provided" if given else "missing API key"
                await _send_error(send, ApiError(401, message, code="invalid_api_key"))
                return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_error(send, ApiError(413, "request body too large", code="request_too_large"))
            return
        seen = 0
        started = False

        async def counting_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_error(send, ApiError(413, "request body too large", code="request_too_large"))


async def _send_error(send: Callable, error: ApiError) -> None:
    body = json.dumps(error.body()).encode()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(BaseException):
    """Not an Exception: FastAPI turns any Exception raised while reading a body into a 400."""
