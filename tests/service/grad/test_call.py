"""service.grad.call: a /grad body's JSON as one typed call, every bad field refused with its path."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

import engine
from service.grad.call import GradCall, decode_tensors, parse_call
from service.http.body import parse_body

X = {"dtype": "float32", "shape": [2], "data": [1.0, 2.0]}


def test_defaults() -> None:
    call = parse_call({"network_id": "sha256:x", "inputs": [X]}, 250)
    assert call == GradCall(engine.GradOperation(), output_encoding="json", timeout_ms=250.0)


def test_flags_and_options() -> None:
    doc = {"get_all": True, "get_by_list": True, "weights": ["w"], "return_value": True,
           "output_encoding": "binary", "timeout_ms": 12, "inputs": []}
    call = parse_call(doc, 250)
    assert call.spec == engine.GradOperation(get_all=True, get_by_list=True, weights=("w",), return_value=True)
    assert (call.output_encoding, call.timeout_ms) == ("binary", 12.0)
    assert parse_call({"timeout_ms": None}, 250).timeout_ms == 250.0


@pytest.mark.parametrize(("doc", "path"), [
    ({"inputs": [], "bogus": 1}, "bogus"),
    ({"get_all": 1}, "get_all"),
    ({"sens_param": "yes"}, "sens_param"),
    ({"weights": "w"}, "weights"),
    ({"weights": ["w", 3]}, "weights"),
    ({"output_encoding": "xml"}, "output_encoding"),
    ({"timeout_ms": 0}, "timeout_ms"),
    ({"timeout_ms": True}, "timeout_ms"),
    ({"timeout_ms": float("inf")}, "timeout_ms"),
])
def test_bad_fields_are_argument_errors_with_their_path(doc: dict[str, Any], path: str) -> None:
    with pytest.raises(engine.ArgumentError) as info:
        parse_call(doc, 250)
    assert info.value.path == path


def test_tensors_are_decoded_with_the_body_and_its_limit() -> None:
    doc = {"inputs": {"x": X}, "parameters": {"w": X}, "sens": [X], "sens_param": True}
    body = parse_body(orjson.dumps(doc), {})
    call = decode_tensors(parse_call(body.doc, 250), body)
    np.testing.assert_array_equal(call.inputs["x"], [1.0, 2.0])
    assert set(call.parameters) == {"w"} and len(call.extra) == 1
    assert decode_tensors(parse_call({}, 1), parse_body(b'{"parameters": {}}', {})).parameters is None

    small = parse_body(orjson.dumps({"inputs": [X]}), {}, max_elements=1)
    with pytest.raises(engine.TooLargeError) as info:
        decode_tensors(parse_call(small.doc, 250), small)
    assert info.value.path == "inputs[0]"
    with pytest.raises(engine.ArgumentError) as bad:
        decode_tensors(parse_call({}, 1), parse_body(b'{"parameters": [1]}', {}))
    assert bad.value.path == "parameters"
