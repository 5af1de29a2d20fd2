"""The network registry: in process (SQLite, namespaces, the LRU, a deleted or corrupted file),
then across real server restarts."""

from __future__ import annotations

import json
import sqlite3

import pytest

import engine
from service.auth import PUBLIC, namespace_of
from service.errors import NotFoundError
from service.http.errors import status_of
from service.registry import NetworkRegistry, RegistryUnavailableError
from tests.support import FIXTURES
from tests.support.api_contract import error_of


def healthy(registry: NetworkRegistry) -> bool:
    try:
        registry.check()
    except RegistryUnavailableError:
        return False
    return True


@pytest.fixture(scope="module")
def networks():
    cases = json.loads((FIXTURES / "tutorial.json").read_text())["cases"]
    docs = {c["request"]["network"]["name"]: c["request"]["network"] for c in cases}
    return [engine.parse_network(doc) for doc in docs.values()]


@pytest.fixture
def registry(tmp_path):
    reg = NetworkRegistry(tmp_path / "deep" / "dir" / "registry.sqlite3", cache_size=2)
    reg.open()
    yield reg
    reg.close()


def test_put_get_list_delete(registry, networks):
    a, b = networks[:2]
    signature, created = registry.put("ns1", a)
    assert created and signature == a.signature()
    assert registry.put("ns1", a) == (signature, False)  # idempotent
    registry.put("ns1", b)
    assert [s["network_id"] for s in registry.list("ns1")] == [a.id, b.id]
    assert registry.get("ns1", a.id) is not None
    doc = json.loads(registry.document("ns1", a.id))
    assert engine.parse_network(doc).id == a.id
    assert registry.delete("ns1", a.id) is False
    with pytest.raises(NotFoundError):
        registry.document("ns1", a.id)
    with pytest.raises(NotFoundError):
        registry.delete("ns1", a.id)
    assert [s["network_id"] for s in registry.list("ns1")] == [b.id]


def test_namespaces(registry, networks):
    a = networks[0]
    registry.put("alice", a)
    assert registry.list("bob") == []
    with pytest.raises(NotFoundError):
        registry.get("bob", a.id)
    assert registry.put("bob", a)[1] is True  # new for bob, stored once
    assert registry.delete("alice", a.id) is True  # bob still has it
    assert registry.get("bob", a.id).id == a.id
    assert registry.delete("bob", a.id) is False
    with registry._lock:
        assert registry._db.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 0


def test_not_found_names_the_api_key_only_when_there_are_keys(registry, networks):
    nid = networks[0].id
    with pytest.raises(NotFoundError) as keyed:
        registry.get(namespace_of("some-key"), nid)
    assert "with this API key" in keyed.value.message
    with pytest.raises(NotFoundError) as open_:  # no keys configured: one namespace for all
        registry.get(PUBLIC, nid)
    assert "API key" not in open_.value.message and nid in open_.value.message


def test_parsed_networks_are_cached(registry, networks):
    a, b, c = networks[:3]
    for net in (a, b, c):
        registry.put("ns", net)
    assert registry.cached("ns", a.id) is None  # LRU of 2: evicted by c
    assert registry.get("ns", a.id).id == a.id  # read back from SQLite
    assert registry.cached("ns", a.id) is not None
    assert registry.cached("other", a.id) is None


def test_wal_and_persistence(tmp_path, networks):
    path = tmp_path / "r.sqlite3"
    reg = NetworkRegistry(path)
    reg.open()
    reg.put("ns", networks[0])
    with sqlite3.connect(path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reg.close()
    again = NetworkRegistry(path)
    again.open()
    assert [s["network_id"] for s in again.list("ns")] == [networks[0].id]
    again.close()


def test_deleted_file_is_a_clear_503(registry, networks):
    registry.put("ns", networks[0])
    registry.path.unlink()
    with pytest.raises(RegistryUnavailableError) as info:
        registry.list("ns")
    assert status_of(info.value) == 503 and "deleted" in info.value.message and "restart" in info.value.message
    assert not healthy(registry)
    with pytest.raises(RegistryUnavailableError):
        registry.put("ns", networks[1])
    # a restart opens a fresh registry (and drops the orphaned -wal/-shm)
    fresh = NetworkRegistry(registry.path)
    fresh.open()
    assert fresh.list("ns") == [] and healthy(fresh)
    fresh.close()


def test_corrupted_file_is_a_clear_503_then_moved_aside(registry, networks):
    registry.put("ns", networks[0])
    with sqlite3.connect(registry.path) as other:
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(registry.path, "r+b") as f:
        f.write(b"not a database!!" * 256)
    with pytest.raises(RegistryUnavailableError) as info:
        registry.list("ns")
    assert "corrupted" in info.value.message
    assert not healthy(registry)
    fresh = NetworkRegistry(registry.path)
    fresh.open()
    assert fresh.list("ns") == []
    assert [p.name for p in registry.path.parent.glob("registry.sqlite3.corrupt-*")]
    fresh.close()


# -- across restarts (real servers) -------------------------------------------------------------


def test_registry_survives_restart_and_a_deleted_file(server_factory, tmp_path_factory, tutorial):
    directory = tmp_path_factory.mktemp("restart")
    network = tutorial[0]["request"]["network"]
    inputs = tutorial[0]["request"]["inputs"]

    first = server_factory(directory=directory)
    with first.client() as c:
        nid = c.post("/networks", json=network).json()["network_id"]
        assert c.post("/grad", json={"network_id": nid, "inputs": inputs}).status_code == 200
    assert first.stop() == 0

    second = server_factory(directory=directory)
    assert second.registry_path == first.registry_path
    with second.client() as c:
        assert [n["network_id"] for n in c.get("/networks").json()["networks"]] == [nid]
        assert c.post("/grad", json={"network_id": nid, "inputs": inputs}).status_code == 200
        assert c.post("/networks", json=network).status_code == 200

        # the file is deleted under the running server: clear 503s, nothing crashes
        second.registry_path.unlink()
        r = c.post("/networks", json=dict(network, name="another"))
        err = error_of(r, 503, "registry_unavailable")
        assert "deleted" in err["message"] and int(r.headers["retry-after"]) >= 1
        error_of(c.get("/networks"), 503, "registry_unavailable")
        error_of(c.get("/health/ready"), 503, "registry_unavailable")
        assert c.get("/health/live").status_code == 200
        assert c.post("/grad", json=tutorial[0]["request"]).status_code == 200  # inline still works
    assert second.stop() == 0

    third = server_factory(directory=directory)  # a fresh registry
    with third.client() as c:
        assert c.get("/networks").json() == {"networks": []}
        err = error_of(c.post("/grad", json={"network_id": nid, "inputs": inputs}), 404, "not_found")
        assert "API key" not in err["message"]  # this server has no keys
        assert c.post("/networks", json=network).status_code == 201
