"""service.http.encode, in process: a result's tensors out as json, b64 or binary."""

from __future__ import annotations

import numpy as np
import orjson

import engine
from service.http import encode

X = np.arange(6, dtype=np.float32).reshape(2, 3)
Y = np.arange(4, dtype=np.int64)
Z = np.array([1.5], dtype=np.float64)


def test_encode_json_with_non_finite():
    grads = [np.array([1.0, np.nan, np.inf, -np.inf], np.float32), np.array([[1, 2]], np.int32)]
    fields, chunks = encode.encode_fields({"gradients": grads}, "json")
    assert chunks == []
    assert orjson.loads(fields["gradients"]) == [
        {"dtype": "float32", "shape": [4], "data": [1.0, "NaN", "Infinity", "-Infinity"]},
        {"dtype": "int32", "shape": [1, 2], "data": [1, 2]},
    ]


def test_encode_float32_json_round_trips_exactly():
    x = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    fields, _ = encode.encode_fields({"gradients": x}, "json")
    back = engine.decode_tensor(orjson.loads(fields["gradients"]))
    np.testing.assert_array_equal(back, x)


def test_encode_b64_and_binary():
    grads = [[X, Y], [Z]]
    fields, _ = encode.encode_fields({"gradients": grads}, "b64")
    decoded = [[engine.decode_tensor(t) for t in group] for group in orjson.loads(fields["gradients"])]
    for got, want in zip(sum(decoded, []), [X, Y, Z]):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype

    fields, chunks = encode.encode_fields({"gradients": grads, "value": [X]}, "binary")
    doc = {"network_id": "sha256:0", "gradients": orjson.Fragment(fields["gradients"]),
           "value": orjson.Fragment(fields["value"])}
    out = encode.response(orjson.dumps(doc), chunks, "binary")
    assert out.media_type == "application/octet-stream"
    size = int(out.headers["Inference-Header-Content-Length"])
    head = orjson.loads(out.body[:size])
    assert head["network_id"] == "sha256:0"
    assert head["gradients"][0][0] == {"dtype": "float32", "shape": [2, 3], "binary_data_size": 24}
    assert out.body[size:] == X.tobytes() + Y.tobytes() + Z.tobytes() + X.tobytes()


def test_a_scalar_keeps_its_empty_shape_in_binary() -> None:
    out, chunks = encode.encode_fields({"value": np.float32(2.5).reshape(())}, "binary")
    assert orjson.loads(out["value"]) == {"dtype": "float32", "shape": [], "binary_data_size": 4}
    assert bytes(chunks[0]) == np.float32(2.5).tobytes()
