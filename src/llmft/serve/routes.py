"""The endpoints: /health, /v1/models, /v1/completions and /v1/chat/completions, on one APIRouter.

Handlers read the served models, their token counters and the batcher from `request.app.state` (see app.py).
A request's model is looked up once; the batch key carries the `ServedModel` itself.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations at runtime.

import asyncio
import dataclasses
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from llmft.core.errors import LlmftError
from llmft.core.generation import Decoded, Sampling
from llmft.serve.batching import ShuttingDown
from llmft.serve.errors import ApiError
from llmft.serve.requests import ChatRequest, CompletionRequest, Message, SamplingRequest
from llmft.serve.served import ServedModel

MAX_STOP = 4

router = APIRouter()


def stream_pieces(text: str) -> list[str]:
    """The text cut before each word (pieces join back to exactly the text), for server-sent events."""
    return [piece for piece in re.split(r"(?<=\s)(?=\S)", text) if piece]


def run_batch(key: tuple, prompts: list[str]) -> list[Decoded]:
    """The batcher's work: one model's decode over prompts that share sampling and options."""
    served, sampling, options_json = key[:3]
    return served.decode(prompts, sampling, json.loads(options_json))


@router.get("/health")
async def health(request: Request) -> dict:
    batcher = request.app.state.batcher
    return {"status": "ok", "models": list(request.app.state.models), "queued": batcher.pending(),
            "running": batcher.running}


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    return {"object": "list", "data": [model_card(m) for m in request.app.state.models.values()]}


@router.get("/v1/models/{name:path}")
async def get_model(name: str, request: Request) -> dict:
    return model_card(lookup(request, name))


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Any:
    served = lookup(request, body.model)
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not prompts:
        raise ApiError(400, "'prompt' must not be empty", param="prompt")
    limit = request.app.state.max_request_rows
    if len(prompts) * body.n > limit:
        raise ApiError(400, f"{len(prompts)} prompts x n {body.n} = {len(prompts) * body.n} completions; one "
                            f"request asks for at most {limit}", param="prompt", code="too_many_completions")
    sampling = sampling_for(served, body, body.max_tokens)
    counter = request.app.state.counters[served.name]
    counts = [check_length(counter, served, p, sampling.max_new_tokens, "prompt") for p in prompts]
    future = submit(request, served, body, sampling, [p for p in prompts for _ in range(body.n)])
    meta = response_meta("cmpl", "text_completion", served)
    if body.stream:
        return sse(stream_completion(request, future, meta, counter, sampling, body, counts))
    decoded = await wait(request, future)
    choices = [{"index": i, "text": d.text, "logprobs": None,
                "finish_reason": finish_reason(counter, d, sampling), "llmft": d.extra or None}
               for i, d in enumerate(decoded)]
    return {**meta, "choices": choices, "usage": usage(counter, counts, decoded)}


@router.post("/v1/chat/completions")
async def chat(body: ChatRequest, request: Request) -> Any:
    served = lookup(request, body.model)
    counter = request.app.state.counters[served.name]
    prompt = chat_prompt(counter, served.name, body.messages)
    sampling = sampling_for(served, body, body.max_completion_tokens or body.max_tokens)
    counts = [check_length(counter, served, prompt, sampling.max_new_tokens, "messages")]
    future = submit(request, served, body, sampling, [prompt] * body.n)
    meta = response_meta("chatcmpl", "chat.completion", served)
    if body.stream:
        return sse(stream_chat(request, future, meta, counter, sampling, body, counts))
    decoded = await wait(request, future)
    choices = [{"index": i, "message": {"role": "assistant", "content": d.text},
                "logprobs": None, "finish_reason": finish_reason(counter, d, sampling), "llmft": d.extra or None}
               for i, d in enumerate(decoded)]
    return {**meta, "choices": choices, "usage": usage(counter, counts, decoded)}


def lookup(request: Request, name: str) -> ServedModel:
    """The one name -> served model lookup (404 naming what is served)."""
    models = request.app.state.models
    if name not in models:
        raise ApiError(404, f"the model '{name}' does not exist; served: {', '.join(models)}", param="model",
                       code="model_not_found")
    return models[name]


def model_card(served: ServedModel) -> dict:
    return {"id": served.name, "object": "model", "created": 0, "owned_by": "llmft",
            "llmft": {**served.info, "context_length": served.context_length}}


def sampling_for(served: ServedModel, body: SamplingRequest, max_tokens: int | None) -> Sampling:
    """The model's defaults overridden by what the request sets."""
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


def check_length(counter: Any, served: ServedModel, prompt: str, max_new_tokens: int, param: str) -> int:
    """The prompt's token count; 400 in OpenAI's words when prompt + completion exceed the context."""
    from llmft.core.data import encode_prompt

    tokens = len(encode_prompt(counter, prompt))
    if tokens > served.context_length or tokens + max_new_tokens > served.context_length:
        over = "prompt" if tokens > served.context_length else "max_tokens"
        raise ApiError(400, f"This model's maximum context length is {served.context_length} tokens. However, "
                            f"you requested {tokens + max_new_tokens} tokens ({tokens} in the {param}, "
                            f"{max_new_tokens} for the completion). Please reduce the {param} or max_tokens.",
                       param=param if over == "prompt" else "max_tokens", code="context_length_exceeded")
    return tokens


def chat_prompt(tokenizer: Any, name: str, messages: list[Message]) -> str:
    """The messages through the model's chat template (text parts only)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ApiError(400, f"the model '{name}' has no chat template; use /v1/completions",
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


def submit(request: Request, served: ServedModel, body: SamplingRequest, sampling: Sampling,
           prompts: list[str]) -> Future:
    options = json.dumps(body.llmft or {}, sort_keys=True)
    key: tuple = (served, sampling, options)  # Sampling is frozen and ServedModel hashed by identity
    if body.seed is not None and sampling.temperature > 0:
        # A batch of its own: rows sampled beside other requests' rows would draw other random numbers, and a
        # seeded answer must be the same batched or alone.
        key += (object(),)
    try:
        return request.app.state.batcher.submit(key, prompts)
    except RuntimeError:
        raise ApiError(503, "the server is shutting down; retry on another instance", "server_error",
                       code="shutting_down") from None


async def wait(request: Request, future: Future) -> list[Decoded]:
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
    except ShuttingDown:
        raise ApiError(503, "the server is shutting down; retry on another instance", "server_error",
                       code="shutting_down") from None


def finish_reason(counter: Any, decoded: Decoded, sampling: Sampling) -> str:
    if "finish_reason" in decoded.extra:
        return str(decoded.extra["finish_reason"])
    return "length" if completion_tokens(counter, decoded) >= sampling.max_new_tokens else "stop"


def completion_tokens(counter: Any, decoded: Decoded) -> int:
    if "generated_tokens" in decoded.extra:
        return int(decoded.extra["generated_tokens"])
    return len(counter(decoded.text, add_special_tokens=False)["input_ids"])


def usage(counter: Any, counts: list[int], decoded: list[Decoded]) -> dict:
    completion = sum(completion_tokens(counter, d) for d in decoded)
    return {"prompt_tokens": sum(counts), "completion_tokens": completion, "total_tokens": sum(counts) + completion}


def response_meta(prefix: str, kind: str, served: ServedModel) -> dict:
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": served.name}


def sse(events: AsyncIterator[dict]) -> StreamingResponse:
    """Server-sent events, ending with [DONE]; an error met on the way is sent as one more event."""
    async def lines() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
        except ApiError as exc:
            yield f"data: {json.dumps(exc.body())}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def stream_completion(request: Request, future: Future, meta: dict, counter: Any, sampling: Sampling,
                            body: SamplingRequest, counts: list[int]) -> AsyncIterator[dict]:
    decoded = await wait(request, future)
    for i, d in enumerate(decoded):
        for piece in stream_pieces(d.text):
            yield {**meta, "choices": [{"index": i, "text": piece, "logprobs": None, "finish_reason": None}]}
        yield {**meta, "choices": [{"index": i, "text": "", "logprobs": None,
                                    "finish_reason": finish_reason(counter, d, sampling), "llmft": d.extra or None}]}
    if (body.stream_options or {}).get("include_usage"):
        yield {**meta, "choices": [], "usage": usage(counter, counts, decoded)}


async def stream_chat(request: Request, future: Future, meta: dict, counter: Any, sampling: Sampling,
                      body: SamplingRequest, counts: list[int]) -> AsyncIterator[dict]:
    meta = {**meta, "object": "chat.completion.chunk"}
    decoded = await wait(request, future)
    for i, d in enumerate(decoded):
        yield {**meta, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                    "logprobs": None, "finish_reason": None}]}
        for piece in stream_pieces(d.text):
            yield {**meta, "choices": [{"index": i, "delta": {"content": piece}, "logprobs": None,
                                        "finish_reason": None}]}
        yield {**meta, "choices": [{"index": i, "delta": {}, "logprobs": None,
                                    "finish_reason": finish_reason(counter, d, sampling), "llmft": d.extra or None}]}
    if (body.stream_options or {}).get("include_usage"):
        yield {**meta, "choices": [], "usage": usage(counter, counts, decoded)}
