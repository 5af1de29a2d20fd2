"""Service-level errors. Engine errors (``engine.GradnetError``) pass through unchanged; these
add what only a server can go wrong with: limits on the body, auth, queueing, workers.

Every error becomes ``{"error": {"code", "message", "path"}}`` with ``status`` as the HTTP code.
"""

from __future__ import annotations

from engine.errors import GradnetError


class ServiceError(GradnetError):
    code = "internal_error"
    status = 500


class BadRequestError(ServiceError):
    """The body is not JSON, or not the binary framing it claims (400)."""

    code = "bad_request"
    status = 400


class UnauthorizedError(ServiceError):
    code = "unauthorized"
    status = 401


class NotFoundError(ServiceError):
    code = "not_found"
    status = 404


class PayloadTooLargeError(ServiceError):
    code = "too_large"
    status = 413


class UnavailableError(ServiceError):
    """Not ready, draining, or the queue is full: retry after ``retry_after`` seconds (503)."""

    code = "unavailable"
    status = 503

    def __init__(self, message: str, path: str | None = None, retry_after: float = 1.0) -> None:
        super().__init__(message, path)
        self.retry_after = retry_after


class QueueFullError(UnavailableError):
    code = "queue_full"


class NotReadyError(UnavailableError):
    code = "not_ready"


class DeadlineExceededError(ServiceError):
    code = "timeout"
    status = 504


class WorkerDiedError(ServiceError):
    code = "worker_died"
    status = 500


class RemoteError(GradnetError):
    """An engine error raised inside a worker process, rebuilt in the server with its code."""

    def __init__(self, code: str, message: str, path: str | None, status: int) -> None:
        super().__init__(message, path)
        self.code = code
        self.status = status
