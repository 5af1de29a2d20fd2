"""Every bad tensor is a 4xx (issue 12, finding 4): shapes no array can have (rank 65, an empty
tensor whose other dimensions are huge) were 500s. The one tensor decoder checks them before any
array is made; a property test over shapes, dtypes, ranks and encodings asserts that decoding
either succeeds or raises the engine's own error (4xx), in process and over HTTP.

Before the fix: ``[2**62, 4, 0]`` and rank 65 raised NumPy's ValueError (500), and an integer
tensor of strings said "got 'U' values"."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from hardening_helpers import assert_healthy, tutorial_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.dtypes import DTYPES
from engine.errors import GradnetError
from engine.tensors import MAX_RANK, decode_tensor

DIMS = st.sampled_from([0, 1, 2, 3, 2**31, 2**32 + 1, 2**59, 2**62, 2**63 - 1, 2**63, 2**64])
SHAPES = st.one_of(st.lists(DIMS, max_size=6), st.lists(st.sampled_from([0, 1, 2]), min_size=60, max_size=80))
DTYPE_NAMES = st.sampled_from(sorted(DTYPES) + ["FP32", "INT64", "BOOL", "complex64", "U8"])


@st.composite
def tensors(draw):
    shape = draw(SHAPES)
    dtype = draw(DTYPE_NAMES)
    form = draw(st.sampled_from(["empty-data", "data", "b64", "nested", "strings", "no-shape"]))
    obj = {"dtype": dtype, "shape": shape}
    if form == "empty-data":
        obj["data"] = []
    elif form == "data":
        obj["data"] = draw(st.lists(st.one_of(st.integers(-3, 3), st.floats(-2, 2), st.booleans()), max_size=8))
    elif form == "b64":
        obj["b64"] = base64.b64encode(bytes(draw(st.integers(0, 64)))).decode()
    elif form == "nested":
        depth = draw(st.integers(0, 70))
        data: list = []
        for _ in range(depth):
            data = [data]
        obj["data"] = data
    elif form == "strings":
        obj["data"] = ["a", "b"]
    else:
        del obj["shape"]
        depth = draw(st.integers(60, 70))
        data = [1.0]
        for _ in range(depth):
            data = [data]
        obj["data"] = data
    return obj


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tensors(), st.sampled_from([None, 4_000_000]))
def test_no_tensor_decodes_to_anything_but_an_array_or_an_engine_error(obj, limit):
    try:
        arr = decode_tensor(obj, "inputs[0]", max_elements=limit)
    except GradnetError as exc:
        assert exc.path and exc.path.startswith("inputs[0]"), exc.path
        assert "'U'" not in exc.message and "'f'" not in exc.message and "'O'" not in exc.message, exc.message
        return
    assert isinstance(arr, np.ndarray)
    assert arr.ndim <= MAX_RANK


@pytest.mark.parametrize("shape", [[2**62, 4, 0], [0, 2**62, 2**62], [1] * 65, [0] * 65, [2**63, 0]])
@pytest.mark.parametrize("where", ["inputs", "sens"])
def test_impossible_shapes_over_http_are_422(hard, hard_server, shape, where):
    body = tutorial_request()
    tensor = {"dtype": "float32", "shape": shape, "data": []}
    if where == "inputs":
        body["inputs"][0] = tensor
    else:
        body["sens"] = tensor
    r = hard.post("/grad", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["path"].startswith(where), err


@pytest.mark.parametrize("then", [None, "Sin", "ReduceSum"])
def test_rank_65_through_reshape_is_a_422(hard, hard_server, then):
    """An output or intermediate of 65 dimensions: XLA builds it, but the answer could not be made
    (before: 500 "number of dimensions must be within [0, 64]" from the worker)."""
    nodes = [{"name": "r", "op": "Reshape", "inputs": ["x"], "attrs": {"shape": [1] * 65}}]
    if then:
        nodes.append({"name": "s", "op": then, "inputs": ["r"]})
    net = {"format": "gradnet/1", "name": "rank65", "inputs": [{"name": "x"}], "nodes": nodes,
           "outputs": ["s" if then else "r"]}
    r = hard.post("/grad", json={"network": net, "inputs": [{"dtype": "float32", "shape": [1], "data": [1.0]}],
                                 "return_value": True})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["path"] == "network.nodes[0]", r.text


def test_integer_data_of_strings_says_strings(hard, hard_server):
    body = tutorial_request()
    body["inputs"][0] = {"dtype": "int32", "shape": [2], "data": ["a", "b"]}
    r = hard.post("/grad", json=body)
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "'U'" not in message and "strings" in message, message


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tensors())
def test_no_tensor_over_http_gets_a_5xx(hard, hard_server, obj):
    body = tutorial_request()
    body["inputs"][0] = obj
    r = hard.post("/grad", json=body)
    assert r.status_code < 500, r.text


def test_still_healthy(hard_server):
    assert_healthy(hard_server, "hardening-key")
