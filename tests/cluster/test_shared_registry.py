"""Two real servers on one registry (issue 17 point 2): a delete through one is seen by the
other at once, on one SQLite file (PRAGMA data_version + the deletions log) and on PostgreSQL
(LISTEN/NOTIFY). Each server has the network parsed in its memory before the delete: that is
the cache that used to go stale."""

from __future__ import annotations

import json

from tests.support import FIXTURES
from tests.support.api_contract import error_of


def _tutorial() -> dict:
    return json.loads((FIXTURES / "tutorial.json").read_text())["cases"][0]["request"]


def _by_id(c, network_id: str):
    return c.post("/grad", json={"network_id": network_id, "inputs": _tutorial()["inputs"]})


def _two_servers_agree(one, two, rounds: int = 5) -> None:
    request = _tutorial()
    with one.client() as a, two.client() as b:
        for i in range(rounds):
            network = {**request["network"], "name": f"shared-{i}"}
            r = a.post("/networks", json=network)
            assert r.status_code in (200, 201), r.text
            network_id = r.json()["network_id"]
            # registered through one: the other answers by that id at once, and keeps it warm
            for c in (b, a, b):
                assert _by_id(c, network_id).status_code == 200
            assert network_id in [n["network_id"] for n in b.get("/networks").json()["networks"]]
            # deleted through one (alternately): the other answers 404 at once, every route alike
            deleter, other = (a, b) if i % 2 == 0 else (b, a)
            assert deleter.delete(f"/networks/{network_id}").status_code == 204
            error_of(_by_id(other, network_id), 404, "not_found")
            error_of(other.get(f"/networks/{network_id}"), 404, "not_found")
            error_of(_by_id(deleter, network_id), 404, "not_found")


def test_two_servers_on_one_sqlite_file(server_factory, tmp_path_factory):
    shared = tmp_path_factory.mktemp("shared-sqlite") / "registry.sqlite3"
    one = server_factory(registry_path=shared)
    two = server_factory(registry_path=shared)
    _two_servers_agree(one, two)


def test_two_servers_on_one_postgresql(server_factory, postgres_url):
    one = server_factory(registry_url=postgres_url)
    two = server_factory(registry_url=postgres_url)
    _two_servers_agree(one, two)
    with one.client() as c:
        ready = c.get("/health/ready")
        assert ready.status_code == 200, ready.text
    assert "registry postgresql://127.0.0.1:" in one.log(), one.log()[-2000:]
