"""End to end over HTTP against real servers: the tutorial, the registry routes, every error row
of API.md §5, and the lifecycle (not ready, queue full, a worker killed, drain on SIGTERM)."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from tests.support.api_contract import (
    BINARY_HEADER,
    ENCODINGS,
    assert_close,
    chain_request,
    decode_response,
    encode_request,
    error_of,
    metric,
)
from tests.support.raw_http import grad_request_head, raw_request
from tests.support.servers import KEY_A, KEY_B, LIMITS

_registered: dict[str, str] = {}


def _network_id(client: httpx.Client, network: dict[str, Any]) -> str:
    key = orjson.dumps(network, option=orjson.OPT_SORT_KEYS).decode()
    if key not in _registered:
        r = client.post("/networks", json=network)
        assert r.status_code in (200, 201), r.text
        _registered[key] = r.json()["network_id"]
    return _registered[key]


# -- the tutorial -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["inline", "by_id"])
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("index", range(8))
def test_tutorial(client, tutorial, index, encoding, mode):
    case = tutorial[index]
    request = dict(case["request"])
    if mode == "by_id":
        request["network_id"] = _network_id(client, request.pop("network"))
    body, headers = encode_request(request, encoding)
    r = client.post("/grad", content=body, headers=headers)
    assert r.status_code == 200, r.text
    doc = decode_response(r)
    assert_close(doc["gradients"], case["expected_gradients"])
    assert doc["network_id"].startswith("sha256:") and len(doc["network_id"]) == 71
    assert set(doc["timing_ms"]) == {"queue", "compile", "compute", "decode", "encode"}
    assert all(isinstance(v, float) and v >= 0 for v in doc["timing_ms"].values())
    assert "value" not in doc
    flags = (request.get("get_all", False), request.get("get_by_list", False))
    names = doc["gradient_names"]
    if flags == (False, False):
        assert names == "x"
    elif flags == (True, True):
        assert names[0] == ["x", "y"]
    elif flags == (True, False):
        assert names == ["x", "y"]


def test_inline_and_registered_ids_agree(client, tutorial):
    request = tutorial[0]["request"]
    inline = client.post("/grad", json=request).json()["network_id"]
    assert inline == _network_id(client, request["network"])


def test_inputs_by_name_and_return_value(client, tutorial):
    request = dict(tutorial[1]["request"])
    x, y = request["inputs"]
    request["inputs"] = {"y": y, "x": x}
    request["return_value"] = True
    r = client.post("/grad", json=request)
    assert r.status_code == 200, r.text
    doc = decode_response(r)
    assert_close(doc["gradients"], tutorial[1]["expected_gradients"])
    (out,) = doc["value"]
    xs, ys = (np.asarray(t["data"], np.float32).reshape(t["shape"]) for t in (x, y))
    np.testing.assert_allclose(out, xs @ ys, rtol=1e-5)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_non_finite_both_ways(client, encoding):
    request = {
        "network": {"format": "gradnet/1", "inputs": [{"name": "x"}],
                    "nodes": [{"name": "y", "op": "Log", "inputs": ["x"]}], "outputs": ["y"]},
        "inputs": [{"dtype": "float32", "shape": [4], "data": [0.0, 1.0, "NaN", "Infinity"]}],
        "return_value": True,
    }
    body, headers = encode_request(request, encoding)
    r = client.post("/grad", content=body, headers=headers)
    assert r.status_code == 200, r.text
    if encoding == "json":
        raw = r.json()
        assert raw["gradients"]["data"][0] == "Infinity" and raw["gradients"]["data"][2] == "NaN"
        assert raw["value"][0]["data"][0] == "-Infinity"
    doc = decode_response(r)
    np.testing.assert_array_equal(doc["gradients"], np.array([np.inf, 1.0, np.nan, 0.0], np.float32))
    np.testing.assert_array_equal(doc["value"][0], np.array([-np.inf, 0.0, np.nan, np.inf], np.float32))


@pytest.mark.parametrize("encoding", ["b64", "binary"])
def test_large_tensors_cross_the_worker_pipe(client, encoding):
    """Megabytes each way: bigger than a pipe's buffer, so the writer thread and the reader
    on the event loop must both handle partial transfers (a regression test)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((512, 256)).astype(np.float32)
    w = rng.standard_normal((256, 128)).astype(np.float32)
    request = {
        "network": {"format": "gradnet/1", "inputs": [{"name": "x"}, {"name": "w"}],
                    "nodes": [{"name": "y", "op": "MatMul", "inputs": ["x", "w"]}], "outputs": ["y"]},
        "inputs": [{"dtype": "float32", "shape": [512, 256], "data": x.ravel().tolist()},
                   {"dtype": "float32", "shape": [256, 128], "data": w.ravel().tolist()}],
        "get_all": True,
    }
    body, headers = encode_request(request, encoding)
    for _ in range(2):  # the second call runs warm: only the pipe transfer is left
        r = client.post("/grad", content=body, headers=headers)
        assert r.status_code == 200, r.text
        gx, gw = decode_response(r)["gradients"]
        np.testing.assert_allclose(gx, np.ones((512, 128), np.float32) @ w.T, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(gw, x.T @ np.ones((512, 128), np.float32), rtol=1e-4, atol=1e-3)


def test_oip_datatype_and_nested_data(client, tutorial):
    request = dict(tutorial[0]["request"])
    x, y = request["inputs"]
    request["inputs"] = [
        {"datatype": "FP32", "data": np.asarray(x["data"]).reshape(x["shape"]).tolist()},
        {"datatype": "FP32", "shape": y["shape"], "data": y["data"]},
    ]
    r = client.post("/grad", json=request)
    assert r.status_code == 200, r.text
    assert_close(decode_response(r)["gradients"], tutorial[0]["expected_gradients"])


# -- other routes -------------------------------------------------------------------------------


def test_health_needs_no_key(live_server):
    with live_server.client() as anonymous:
        assert anonymous.get("/health/live").json() == {"status": "ok"}
        r = anonymous.get("/health/ready")
        assert r.status_code == 200 and r.json()["status"] == "ready"


def test_ops(client):
    r = client.get("/ops")
    assert r.status_code == 200
    ops = {op["name"]: op for op in r.json()["ops"]}
    assert {"MatMul", "ReduceSum", "StopGradient", "Conv2D"} <= set(ops)
    assert {"name": "transpose_b", "type": "bool", "required": False, "default": False} in ops["MatMul"]["attrs"]


def test_docs_and_schema_are_served(client):
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"] == "gradserve"


def test_metrics(client, tutorial):
    assert client.post("/grad", json=tutorial[0]["request"]).status_code == 200
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert metric(text, "gradserve_requests_total", route="/grad", method="POST", status="200") >= 1
    for stage in ("queue", "decode", "compile", "compute", "encode"):
        assert metric(text, f"gradserve_{stage}_seconds_count") >= 1, stage
    assert metric(text, "gradserve_request_seconds_count", route="/grad") >= 1
    assert metric(text, "gradserve_compile_cache_hits_total", worker="0") >= 0
    assert metric(text, "gradserve_compile_cache_misses_total", worker="0") >= 1
    assert metric(text, "gradserve_worker_queue_depth", worker="0") is not None
    assert metric(text, "gradserve_worker_restarts_total", worker="0") == 0
    # routes are labelled by template, never by raw path
    client.get("/networks/sha256:" + "ab" * 32)
    text = client.get("/metrics").text
    assert metric(text, "gradserve_requests_total", route="/networks/{network_id}", method="GET", status="404") >= 1


# -- the registry routes ------------------------------------------------------------------------


def test_register_read_list_delete(client, tutorial):
    network = dict(tutorial[0]["request"]["network"], name="crud-net")
    r = client.post("/networks", json=network)
    assert r.status_code == 201, r.text
    info = r.json()
    nid = info["network_id"]
    assert r.headers["location"] == f"/networks/{nid}"
    assert info["name"] == "crud-net" and [i["name"] for i in info["inputs"]] == ["x", "y"]
    assert info["parameters"] == [{"name": "z", "dtype": "float32", "shape": [1], "requires_grad": True}]
    assert info["outputs"] == ["out"]
    # idempotent, whatever the encoding of the parameters or the wrapping
    body, headers = encode_request(network, "b64")
    again = client.post("/networks", content=body, headers=headers)
    assert again.status_code == 200 and again.json() == info
    assert client.post("/networks", json={"network": network}).status_code == 200
    # read back: the document registers to the same id
    doc = client.get(f"/networks/{nid}").json()
    assert doc["format"] == "gradnet/1" and "b64" in doc["parameters"][0]["value"]
    assert client.post("/networks", json=doc).json()["network_id"] == nid
    assert nid in [n["network_id"] for n in client.get("/networks").json()["networks"]]
    # delete
    assert client.delete(f"/networks/{nid}").status_code == 204
    error_of(client.get(f"/networks/{nid}"), 404, "not_found")
    error_of(client.delete(f"/networks/{nid}"), 404, "not_found")
    assert nid not in [n["network_id"] for n in client.get("/networks").json()["networks"]]
    error_of(client.post("/grad", json={"network_id": nid, "inputs": tutorial[0]["request"]["inputs"]}), 404)


def test_register_binary_parameters(client, tutorial):
    network = tutorial[0]["request"]["network"]
    body, headers = encode_request(network, "binary")
    r = client.post("/networks", content=body, headers=headers)
    assert r.status_code in (200, 201), r.text
    assert r.json()["network_id"] == _network_id(client, network)


def test_namespaces_are_per_key(live_server, client, tutorial):
    network = dict(tutorial[0]["request"]["network"], name="only-for-key-a")
    nid = client.post("/networks", json=network).json()["network_id"]
    with live_server.client(KEY_B) as other:
        error_of(other.get(f"/networks/{nid}"), 404, "not_found")
        assert nid not in [n["network_id"] for n in other.get("/networks").json()["networks"]]
        request = {"network_id": nid, "inputs": tutorial[0]["request"]["inputs"]}
        error_of(other.post("/grad", json=request), 404, "not_found")
        error_of(other.delete(f"/networks/{nid}"), 404)
        # the same network registered with key B is B's own
        assert other.post("/networks", json=network).status_code == 201
        assert other.post("/grad", json=request).status_code == 200
    assert client.post("/grad", json=request).status_code == 200


# -- errors (API.md §5) -------------------------------------------------------------------------


def test_400_not_json(client):
    for body in (b"{", b"not json", b"\xff\xfe", b"[1, 2]", b""):
        err = error_of(client.post("/grad", content=body, headers={"Content-Type": "application/json"}), 400,
                       "bad_request")
        assert err["path"] == "body"
    error_of(client.post("/networks", content=b"{nope"), 400, "bad_request")


def test_400_bad_binary_framing(client, tutorial):
    body, headers = encode_request(tutorial[0]["request"], "binary")
    json_size = int(headers[BINARY_HEADER])
    cases = {
        "header longer than the body": {BINARY_HEADER: str(len(body) + 1)},
        "header not a number": {BINARY_HEADER: "twelve"},
        "header cuts the JSON": {BINARY_HEADER: str(json_size - 1)},
    }
    for why, extra in cases.items():
        r = client.post("/grad", content=body, headers={**headers, **extra})
        assert r.status_code == 400, (why, r.text)
    error_of(client.post("/grad", content=body + b"\0\0\0\0", headers=headers), 400, "bad_request")
    error_of(client.post("/grad", content=body[:-4], headers=headers), 400, "bad_request")
    # binary_data_size without the framing header
    err = error_of(client.post("/grad", content=body[:json_size], headers={"Content-Type": "application/json"}),
                   400, "bad_request")
    assert err["path"].endswith("binary_data_size")


def test_401_without_or_with_a_wrong_key(live_server, tutorial):
    with live_server.client() as anonymous:
        r = anonymous.post("/grad", json=tutorial[0]["request"])
        error_of(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
        for path in ("/networks", "/ops", "/metrics", "/openapi.json", "/docs"):
            error_of(anonymous.get(path), 401, "unauthorized")
    for header in ("Bearer wrong-key", f"Basic {KEY_A}", KEY_A, f"Bearer {KEY_A}x"):
        with httpx.Client(base_url=live_server.url, headers={"Authorization": header}) as wrong:
            error_of(wrong.get("/networks"), 401, "unauthorized")


def test_404(client, tutorial):
    request = {"network_id": "sha256:" + "0" * 64, "inputs": tutorial[0]["request"]["inputs"]}
    err = error_of(client.post("/grad", json=request), 404, "not_found")
    assert err["path"] == "network_id"
    error_of(client.get("/no/such/route"), 404, "not_found")
    r = client.put("/grad")
    error_of(r, 405, "method_not_allowed")
    assert "POST" in r.headers["allow"]


def test_413_body_by_content_length(live_server):
    """Refused from the header alone: the body is never sent."""
    response = _raw_exchange(live_server, f"Content-Length: {LIMITS['max_body_bytes'] + 1}\r\n", [])
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b'"too_large"' in response


def test_413_body_while_streaming(live_server):
    """A chunked body is counted as it arrives: the 413 comes back while the client still sends."""
    chunk = b"x" * 65536
    framed = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    limit = LIMITS["max_body_bytes"]
    response = _raw_exchange(live_server, "Transfer-Encoding: chunked\r\n", [framed] * (4 * limit // len(chunk)))
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b'"too_large"' in response


def _raw_exchange(server, header: str, chunks: list[bytes]) -> bytes:
    """Send a POST /grad head (and ``chunks``) on a raw socket, stopping as soon as an answer
    arrives; the answer. Fails if every chunk had to be sent first."""
    response, _, sent_all = raw_request(server.url, grad_request_head(KEY_A) + header + "\r\n", chunks)
    assert not (chunks and sent_all), "the server read the whole over-limit body before answering"
    return response


def test_413_tensor_and_network(client, tutorial):
    request = dict(tutorial[0]["request"])
    big = LIMITS["max_tensor_elements"] + 1
    request["inputs"] = [{"dtype": "float32", "shape": [big], "b64": ""}, request["inputs"][1]]
    err = error_of(client.post("/grad", json=request), 413, "too_large")
    assert err["path"] == "inputs[0]"
    nodes = [{"name": f"n{i}", "op": "Neg", "inputs": [f"n{i - 1}" if i else "x"]}
             for i in range(LIMITS["max_nodes"] + 1)]
    network = {"format": "gradnet/1", "inputs": [{"name": "x"}], "nodes": nodes, "outputs": ["n0"]}
    err = error_of(client.post("/grad", json={"network": network, "inputs": [request["inputs"][1]]}), 413)
    assert err["path"] == "network.nodes"
    error_of(client.post("/networks", json=network), 413, "too_large")
    # an intermediate over the limit is found in the server, before any worker runs it
    network = {"format": "gradnet/1", "inputs": [{"name": "x"}],
               "nodes": [{"name": "b", "op": "BroadcastTo", "inputs": ["x"], "attrs": {"shape": [1000, 1000]}}],
               "outputs": ["b"]}
    x = {"dtype": "float32", "shape": [1], "data": [1.0]}
    err = error_of(client.post("/grad", json={"network": network, "inputs": [x]}), 413, "too_large")
    assert err["path"] == "network.nodes[0]"  # the inline network's prefix, as for its parse errors


def _tutorial_with(tutorial, **changes):
    request = dict(tutorial[0]["request"])
    network = dict(request["network"])
    for key, value in changes.items():
        if key in ("nodes", "inputs_spec"):
            network["nodes" if key == "nodes" else "inputs"] = value
        else:
            request[key] = value
    request["network"] = network
    return request


@pytest.mark.parametrize(
    ("change", "code", "path"),
    [
        ({"nodes": [{"name": "xz", "op": "Mull", "inputs": ["x", "z"]},
                    {"name": "out", "op": "MatMul", "inputs": ["xz", "y"]}]}, "unknown_op", "network.nodes[0].op"),
        ({"nodes": [{"name": "xz", "op": "Mul", "inputs": ["x", "z"]},
                    {"name": "out", "op": "MatMul", "inputs": ["xz", "y"], "attrs": {"transpose_c": True}}]},
         "bad_attr", "network.nodes[1].attrs.transpose_c"),
        ({"nodes": [{"name": "xz", "op": "Mul", "inputs": ["x", "out"]},
                    {"name": "out", "op": "MatMul", "inputs": ["xz", "y"]}]}, "cycle", "network.nodes[0]"),
        ({"inputs": [{"dtype": "float32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]},
                     {"dtype": "float32", "shape": [2, 2], "data": [1, 2, 3, 4]}]}, "shape_mismatch", "network.nodes[1]"),
        ({"sens_param": True, "sens": {"dtype": "float32", "shape": [3, 2], "data": [1, 2, 3, 4, 5, 6]}},
         "bad_sens", "sens"),
        ({"sens_param": True}, "bad_sens", "sens"),
        ({"sens": {"dtype": "float32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}}, "bad_sens", "sens"),
        ({"inputs": [{"dtype": "float32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}]}, "bad_argument", "inputs"),
        ({"get_by_list": True, "weights": ["q"]}, "bad_argument", "weights[0]"),
        ({"parameters": {"z": {"dtype": "float32", "shape": [2], "data": [1, 2]}}}, "shape_mismatch",
         "parameters.z"),
        ({"get_al": True}, "bad_argument", "get_al"),
        ({"get_all": "yes"}, "bad_argument", "get_all"),
        ({"network_id": "sha256:" + "0" * 64}, "bad_argument", None),
        ({"output_encoding": "xml"}, "bad_argument", "output_encoding"),
        ({"timeout_ms": 0}, "bad_argument", "timeout_ms"),
        ({"inputs": [{"dtype": "float33", "shape": [1], "data": [1]}]}, "invalid_tensor", "inputs[0].dtype"),
    ],
)
def test_422(live_server, client, tutorial, change, code, path):
    err = error_of(client.post("/grad", json=_tutorial_with(tutorial, **change)), 422, code)
    if path is not None:
        assert err["path"] == path, err


def test_422_costs_no_worker_time(client, tutorial):
    """Invalid requests are answered by the server: the worker's compile cache never sees them."""
    before = client.get("/metrics").text
    bad = _tutorial_with(tutorial, inputs=[{"dtype": "float32", "shape": [2, 3], "data": [0] * 6},
                                           {"dtype": "float32", "shape": [5, 5], "data": [0] * 25}])
    for _ in range(5):
        error_of(client.post("/grad", json=bad), 422, "shape_mismatch")
    after = client.get("/metrics").text
    for name in ("gradserve_compile_cache_misses_total", "gradserve_compile_cache_hits_total"):
        assert metric(before, name, worker="0") == metric(after, name, worker="0")
    assert metric(before, "gradserve_queue_seconds_count") == metric(after, "gradserve_queue_seconds_count")


def test_504_timeout(client):
    err = error_of(client.post("/grad", json=chain_request(300, timeout_ms=1)), 504, "timeout")
    assert "timeout_ms" in err["message"]


# -- lifecycle: not ready, queue full, a worker killed, drain -----------------------------------


def _in_thread(fn, *args):
    box: dict[str, Any] = {}

    def run():
        try:
            box["result"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def _wait_busy(c: httpx.Client, depth: int = 1, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (metric(c.get("/metrics").text, "gradserve_worker_queue_depth", worker="0") or 0) >= depth:
            return
        time.sleep(0.01)
    raise AssertionError("the worker never got the job")


def test_lifecycle(server_factory, tutorial):
    # worker_mode="process": step 3 SIGKILLs the worker process under a job (500 worker_died, the
    # server stays up); in the in-process design that process is the HTTP server itself (its
    # counterpart: tests/service/pool/test_inprocess.py)
    server = server_factory(wait_ready=False, queue_size=1, drain_timeout_s=60, worker_mode="process")
    quick = tutorial[0]["request"]
    with server.client(timeout=120) as c:
        # 1. not ready yet: the worker is still importing JAX
        r = c.get("/health/ready")
        error_of(r, 503, "not_ready")
        assert int(r.headers["retry-after"]) >= 1
        r = c.post("/grad", json=quick)
        error_of(r, 503, "not_ready")
        assert int(r.headers["retry-after"]) >= 1
        server.wait_ready()
        assert c.post("/grad", json=quick).status_code == 200

        # 2. queue full: one slow job holds the only slot
        (worker,) = server.worker_pids()
        thread, box = _in_thread(lambda: c.post("/grad", json=chain_request(300)))
        _wait_busy(c)
        r = c.post("/grad", json=quick)
        error_of(r, 503, "queue_full")
        assert int(r.headers["retry-after"]) >= 1

        # 3. the worker dies under that job: 500, the server stays up, the next request succeeds
        os.kill(worker, signal.SIGKILL)
        thread.join(60)
        err = error_of(box["result"], 500, "worker_died")
        assert "died" in err["message"]
        server.wait_ready()
        assert c.post("/grad", json=quick).status_code == 200
        assert server.worker_pids() != [worker]
        assert metric(c.get("/metrics").text, "gradserve_worker_restarts_total", worker="0") == 1

        # 4. SIGTERM drains: the request in flight finishes, new ones get 503, the exit status is 0
        thread, box = _in_thread(lambda: c.post("/grad", json=chain_request(300)))
        _wait_busy(c)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with server.client() as late:
            r = late.post("/grad", json=quick)
            error_of(r, 503, "draining")
            assert int(r.headers["retry-after"]) >= 1
            error_of(late.get("/health/ready"), 503, "draining")
        thread.join(60)
        assert box["result"].status_code == 200, box["result"].text
        assert server.process.wait(60) == 0, server.log()[-3000:]


def test_a_bug_is_a_json_500_that_says_so(tmp_path, caplog):
    """The catch-all handler (in process: a route that raises; the lifespan never runs)."""
    import asyncio

    from service.http.app import create_app
    from service.settings import Settings

    app = create_app(Settings(registry_path=tmp_path / "r.sqlite3"))

    @app.get("/boom")
    async def boom():
        raise RuntimeError("kaboom")

    async def calls():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gradserve") as c:
            return await c.get("/boom"), await c.get("/metrics"), await c.post("/grad", json={
                "network_id": "sha256:" + "0" * 64, "inputs": []})

    boom_r, metrics_r, grad_r = asyncio.run(calls())
    err = error_of(boom_r, 500, "internal_error")
    assert "bug" in err["message"] and "kaboom" not in err["message"] and "Traceback" not in err["message"]
    assert "kaboom" in caplog.text  # logged, with its traceback
    assert metric(metrics_r.text, "gradserve_requests_total", route="/boom", method="GET", status="500") == 1
    error_of(grad_r, 503)  # nothing started (no registry, no pool): a 503, not a crash


def test_inline_binary_networks_differing_only_in_weight_bytes_are_not_confused(client, tutorial):
    """An inline network in the binary framing is cached by its JSON text and its weights' bytes:
    two requests whose JSON parts are identical but whose parameter bytes differ get each their
    own network (the tutorial's z = 1 and z = 2: every gradient doubles)."""
    request = tutorial[1]["request"]  # get_all

    def grads(z: float) -> list[np.ndarray]:
        doc = orjson.loads(orjson.dumps(request))
        doc["network"]["parameters"][0]["value"]["data"] = [z]
        body, headers = encode_request(doc, "binary")
        r = client.post("/grad", content=body, headers=headers)
        assert r.status_code == 200, r.text
        return decode_response(r)["gradients"]

    one, two, one_again = grads(1.0), grads(2.0), grads(1.0)
    for a, b, c in zip(one, two, one_again, strict=True):
        np.testing.assert_allclose(b, 2 * a, rtol=1e-6)
        np.testing.assert_array_equal(c, a)
