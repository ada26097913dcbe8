"""ASGI middleware in front of the app: the API key on /v1, the request body's size limit and its deadline."""

import asyncio
import hmac
from collections.abc import Callable
from typing import Any

from llmft.serve.errors import ApiError, send_error


class Guard:
    """ASGI middleware: the API key on /v1 (constant-time compare), the body size limit (413) and the time a
    body may take to arrive (408).

    Pure ASGI rather than an `@app.middleware` function, whose task group would wrap the too-large signal.
    """

    def __init__(self, app: Any, max_bytes: int, api_key: str | None = None, body_timeout_s: float = 10.0):
        self.app, self.max_bytes, self.body_timeout_s = app, max_bytes, body_timeout_s
        self.expected = api_key.encode() if api_key else None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.expected is not None:
            header = headers.get(b"authorization", b"")
            given = header[7:].strip() if header[:7].lower() == b"bearer " else b""
            authorized = hmac.compare_digest(given, self.expected)
            scope["llmft_authorized"] = authorized  # /health tells more to a caller with the key
            if scope["path"].startswith("/v1") and not authorized:
                message = "incorrect API key provided" if given else "missing API key"
                await send_error(send, ApiError(401, message, code="invalid_api_key"))
                return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_error(send, ApiError(413, "request body too large", code="request_too_large"))
            return
        seen = 0
        started = False
        body_done = False

        async def counting_receive() -> dict:
            nonlocal seen, body_done
            if body_done:  # later reads wait for a disconnect, as long as a response streams
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except asyncio.TimeoutError:
                raise _SlowBody from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
                body_done = not message.get("more_body", False)
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await send_error(send, ApiError(413, "request body too large", code="request_too_large"))
        except _SlowBody:
            if not started:
                await send_error(send, ApiError(408, f"the request body did not arrive within "
                                                     f"{self.body_timeout_s:g} s", code="request_timeout"))


class _TooLarge(BaseException):
    """Not an Exception: FastAPI turns any Exception raised while reading a body into a 400."""


class _SlowBody(BaseException):
    """The body stopped arriving (a BaseException for the same reason as _TooLarge)."""
