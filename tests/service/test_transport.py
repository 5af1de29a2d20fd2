"""The large-result paths, through a real worker and over HTTP: large inputs and results cross
through the shared-memory arenas, a large JSON result is byte for byte what the plain path
writes, a large binary result is streamed from the result arrays intact."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest

import engine
from service.ipc.messages import JobResult
from service.pool import WorkerPool
from service.settings import Settings
from tests.support import FIXTURES
from tests.support.api_contract import decode_response, encode_request
from tests.support.jobs import grad_job

# -- through a real worker ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool() -> Iterator[tuple[asyncio.AbstractEventLoop, WorkerPool]]:
    loop = asyncio.new_event_loop()
    pool = WorkerPool(Settings(workers=1, device="cpu", queue_size=16, worker_mode="process"))  # the arenas

    async def start() -> None:
        await pool.start()
        while not pool.ready:
            await asyncio.sleep(0.01)

    loop.run_until_complete(asyncio.wait_for(start(), 90))
    yield loop, pool
    loop.run_until_complete(pool.drain(5.0))
    loop.close()


def _mlp() -> tuple[engine.Network, list[np.ndarray]]:
    doc = json.loads((FIXTURES / "mlp.json").read_text())
    return engine.parse_network(doc["network"]), engine.decode_inputs(doc["inputs"])


def test_large_inputs_and_results_cross_through_the_arenas(pool: tuple[Any, WorkerPool]) -> None:
    loop, p = pool
    net, xs = _mlp()
    expected = engine.Engine().grad(net, xs, get_by_list=True).gradients

    async def run() -> list[JobResult]:
        jobs = [grad_job(net.id, xs, get_by_list=True, deadline=time.monotonic() + 60)
                for _ in range(6)]
        return await asyncio.gather(*(p.submit(j, lambda: net.to_json("b64")) for j in jobs))

    results = loop.run_until_complete(run())
    proc = p._slots[0].proc
    assert proc.jobs_alloc is not None and proc.jobs_alloc.used == []  # every input region freed
    for r in results:
        for g, e in zip(r.gradients, expected):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    del results, r, g
    assert len(proc.releaser.regions) == 0  # the results' regions went back with the arrays


# -- over HTTP --------------------------------------------------------------------------------


def _wide_request(x: list[Any]) -> dict[str, Any]:
    """x (1x300) @ w (300x300), summed: d/dw has 90,000 elements (a large JSON text)."""
    w = np.random.default_rng(3).standard_normal((300, 300)).astype(np.float32)
    network = {
        "format": "gradnet/1", "name": "wide", "inputs": [{"name": "x"}],
        "parameters": [{"name": "w", "value": {"dtype": "float32", "shape": [300, 300], "data": w.ravel().tolist()}}],
        "nodes": [{"name": "h", "op": "MatMul", "inputs": ["x", "w"]},
                  {"name": "s", "op": "ReduceSum", "inputs": ["h"], "attrs": {"axis": [], "keep_dims": False}}],
        "outputs": ["s"],
    }
    return {"network": network, "inputs": [{"dtype": "float32", "shape": [1, 300], "data": x}], "get_by_list": True}


@pytest.mark.parametrize("special", [None, "Infinity"])
def test_a_large_json_result_is_what_the_plain_path_writes(client: Any, special: str | None) -> None:
    x: list[Any] = list(np.random.default_rng(4).standard_normal(300).astype(np.float32).tolist())
    if special:
        x[7] = special  # a gradient row of infinities: spelled out as the contract says
    request = _wide_request(x)
    body, headers = encode_request(request, "binary")
    binary = decode_response(client.post("/grad", content=body, headers=headers))
    r = client.post("/grad", content=orjson.dumps(request), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    text = r.content
    start, end = text.index(b'"gradients":') + len(b'"gradients":'), text.index(b',"gradient_names":')
    grads = [np.asarray(g) for g in binary["gradients"]]
    assert text[start:end] == orjson.dumps([engine.encode_tensor(g, "json") for g in grads],
                                           option=orjson.OPT_SERIALIZE_NUMPY)
    assert int(r.headers["content-length"]) == len(text)
    if special:
        assert b'"Infinity"' in text[start:end]


def test_a_large_binary_result_is_streamed_intact(client: Any) -> None:
    request = _wide_request(list(np.linspace(-1, 1, 300)))
    body, headers = encode_request(request, "binary")
    r = client.post("/grad", content=body, headers=headers)
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == len(r.content)
    json_part = orjson.loads(r.content[:int(r.headers["inference-header-content-length"])])
    assert json_part["gradients"][0]["binary_data_size"] == 300 * 300 * 4
    got = decode_response(r)["gradients"][0]
    expected = np.outer(np.linspace(-1, 1, 300).astype(np.float32), np.ones(300, np.float32))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6)
