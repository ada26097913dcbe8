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

from llmft.core.continuous.engine import Cancelled, Generated, ShuttingDown, TokenLogprobs
from llmft.core.continuous.generator import DecodeContext, decode_context
from llmft.core.errors import LlmftError
from llmft.core.generation import Decoded, Sampling
from llmft.serve.errors import ApiError
from llmft.serve.requests import ChatRequest, CompletionRequest, Message, SamplingRequest, unsupported_fields
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
    """"ok" to anyone; with the API key (or when the server has none) also the models and the queue depth."""
    if not request.scope.get("llmft_authorized", True):
        return {"status": "ok"}
    queued, running = request.app.state.batcher.pending(), request.app.state.batcher.running
    for engine in {id(m.engine): m.engine for m in request.app.state.models.values() if m.engine}.values():
        waiting, decoding = engine.load()
        queued, running = queued + waiting, running + decoding
    return {"status": "ok", "models": list(request.app.state.models), "queued": queued, "running": running}


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    return {"object": "list", "data": [model_card(m) for m in request.app.state.models.values()]}


@router.get("/v1/models/{name:path}")
async def get_model(name: str, request: Request) -> dict:
    return model_card(lookup(request, name))


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Any:
    served = lookup(request, body.model)
    refuse_unsupported(body)
    prompts = prompt_list(body.prompt)
    limit = request.app.state.max_request_rows
    if len(prompts) * body.n > limit:
        raise ApiError(400, f"{len(prompts)} prompts x n {body.n} = {len(prompts) * body.n} completions; one "
                            f"request asks for at most {limit}", param="prompt", code="too_many_completions")
    token_ids = not isinstance(prompts[0], str)
    if (token_ids or body.echo or body.logprobs is not None) and served.engine is None:
        raise ApiError(400, f"the model '{served.name}' serves text prompts without logprobs or echo",
                       param="prompt" if token_ids else "logprobs" if body.logprobs is not None else "echo")
    if body.max_tokens == 0 and not body.echo:
        raise ApiError(400, "'max_tokens' 0 asks for no completion; it needs 'echo': true", param="max_tokens")
    if body.echo and body.stream:
        raise ApiError(400, "'echo' is not supported with 'stream'", param="echo")
    sampling = sampling_for(served, body, body.max_tokens)
    counter = request.app.state.counters[served.name]
    encoded = [p if token_ids else encode(counter, p) for p in prompts]
    counts = [check_length(served, len(ids), sampling.max_new_tokens, "prompt") for ids in encoded]
    rows = [p for p in (encoded if token_ids else prompts) for _ in range(body.n)]
    meta = response_meta("cmpl", "text_completion", served)
    scores = await prompt_scores(request, served, encoded, body) if body.echo and body.logprobs is not None else None
    if body.max_tokens == 0:
        decoded = [Decoded("") for _ in rows]
        job = Job(completed(decoded), DecodeContext(results=[Generated("", [], "length") for _ in rows]))
    else:
        job = start(request, served, body, sampling, rows, logprobs=body.logprobs, ids=token_ids)
        if body.stream:
            return sse(stream_completion(request, job, meta, counter, sampling, body, counts))
        decoded = await wait(request, job)
    choices = []
    for i, d in enumerate(decoded):
        prompt_index = i // body.n
        echoed = (counter.decode(rows[i]) if token_ids else rows[i]) if body.echo else ""
        logprobs = None
        if body.logprobs is not None:
            generated = job.generated(i) or Generated(d.text, [], "")
            logprobs = legacy_logprobs(counter, (scores[prompt_index] if scores else [])
                                       + generated.logprobs_or_empty(with_eos=True))
        choices.append({"index": i, "text": echoed + d.text, "logprobs": logprobs,
                        "finish_reason": finish_reason(counter, d, sampling, job.generated(i)),
                        "llmft": d.extra or None})
    return {**meta, "choices": choices, "usage": usage(counter, counts, decoded, job, body.n)}


@router.post("/v1/chat/completions")
async def chat(body: ChatRequest, request: Request) -> Any:
    served = lookup(request, body.model)
    refuse_unsupported(body)
    if (body.logprobs or body.top_logprobs is not None) and served.engine is None:
        raise ApiError(400, f"the model '{served.name}' serves no logprobs", param="logprobs")
    if body.top_logprobs is not None and not body.logprobs:
        raise ApiError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    counter = request.app.state.counters[served.name]
    prompt = chat_prompt(counter, served.name, body.messages)
    sampling = sampling_for(served, body, body.max_completion_tokens or body.max_tokens)
    counts = [check_length(served, len(encode(counter, prompt)), sampling.max_new_tokens, "messages")]
    top = (body.top_logprobs or 0) if body.logprobs else None
    job = start(request, served, body, sampling, [prompt] * body.n, logprobs=top)
    meta = response_meta("chatcmpl", "chat.completion", served)
    if body.stream:
        return sse(stream_chat(request, job, meta, counter, sampling, body, counts))
    decoded = await wait(request, job)
    choices = []
    for i, d in enumerate(decoded):
        generated = job.generated(i)
        logprobs = {"content": chat_logprobs(counter, generated.logprobs_or_empty())} \
            if top is not None and generated is not None else None
        choices.append({"index": i, "message": {"role": "assistant", "content": d.text}, "logprobs": logprobs,
                        "finish_reason": finish_reason(counter, d, sampling, generated), "llmft": d.extra or None})
    return {**meta, "choices": choices, "usage": usage(counter, counts, decoded, job, body.n)}


def refuse_unsupported(body: SamplingRequest) -> None:
    """A field the server does not implement is a 400 naming it, never silently ignored."""
    fields = unsupported_fields(body)
    if fields:
        raise ApiError(400, f"'{fields[0]}' is not supported by this server", param=fields[0],
                       code="unsupported_parameter")


def prompt_list(prompt: Any) -> list:
    """A completion's prompts: texts, or token-id lists (one list of ints is one prompt)."""
    if isinstance(prompt, str):
        prompts: list = [prompt]
    elif prompt and isinstance(prompt[0], int):
        prompts = [list(prompt)]
    else:
        prompts = list(prompt)
    if not prompts or any(len(p) == 0 for p in prompts if not isinstance(p, str)):
        raise ApiError(400, "'prompt' must not be empty", param="prompt")
    return prompts


def encode(counter: Any, prompt: str) -> list[int]:
    from llmft.core.data import encode_prompt

    return encode_prompt(counter, prompt)


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
        max_new_tokens=defaults.max_new_tokens if max_tokens is None else max_tokens,
        temperature=defaults.temperature if body.temperature is None else body.temperature,
        top_p=defaults.top_p if body.top_p is None else body.top_p,
        seed=defaults.seed if body.seed is None else body.seed,
        stop=tuple(stop),
    )


def check_length(served: ServedModel, tokens: int, max_new_tokens: int, param: str) -> int:
    """The prompt's token count; 400 in OpenAI's words when prompt + completion exceed the context."""
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


@dataclasses.dataclass
class Job:
    """A request's decode in flight: its Future (one Decoded per row), its DecodeContext (engine models) and
    the queue its rows' text arrives on while they generate (streamed requests of streaming models)."""

    future: Future
    context: DecodeContext | None = None
    pieces: asyncio.Queue | None = None

    def generated(self, index: int) -> Generated | None:
        """The engine's record of row `index` (token ids, finish, logprobs) when decode generated it directly."""
        results = self.context.results if self.context is not None else []
        return results[index] if len(results) == len(self.future.result()) else None


def completed(decoded: list[Decoded]) -> Future:
    future: Future = Future()
    future.set_result(decoded)
    return future


def start(request: Request, served: ServedModel, body: SamplingRequest, sampling: Sampling, rows: list,
          logprobs: int | None = None, ids: bool = False) -> Job:
    """Start the decode of `rows`: on an engine model each request decodes on its own thread (the engine batches
    the rows of all of them); otherwise through the Batcher, grouped with requests of the same settings."""
    options = body.llmft or {}
    if served.engine is None:
        return Job(submit(request, served, body, sampling, rows))
    context = DecodeContext(top_logprobs=logprobs)
    pieces: asyncio.Queue | None = None
    if body.stream and (served.streams or ids):
        loop, pieces = asyncio.get_running_loop(), asyncio.Queue()
        context.on_text = [_piece_sink(loop, pieces, i) for i in range(len(rows))]
    if ids and options:
        raise ApiError(400, "token-id prompts go to the model as they are; they take no 'llmft' options",
                       param="llmft")
    try:
        if request.app.state.stopping:
            raise RuntimeError("stopping")
        future = request.app.state.pool.submit(decode_in_context, served, rows, sampling, options, context, ids)
    except RuntimeError:
        raise ApiError(503, "the server is shutting down; retry on another instance", "server_error",
                       code="shutting_down") from None
    return Job(future, context, pieces)


def _piece_sink(loop: asyncio.AbstractEventLoop, pieces: asyncio.Queue, index: int) -> Any:
    return lambda text: loop.call_soon_threadsafe(pieces.put_nowait, (index, text))


def decode_in_context(served: ServedModel, rows: list, sampling: Sampling, options: dict, context: DecodeContext,
                      ids: bool) -> list[Decoded]:
    """The pool thread's work: the recipe's decode (or, for token-id prompts, the model itself) with `context`."""
    with decode_context(context):
        if ids:
            generator = served.generator
            results = generator.generate_ids(rows, max_new_tokens=sampling.max_new_tokens,
                                             temperature=sampling.temperature, seed=sampling.seed,
                                             top_p=sampling.top_p, stop=sampling.stop)
            return [Decoded(r.text) for r in results]
        return served.decode(rows, sampling, options)


async def prompt_scores(request: Request, served: ServedModel, encoded: list[list[int]],
                        body: CompletionRequest) -> list[list[TokenLogprobs]]:
    """Each prompt token's logprob and top alternatives (echo with logprobs), computed on the engine's thread."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app.state.pool, served.generator.score, encoded, body.logprobs or 0)


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


async def wait(request: Request, job: Job) -> list[Decoded]:
    """The decode's results; a client that went away cancels its request (queued, or rows in the batch)."""
    waiting = asyncio.wrap_future(job.future)
    try:
        while not (await asyncio.wait({waiting}, timeout=0.25))[0]:
            if await request.is_disconnected():
                raise ApiError(499, "the client closed the request", code="client_closed_request")
    except BaseException:  # a disconnect seen here or by the streaming response (cancellation)
        if job.context is not None:
            job.context.cancelled.set()  # its rows leave the running batch at the next step
        waiting.cancel()  # cancels the queued request; one already in a running batch completes
        raise
    try:
        return waiting.result()
    except asyncio.CancelledError:  # the pool dropped it unstarted at a shutdown
        raise ApiError(503, "the server is shutting down; retry on another instance", "server_error",
                       code="shutting_down") from None
    except LlmftError as exc:
        raise ApiError(400, str(exc).splitlines()[0], param="llmft") from None
    except ShuttingDown:
        raise ApiError(503, "the server is shutting down; retry on another instance", "server_error",
                       code="shutting_down") from None
    except Cancelled:
        raise ApiError(499, "the client closed the request", code="client_closed_request") from None


def finish_reason(counter: Any, decoded: Decoded, sampling: Sampling, generated: Generated | None = None) -> str:
    if "finish_reason" in decoded.extra:
        return str(decoded.extra["finish_reason"])
    if generated is not None and generated.finish_reason:
        return generated.finish_reason
    return "length" if completion_tokens(counter, decoded) >= sampling.max_new_tokens else "stop"


def completion_tokens(counter: Any, decoded: Decoded, generated: Generated | None = None) -> int:
    if "generated_tokens" in decoded.extra:
        return int(decoded.extra["generated_tokens"])
    if generated is not None:
        return len(generated.token_ids)
    return len(counter(decoded.text, add_special_tokens=False)["input_ids"])


def usage(counter: Any, counts: list[int], decoded: list[Decoded], job: Job | None = None, n: int = 1) -> dict:
    prompt = sum(counts) * n
    completion = sum(completion_tokens(counter, d, job.generated(i) if job else None) for i, d in enumerate(decoded))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def token_text(counter: Any, token: int) -> str:
    return counter.decode([token])


def legacy_logprobs(counter: Any, entries: list[TokenLogprobs]) -> dict:
    """The legacy completions `logprobs` object: tokens, token_logprobs, top_logprobs and text_offset (a
    prompt's first token has no logprob: null, as OpenAI's)."""
    tokens, token_logprobs, tops, offsets, offset = [], [], [], [], 0
    for entry in entries:
        text = token_text(counter, entry.token)
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
        token_logprobs.append(entry.logprob)
        tops.append(None if entry.logprob is None else {token_text(counter, t): lp for t, lp in entry.top})
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets}


def chat_logprobs(counter: Any, entries: list[TokenLogprobs]) -> list[dict]:
    """The chat `logprobs.content` list: each token, its logprob and bytes, and its top alternatives."""
    def one(token: int, logprob: float) -> dict:
        text = token_text(counter, token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return [{**one(e.token, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]} for e in entries]


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


async def pieces_as_made(request: Request, job: Job) -> AsyncIterator[tuple[int, str]]:
    """(row, text) as the engine generates it, then the decode's results in `job.future`; a streaming model
    sends each token's text, any other sends each choice's text in pieces once it has finished."""
    if job.pieces is None:
        for i, d in enumerate(await wait(request, job)):
            for piece in stream_pieces(d.text):
                yield i, piece
        return
    waiting = asyncio.ensure_future(wait(request, job))
    try:
        while True:
            getting = asyncio.ensure_future(job.pieces.get())
            await asyncio.wait({getting, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if getting.done():
                for piece in merged([getting.result()], job.pieces):
                    yield piece
                continue
            getting.cancel()
            break
        await waiting  # raises the decode's error, if any
        for piece in merged([], job.pieces):
            yield piece
    finally:
        if not waiting.done():
            waiting.cancel()
            if job.context is not None:
                job.context.cancelled.set()


def merged(pieces: list[tuple[int, str]], queue: asyncio.Queue) -> list[tuple[int, str]]:
    """The pieces so far and every one already queued, one per row: a token per event while the server keeps
    up, several tokens per event when events queue faster than they are sent (under load)."""
    while not queue.empty():
        pieces.append(queue.get_nowait())
    texts: dict[int, str] = {}
    for index, text in pieces:
        texts[index] = texts.get(index, "") + text
    return list(texts.items())


async def stream_completion(request: Request, job: Job, meta: dict, counter: Any, sampling: Sampling,
                            body: CompletionRequest, counts: list[int]) -> AsyncIterator[dict]:
    async for i, piece in pieces_as_made(request, job):
        yield {**meta, "choices": [{"index": i, "text": piece, "logprobs": None, "finish_reason": None}]}
    decoded = job.future.result()
    for i, d in enumerate(decoded):
        generated = job.generated(i)
        logprobs = legacy_logprobs(counter, generated.logprobs_or_empty(with_eos=True)) \
            if body.logprobs is not None and generated is not None else None
        yield {**meta, "choices": [{"index": i, "text": "", "logprobs": logprobs,
                                    "finish_reason": finish_reason(counter, d, sampling, generated),
                                    "llmft": d.extra or None}]}
    if (body.stream_options or {}).get("include_usage"):
        yield {**meta, "choices": [], "usage": usage(counter, counts, decoded, job, body.n)}


async def stream_chat(request: Request, job: Job, meta: dict, counter: Any, sampling: Sampling,
                      body: ChatRequest, counts: list[int]) -> AsyncIterator[dict]:
    meta = {**meta, "object": "chat.completion.chunk"}
    opened: set[int] = set()
    async for i, piece in pieces_as_made(request, job):
        if i not in opened:
            opened.add(i)
            yield {**meta, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}]}
        yield {**meta, "choices": [{"index": i, "delta": {"content": piece}, "logprobs": None,
                                    "finish_reason": None}]}
    decoded = job.future.result()
    for i, d in enumerate(decoded):
        if i not in opened:
            yield {**meta, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}]}
        generated = job.generated(i)
        logprobs = {"content": chat_logprobs(counter, generated.logprobs_or_empty())} \
            if body.logprobs and generated is not None else None
        yield {**meta, "choices": [{"index": i, "delta": {}, "logprobs": logprobs,
                                    "finish_reason": finish_reason(counter, d, sampling, generated),
                                    "llmft": d.extra or None}]}
    if (body.stream_options or {}).get("include_usage"):
        yield {**meta, "choices": [], "usage": usage(counter, counts, decoded, job, body.n)}
