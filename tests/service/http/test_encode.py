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


def _sent(response: encode.PartsResponse) -> bytes:
    """What the response writes, through a fake ASGI send."""
    import asyncio  # noqa: PLC0415

    out: list[bytes] = []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.body":
            out.append(bytes(message["body"]))

    asyncio.run(response({}, None, send))
    return b"".join(out)


def test_a_large_b64_answer_is_written_as_it_is_sent_and_equals_the_whole_text() -> None:
    """A b64 field with a tensor over B64_STREAM_BYTES is a Streamed list of parts (no text of the
    whole tensor is made); sent, it is byte for byte what one orjson text of the same field is."""
    rng = np.random.default_rng(1)
    big = rng.standard_normal(100_003).astype(np.float32)  # not a multiple of the chunk
    grads = [[X, big], [Z, big[:7]], "w"]  # small tensors, a large one, an id beside them
    fields, _ = encode.encode_fields({"gradients": grads}, "b64")
    streamed = fields["gradients"]
    assert isinstance(streamed, encode.Streamed)
    assert any(isinstance(p, encode.B64Part) for p in streamed)
    whole = orjson.dumps(encode.nested_map(grads, lambda a: engine.encode_tensor(a, "b64")))
    assert encode.encoded_size(streamed) == len(whole)
    response = encode.PartsResponse([b'{"gradients":', *streamed, b"}"], encode.JSON_TYPE)
    body = _sent(response)
    assert int(dict(response.raw_headers)[b"content-length"]) == len(body)
    assert body == b'{"gradients":' + whole + b"}"
    back = orjson.loads(body)["gradients"]
    np.testing.assert_array_equal(engine.decode_tensor(back[0][1]), big)


def test_mostly_strings_tells_base64_from_numbers() -> None:
    from service.http.body import mostly_strings  # noqa: PLC0415

    x = np.random.default_rng(2).standard_normal(100_000).astype(np.float32)
    b64 = orjson.dumps({"inputs": [engine.encode_tensor(x, "b64")]})
    numbers = orjson.dumps({"inputs": [{"dtype": "float32", "shape": [x.size], "data": x.tolist()}]})
    assert mostly_strings(b64, len(b64))
    assert not mostly_strings(numbers, len(numbers))
    assert not mostly_strings(b"{}", 2)
