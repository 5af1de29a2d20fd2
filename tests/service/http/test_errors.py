"""service.http.errors: the one map from errors to HTTP statuses, and the one error body."""

from __future__ import annotations

import orjson
import pytest

import engine
from engine.onnx.errors import (
    InvalidOnnxError,
    OnnxExternalDataError,
    UnsupportedOnnxModelError,
    UnsupportedOnnxOpError,
)
from service import errors
from service.http.errors import error_response, status_of


@pytest.mark.parametrize(("error", "status"), [
    (engine.ShapeError("x"), 422),
    (engine.ArgumentError("x"), 422),
    (engine.NetworkError("x"), 422),
    (engine.TooLargeError("x"), 413),
    (InvalidOnnxError("x"), 400),
    (UnsupportedOnnxOpError("x"), 422),
    (OnnxExternalDataError("x"), 422),
    (UnsupportedOnnxModelError("x"), 422),
    (errors.BadRequestError("x"), 400),
    (errors.NotFoundError("x"), 404),
    (errors.PayloadTooLargeError("x"), 413),
    (errors.QueueFullError("x"), 503),
    (errors.NotReadyError("x"), 503),
    (errors.DrainingError(), 503),
    (errors.RegistryUnavailableError("x"), 503),
    (errors.DeadlineExceededError("x"), 504),
    (errors.WorkerDiedError("x"), 500),
    (errors.EngineFailedError("x"), 500),
    (errors.ServiceError("x"), 500),
])
def test_status_of(error: Exception, status: int) -> None:
    assert status_of(error) == status  # type: ignore[arg-type]


def test_service_errors_are_not_engine_errors() -> None:
    assert not issubclass(errors.ServiceError, engine.GradnetError)
    assert not isinstance(errors.QueueFullError("full"), engine.GradnetError)


def test_the_error_body_and_its_headers() -> None:
    r = error_response(errors.QueueFullError("busy", retry_after=2.2))
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    assert orjson.loads(r.body) == {"error": {"code": "queue_full", "message": "busy", "path": None}}

    draining = error_response(errors.DrainingError())
    assert orjson.loads(draining.body)["error"]["code"] == "draining" and draining.headers["retry-after"] == "5"

    too_large = error_response(errors.PayloadTooLargeError("big", "body"))
    assert too_large.status_code == 413 and too_large.headers["connection"] == "close"

    shape = error_response(engine.ShapeError("bad", "nodes[1]"))
    assert shape.status_code == 422 and "retry-after" not in shape.headers
    assert orjson.loads(shape.body)["error"] == {"code": "shape_mismatch", "message": "bad", "path": "nodes[1]"}
