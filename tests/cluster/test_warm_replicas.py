"""Warm replicas on a shared PostgreSQL registry (issue 17.5): with ``executable_store=registry``
the compiled programs live in the registry's database, so a server (a replica) started after
another compiled a network takes its first /grad on it without compiling (and its server side
has the network parsed and validated at start); a deleted network is not warmed up any more. Real servers, the tests' own PostgreSQL (tests/support/postgres.py)."""

from __future__ import annotations

import json
import re

import pytest

from tests.support import FIXTURES

pytestmark = pytest.mark.timeout(300)


def _mlp() -> dict:
    return json.loads((FIXTURES / "mlp.json").read_text())


def _metric(c, name: str) -> float:
    found = re.findall(rf'^{name}{{worker="0"}} ([0-9.e+-]+)$', c.get("/metrics").text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found[0])


def test_a_replica_started_later_is_warm_from_the_registry(server_factory, postgres_url):
    request = _mlp()
    one = server_factory(registry_url=postgres_url, executable_store="registry")
    with one.client() as c:
        r = c.post("/networks", json=request["network"])
        assert r.status_code in (200, 201), r.text
        network_id = r.json()["network_id"]
        call = {"network_id": network_id, "inputs": request["inputs"], "get_by_list": True}
        cold = c.post("/grad", json=call).json()
        assert cold["timing_ms"]["compile"] > 0
    one.stop()

    two = server_factory(registry_url=postgres_url, executable_store="registry")
    with two.client() as c:
        assert _metric(c, "gradserve_compile_cache_loaded_total") == 1  # preloaded at start
        warm = c.post("/grad", json=call).json()
        assert warm["timing_ms"]["compile"] == 0.0
        assert _metric(c, "gradserve_compile_cache_compile_seconds_total") == 0.0
        assert warm["gradients"] == cold["gradients"]
        assert c.delete(f"/networks/{network_id}").status_code == 204
    two.stop()
    # the server's side too: the network parsed and evaluated by the validator at start
    assert "warm start: 1 registered network(s) parsed and evaluated" in two.log()

    three = server_factory(registry_url=postgres_url, executable_store="registry")
    with three.client() as c:  # its program is still stored, but nobody can call it: not warmed
        assert _metric(c, "gradserve_compile_cache_loaded_total") == 0
    three.stop()
    assert "warm start: 0 registered network(s)" in three.log()
