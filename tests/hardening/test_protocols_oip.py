"""Open Inference Protocol v2 under bad input (issue 16 point 3): every bad request gets OIP's own
error shape, ``{"error": "<message>"}`` (one key, a string), with section 5's 4xx status, and the
service stays up (``/v2/health/live`` and a good infer after them). Admission control is /grad's:
a full queue refuses an infer with 503 + Retry-After before its body is read."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from hardening_helpers import HARD_KEY, assert_healthy, matmul_chain, model_name, worker_held
from tritonclient.utils import InferenceServerException

from service.models import TUTORIAL_NETWORK

X = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
Y = np.arange(9, dtype=np.float32).reshape(3, 3) / 10


def _json_input(name: str, array: np.ndarray, datatype: str = "FP32") -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": array.ravel().tolist()}


def _good() -> dict[str, Any]:
    return {"inputs": [_json_input("x", X), _json_input("y", Y)], "parameters": {"get_all": True}}


@pytest.fixture(scope="module")
def model(hard_server) -> str:
    return model_name(hard_server, TUTORIAL_NETWORK)


def _oip_error(r: httpx.Response, status: int, fragment: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert list(doc) == ["error"] and isinstance(doc["error"], str), doc  # OIP's shape, not gradserve's
    assert fragment.lower() in doc["error"].lower(), (fragment, doc["error"])
    return doc["error"]


def _with(**changes: Any) -> dict[str, Any]:
    doc = _good()
    doc.update(changes)
    return doc


def _input_with(i: int, **changes: Any) -> dict[str, Any]:
    doc = _good()
    doc["inputs"][i] = {**doc["inputs"][i], **changes}
    return doc


#: (id, JSON request, status, a fragment of the message)
JSON_CASES = [
    ("wrong-input-name", _input_with(0, name="nope"), 422, "no input 'nope'"),
    ("missing-input", _with(inputs=[_json_input("x", X)]), 422, "input 'y' is missing"),
    ("input-twice", _with(inputs=[_json_input("x", X), _json_input("x", X), _json_input("y", Y)]), 422, "twice"),
    ("unknown-datatype", _input_with(0, datatype="FP99"), 422, "unknown dtype"),
    ("bytes-datatype", _input_with(0, datatype="BYTES"), 422, "unknown dtype"),
    ("no-datatype", _with(inputs=[{"name": "x", "shape": [2, 3], "data": [0] * 6}, _json_input("y", Y)]), 422,
     "datatype"),
    ("shape-data-mismatch", _input_with(0, data=[1.0] * 5), 422, "inputs[0]"),
    ("negative-dim", _input_with(0, shape=[-2, 3]), 422, "shape"),
    ("shape-not-a-list", _input_with(0, shape="2x3"), 422, "shape"),
    ("data-not-a-list", _input_with(0, data=1.0), 422, "'data' must be a list"),
    ("strings-as-data", _input_with(0, data=["a"] * 6), 422, "inputs[0]"),
    ("no-name", _with(inputs=[{"datatype": "FP32", "shape": [1], "data": [1]}]), 422, "name"),
    ("input-not-an-object", _with(inputs=[3]), 422, "an input must be an object"),
    ("inputs-not-a-list", _with(inputs={"x": 1}), 422, "'inputs' must be a list"),
    ("no-inputs", {"parameters": {}}, 422, "'inputs' must be a list"),
    ("mismatched-matmul", _with(inputs=[_json_input("x", X), _json_input("y", np.ones((2, 2), np.float32))]), 422,
     "matmul"),
    ("too-many-elements", _input_with(0, shape=[5_000_000], data=[]), 413, "over the limit"),
    ("unknown-parameter", _with(parameters={"get_everything": True}), 422, "unknown parameter 'get_everything'"),
    ("sens-param-parameter", _with(parameters={"sens_param": True}), 422, "sens/"),
    ("flag-not-a-bool", _with(parameters={"get_all": "yes"}), 422, "get_all"),
    ("weights-a-list", _with(parameters={"get_by_list": True, "weights": ["z"]}), 422, "comma-separated"),
    ("weights-unknown", _with(parameters={"get_by_list": True, "weights": "z,q"}), 422, "q"),
    ("weights-twice", _with(parameters={"get_by_list": True, "weights": "z,z"}), 422, "twice"),
    ("timeout-zero", _with(parameters={"timeout": 0}), 422, "timeout"),
    ("binary-output-a-string", _with(parameters={"binary_data_output": "true"}), 422, "binary_data_output"),
    ("parameters-not-an-object", _with(parameters=[1]), 422, "'parameters' must be an object"),
    ("id-not-a-string", _with(id=7), 422, "'id' must be a string"),
    ("unknown-output", _with(outputs=[{"name": "grad/q"}]), 422, "no output 'grad/q'"),
    ("outputs-not-a-list", _with(outputs={"name": "grad/x"}), 422, "'outputs' must be a list"),
    ("output-without-name", _with(outputs=[{"parameters": {}}]), 422, "name"),
    ("unknown-output-parameter", _with(outputs=[{"name": "grad/x", "parameters": {"classification": 3}}]), 422,
     "classification"),
    ("sens-of-unknown-output", _with(inputs=[*_good()["inputs"], _json_input("sens/q", X)]), 422,
     "no input 'sens/q'"),
    ("sens-wrong-shape", _with(inputs=[*_good()["inputs"], _json_input("sens/out", np.ones((3, 3), np.float32))]),
     422, "sens"),
    ("binary-size-without-framing", _input_with(0, data=None, parameters={"binary_data_size": 24}), 400,
     "Inference-Header-Content-Length"),
]


@pytest.mark.parametrize(("doc", "status", "fragment"), [c[1:] for c in JSON_CASES], ids=[c[0] for c in JSON_CASES])
def test_bad_json_requests_get_oips_error(hard, model, doc, status, fragment):
    if isinstance(doc.get("inputs"), list):  # a None field means: left out
        doc = {**doc, "inputs": [{k: v for k, v in t.items() if v is not None} if isinstance(t, dict) else t
                                 for t in doc["inputs"]]}
    _oip_error(hard.post(f"/v2/models/{model}/infer", content=orjson.dumps(doc)), status, fragment)


def _framed(doc: dict[str, Any], binary: bytes, header: str | None = None) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(doc).encode()
    return head + binary, {"Inference-Header-Content-Length": header if header is not None else str(len(head))}


def _binary_doc(size_x: Any = 24) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": size_x}},
                       {"name": "y", "datatype": "FP32", "shape": [3, 3], "parameters": {"binary_data_size": 36}}]}


RAW = X.tobytes() + Y.tobytes()
#: (id, body, headers, status, fragment)
BINARY_CASES = [
    ("bytes-left-over", *_framed(_binary_doc(), RAW + b"\0" * 4), 400, "after the last binary tensor"),
    ("bytes-missing", *_framed(_binary_doc(), RAW[:-4]), 400, "more bytes than the body has"),
    ("size-negative", *_framed(_binary_doc(-24), RAW), 400, "non-negative integer"),
    ("size-a-string", *_framed(_binary_doc("24"), RAW), 400, "non-negative integer"),
    ("size-not-the-shapes", *_framed(_binary_doc(20), RAW[:20] + RAW[24:]), 422, "expected 24"),
    ("header-not-a-number", *_framed(_binary_doc(), RAW, "twelve"), 400, "Inference-Header-Content-Length"),
    ("header-past-the-body", *_framed(_binary_doc(), RAW, "100000"), 400, "Inference-Header-Content-Length"),
    ("header-cuts-the-json", *_framed(_binary_doc(), RAW, "10"), 400, "not valid JSON"),
]


@pytest.mark.parametrize(("body", "headers", "status", "fragment"), [c[1:] for c in BINARY_CASES],
                         ids=[c[0] for c in BINARY_CASES])
def test_bad_binary_framing_gets_oips_error(hard, model, body, headers, status, fragment):
    _oip_error(hard.post(f"/v2/models/{model}/infer", content=body, headers=headers), status, fragment)


@pytest.mark.parametrize(("body", "fragment"), [
    (b"{not json", "not valid JSON"), (b"", "not valid JSON"), (b"[1, 2]", "must be a JSON object"),
    (b"\xff\xfe", "not valid JSON"),
], ids=["broken", "empty", "array", "not-utf8"])
def test_malformed_json_is_a_400(hard, model, body, fragment):
    _oip_error(hard.post(f"/v2/models/{model}/infer", content=body,
                         headers={"Content-Type": "text/plain"}), 400, fragment)


def test_routes_methods_models_and_keys(hard, hard_server, model):
    _oip_error(hard.post(f"/v2/models/{'0' * 64}/infer", content=orjson.dumps(_good())), 404, "no network")
    _oip_error(hard.get(f"/v2/models/{'0' * 64}"), 404, "no network")
    _oip_error(hard.get(f"/v2/models/{model}/versions/2/ready"), 404, "version")
    _oip_error(hard.post(f"/v2/models/{model}/versions/0/infer", content=orjson.dumps(_good())), 404, "version")
    r = hard.get(f"/v2/models/{model}/infer")
    _oip_error(r, 405, "not allowed")
    assert r.headers["allow"] == "POST"
    _oip_error(hard.post("/v2/health/live"), 405, "not allowed")
    _oip_error(hard.get("/v2/repository/index"), 404, "no open inference protocol route")
    with httpx.Client(base_url=hard_server.url) as anonymous:
        _oip_error(anonymous.post(f"/v2/models/{model}/infer", content=orjson.dumps(_good())), 401, "API key")
        _oip_error(anonymous.get("/v2"), 401, "API key")
        assert anonymous.get("/v2/health/live").json() == {"live": True}  # open, as /health/live is
    with hard_server.client("a-wrong-key") as wrong:
        _oip_error(wrong.get(f"/v2/models/{model}"), 401, "API key")


def test_tritonclient_sees_the_message_and_status(hard_server, model):
    client = triton.InferenceServerClient(hard_server.url.removeprefix("http://"))
    try:
        bad = triton.InferInput("nope", [2, 3], "FP32")
        bad.set_data_from_numpy(X)
        with pytest.raises(InferenceServerException) as info:
            client.infer(model, [bad], headers={"Authorization": f"Bearer {HARD_KEY}"})
        assert info.value.status() == "422" and "no input 'nope'" in info.value.message()
    finally:
        client.close()


def test_the_service_is_up_after_all_of_it(hard, hard_server, model):
    """After the bad requests above: liveness, readiness and a good infer still answer."""
    assert hard.get("/v2/health/live").status_code == 200
    assert hard.get("/v2/health/ready").json() == {"ready": True}
    r = hard.post(f"/v2/models/{model}/infer", content=orjson.dumps(_good()))
    assert r.status_code == 200, r.text
    grad_x = next(o for o in r.json()["outputs"] if o["name"] == "grad/x")
    np.testing.assert_allclose(np.array(grad_x["data"]).reshape(2, 3), np.ones((2, 3)) @ Y.T, rtol=1e-6)
    assert_healthy(hard_server, HARD_KEY)


N = 1000


def test_a_full_queue_refuses_an_infer_before_reading_its_body(server_factory):
    """/grad's admission control: with the one worker's queue full, an infer whose body is not even
    JSON gets 503 + Retry-After in OIP's shape (not a 400: the body was never parsed)."""
    server = server_factory(workers=1, queue_size=1, timeout_ms=60_000)
    x = (np.random.default_rng(1).standard_normal((N, N)) * 0.03).astype("<f4")
    head = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [N, N],
                                     "parameters": {"binary_data_size": x.nbytes}}]})
    slow, framing = head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head))}
    with server.client(timeout=120) as c:
        model = c.post("/networks", json=matmul_chain(12, N, "oip-matmul-chain")).json()["network_id"]
        path = f"/v2/models/{model.removeprefix('sha256:')}/infer"
        assert c.post(path, content=slow, headers=framing).status_code == 200  # compiled: now only compute
        with worker_held(server, lambda: c.post(path, content=slow, headers=framing),
                         "the slow infer to occupy the worker") as other:
            t0 = time.monotonic()
            refused = other.post(path, content=b"this is not JSON")
            elapsed = time.monotonic() - t0
            _oip_error(refused, 503, "queue_size 1")
            assert int(refused.headers["retry-after"]) >= 1 and elapsed < 5
            assert other.get("/v2/health/live").status_code == 200
    assert_healthy(server)


def test_timeout_parameter_is_the_deadline(hard, model):
    """Triton's ``timeout`` (microseconds) is the call's deadline: 1 µs has passed before the job
    reaches a worker (504, OIP's shape); a generous one answers."""
    _oip_error(hard.post(f"/v2/models/{model}/infer", content=orjson.dumps(_with(parameters={"timeout": 1}))),
               504, "deadline")
    r = hard.post(f"/v2/models/{model}/infer", content=orjson.dumps(_with(parameters={"timeout": 30_000_000})))
    assert r.status_code == 200, r.text
