"""OIP v2 (service/http/oip.py) in process, on the fake worker: what needs a server state that a
live server does not easily get into (draining)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson

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
