"""UM-Bridge under bad input (issue 16 point 3): every bad request gets UM-Bridge's own error shape,
``{"error": {"type", "message"}}`` (nothing else), with status 400 for the request's faults
(InvalidInput, ModelNotFound, UnsupportedFeature), and the service stays up (a good Evaluate and
the tutorial /grad after all of it). Admission control is /grad's: a full queue refuses an
Evaluate with 503 + Retry-After before its body is read."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import umbridge
from hardening_helpers import HARD_KEY, assert_healthy, matmul_chain, model_name, worker_held

#: x float32[2, 3], y float32[3]; outputs s = Sin(x * y) float32[2, 3], t = ReduceSum(s, 1) float32[2],
#: n = Cast(t, int32) int32[2] (an output without a second derivative)
NET = {
    "format": "gradnet/1",
    "name": "umbridge-hardening",
    "inputs": [{"name": "x", "dtype": "float32", "shape": [2, 3]}, {"name": "y", "dtype": "float32", "shape": [3]}],
    "nodes": [
        {"name": "xy", "op": "Mul", "inputs": ["x", "y"]},
        {"name": "s", "op": "Sin", "inputs": ["xy"]},
        {"name": "t", "op": "ReduceSum", "inputs": ["s"], "attrs": {"axis": [1], "keep_dims": False}},
        {"name": "n", "op": "Cast", "inputs": ["t"], "attrs": {"dtype": "int32"}},
    ],
    "outputs": ["s", "t", "n"],
}
INPUT = [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [1.0, 2.0, 3.0]]


def _basic(key: str = HARD_KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"user:{key}".encode()).decode()}


@pytest.fixture(scope="module")
def name(hard_server) -> str:
    return model_name(hard_server, NET)


@pytest.fixture
def umb(hard_server):
    with httpx.Client(base_url=hard_server.url, headers=_basic(), timeout=60) as c:
        yield c


def umbridge_error(r: httpx.Response, status: int, kind: str, fragment: str = "") -> str:
    """The message of a UM-Bridge error answer, after checking its status, shape and type."""
    assert r.status_code == status, (r.status_code, r.text[:1000])
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] == kind, body
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    assert fragment in message, (fragment, message)
    return message


def _req(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "input": INPUT, "config": {}, **fields}


GRADIENT = {"outWrt": 1, "inWrt": 0, "sens": [1.0, 2.0]}
JACOBIAN = {"outWrt": 0, "inWrt": 1, "vec": [1.0, 0.0, 0.0]}
HESSIAN = {"outWrt": 1, "inWrt1": 0, "inWrt2": 1, "sens": [1.0, 2.0], "vec": [1.0, 0.0, 0.0]}
BASE = {"/Gradient": GRADIENT, "/ApplyJacobian": JACOBIAN, "/ApplyHessian": HESSIAN}
MISSING = object()  # a field left out

# (route, fields replacing the good ones, expected type, a fragment of the message)
CASES = [
    # wrong vector lengths
    ("/Evaluate", {"input": [INPUT[0]]}, "InvalidInput", "Number of input parameters"),
    ("/Evaluate", {"input": [*INPUT, [1.0]]}, "InvalidInput", "Number of input parameters"),
    ("/Evaluate", {"input": [INPUT[0] + [0.7], INPUT[1]]}, "InvalidInput", "Input parameter 0 has invalid length! Expected 6 but got 7"),
    ("/Evaluate", {"input": [INPUT[0], []]}, "InvalidInput", "Input parameter 1 has invalid length! Expected 3 but got 0"),
    ("/Gradient", {**GRADIENT, "sens": [1.0]}, "InvalidInput", "Sensitivity vector sens has invalid length! Expected 2 but got 1"),
    ("/Gradient", {**GRADIENT, "outWrt": 0, "sens": [1.0, 2.0]}, "InvalidInput", "Expected 6 but got 2"),
    ("/ApplyJacobian", {**JACOBIAN, "vec": [1.0, 2.0]}, "InvalidInput", "Vector vec has invalid length! Expected 3 but got 2"),
    ("/ApplyHessian", {**HESSIAN, "vec": [1.0] * 6}, "InvalidInput", "Vector vec has invalid length! Expected 3 but got 6"),
    ("/ApplyHessian", {**HESSIAN, "sens": [1.0] * 6}, "InvalidInput", "Expected 2 but got 6"),
    # bad indexes
    ("/Gradient", {**GRADIENT, "outWrt": 3}, "InvalidInput", "Invalid outWrt index"),
    ("/Gradient", {**GRADIENT, "outWrt": -1}, "InvalidInput", "Invalid outWrt index"),
    ("/Gradient", {**GRADIENT, "inWrt": 2}, "InvalidInput", "Invalid inWrt index"),
    ("/Gradient", {**GRADIENT, "inWrt": "0"}, "InvalidInput", "Invalid inWrt index"),
    ("/Gradient", {**GRADIENT, "inWrt": True}, "InvalidInput", "Invalid inWrt index"),
    ("/Gradient", {**GRADIENT, "inWrt": 0.5}, "InvalidInput", "Invalid inWrt index"),
    ("/Gradient", {"inWrt": MISSING}, "InvalidInput", "Invalid inWrt index"),
    ("/ApplyJacobian", {**JACOBIAN, "outWrt": 3}, "InvalidInput", "Invalid outWrt index"),
    ("/ApplyJacobian", {**JACOBIAN, "inWrt": -1}, "InvalidInput", "Invalid inWrt index"),
    ("/ApplyHessian", {**HESSIAN, "inWrt1": 2}, "InvalidInput", "Invalid inWrt1 index"),
    ("/ApplyHessian", {**HESSIAN, "inWrt2": None}, "InvalidInput", "Invalid inWrt2 index"),
    # wrong value types
    ("/Evaluate", {"input": "0.1,0.2"}, "InvalidInput", "list of lists"),
    ("/Evaluate", {"input": [INPUT[0], 5]}, "InvalidInput", "list of lists"),
    ("/Evaluate", {"input": [INPUT[0], ["1", 2.0, 3.0]]}, "InvalidInput", "flat list of numbers"),
    ("/Evaluate", {"input": [INPUT[0], [None, 2.0, 3.0]]}, "InvalidInput", "flat list of numbers"),
    ("/Evaluate", {"input": [INPUT[0], [True, 2.0, 3.0]]}, "InvalidInput", "flat list of numbers"),
    ("/Evaluate", {"input": [INPUT[0], [[1.0], 2.0, 3.0]]}, "InvalidInput", "flat list of numbers"),
    ("/Gradient", {**GRADIENT, "sens": {"0": 1.0}}, "InvalidInput", "must be a list of numbers"),
    ("/Evaluate", {"config": "fast"}, "InvalidInput", "'config' must be an object"),
    ("/Gradient", {"outWrt": 2, "sens": [0.5, 1.0]}, "InvalidInput", "int32 tensor: its numbers must be whole"),
    ("/Evaluate", {"input": [INPUT[0], [1e300, 2.0, 3.0]]}, "InvalidInput", "beyond the range of float32"),
    # unsupported features
    ("/Evaluate", {"config": {"level": 2}}, "UnsupportedFeature", "no config"),
    ("/ApplyHessian", {**HESSIAN, "outWrt": 2}, "UnsupportedFeature", "only a float output"),
    ("/EvaluateShMem", {"shmem_name": "/umbridge", "tid": "1"}, "UnsupportedFeature", "no shared memory"),
    ("/TestShMem", {"tid": "1"}, "UnsupportedFeature", "no shared memory"),
]


@pytest.mark.parametrize(("route", "fields", "kind", "fragment"), CASES,
                         ids=[f"{r}-{i}" for i, (r, *_) in enumerate(CASES)])
def test_bad_requests_get_umbridges_error(umb, name, route, fields, kind, fragment):
    doc = _req(name, **BASE.get(route, {}))
    doc.update(fields)
    doc = {k: v for k, v in doc.items() if v is not MISSING}
    umbridge_error(umb.post(route, json=doc), 400, kind, fragment)


@pytest.mark.parametrize("route", ["/InputSizes", "/OutputSizes", "/ModelInfo", "/Evaluate", "/Gradient",
                                   "/ApplyJacobian", "/ApplyHessian"])
@pytest.mark.parametrize("model", ["0" * 64, "wrong_model_name", 42, None, "SHA256:" + "0" * 64])
def test_unknown_models(umb, route, model):
    doc = {"config": {}} if model is None else {"name": model, "config": {}}
    umbridge_error(umb.post(route, json=doc), 400, "ModelNotFound")


def test_a_network_without_declared_shapes_is_no_model(umb, hard_server):
    with hard_server.client(HARD_KEY) as c:
        unshaped = {**NET, "name": "umbridge-hardening-unshaped", "inputs": [{"name": "x"}, {"name": "y"}]}
        network_id = c.post("/networks", json=unshaped).json()["network_id"]
    umbridge_error(umb.post("/InputSizes", json={"name": network_id.removeprefix("sha256:")}), 400, "ModelNotFound",
                   "does not declare its whole shape")
    assert network_id.removeprefix("sha256:") not in umb.get("/Info").json()["models"]


@pytest.mark.parametrize(("body", "fragment"), [
    (b"", "not JSON"), (b"{", "not JSON"), (b"name=abc", "not JSON"), (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "JSON object"), (b'"Evaluate"', "JSON object"), (b"null", "JSON object"),
    (b'{"name": "' + b"a" * 64 + b'", "input": [[1.0, 2.0], [NaN]]}', "not JSON"),
])
@pytest.mark.parametrize("route", ["/Evaluate", "/Gradient", "/ApplyHessian", "/InputSizes"])
def test_malformed_json_is_a_400(umb, route, body, fragment):
    umbridge_error(umb.post(route, content=body, headers={"Content-Type": "application/json"}), 400,
                   "InvalidInput", fragment)


def test_methods_keys_and_limits(hard_server, name):
    base = hard_server.url
    umbridge_error(httpx.get(f"{base}/Evaluate", headers=_basic()), 405, "InvalidInput", "allowed: POST")
    umbridge_error(httpx.post(f"{base}/Evaluate", json=_req(name)), 401, "Unauthorized")
    umbridge_error(httpx.post(f"{base}/Evaluate", json=_req(name), headers=_basic("not-the-key")), 401, "Unauthorized")
    umbridge_error(httpx.post(f"{base}/Evaluate", json=_req(name), headers={"Authorization": "Basic ###"}), 401,
                   "Unauthorized")
    umbridge_error(httpx.get(f"{base}/Info"), 401, "Unauthorized")
    # over the body limit: 413, in UM-Bridge's shape, before the body is read
    big = b"x" * (hard_server.settings["max_body_bytes"] + 1)
    umbridge_error(httpx.post(f"{base}/Evaluate", content=big, headers=_basic(), timeout=60), 413, "InvalidInput")


def test_the_client_raises_with_the_servers_message(hard_server, name):
    model = umbridge.HTTPModel(hard_server.url.replace("://", f"://user:{HARD_KEY}@"), name)
    with pytest.raises(Exception, match="InvalidInput: Input parameter 0 has invalid length"):
        model([INPUT[0][:5], INPUT[1]])
    with pytest.raises(Exception, match="UnsupportedFeature"):
        model.apply_hessian(2, 0, 0, INPUT, [1.0, 1.0], [1.0] * 6)


def test_the_service_is_up_after_all_of_it(umb, hard_server, name):
    out = umb.post("/Evaluate", json=_req(name))
    assert out.status_code == 200, out.text
    s = np.sin(np.reshape(INPUT[0], (2, 3)) * np.array(INPUT[1]))
    np.testing.assert_allclose(out.json()["output"][0], s.ravel(), rtol=1e-6)
    np.testing.assert_allclose(out.json()["output"][2], np.trunc(s.sum(axis=1)), rtol=0)
    assert_healthy(hard_server, HARD_KEY)


N = 1000


def test_a_full_queue_refuses_an_evaluate_before_reading_its_body(server_factory):
    """/grad's admission control: with the one worker's queue full, an Evaluate whose body is not
    even JSON gets 503 + Retry-After in UM-Bridge's shape (not a 400: the body was never parsed)."""
    server = server_factory(workers=1, queue_size=1, timeout_ms=60_000)
    x = (np.random.default_rng(1).standard_normal(N * N) * 0.03).astype(np.float32)
    with server.client(timeout=120) as c:
        name = c.post("/networks", json=matmul_chain(12, N, "umbridge-matmul-chain")).json()["network_id"]
        slow = orjson.dumps({"name": name.removeprefix("sha256:"), "input": [x], "config": {}},
                            option=orjson.OPT_SERIALIZE_NUMPY)
        assert c.post("/Evaluate", content=slow).status_code == 200  # compiled: now only compute
        with worker_held(server, lambda: c.post("/Evaluate", content=slow),
                         "the slow Evaluate to occupy the worker") as other:
            t0 = time.monotonic()
            refused = other.post("/Evaluate", content=b"this is not JSON")
            elapsed = time.monotonic() - t0
            umbridge_error(refused, 503, "Unavailable", "queue_size 1")
            assert int(refused.headers["retry-after"]) >= 1 and elapsed < 5
    assert_healthy(server)
