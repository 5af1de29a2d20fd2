"""OIP v2 (service/http/oip.py) in process, on the fake worker: what needs a server state that a
live server does not easily get into (draining)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from service.http import bulk
from service.models import TUTORIAL_NETWORK
from tests.service.grad.test_handler import run
from tests.support.fake_worker import FakeLauncher

INFER = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [2.0]},
                    {"name": "y", "datatype": "FP32", "shape": [1, 1], "data": [3.0]}]}


def test_draining_refuses_infer_and_readiness_in_oips_shape(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, state: Any, launcher: FakeLauncher) -> list[httpx.Response]:
        model = (await client.post("/networks", json=TUTORIAL_NETWORK)).json()["network_id"].removeprefix("sha256:")
        before = await client.post(f"/v2/models/{model}/infer", content=orjson.dumps(INFER))
        await state.drain(0.1)
        return [before, await client.post(f"/v2/models/{model}/infer", content=orjson.dumps(INFER)),
                await client.get("/v2/health/ready"), await client.get("/v2/health/live")]

    before, infer, ready, live = run(tmp_path, scenario)
    assert before.status_code == 200, before.text
    assert before.json()["outputs"][0] == {"name": "grad/x", "datatype": "FP32", "shape": [1, 1], "data": [3.0]}
    for r in (infer, ready):
        assert r.status_code == 503 and list(r.json()) == ["error"] and "draining" in r.json()["error"], r.text
        assert int(r.headers["retry-after"]) >= 1
    assert live.status_code == 200 and live.json() == {"live": True}


#: x -> x * x (a declared input of any length): the gradient is 2x
SQUARE = {"format": "gradnet/1", "name": "oip-bulk-square", "inputs": [{"name": "x", "dtype": "float32"}],
          "nodes": [{"name": "s", "op": "Square", "inputs": ["x"]}], "outputs": ["s"]}


def test_a_large_json_infer_body_is_parsed_in_bulk_and_answers_as_grad(tmp_path: Path, monkeypatch) -> None:
    """A large OIP JSON body (tritonclient's own, set_data_from_numpy with binary_data=False: a
    flat list) reaches the tensor decoder as the bulk decoder's JsonNumbers (service/http/bulk.py),
    not as a Python float per number; a nested data list stays a list. Both answer what /grad
    answers for the same tensor."""
    import tritonclient.http as triton

    from engine.tensors import JsonNumbers
    from service.http import body as http_body

    seen: list[tuple[str, type]] = []
    decode = http_body.decode_tensor

    def spy(obj: Any, path: Any = None, **kw: Any) -> Any:
        if isinstance(obj, dict) and kw.get("binary") is None:
            seen.append((path, type(obj.get("data"))))
        return decode(obj, path, **kw)

    monkeypatch.setattr(http_body, "decode_tensor", spy)
    x = np.random.default_rng(7).standard_normal(200_000).astype(np.float32)
    flat = triton.InferInput("x", list(x.shape), "FP32")
    flat.set_data_from_numpy(x, binary_data=False)
    answer_json = [triton.InferRequestedOutput("grad/x", binary_data=False)]
    flat_body, json_size = triton.InferenceServerClient.generate_request_body([flat], outputs=answer_json)
    assert json_size is None and len(flat_body) > bulk.MIN_BODY_BYTES
    assert type(orjson.loads(flat_body)["inputs"][0]["data"][0]) is float  # tritonclient's flat list
    nested = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 100_000],
                                       "data": x.reshape(2, -1).tolist()}]})
    grad_request = orjson.dumps({"inputs": [{"dtype": "float32", "shape": [200_000], "data": x.tolist()}]})

    async def scenario(client: httpx.AsyncClient, state: Any, launcher: FakeLauncher) -> list[httpx.Response]:
        network_id = (await client.post("/networks", json=SQUARE)).json()["network_id"]
        model = network_id.removeprefix("sha256:")
        out = []
        for body in (flat_body, nested):
            seen.clear()
            out.append((await client.post(f"/v2/models/{model}/infer", content=body), list(seen)))
        seen.clear()
        grad = await client.post("/grad", content=orjson.dumps({"network_id": network_id, **orjson.loads(grad_request)}))
        out.append((grad, list(seen)))
        return out

    (flat_r, flat_seen), (nested_r, nested_seen), (grad_r, grad_seen) = run(tmp_path, scenario)
    assert grad_r.status_code == 200, grad_r.text[:300]
    assert grad_seen == [("inputs[0]", JsonNumbers)]  # /grad's own large body: the bulk path
    assert flat_seen == [("inputs[0]", JsonNumbers)]
    assert nested_seen == [("inputs[0]", list)]  # the bulk decoder takes flat arrays only
    expected = np.asarray(grad_r.json()["gradients"]["data"], np.float32)
    np.testing.assert_allclose(expected, 2 * x, rtol=1e-6)
    for r, shape in ((flat_r, [200_000]), (nested_r, [2, 100_000])):
        assert r.status_code == 200, r.text[:300]
        (out,) = r.json()["outputs"]
        assert out["name"] == "grad/x" and out["datatype"] == "FP32" and out["shape"] == shape
        np.testing.assert_array_equal(np.asarray(out["data"], np.float32).reshape(-1), expected)
