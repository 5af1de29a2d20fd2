"""Open Inference Protocol v2 (API.md section 10, issue 16), spoken by the real client:
``tritonclient[http]`` from PyPI against a live server. Every answer is compared with ``/grad``'s
for the same call."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.models import TUTORIAL_NETWORK
from tests.support.readme_examples import run_readme_example
from tests.support.servers import KEY_A, KEY_B, LiveServer


def auth() -> dict[str, str]:
    """A fresh headers dict per call: tritonclient adds Inference-Header-Content-Length to the dict
    it is given (a shared one would carry a binary call's header into the next JSON call)."""
    return {"Authorization": f"Bearer {KEY_A}"}


X = np.array([[0.8, 0.6, 0.2], [1.8, 1.3, 1.1]], np.float32)
Y = np.array([[0.11, 3.3, 1.1], [1.1, 0.2, 1.4], [1.1, 2.2, 0.3]], np.float32)

#: two outputs (a tuple-returning Cell), declared input: for sens and the metadata's value/ outputs
TWO_OUT = {
    "format": "gradnet/1", "name": "oip-two-outputs",
    "inputs": [{"name": "x", "dtype": "float32", "shape": [2, 3]}],
    "parameters": [{"name": "w", "value": {"dtype": "float32", "shape": [3], "data": [0.5, -1.0, 2.0]}}],
    "nodes": [{"name": "a", "op": "Mul", "inputs": ["x", "w"]}, {"name": "b", "op": "Sin", "inputs": ["x"]}],
    "outputs": ["a", "b"],
}


@pytest.fixture(scope="module")
def http(live_server: LiveServer):
    with live_server.client(KEY_A) as c:
        yield c


@pytest.fixture(scope="module")
def tc(live_server: LiveServer):
    client = triton.InferenceServerClient(live_server.url.removeprefix("http://"))
    yield client
    client.close()


def _register(http: httpx.Client, net: dict[str, Any]) -> str:
    r = http.post("/networks", json=net)
    assert r.status_code in (200, 201), r.text
    return r.json()["network_id"]


@pytest.fixture(scope="module")
def tutorial(http) -> str:
    return _register(http, TUTORIAL_NETWORK)


@pytest.fixture(scope="module")
def two_out(http) -> str:
    return _register(http, TWO_OUT)


def _model(network_id: str) -> str:
    return network_id.removeprefix("sha256:")


def _input(name: str, array: np.ndarray, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def _grad(http: httpx.Client, body: dict[str, Any]) -> dict[str, np.ndarray]:
    """``/grad``'s answer as {grad/<name>: array, value/<i>: array}."""
    r = http.post("/grad", json=body)
    assert r.status_code == 200, r.text
    doc = r.json()
    out: dict[str, np.ndarray] = {}

    def walk(names, tensors):
        if isinstance(names, str):
            out["grad/" + names] = np.array(tensors["data"], tensors["dtype"]).reshape(tensors["shape"])
        else:
            for n, t in zip(names, tensors, strict=True):
                walk(n, t)

    walk(doc["gradient_names"], doc["gradients"])
    for i, t in enumerate(doc.get("value", [])):
        out[f"value/{i}"] = np.array(t["data"], t["dtype"]).reshape(t["shape"])
    return out


def _tensor(array: np.ndarray) -> dict[str, Any]:
    return {"dtype": "float32", "shape": list(array.shape), "data": array.ravel().tolist()}


# -- health and metadata ----------------------------------------------------------------------------


def test_server_health_and_metadata(tc):
    assert tc.is_server_live()
    assert tc.is_server_ready(headers=auth())
    meta = tc.get_server_metadata(headers=auth())
    assert meta["name"] == "gradserve" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_and_readiness(tc, tutorial, two_out):
    meta = tc.get_model_metadata(_model(tutorial), headers=auth())
    assert meta["name"] == _model(tutorial) and meta["versions"] == ["1"]
    assert [(i["name"], i["shape"]) for i in meta["inputs"]] == [("x", [-1]), ("y", [-1])]
    assert [o["name"] for o in meta["outputs"]] == ["grad/x", "grad/y", "grad/z"]
    meta = tc.get_model_metadata(_model(two_out), "1", headers=auth())
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [2, 3]}]
    assert meta["outputs"] == [
        {"name": "grad/x", "datatype": "FP32", "shape": [2, 3]},
        {"name": "grad/w", "datatype": "FP32", "shape": [3]},
        {"name": "value/a", "datatype": "FP32", "shape": [2, 3]},
        {"name": "value/b", "datatype": "FP32", "shape": [2, 3]},
    ]
    assert tc.is_model_ready(_model(tutorial), headers=auth())
    assert tc.is_model_ready(_model(tutorial), "1", headers=auth())
    assert tc.is_model_ready(tutorial, headers=auth())  # the full id is taken too
    assert not tc.is_model_ready(_model(tutorial), "2", headers=auth())
    assert not tc.is_model_ready("0" * 64, headers=auth())
    # a network registered with one key is not another key's model
    assert not tc.is_model_ready(_model(tutorial), headers={"Authorization": f"Bearer {KEY_B}"})


def test_unknown_model_is_a_404_in_oips_shape(tc):
    with pytest.raises(InferenceServerException) as info:
        tc.get_model_metadata("0" * 64, headers=auth())
    assert info.value.status() == "404" and "no network" in info.value.message()


# -- infer ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_get_all_equals_grad(tc, http, tutorial, binary):
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("grad/x", "grad/y")]
    result = tc.infer(_model(tutorial), [_input("x", X, binary), _input("y", Y, binary)], outputs=outputs,
                      parameters={"get_all": True}, headers=auth())
    want = _grad(http, {"network_id": tutorial, "inputs": {"x": _tensor(X), "y": _tensor(Y)}, "get_all": True})
    for name in ("grad/x", "grad/y"):
        np.testing.assert_array_equal(result.as_numpy(name), want[name])
        assert result.as_numpy(name).dtype == np.float32
    outs = result.get_response()["outputs"]
    assert all(("data" in o) != binary and ("parameters" in o) == binary for o in outs)
    assert result.get_response()["model_name"] == _model(tutorial)


def test_infer_default_is_the_first_inputs_gradient_in_binary(tc, http, tutorial):
    # no outputs named: tritonclient asks for every output in binary (binary_data_output)
    result = tc.infer(_model(tutorial), [_input("x", X, True), _input("y", Y, False)], headers=auth(),
                      request_id="req-7")
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["grad/x"] and response["id"] == "req-7"
    assert response["outputs"][0]["parameters"]["binary_data_size"] == X.nbytes
    want = _grad(http, {"network_id": tutorial, "inputs": [_tensor(X), _tensor(Y)]})
    np.testing.assert_array_equal(result.as_numpy("grad/x"), want["grad/x"])


def test_infer_get_by_list_weights_return_value(tc, http, tutorial):
    result = tc.infer(_model(tutorial), [_input("x", X, True), _input("y", Y, True)], headers=auth(),
                      parameters={"get_all": True, "get_by_list": True, "weights": "z", "return_value": True})
    names = [o["name"] for o in result.get_response()["outputs"]]
    assert names == ["grad/x", "grad/y", "grad/z", "value/out"]
    want = _grad(http, {"network_id": tutorial, "inputs": [_tensor(X), _tensor(Y)], "get_all": True,
                        "get_by_list": True, "weights": ["z"], "return_value": True})
    for name in ("grad/x", "grad/y", "grad/z"):
        np.testing.assert_array_equal(result.as_numpy(name), want[name])
    np.testing.assert_array_equal(result.as_numpy("value/out"), want["value/0"])
    np.testing.assert_allclose(result.as_numpy("value/out"), (X * 1.0) @ Y, rtol=1e-6)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_with_sens_equals_grad(tc, http, two_out, binary):
    sa = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    sb = np.full((2, 3), 0.25, np.float32)
    inputs = [_input("x", X, binary), _input("sens/b", sb, binary), _input("sens/a", sa, binary)]
    result = tc.infer(_model(two_out), inputs, headers=auth(), model_version="1",
                      parameters={"get_all": True, "get_by_list": True, "return_value": True},
                      outputs=[triton.InferRequestedOutput(n, binary_data=binary)
                               for n in ("grad/w", "grad/x", "value/b")])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["grad/w", "grad/x", "value/b"]
    want = _grad(http, {"network_id": two_out, "inputs": [_tensor(X)], "get_all": True, "get_by_list": True,
                        "return_value": True, "sens_param": True, "sens": [_tensor(sa), _tensor(sb)]})
    for name in ("grad/w", "grad/x"):
        np.testing.assert_array_equal(result.as_numpy(name), want[name])
    np.testing.assert_array_equal(result.as_numpy("value/b"), want["value/1"])
    # and the sens changed the answer: dx = sa * w + sb * cos(x)
    w = np.array([0.5, -1.0, 2.0], np.float32)
    np.testing.assert_allclose(result.as_numpy("grad/x"), sa * w + sb * np.cos(X), rtol=1e-5)


def test_infer_without_sens_uses_ones(tc, two_out):
    result = tc.infer(_model(two_out), [_input("x", X, False)], headers=auth())
    w = np.array([0.5, -1.0, 2.0], np.float32)
    np.testing.assert_allclose(result.as_numpy("grad/x"), w + np.cos(X), rtol=1e-5)


def test_infer_other_versions_are_404(tc, tutorial):
    with pytest.raises(InferenceServerException) as info:
        tc.infer(_model(tutorial), [_input("x", X, False), _input("y", Y, False)], model_version="2", headers=auth())
    assert info.value.status() == "404"


def test_binary_answer_is_oips_framing(live_server, tutorial):
    """The bytes on the wire, without tritonclient: JSON part, its length in the header, raw bytes."""
    request = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}},
                          {"name": "y", "datatype": "FP32", "shape": [3, 3], "data": Y.ravel().tolist()}],
               "outputs": [{"name": "grad/x", "parameters": {"binary_data": True}}]}
    head = json.dumps(request).encode()
    with live_server.client(KEY_A) as c:
        r = c.post(f"/v2/models/{_model(tutorial)}/infer", content=head + X.tobytes(),
                   headers={"Inference-Header-Content-Length": str(len(head))})  # no Content-Type at all
    assert r.status_code == 200, r.text
    size = int(r.headers["inference-header-content-length"])
    doc = json.loads(r.content[:size])
    assert doc["outputs"] == [{"name": "grad/x", "datatype": "FP32", "shape": [2, 3],
                               "parameters": {"binary_data_size": 24}}]
    grad_x = np.frombuffer(r.content[size:], "<f4").reshape(2, 3)
    np.testing.assert_allclose(grad_x, np.ones((2, 3)) @ Y.T, rtol=1e-6)


def test_api_keys_on_oip(live_server, tc, tutorial):
    with httpx.Client(base_url=live_server.url) as c:
        r = c.get(f"/v2/models/{_model(tutorial)}")
        assert r.status_code == 401 and isinstance(r.json()["error"], str), r.text
        assert c.get("/v2/health/live").status_code == 200  # open, as /health/live is
    with pytest.raises(InferenceServerException) as info:
        tc.infer(_model(tutorial), [_input("x", X, False), _input("y", Y, False)])
    assert info.value.status() == "401" and "API key" in info.value.message()


def test_oip_metrics_are_labelled_by_route(live_server, http, tc, tutorial):
    tc.infer(_model(tutorial), [_input("x", X, False), _input("y", Y, False)], headers=auth())
    text = http.get("/metrics").text
    assert 'route="/v2/models/{model}/infer"' in text


def test_requested_outputs_choose_the_flags(tc, http, tutorial):
    """perf_analyzer asks for every output the metadata lists and sends no parameters: the requested
    outputs turn on what they need (grad/<parameter>: get_by_list, grad/y: get_all, value/: return_value)."""
    wanted = ["value/out", "grad/z", "grad/x"]
    result = tc.infer(_model(tutorial), [_input("x", X, True), _input("y", Y, True)], headers=auth(),
                      outputs=[triton.InferRequestedOutput(n) for n in wanted])
    assert [o["name"] for o in result.get_response()["outputs"]] == wanted
    want = _grad(http, {"network_id": tutorial, "inputs": [_tensor(X), _tensor(Y)], "get_all": True,
                        "get_by_list": True, "return_value": True})
    np.testing.assert_array_equal(result.as_numpy("grad/z"), want["grad/z"])
    np.testing.assert_array_equal(result.as_numpy("grad/x"), want["grad/x"])
    np.testing.assert_array_equal(result.as_numpy("value/out"), want["value/0"])
    # flags given explicitly are not overridden: get_all false has no grad/y
    with pytest.raises(InferenceServerException) as info:
        tc.infer(_model(tutorial), [_input("x", X, False), _input("y", Y, False)], headers=auth(),
                 parameters={"get_all": False}, outputs=[triton.InferRequestedOutput("grad/y")])
    assert info.value.status() == "422" and "grad/y" in info.value.message()


def test_model_config_for_perf_analyzer(tc, two_out):
    """Triton's model configuration (perf_analyzer reads it first): no batch dimension."""
    config = tc.get_model_config(_model(two_out), headers=auth())
    assert config["max_batch_size"] == 0
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [2, 3]}]
    assert [o["name"] for o in config["output"]] == ["grad/x", "grad/w", "value/a", "value/b"]


# -- the README's example ---------------------------------------------------------------------------


def test_readme_oip_example_prints_as_shown(live_server):
    # the snippet is the script's (but the client's address, its first line)
    run_readme_example("oip_client.py", live_server.url, KEY_A, snippet_from=1)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_large_tensors_both_ways(tc, http, binary):
    """160,000 elements: a 1.6 MB JSON body is parsed and decoded in the thread pool, a binary one
    is views of the body; either way the answer is /grad's."""
    network_id = _register(http, {"format": "gradnet/1", "name": "oip-square", "inputs": [{"name": "x"}],
                                  "nodes": [{"name": "s", "op": "Square", "inputs": ["x"]}], "outputs": ["s"]})
    x = np.random.default_rng(3).standard_normal((400, 400)).astype(np.float32)
    result = tc.infer(_model(network_id), [_input("x", x, binary)], headers=auth(),
                      outputs=[triton.InferRequestedOutput("grad/x", binary_data=binary)])
    np.testing.assert_array_equal(result.as_numpy("grad/x").reshape(400, 400), 2 * x)


def test_head_and_trailing_slash(live_server, http):
    with httpx.Client(base_url=live_server.url) as c:
        r = c.head("/v2/health/live")
        assert r.status_code == 200 and r.content == b""
    r = http.get("/v2/")
    assert r.status_code == 404 and isinstance(r.json()["error"], str)
    assert http.get("/v2").json()["name"] == "gradserve"


def test_metadata_of_a_network_no_call_fits(tc, http):
    """Declared shapes that MatMul cannot take: the metadata still answers (no value/ outputs), an
    infer is a 422 that says why."""
    network_id = _register(http, {
        "format": "gradnet/1", "name": "oip-misfit",
        "inputs": [{"name": "a", "dtype": "float32", "shape": [2, 3]}, {"name": "b", "dtype": "float32", "shape": [2, 2]}],
        "nodes": [{"name": "m", "op": "MatMul", "inputs": ["a", "b"]}], "outputs": ["m"]})
    meta = tc.get_model_metadata(_model(network_id), headers=auth())
    assert [o["name"] for o in meta["outputs"]] == ["grad/a", "grad/b"]
    with pytest.raises(InferenceServerException) as info:
        tc.infer(_model(network_id), [_input("a", X, False), _input("b", np.ones((2, 2), np.float32), False)],
                 headers=auth())
    assert info.value.status() == "422" and "MatMul" in info.value.message()


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
def test_compressed_requests(tc, http, tutorial, compression):
    result = tc.infer(_model(tutorial), [_input("x", X, True), _input("y", Y, True)], headers=auth(),
                      request_compression_algorithm=compression)
    want = _grad(http, {"network_id": tutorial, "inputs": [_tensor(X), _tensor(Y)]})
    np.testing.assert_array_equal(result.as_numpy("grad/x"), want["grad/x"])


def test_the_asyncio_client(live_server, http, tutorial):
    """tritonclient.http.aio (aiohttp, another HTTP stack) with binary tensors both ways."""
    import asyncio

    import tritonclient.http.aio as aio

    async def call() -> np.ndarray:
        client = aio.InferenceServerClient(live_server.url.removeprefix("http://"))
        try:
            assert await client.is_server_live()
            inputs = [aio.InferInput("x", [2, 3], "FP32"), aio.InferInput("y", [3, 3], "FP32")]
            inputs[0].set_data_from_numpy(X)
            inputs[1].set_data_from_numpy(Y)
            result = await client.infer(_model(tutorial), inputs, headers=auth(), parameters={"get_all": True},
                                        outputs=[aio.InferRequestedOutput("grad/y")])
            return result.as_numpy("grad/y")
        finally:
            await client.close()

    want = _grad(http, {"network_id": tutorial, "inputs": [_tensor(X), _tensor(Y)], "get_all": True})
    np.testing.assert_array_equal(asyncio.run(call()), want["grad/y"])
