"""The network registry in process: SQLite (namespaces, the LRU, a deleted or corrupted file, two
registries on one file), and the same operations on PostgreSQL (tests/support/postgres.py)."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

import engine
from service.auth import PUBLIC, namespace_of
from service.errors import NotFoundError
from service.http.errors import status_of
from service.registry import (
    PostgresRegistry,
    RegistryDamagedError,
    RegistryUnavailableError,
    SQLiteRegistry,
)
from tests.support import FIXTURES


def healthy(registry: SQLiteRegistry) -> bool:
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
    reg = SQLiteRegistry(tmp_path / "deep" / "dir" / "registry.sqlite3", cache_size=2)
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
    reg = SQLiteRegistry(path)
    reg.open()
    reg.put("ns", networks[0])
    with sqlite3.connect(path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reg.close()
    again = SQLiteRegistry(path)
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
    fresh = SQLiteRegistry(registry.path)
    fresh.open()
    assert fresh.list("ns") == [] and healthy(fresh)
    fresh.close()


def test_a_grad_by_id_notices_a_deleted_file_within_the_file_check_interval(registry, networks):
    """Registry.cached (every /grad by id, on the event loop) looks at the file every FILE_CHECK_S
    at most; every other operation, and check() itself, looks at once."""
    from service.registry.sqlite import FILE_CHECK_S

    registry.put("ns", networks[0])
    assert registry.cached("ns", networks[0].id) is not None  # looked at the file just now
    registry.path.unlink()
    assert not healthy(registry)  # not the hot path: at once
    fresh = SQLiteRegistry(registry.path.parent / "other.sqlite3")
    fresh.open()
    fresh.put("ns", networks[0])
    assert fresh.cached("ns", networks[0].id) is not None
    fresh.path.unlink()
    deadline = time.monotonic() + FILE_CHECK_S + 1.0
    with pytest.raises(RegistryUnavailableError) as info:
        while time.monotonic() < deadline:  # within the interval it may still answer from memory
            fresh.cached("ns", networks[0].id)
            time.sleep(FILE_CHECK_S / 10)
    assert "deleted" in info.value.message
    fresh.close()


def _overwrite(path):
    with sqlite3.connect(path) as other:
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(path, "r+b") as f:
        f.write(b"not a database!!" * 256)


def test_corrupted_file_is_a_clear_503_and_a_refusal_to_start(registry, networks):
    registry.put("ns", networks[0])
    assert registry.cached("ns", networks[0].id) is not None
    _overwrite(registry.path)
    with pytest.raises(RegistryUnavailableError) as info:
        registry.list("ns")
    assert "corrupted" in info.value.message
    assert not healthy(registry)
    # the LRU gives the same answer as the database: no 200 by id from memory
    with pytest.raises(RegistryUnavailableError):
        registry.cached("ns", networks[0].id)
    with pytest.raises(RegistryUnavailableError):
        registry.get("ns", networks[0].id)
    # a restart refuses, naming the file and the ways out; the file is left where it is
    again = SQLiteRegistry(registry.path)
    with pytest.raises(RegistryDamagedError) as refused:
        again.open()
    message = str(refused.value)
    assert str(registry.path) in message and "--registry-start-empty" in message and ".recover" in message
    assert registry.path.exists() and not list(registry.path.parent.glob("registry.sqlite3.corrupt-*"))
    # only on request does it start empty, the damaged file moved aside (never deleted)
    fresh = SQLiteRegistry(registry.path, start_empty=True)
    fresh.open()
    assert fresh.list("ns") == [] and healthy(fresh)
    aside = [p for p in registry.path.parent.glob("registry.sqlite3.corrupt-*") if not p.name.endswith("-wal")]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"not a database!!")
    fresh.close()


def test_two_registries_on_one_file_see_each_others_deletes(tmp_path, networks):
    a, b = networks[:2]
    one, two = SQLiteRegistry(tmp_path / "r.sqlite3"), SQLiteRegistry(tmp_path / "r.sqlite3")
    one.open()
    two.open()
    for reg in (one, two):
        reg.put("ns", a)
        reg.put("ns", b)
        assert reg.cached("ns", a.id) is not None
    queries: list[str] = []
    two._watch.set_trace_callback(queries.append)  # noqa: SLF001 - what the hot path asks SQLite
    for _ in range(3):
        assert two.cached("ns", a.id) is not None
    assert queries == []  # nothing committed: the WAL index header said so, no query
    assert one.delete("ns", a.id) is False
    assert two.cached("ns", a.id) is None  # at once, with no call to the database but the version
    assert queries[0] == "PRAGMA data_version"
    with pytest.raises(NotFoundError):
        two.get("ns", a.id)
    assert two.cached("ns", b.id) is not None  # only what was deleted is forgotten
    # registered again through one: two reads it back
    one.put("ns", a)
    assert two.get("ns", a.id).id == a.id
    one.close()
    two.close()


def test_a_registry_that_missed_more_deletions_than_the_log_keeps_forgets_everything(tmp_path, networks,
                                                                                       monkeypatch):
    import service.registry.sqlite as module

    monkeypatch.setattr(module, "_DELETIONS_KEPT", 2)
    a, b, c = networks[:3]
    one, two = SQLiteRegistry(tmp_path / "r.sqlite3"), SQLiteRegistry(tmp_path / "r.sqlite3")
    one.open()
    two.open()
    for net in (a, b, c):
        one.put("ns", net)
        two.get("ns", net.id)
    one.put("other", c)
    two.get("other", c.id)
    for net in (a, b, c):
        one.delete("ns", net.id)
    assert two.cached("other", c.id) is None  # not deleted, but two cannot know: read again
    assert two.get("other", c.id).id == c.id
    assert two.cached("ns", a.id) is None
    one.close()
    two.close()


@pytest.fixture
def pg_registries(postgres_url):
    one, two = PostgresRegistry(postgres_url), PostgresRegistry(postgres_url)
    one.open()
    two.open()
    yield one, two
    one.close()
    two.close()


def _poll(predicate, timeout=5.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.001)
    return predicate()


def test_postgres_operations_and_namespaces(pg_registries, networks):
    registry, _ = pg_registries
    a, b = networks[:2]
    signature, created = registry.put("ns1", a)
    assert created and signature == a.signature()
    assert registry.put("ns1", a) == (signature, False)
    registry.put("ns1", b)
    assert [s["network_id"] for s in registry.list("ns1")] == [a.id, b.id]
    assert engine.parse_network(json.loads(registry.document("ns1", a.id))).id == a.id
    assert registry.list("bob") == []
    with pytest.raises(NotFoundError) as info:
        registry.get("bob", a.id)
    assert status_of(info.value) == 404
    assert registry.put("bob", a)[1] is True
    assert registry.delete("ns1", a.id) is True
    assert registry.delete("bob", a.id) is False
    with pytest.raises(NotFoundError):
        registry.delete("bob", a.id)
    assert [s["network_id"] for s in registry.list("ns1")] == [b.id]


def test_postgres_delete_reaches_the_other_registry_by_notify(pg_registries, networks):
    one, two = pg_registries
    a, b = networks[:2]
    one.put("ns", a)
    one.put("ns", b)
    assert two.get("ns", a.id).id == a.id and two.get("ns", b.id).id == b.id
    assert ("ns", a.id) in two._cache and two.cached("ns", a.id) is None  # never from memory alone
    one.delete("ns", a.id)
    # by id it is gone at once (get confirms in the database), and NOTIFY empties the LRU soon after
    with pytest.raises(NotFoundError):
        two.get("ns", a.id)
    assert _poll(lambda: ("ns", a.id) not in two._cache, timeout=2.0)
    assert ("ns", b.id) in two._cache and two.get("ns", b.id).id == b.id


def test_postgres_notify_empties_the_lru_of_a_registry_that_is_not_asked(pg_registries, networks):
    one, two = pg_registries
    a = networks[0]
    one.put("ns", a)
    two.get("ns", a.id)
    one.delete("ns", a.id)
    assert _poll(lambda: ("ns", a.id) not in two._cache, timeout=2.0)


def test_postgres_down_is_a_503_and_the_lru_is_bypassed(postgres_cluster, networks):
    """A registry on a database that stops: 503 on every route (the LRU too), and back once it is up."""
    url = postgres_cluster.create_database()
    reg = PostgresRegistry(url)
    reg.open()
    try:
        reg.put("ns", networks[0])
        assert ("ns", networks[0].id) in reg._cache
        postgres_cluster.stop()
        try:
            assert _poll(lambda: not healthy(reg), timeout=10)
            with pytest.raises(RegistryUnavailableError):
                reg.cached("ns", networks[0].id)
            with pytest.raises(RegistryUnavailableError):
                reg.list("ns")
        finally:
            postgres_cluster.start_again()
        assert _poll(lambda: healthy(reg) and reg._fresh(), timeout=15)
        assert reg.get("ns", networks[0].id).id == networks[0].id
    finally:
        reg.close()
