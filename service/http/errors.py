"""Errors as HTTP answers: the one place that maps errors to HTTP statuses.

Every error is ``{"error": {"code", "message", "path"}}``. The engine's errors
(``engine.GradnetError``: the request is invalid) and the service's (:mod:`service.errors`)
know nothing of HTTP; :func:`status_of` gives their status here. Starlette's own (404, 405) and
FastAPI's validation errors are rewritten into the same body; anything else is a bug (500,
logged).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from engine.errors import CodedError, GradnetError

from ..errors import (
    BadRequestError,
    DeadlineExceededError,
    EngineFailedError,
    NotFoundError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServiceError,
    UnavailableError,
    UnsupportedEncodingError,
    WorkerDiedError,
)
from .encode import json_response

log = logging.getLogger("gradserve.app")

#: the errors a request can get (an answer's error is one of these, or a bug)
ERRORS = CodedError

#: engine error code -> HTTP status, where it is not 422 (the request is invalid)
_ENGINE_STATUS = {
    "too_large": 413,  # engine.TooLargeError: a tensor, intermediate or network over a limit
    "invalid_onnx": 400,  # engine.onnx.InvalidOnnxError: the body is not an ONNX model
}

#: service error class -> HTTP status (the most derived class listed wins)
_SERVICE_STATUS: dict[type[ServiceError], int] = {
    BadRequestError: 400,
    NotFoundError: 404,
    RequestTimeoutError: 408,
    PayloadTooLargeError: 413,
    UnsupportedEncodingError: 415,
    EngineFailedError: 500,
    WorkerDiedError: 500,
    UnavailableError: 503,
    DeadlineExceededError: 504,
}


def status_of(exc: CodedError) -> int:
    """The HTTP status of an error: an invalid request is 422 (413 when it is over a limit)."""
    if isinstance(exc, GradnetError):
        return _ENGINE_STATUS.get(exc.code, 422)
    for cls in type(exc).__mro__:
        status = _SERVICE_STATUS.get(cls)  # type: ignore[call-overload]
        if status is not None:
            return status
    return 500


def error_response(exc: CodedError, headers: Mapping[str, str] | None = None) -> Response:
    """``{"error": {"code", "message", "path"}}`` with the error's status (and Retry-After on 503)."""
    extra = dict(headers or {})
    if isinstance(exc, UnavailableError):
        extra["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, (PayloadTooLargeError, RequestTimeoutError)) and exc.path == "body":
        extra["Connection"] = "close"  # the rest of the body was never read
    return json_response({"error": exc.to_dict()}, status_of(exc), extra)


def error(status: int, code: str, message: str, path: str | None = None,
          headers: Mapping[str, str] | None = None) -> Response:
    """An error answer that no exception stands for."""
    return json_response({"error": {"code": code, "message": message, "path": path}}, status, headers)


def bug_response(exc: Exception) -> Response:
    return error(500, "internal_error",
                 f"internal server error ({type(exc).__name__}): this is a bug in gradserve, not in your "
                 "request; it has been logged", None)


def log_error(where: str, exc: CodedError) -> None:
    """Errors that are the service's, not the request's (5xx), are logged."""
    if status_of(exc) >= 500:
        log.warning("%s: %s %s", where, exc.code, exc.message)


async def _on_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ERRORS)
    log_error(f"{request.method} {request.url.path}", exc)
    return error_response(exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    method, path = request.method, request.url.path
    if exc.status_code == 404:
        return error(404, "not_found", f"no route {path}: see /docs for the API", "path")
    if exc.status_code == 405:
        # Starlette names the methods of the first route that matched the path; list them all.
        methods = {m for route in request.app.router.routes
                   if getattr(route, "path_regex", None) is not None and route.path_regex.match(path)
                   for m in (getattr(route, "methods", None) or ()) if m != "HEAD"}
        allowed = ", ".join(sorted(methods)) or (exc.headers or {}).get("Allow", "")
        return error(405, "method_not_allowed", f"{method} is not allowed on {path} (allowed: {allowed})",
                     "method", {"Allow": allowed})
    return error(exc.status_code, "http_error", str(exc.detail), None, exc.headers)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
    path = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    return error(422, "invalid_request", f"{first.get('msg', 'invalid request')}", path)


async def _on_bug(request: Request, exc: Exception) -> Response:
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return bug_response(exc)


def install(app: FastAPI) -> None:
    """The app's exception handlers: every error answer has the one body."""
    app.add_exception_handler(CodedError, _on_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_bug)
