"""The OpenAI-compatible HTTP app (FastAPI) over `ServedModel`s: routes.py answers, batching.py batches.

Every model's `decode(prompts, sampling, options)` runs on the batcher's worker thread and returns one
`Decoded` per prompt; `Decoded.extra` goes into each choice's `llmft` field. FastAPI is imported inside
`create_app` so `llmft` works without the `serve` extra.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llmft.core.errors import LlmftError
from llmft.serve.served import ServedModel

MAX_BODY_BYTES = 1 << 20
MAX_REQUEST_ROWS = 512  # prompts x n of one request: more would hold every other client back for seconds
BODY_TIMEOUT_S = 10.0  # a request whose body has not arrived by then gets 408
DECODE_THREADS = 512  # requests decoding at once on engine models (each thread mostly waits on the engine)


def require_serve_deps() -> None:
    """Import fastapi and uvicorn or fail in one line."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise LlmftError(f"llmft serve needs FastAPI and uvicorn ({exc.name} is missing): "
                         "pip install 'llmft[serve]'") from None


def create_app(models: Sequence[ServedModel], *, api_key: str | None = None, max_batch: int = 32,
               max_body_bytes: int = MAX_BODY_BYTES, window_s: float = 0.005,
               max_request_rows: int = MAX_REQUEST_ROWS, body_timeout_s: float = BODY_TIMEOUT_S) -> Any:
    """The FastAPI app; its lifespan starts the batcher and, on shutdown, lets queued requests finish."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    from llmft.serve.batching import Batcher
    from llmft.serve.errors import add_error_handlers
    from llmft.serve.guard import Guard
    from llmft.serve.routes import router, run_batch

    engines = list({id(m.engine): m.engine for m in models if m.engine is not None}.values())

    def refuse_queued() -> None:
        """For a shutdown: what is generating finishes, what waits gets a 503, new requests are refused."""
        app.state.stopping = True  # (a signal handler: no pool.shutdown, whose lock the loop may hold)
        app.state.batcher.refuse_queued()
        for engine in engines:
            engine.refuse_queued()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.batcher = Batcher(run_batch, max_batch=max_batch, window_s=window_s)
        # Engine models decode each request on a thread of this pool (blocked while the engine batches its rows).
        app.state.pool = ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="llmft-request")
        app.state.refuse_queued, app.state.stopping = refuse_queued, False
        try:
            yield
        finally:
            await asyncio.to_thread(app.state.batcher.close)
            app.state.pool.shutdown(wait=False, cancel_futures=True)
            for engine in engines:
                await asyncio.to_thread(engine.close)

    app = FastAPI(title="llmft", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.models = {m.name: m for m in models}
    app.state.max_request_rows = max_request_rows
    # The worker thread tokenizes too; a private copy keeps the request path off the Rust tokenizer's borrow.
    app.state.counters = {m.name: copy.deepcopy(m.tokenizer) for m in models}
    add_error_handlers(app)
    app.add_middleware(Guard, max_bytes=max_body_bytes, api_key=api_key, body_timeout_s=body_timeout_s)
    app.include_router(router)
    return app
