"""The /grad handler and the guard in front of it, in process: the real app (create_app) over
httpx's ASGI transport, its pool on in-process fake workers (tests/support/fake_worker.py) that
compute with the real engine. The same API over real processes is tests/service/test_api.py's."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

import engine
from service.http.app import create_app
from service.ipc import messages as m
from service.settings import Settings
from tests.support import FIXTURES
from tests.support.api_contract import assert_close, decode_response, encode_request, error_of
from tests.support.fake_worker import FakeLauncher

TUTORIAL = json.loads((FIXTURES / "tutorial.json").read_text())["cases"]


@contextlib.asynccontextmanager
async def served(tmp_path: Path, launcher: FakeLauncher, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(Settings(**{"registry_path": tmp_path / "r.sqlite3", "workers": 1, "device": "cpu",
                                 **settings}), launcher=launcher)
    async with app.router.lifespan_context(app):
        state = app.state.service
        for _ in range(100):
            if state.pool.ready:
                break
            await asyncio.sleep(0)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gradserve") as client:
            yield client, state


def run(tmp_path: Path, scenario: Callable[[httpx.AsyncClient, Any, FakeLauncher], Any],
        launcher: FakeLauncher | None = None, **settings: Any) -> Any:
    launcher = launcher or FakeLauncher()

    async def main() -> Any:
        async with served(tmp_path, launcher, **settings) as (client, state):
            return await scenario(client, state, launcher)

    return asyncio.run(asyncio.wait_for(main(), 30))


def jobs_sent(launcher: FakeLauncher) -> int:
    return sum(1 for w in launcher.workers for msg in w.received if msg[0] == m.JOB)


@pytest.mark.parametrize("encoding", ["json", "b64", "binary"])
def test_tutorial_cases_in_every_encoding(tmp_path: Path, encoding: str) -> None:
    async def scenario(client: httpx.AsyncClient, state: Any, launcher: FakeLauncher) -> list[Any]:
        out = []
        for case in TUTORIAL:
            body, headers = encode_request({**case["request"], "output_encoding": encoding}, encoding)
            out.append(decode_response(await client.post("/grad", content=body, headers=headers)))
        return out

    for case, got in zip(TUTORIAL, run(tmp_path, scenario)):
        assert_close(got["gradients"], case["expected_gradients"])
        assert set(got["timing_ms"]) == {"queue", "compile", "compute", "decode", "encode"}


def test_register_then_grad_by_id_then_delete(tmp_path: Path) -> None:
    request = TUTORIAL[0]["request"]

    async def scenario(client: httpx.AsyncClient, state: Any, launcher: FakeLauncher) -> list[httpx.Response]:
        registered = await client.post("/networks", json=request["network"])
        network_id = registered.json()["network_id"]
        by_id = {k: v for k, v in request.items() if k != "network"} | {"network_id": network_id}
        grad = await client.post("/grad", json=by_id)
        deleted = await client.delete(f"/networks/{network_id}")
        gone = await client.post("/grad", json=by_id)
        return [registered, grad, deleted, gone]

    registered, grad, deleted, gone = run(tmp_path, scenario)
    assert registered.status_code == 201 and grad.status_code == 200 and deleted.status_code == 204
    np.testing.assert_allclose(np.asarray(grad.json()["gradients"]["data"]),
                               TUTORIAL[0]["expected_gradients"]["data"], rtol=1e-5)
    assert error_of(gone, 404, "not_found")["path"] == "network_id"


def test_bad_requests_never_reach_a_worker(tmp_path: Path) -> None:
    request = TUTORIAL[0]["request"]
    x = request["inputs"][0]

    async def scenario(client: httpx.AsyncClient, state: Any, launcher: FakeLauncher) -> list[Any]:
        answers = [
            await client.post("/grad", content=b"{not json", headers={"content-type": "application/json"}),
            await client.post("/grad", json={**request, "bogus": 1}),
            await client.post("/grad", json={**request, "get_all": "yes"}),
            await client.post("/grad", json={**request, "inputs": [x, x]}),
            await client.post("/grad", json={"inputs": request["inputs"]}),
        ]
        return [answers, jobs_sent(launcher)]

    (not_json, unknown, flag, shape, no_network), sent = run(tmp_path, scenario)
    error_of(not_json, 400, "bad_request")
    assert error_of(unknown, 422, "bad_argument")["path"] == "bogus"
    assert error_of(flag, 422, "bad_argument")["path"] == "get_all"
    assert error_of(shape, 422, "shape_mismatch")["path"].startswith("network.nodes[")
    error_of(no_network, 422, "bad_argument")
    assert sent == 0


def test_an_engine_error_in_the_worker_is_the_same_answer(tmp_path: Path) -> None:
    def compute(job: m.GradJob) -> m.JobResult:
        raise engine.TooLargeError("too big in the worker", "nodes[1]")

    async def scenario(client: httpx.AsyncClient, state: Any, launcher: FakeLauncher) -> httpx.Response:
        return await client.post("/grad", json=TUTORIAL[0]["request"])

    err = error_of(run(tmp_path, scenario, FakeLauncher(compute)), 413, "too_large")
    assert err == {"code": "too_large", "message": "too big in the worker", "path": "nodes[1]"}


def test_other_methods_on_grad_are_405_and_a_trailing_slash_is_redirected(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, state: Any, launcher: FakeLauncher) -> list[httpx.Response]:
        return [await client.put("/grad"), await client.get("/grad"), await client.post("/grad/?x=1"),
                await client.get("/metrics")]

    put, get, slash, metrics = run(tmp_path, scenario)
    for r in (put, get):
        assert error_of(r, 405, "method_not_allowed")["path"] == "method" and r.headers["allow"] == "POST"
    assert slash.status_code == 307 and slash.headers["location"] == "http://gradserve/grad?x=1"
    assert 'gradserve_requests_total{method="PUT",route="/grad",status="405"} 1.0' in metrics.text


def test_a_full_queue_is_503_before_the_body_is_parsed(tmp_path: Path) -> None:
    request = TUTORIAL[0]["request"]

    async def scenario(client: httpx.AsyncClient, state: Any, launcher: FakeLauncher) -> list[Any]:
        held = asyncio.ensure_future(client.post("/grad", json=request))
        for _ in range(200):
            if launcher.workers[0].queue:
                break
            await asyncio.sleep(0.001)
        refused = await client.post("/grad", content=b"{not even json", headers={"content-type": "application/json"})
        launcher.workers[0].finish()
        return [refused, await held]

    refused, held = run(tmp_path, scenario, FakeLauncher(manual=True), queue_size=1)
    error_of(refused, 503, "queue_full")
    assert int(refused.headers["retry-after"]) >= 1 and held.status_code == 200


def test_draining_refuses_new_requests_but_metrics(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, state: Any, launcher: FakeLauncher) -> list[httpx.Response]:
        await state.drain(0.1)
        return [await client.post("/grad", json=TUTORIAL[0]["request"]), await client.get("/health/ready"),
                await client.get("/metrics")]

    grad, ready, metrics = run(tmp_path, scenario)
    error_of(grad, 503, "draining")
    error_of(ready, 503, "draining")
    assert metrics.status_code == 200


def test_api_keys_and_namespaces(tmp_path: Path) -> None:
    network = TUTORIAL[0]["request"]["network"]

    async def scenario(client: httpx.AsyncClient, state: Any, launcher: FakeLauncher) -> list[httpx.Response]:
        a, b = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
        network_id = (await client.post("/networks", json=network, headers=a)).json()["network_id"]
        return [await client.post("/grad", json=TUTORIAL[0]["request"]), await client.get("/health/live"),
                await client.get(f"/networks/{network_id}", headers=b),
                await client.get(f"/networks/{network_id}", headers=a)]

    anonymous, live, other, own = run(tmp_path, scenario, api_keys="key-a,key-b")
    assert error_of(anonymous, 401, "unauthorized")["path"] == "headers.authorization"
    assert live.status_code == 200
    error_of(other, 404, "not_found")
    assert own.status_code == 200 and orjson.loads(own.content)["format"] == "gradnet/1"
