"""Errors in OpenAI's shape ({"error": {"message", "type", "param", "code"}}) and the app's handlers for them."""

import json
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


class ApiError(Exception):
    """An error answered in OpenAI's shape with its HTTP status."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


async def api_error(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A body that fails the request model: 400 naming the first bad field."""
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


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return JSONResponse(ApiError(exc.status_code, str(exc.detail), code=code).body(), status_code=exc.status_code)


async def crashed(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(ApiError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error").body(),
                        status_code=500)


def add_error_handlers(app: FastAPI) -> None:
    """Every error the app can meet answers in OpenAI's shape."""
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, crashed)


async def send_error(send: Callable, error: ApiError) -> None:
    """The error as a whole raw ASGI response (for middleware, outside FastAPI's handlers)."""
    body = json.dumps(error.body()).encode()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
