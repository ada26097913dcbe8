"""ASGI middleware in front of the app: the API key on /v1 and the request body size limit."""

import hmac
from collections.abc import Callable
from typing import Any

from llmft.serve.errors import ApiError, send_error


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
                await send_error(send, ApiError(401, message, code="invalid_api_key"))
                return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_error(send, ApiError(413, "request body too large", code="request_too_large"))
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
                await send_error(send, ApiError(413, "request body too large", code="request_too_large"))


class _TooLarge(BaseException):
    """Not an Exception: FastAPI turns any Exception raised while reading a body into a 400."""
