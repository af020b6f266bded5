"""One JSON error shape for every failure, and the request body size limit.

Every error answer is ``{"error": {"status": 413, "code": "payload_too_large", "message": "...",
...}}`` — validation errors add ``details`` (``[{"loc", "msg", "type"}]``), some errors add
fields of their own (a refused reload adds ``model_version``). Client mistakes (bad parameters,
unknown routes, wrong methods, bodies too large, malformed JSON) get a 4xx; only a real server
fault gets a 500, logged with its traceback by the catch-all handler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(HTTPException):
    """An error answer with a machine-readable ``code`` and optional extra fields."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code
        self.extra = extra


class PayloadTooLargeError(ApiError):
    """The request body is larger than the configured limit (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, "payload_too_large", f"request body larger than {limit} bytes", limit_bytes=limit)


def error_body(status: int, message: str, code: str | None = None, **extra: Any) -> dict[str, Any]:
    """The JSON error envelope."""
    return {"error": {"status": status, "code": code or CODES.get(status, "error"), "message": message, **extra}}


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """HTTPException (ours, FastAPI's, Starlette's 404/405) → the envelope, headers kept."""
    assert isinstance(exc, StarletteHTTPException)
    extra = exc.extra if isinstance(exc, ApiError) else {}
    code = exc.code if isinstance(exc, ApiError) else None
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} not allowed on {request.url.path}"
    return JSONResponse(error_body(exc.status_code, message, code, **extra), exc.status_code, headers=exc.headers)


def validation_details(errors: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors reduced to what a client needs (no echo of the input)."""
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg")), "type": e.get("type")} for e in errors
    ]


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """RequestValidationError → 422 envelope; the message lists every field and problem."""
    assert isinstance(exc, RequestValidationError)
    details = validation_details(exc.errors())
    message = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details) or "invalid request"
    return JSONResponse(error_body(422, message, details=details), 422)


async def unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Anything else is a server fault: logged with its traceback, answered 500 without details."""
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body(500, "internal server error"), 500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)


class BodySizeLimitMiddleware:
    """Pure ASGI middleware: a body above ``limit()`` bytes raises PayloadTooLargeError when read.

    The declared Content-Length is checked at the first read, chunked bodies are counted as they
    arrive; either way the error is raised inside the route's body parsing, so it is answered by
    the handlers above (413 envelope) and counted under the route by the metrics. Bodies that a
    route never reads are not read at all.
    """

    def __init__(self, app: ASGIApp, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        declared = _content_length(scope)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared > limit:
                raise PayloadTooLargeError(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLargeError(limit)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
