"""Hostile inputs (issue item 2): each is refused with a clear JSON error (code and path checked)
and the service is still healthy afterwards (readiness 200, the tutorial gradient is right).

All run against the shared server (``hard_server``: limits ``HARD_LIMITS``, one worker)."""

from __future__ import annotations

import base64
import time

import numpy as np
import orjson
import pytest
from hardening_helpers import HARD_KEY, HARD_LIMITS, assert_healthy, mib, tutorial_request

from tests.support.api_contract import decode_response, error_of
from tests.support.raw_http import grad_request_head, raw_request, response_json

LIMIT = HARD_LIMITS["max_body_bytes"]
HEAD = grad_request_head(HARD_KEY)


def _with_x(request, x):
    request["inputs"] = [x, request["inputs"][1]]
    return request


# -- bodies over the limit ------------------------------------------------------------------------


def test_chunked_body_over_the_limit_is_refused_while_streaming(hard_server, figures):
    """No Content-Length, Transfer-Encoding: chunked, 4x the limit offered: the 413 arrives while
    the client is still sending, after about the limit has been read."""
    chunk = b"x" * 2**16
    framed = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    offered = 4 * LIMIT
    t0 = time.perf_counter()
    raw, sent, sent_all = raw_request(hard_server.url, HEAD + "Transfer-Encoding: chunked\r\n\r\n",
                                      [framed] * (offered // len(chunk)))
    took = time.perf_counter() - t0
    assert not sent_all, "the client sent the whole over-limit body before the server answered"
    status, headers, body = response_json(raw)
    assert status == 413, raw[:300]
    assert body["error"]["code"] == "too_large" and body["error"]["path"] == "body"
    assert str(LIMIT) in body["error"]["message"]
    assert headers.get("connection") == "close"
    assert sent < offered
    figures["chunked_413_seconds"] = round(took, 3)
    figures["chunked_413_sent_mib"] = f"{mib(sent)} of {mib(offered)} offered (limit {mib(LIMIT)})"
    assert_healthy(hard_server, HARD_KEY)


def test_lying_content_length_over_the_limit_is_refused_before_the_body(hard_server, figures):
    """Content-Length claims 1 TB: refused from the header alone, while the client sends."""
    chunk = b"y" * 2**16
    t0 = time.perf_counter()
    raw, sent, sent_all = raw_request(hard_server.url, HEAD + f"Content-Length: {10**12}\r\n\r\n",
                                      [chunk] * (2 * LIMIT // len(chunk)))
    took = time.perf_counter() - t0
    assert not sent_all
    status, _, body = response_json(raw)
    assert status == 413 and body["error"]["code"] == "too_large" and body["error"]["path"] == "body"
    assert str(10**12) in body["error"]["message"]
    figures["content_length_413_seconds"] = round(took, 3)
    figures["content_length_413_sent_mib"] = mib(sent)
    assert_healthy(hard_server, HARD_KEY)


def test_lying_content_length_under_the_limit_reads_no_further(hard_server):
    """Content-Length says 40 bytes of a longer document: the server reads exactly 40 bytes and
    answers (a truncated JSON document: 400) without waiting for more. What the client sends after
    that is not this request's body: uvicorn reads it as the next request on the connection and
    answers that protocol error with its own 400 (plain text) and closes the connection."""
    body = orjson.dumps(tutorial_request())
    raw, sent, _ = raw_request(hard_server.url, HEAD + "Content-Length: 40\r\n\r\n", [body[:40]])
    assert sent == 40
    status, _, answer = response_json(raw)
    assert status == 400, raw[:300]
    assert answer["error"]["code"] == "bad_request" and answer["error"]["path"] == "body"
    # the same lie with 3x the limit following at once: still a 400 and a closed connection
    padding = b" " * (3 * LIMIT)
    raw, _, sent_all = raw_request(hard_server.url, HEAD + "Content-Length: 40\r\n\r\n",
                                   [body[:40], body[40:], *[padding[i:i + 2**16] for i in range(0, len(padding), 2**16)]])
    assert not sent_all
    assert raw.startswith(b"HTTP/1.1 400"), raw[:300]
    assert_healthy(hard_server, HARD_KEY)


# -- tensors and networks over their limits -------------------------------------------------------


@pytest.mark.parametrize("form", ["data", "b64", "parameter", "sens"])
def test_shape_of_a_trillion_elements_with_tiny_data(hard, hard_server, form):
    request = tutorial_request()
    huge = {"dtype": "float32", "shape": [10**6, 10**6]}
    if form == "data":
        request = _with_x(request, {**huge, "data": [1.0]})
        path = "inputs[0]"
    elif form == "b64":
        request = _with_x(request, {**huge, "b64": base64.b64encode(b"\0" * 8).decode()})
        path = "inputs[0]"
    elif form == "parameter":
        request["network"]["parameters"][0]["value"] = {**huge, "data": [1.0]}
        path = "network.parameters[0].value"
    else:
        request.update(sens_param=True, sens={**huge, "data": [1.0]})
        path = "sens"
    t0 = time.perf_counter()
    err = error_of(hard.post("/grad", json=request), 413, "too_large")
    assert time.perf_counter() - t0 < 2.0
    assert err["path"] == path, err
    assert "1000000000000" in err["message"]
    assert_healthy(hard_server, HARD_KEY)


def test_nested_lists_10000_deep(hard, hard_server):
    """orjson refuses it as JSON (depth limit): 400, not a crash. 100 deep is JSON, but a tensor
    over 64 levels is refused by the codec (422) and a deep attr by the attr check (422)."""
    deep = b"[" * 10_000 + b"1" + b"]" * 10_000
    body = b'{"network_id": "sha256:0", "inputs": [{"dtype": "float32", "data": ' + deep + b"}]}"
    err = error_of(hard.post("/grad", content=body, headers={"Content-Type": "application/json"}), 400,
                   "bad_request")
    assert err["path"] == "body" and "depth" in err["message"]
    nested: object = 1.0
    for _ in range(100):
        nested = [nested]
    request = _with_x(tutorial_request(), {"dtype": "float32", "data": nested})
    err = error_of(hard.post("/grad", json=request), 422, "invalid_tensor")
    assert err["path"] == "inputs[0].data" and "64" in err["message"]
    request = tutorial_request()
    request["network"]["nodes"].append({"name": "s", "op": "ReduceSum", "inputs": ["out"], "attrs": {"axis": nested}})
    request["network"]["outputs"] = ["s"]
    err = error_of(hard.post("/grad", json=request), 422, "bad_attr")
    assert err["path"] == "network.nodes[2].attrs.axis"
    assert_healthy(hard_server, HARD_KEY)


def test_a_network_of_a_million_nodes(hard, hard_server, figures):
    nodes = [{"name": f"n{i}", "op": "Neg", "inputs": [f"n{i - 1}" if i else "x"]} for i in range(10**6)]
    network = {"format": "gradnet/1", "inputs": [{"name": "x"}], "nodes": nodes, "outputs": ["n999999"]}
    x = {"dtype": "float32", "shape": [1], "data": [1.0]}
    body = orjson.dumps({"network": network, "inputs": [x]})
    del nodes, network
    assert len(body) < LIMIT  # so that max_nodes, not the body limit, refuses it
    t0 = time.perf_counter()
    r = hard.post("/grad", content=body, headers={"Content-Type": "application/json"})
    took = time.perf_counter() - t0
    err = error_of(r, 413, "too_large")
    assert err["path"] == "network.nodes" and str(HARD_LIMITS["max_nodes"]) in err["message"]
    assert took < 15.0  # JSON parsing of the ~48 MiB body dominates (about 2.5 s on a slow core)
    figures["million_nodes_413_seconds"] = round(took, 2)
    figures["million_nodes_body_mib"] = mib(len(body))
    body = orjson.dumps(orjson.loads(body)["network"])
    err = error_of(hard.post("/networks", content=body, headers={"Content-Type": "application/json"}), 413, "too_large")
    assert err["path"] == "nodes"
    assert_healthy(hard_server, HARD_KEY)


# -- invalid graphs and tensors -------------------------------------------------------------------


def test_cycles(hard, hard_server):
    request = tutorial_request()
    request["network"]["nodes"][0]["inputs"] = ["x", "out"]
    err = error_of(hard.post("/grad", json=request), 422, "cycle")
    assert err["path"] == "network.nodes[0]" and "'xz'" in err["message"] and "'out'" in err["message"]
    # a self-loop, and a 5,000-node ring (the cycle search is iterative: no recursion limit)
    request = tutorial_request()
    request["network"]["nodes"][1]["inputs"] = ["out", "y"]
    err = error_of(hard.post("/grad", json=request), 422, "cycle")
    assert err["path"] == "network.nodes[1]"
    ring = [{"name": f"r{i}", "op": "Neg", "inputs": [f"r{(i - 1) % 5000}"]} for i in range(5000)]
    network = {"format": "gradnet/1", "inputs": [{"name": "x"}], "nodes": ring, "outputs": ["r0"]}
    err = error_of(hard.post("/networks", json=network), 422, "cycle")
    assert err["path"] == "nodes[0]"
    assert_healthy(hard_server, HARD_KEY)


@pytest.mark.parametrize(("b64", "what"), [
    ("!!not base64!!", "not valid base64"),
    ("AAAA=A==", "not valid base64"),
    (base64.b64encode(b"\0" * 20).decode(), "got 20 bytes of data, expected 24"),
    (base64.b64encode(b"\0" * 28).decode(), "got 28 bytes of data, expected 24"),
    ("", "got 0 bytes of data, expected 24"),
])
def test_bad_b64(hard, hard_server, b64, what):
    request = _with_x(tutorial_request(), {"dtype": "float32", "shape": [2, 3], "b64": b64})
    err = error_of(hard.post("/grad", json=request), 422, "invalid_tensor")
    assert err["path"] == "inputs[0].b64" and what in err["message"], err
    request = tutorial_request()
    request["network"]["parameters"][0]["value"] = {"dtype": "float32", "shape": [2, 3], "b64": b64}
    err = error_of(hard.post("/networks", json=request["network"]), 422, "invalid_tensor")
    assert err["path"] == "parameters[0].value.b64"
    assert_healthy(hard_server, HARD_KEY)


def test_binary_framing_with_a_wrong_header(hard, hard_server):
    request = tutorial_request()
    raw = np.asarray(request["inputs"][0]["data"], dtype="<f4").tobytes()
    request["inputs"][0] = {"dtype": "float32", "shape": [2, 3], "binary_data_size": len(raw)}
    json_part = orjson.dumps(request)
    body = json_part + raw
    ok = hard.post("/grad", content=body, headers={"Inference-Header-Content-Length": str(len(json_part)),
                                                   "Content-Type": "application/octet-stream"})
    assert ok.status_code == 200, ok.text
    for header in (str(len(json_part) + 1), str(len(json_part) - 1), str(len(body) + 1), "-1", "0",
                   "twelve", "1e3", str(2**70), ""):
        r = hard.post("/grad", content=body, headers={"Inference-Header-Content-Length": header,
                                                      "Content-Type": "application/octet-stream"})
        err = error_of(r, 400, "bad_request")
        assert err["path"] in ("body", "inputs[0].binary_data_size"), (header, err)
    assert_healthy(hard_server, HARD_KEY)


@pytest.mark.parametrize(("dtype", "value"), [
    ("float16", 1e6), ("float16", -65520.0), ("float32", 3.5e38), ("bfloat16", 3.5e38),
    ("int8", 128), ("uint8", -1), ("int32", 2**31), ("uint64", 2**64),
])
def test_values_out_of_range_for_the_dtype(hard, hard_server, dtype, value):
    request = _with_x(tutorial_request(), {"dtype": dtype, "shape": [2, 3], "data": [value, 1, 1, 1, 1, 1]})
    err = error_of(hard.post("/grad", json=request), 422, "invalid_tensor")
    assert err["path"] == "inputs[0].data", err
    # orjson reads an integer beyond 64 bits as a float: the codec then says it is not an integer
    assert "out of range" in err["message"] or (value == 2**64 and "integers" in err["message"]), err
    assert_healthy(hard_server, HARD_KEY)


def test_float_beyond_double_is_not_json(hard, hard_server):
    body = orjson.dumps(tutorial_request()).replace(b"0.8", b"1e400", 1)
    err = error_of(hard.post("/grad", content=body, headers={"Content-Type": "application/json"}), 400, "bad_request")
    assert err["path"] == "body"
    assert_healthy(hard_server, HARD_KEY)


@pytest.mark.parametrize("sens", [
    {"dtype": "float32", "shape": [3, 2], "data": [1] * 6},
    {"dtype": "float32", "shape": [7], "data": [1] * 7},
    {"dtype": "float64", "shape": [2, 3], "data": [1] * 6},
    [{"dtype": "float32", "shape": [2, 3], "data": [1] * 6}] * 2,
])
def test_sens_of_the_wrong_shape(hard, hard_server, sens):
    request = {**tutorial_request(), "sens_param": True, "sens": sens}
    err = error_of(hard.post("/grad", json=request), 422, "bad_sens")
    assert err["path"] == "sens"
    assert_healthy(hard_server, HARD_KEY)


def test_nan_in_inputs_is_computed_and_returned_as_nan(hard, hard_server):
    """NaN is a value, not an error: d(xz @ y)/dx = z * rowsum(y), so a NaN in y's first row makes
    the first column of the gradient NaN, written "NaN" in JSON (and a real NaN in b64)."""
    request = tutorial_request()
    y = request["inputs"][1]
    y["data"] = ["NaN", *y["data"][1:]]
    r = hard.post("/grad", json=request)
    assert r.status_code == 200, r.text
    data = r.json()["gradients"]["data"]
    assert data[0] == "NaN" and data[3] == "NaN", data
    assert data[1] == pytest.approx(2.7) and data[2] == pytest.approx(3.6)
    r = hard.post("/grad", json={**request, "output_encoding": "b64"})
    assert r.status_code == 200
    grad = decode_response(r)["gradients"]
    assert np.isnan(grad[:, 0]).all() and np.isfinite(grad[:, 1:]).all()
    request = _with_x(tutorial_request(), {"dtype": "float32", "shape": [2, 3],
                                           "data": ["NaN", "Infinity", "-Infinity", 1, 2, 3]})
    r = hard.post("/grad", json={**request, "return_value": True})
    assert r.status_code == 200, r.text
    assert "NaN" in r.json()["value"][0]["data"]
    assert_healthy(hard_server, HARD_KEY)


@pytest.mark.parametrize(("op", "attrs", "x"), [
    ("BroadcastTo", {"shape": [10**6, 10**6]}, {"dtype": "float32", "shape": [1], "data": [1.0]}),
    ("Tile", {"multiples": [10**9, 10**9]}, {"dtype": "float32", "shape": [1, 1], "data": [[1.0]]}),
    ("Tile", {"multiples": [2**62, 2**62]}, {"dtype": "float32", "shape": [1, 1], "data": [[1.0]]}),
    ("OneHot", {"depth": 10**12}, {"dtype": "int32", "shape": [4], "data": [0, 1, 2, 3]}),
])
def test_attrs_that_would_allocate_terabytes(hard, hard_server, figures, op, attrs, x):
    """The intermediate's size is checked by abstract evaluation in the server, before any
    compile: 413 at once, and the worker never sees the job."""
    network = {"format": "gradnet/1", "inputs": [{"name": "x"}],
               "nodes": [{"name": "big", "op": op, "inputs": ["x"], "attrs": attrs},
                         {"name": "s", "op": "ReduceSum", "inputs": ["big"]}],
               "outputs": ["s"]}
    t0 = time.perf_counter()
    r = hard.post("/grad", json={"network": network, "inputs": [x]})
    took = time.perf_counter() - t0
    err = error_of(r, 413, "too_large")
    assert err["path"] in ("nodes[0]", "network.nodes[0]"), err
    assert took < 2.0, took
    figures[f"huge_attr_413_ms_{op}"] = round(took * 1e3, 1)
    assert_healthy(hard_server, HARD_KEY)
