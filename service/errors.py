"""The service's own errors: what only a server can go wrong with (the body's framing and size,
auth, the registry, queueing, workers, deadlines, draining).

They are not engine errors: both branch from ``engine.errors.CodedError`` (code, message,
path), but an invalid request is an ``engine.GradnetError`` and a full queue a
:class:`QueueFullError`; nothing here knows HTTP. :mod:`service.http.errors` maps both
hierarchies to HTTP statuses and to the one error body ``{"error": {"code", "message", "path"}}``.
"""

from __future__ import annotations

from engine.errors import CodedError


class ServiceError(CodedError):
    """Base class of the service's errors."""

    code = "internal_error"


class BadRequestError(ServiceError):
    """The body is not JSON, or not the binary framing it claims."""

    code = "bad_request"


class NotFoundError(ServiceError):
    """No such network is registered with this API key."""

    code = "not_found"


class PayloadTooLargeError(ServiceError):
    """The request body is over ``--max-body-bytes``."""

    code = "too_large"


class UnsupportedEncodingError(ServiceError):
    """The body's Content-Encoding is not one the server decodes (identity, gzip, deflate)."""

    code = "unsupported_encoding"


class RequestTimeoutError(ServiceError):
    """The request's body did not arrive in time (``--body-timeout-s``, ``--min-body-rate``)."""

    code = "request_timeout"


class UnavailableError(ServiceError):
    """The service cannot take this request now: retry after ``retry_after`` seconds."""

    code = "unavailable"

    def __init__(self, message: str, path: str | None = None, retry_after: float = 1.0) -> None:
        super().__init__(message, path)
        self.retry_after = retry_after


class QueueFullError(UnavailableError):
    """Every worker's queue is full."""

    code = "queue_full"


class MemoryBudgetError(UnavailableError):
    """The bodies of the requests in flight would pass ``--max-inflight-bytes``."""

    code = "memory_budget"


class NotReadyError(UnavailableError):
    """The workers are starting, restarting or shutting down."""

    code = "not_ready"


class DrainingError(NotReadyError):
    """The service is draining (shutting down) and takes no new requests."""

    code = "draining"

    def __init__(self, message: str = "the service is draining (shutting down): retry on another instance",
                 path: str | None = None, retry_after: float = 5.0) -> None:
        super().__init__(message, path, retry_after)


class RegistryUnavailableError(UnavailableError):
    """The registry's file was deleted, replaced or corrupted under the running server."""

    code = "registry_unavailable"


class DeadlineExceededError(ServiceError):
    """``timeout_ms`` passed before the result."""

    code = "timeout"


class WorkerDiedError(ServiceError):
    """The worker computing (or holding) the request died."""

    code = "worker_died"


class EngineFailedError(ServiceError):
    """The engine failed in a worker in a way that is not the request's fault (a bug, or the
    device ran out of memory)."""

    code = "internal_error"
