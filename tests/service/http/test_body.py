"""service.http.body, in process: JSON and the OIP binary framing in, and the body limit
enforced while the body streams in."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import orjson
import pytest
from starlette.requests import Request

import engine
from service.errors import BadRequestError, PayloadTooLargeError
from service.http import body as codec

X = np.arange(6, dtype=np.float32).reshape(2, 3)
Y = np.arange(4, dtype=np.int64)
Z = np.array([1.5], dtype=np.float64)


def _framed(doc: dict, *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    head = orjson.dumps(doc)
    return head + b"".join(chunks), {codec.BINARY_HEADER: str(len(head))}


def _binary(name: str, arr: np.ndarray) -> dict:
    return {"dtype": name, "shape": list(arr.shape), "binary_data_size": arr.nbytes}


# -- request bodies -----------------------------------------------------------------------------


def test_json_body():
    body = codec.parse_body(b'{"inputs": [{"dtype": "float32", "shape": [1], "data": ["NaN"]}]}', {})
    (x,) = engine.decode_inputs(body.doc["inputs"], tensor=body.tensor)
    assert x.dtype == np.float32 and np.isnan(x[0])


@pytest.mark.parametrize("raw", [b"{", b"nope", b"", b"[1]", b'"s"', b"\xff"])
def test_not_json_is_400(raw):
    with pytest.raises(BadRequestError) as info:
        codec.parse_body(raw, {})
    assert info.value.code == "bad_request" and info.value.path == "body"


def test_binary_tensors_are_sliced_in_json_order():
    doc = {
        "network": {"parameters": [{"name": "z", "value": _binary("float64", Z)}]},
        "inputs": {"x": _binary("float32", X), "y": {"dtype": "int64", "shape": [4], "data": Y.tolist()}},
        "sens": [_binary("FP32", X)],
    }
    raw, headers = _framed(doc, Z.tobytes(), X.tobytes(), (X * 2).tobytes())
    body = codec.parse_body(raw, headers)
    inputs = engine.decode_inputs(body.doc["inputs"], tensor=body.tensor)
    np.testing.assert_array_equal(inputs["x"], X)
    np.testing.assert_array_equal(inputs["y"], Y)
    (sens,) = engine.decode_sens(body.doc["sens"], tensor=body.tensor)
    np.testing.assert_array_equal(sens, X * 2)
    network = body.inline_binary(body.doc["network"], "network")
    value = network["parameters"][0]["value"]
    assert "binary_data_size" not in value and base64.b64decode(value["b64"]) == Z.tobytes()
    np.testing.assert_array_equal(engine.decode_tensor(value), Z)


def test_binary_network_has_the_same_id_as_json(tmp_path):
    network = {
        "format": "gradnet/1", "inputs": [{"name": "x"}],
        "parameters": [{"name": "w", "value": {"dtype": "float64", "shape": [1], "data": [1.5]}}],
        "nodes": [{"name": "y", "op": "Mul", "inputs": ["x", "w"]}], "outputs": "y",
    }
    framed_doc = {**network, "parameters": [{"name": "w", "value": _binary("float64", Z)}]}
    raw, headers = _framed(framed_doc, Z.tobytes())
    body = codec.parse_body(raw, headers)
    assert engine.parse_network(body.inline_binary(body.doc)).id == engine.parse_network(network).id


@pytest.mark.parametrize(
    ("header", "extra", "path"),
    [
        ("x", b"", "body"),
        ("-1", b"", "body"),
        ("100000", b"", "body"),
        (None, b"\0" * 4, "body"),  # bytes left over
        (None, b"", "inputs[0].binary_data_size"),  # bytes missing (chunk not sent)
    ],
)
def test_bad_framing_is_400(header, extra, path):
    doc = {"inputs": [_binary("float32", X)]}
    head = orjson.dumps(doc)
    chunk = X.tobytes() if path != "inputs[0].binary_data_size" else X.tobytes()[:-1]
    with pytest.raises(BadRequestError) as info:
        codec.parse_body(head + chunk + extra, {codec.BINARY_HEADER: header or str(len(head))})
    assert info.value.path == path


def test_bad_binary_data_size_is_400():
    doc = {"inputs": [{"dtype": "float32", "shape": [1], "binary_data_size": -4}]}
    raw, headers = _framed(doc)
    with pytest.raises(BadRequestError) as info:
        codec.parse_body(raw, headers)
    assert info.value.path == "inputs[0].binary_data_size"


def test_binary_data_size_without_the_framing_is_400():
    body = codec.parse_body(orjson.dumps({"inputs": [_binary("float32", X)]}), {})
    with pytest.raises(BadRequestError) as info:
        engine.decode_inputs(body.doc["inputs"], tensor=body.tensor)
    assert info.value.path == "inputs[0].binary_data_size"
    network = {"parameters": [{"name": "w", "value": _binary("float64", Z)}]}
    with pytest.raises(BadRequestError) as info:
        body.inline_binary(network, "network")
    assert info.value.path == "network.parameters[0].value.binary_data_size"


def test_binary_size_must_match_the_shape():
    doc = {"inputs": [{"dtype": "float32", "shape": [2, 3], "binary_data_size": 8}]}
    raw, headers = _framed(doc, b"\0" * 8)
    body = codec.parse_body(raw, headers)
    with pytest.raises(engine.TensorError):
        engine.decode_inputs(body.doc["inputs"], tensor=body.tensor)


def test_element_limit_is_checked_before_decoding():
    doc = {"inputs": [{"dtype": "float32", "shape": [1000], "b64": ""}]}
    body = codec.parse_body(orjson.dumps(doc), {}, max_elements=999)
    with pytest.raises(engine.TooLargeError) as info:
        engine.decode_inputs(body.doc["inputs"], tensor=body.tensor)
    assert info.value.code == "too_large" and info.value.path == "inputs[0]"


# -- the body limit -----------------------------------------------------------------------------


def _request(chunks: list[bytes], headers: dict[str, str], received: list[int]) -> Request:
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        received.append(1)
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/grad",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    return Request(scope, receive)


def test_body_under_the_limit():
    received: list[int] = []
    body = asyncio.run(codec.read_body(_request([b"ab", b"cd"], {}, received), 4))
    assert body == b"abcd"


def test_content_length_over_the_limit_reads_nothing():
    received: list[int] = []
    with pytest.raises(PayloadTooLargeError) as info:
        asyncio.run(codec.read_body(_request([b"x" * 10], {"Content-Length": "11"}, received), 10))
    assert received == [] and info.value.code == "too_large"


def test_streamed_body_is_refused_at_the_first_chunk_over():
    received: list[int] = []
    chunks = [b"x" * 4] * 100
    with pytest.raises(PayloadTooLargeError):
        asyncio.run(codec.read_body(_request(chunks, {}, received), 10))
    assert len(received) == 3  # 4 + 4 + 4 > 10: the other 97 chunks are never read


def test_bad_content_length_is_400():
    with pytest.raises(BadRequestError):
        asyncio.run(codec.read_body(_request([b""], {"Content-Length": "ten"}, []), 10))


def test_client_gone_mid_body_is_400_not_a_bug():
    messages = [{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}]

    async def receive():
        return messages.pop(0)

    request = Request({"type": "http", "method": "POST", "path": "/grad", "headers": []}, receive)
    with pytest.raises(BadRequestError) as info:
        asyncio.run(codec.read_body(request, 100))
    assert "disconnected" in info.value.message
