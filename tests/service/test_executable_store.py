"""Warm restarts (issue 17.5): a server started on the executable store of one that ran before
answers its first /grad on a known network without compiling (the worker preloaded the program),
the same answer; a damaged or foreign entry in the store is skipped, never fatal. Real servers,
real restarts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from engine.executables import EntryError, read_header
from service.registry.executables import DirectoryStore, settings_config
from service.settings import Settings
from tests.support import FIXTURES
from tests.support.servers import start_server

pytestmark = pytest.mark.timeout(300)


def _mlp() -> dict:
    return json.loads((FIXTURES / "mlp.json").read_text())


def _metric(client, name: str) -> float:
    text = client.get("/metrics").text
    found = re.findall(rf'^{name}{{worker="0"}} ([0-9.e+-]+)$', text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found[0])


def _grad(server) -> dict:
    with server.client() as c:
        r = c.post("/grad", json=_mlp())
        assert r.status_code == 200, r.text
        return r.json()


def test_a_restarted_server_answers_its_first_grad_without_compiling(tmp_path: Path):
    store = tmp_path / "executables"
    first = start_server(tmp_path / "a", executable_store=store)
    try:
        cold = _grad(first)
        assert cold["timing_ms"]["compile"] > 0
        with first.client() as c:
            assert _metric(c, "gradserve_compile_cache_loaded_total") == 0
    finally:
        first.stop()
    assert len(list(store.glob("*.xla"))) == 1

    second = start_server(tmp_path / "b", executable_store=store)
    try:
        with second.client() as c:  # preloaded before the worker said hello
            assert _metric(c, "gradserve_compile_cache_loaded_total") == 1
        warm = _grad(second)
        assert warm["timing_ms"]["compile"] == 0.0
        with second.client() as c:
            assert _metric(c, "gradserve_compile_cache_compile_seconds_total") == 0.0
        assert warm["gradients"] == cold["gradients"]
    finally:
        second.stop()

    # without the warm-up the first call loads the program from the store instead of compiling
    third = start_server(tmp_path / "c", executable_store=store, warm_programs=0)
    try:
        with third.client() as c:
            assert _metric(c, "gradserve_compile_cache_loaded_total") == 0
        loaded = _grad(third)
        with third.client() as c:
            assert _metric(c, "gradserve_compile_cache_loaded_total") == 1
            assert _metric(c, "gradserve_compile_cache_compile_seconds_total") == 0.0
        assert loaded["gradients"] == cold["gradients"]
    finally:
        third.stop()


def test_a_restarted_worker_parsed_the_warm_networks_so_their_first_job_carries_no_document(tmp_path: Path):
    """Issue 17.5 end to end: the warm-up also parses the preloaded programs' (still registered)
    networks from the registry and says so in its hello, so the pool sends the first job by
    reference (no 2.7 MB document to send and parse). A network deleted meanwhile is not warmed
    and a job for it still works (it carries its document); a respawned worker warms again."""
    import asyncio

    import engine
    from tests.service.pool.test_pool import Running

    store, registry = tmp_path / "executables", tmp_path / "registry.sqlite3"
    mlp = _mlp()
    first = start_server(tmp_path / "a", executable_store=store, registry_path=registry)
    try:
        with first.client() as c:
            network_id = c.post("/networks", json=mlp["network"]).json()["network_id"]
            by_id = {"network_id": network_id, "inputs": mlp["inputs"], "get_by_list": True}
            r = c.post("/grad", json=by_id)
            assert r.status_code == 200, r.text
            cold = r.json()
    finally:
        first.stop()

    # a real restart: the server's first /grad by id answers the same, compiling nothing
    second = start_server(tmp_path / "b", executable_store=store, registry_path=registry)
    try:
        with second.client() as c:
            r = c.post("/grad", json=by_id)
            assert r.status_code == 200, r.text
            assert r.json()["timing_ms"]["compile"] == 0.0
            assert r.json()["gradients"] == cold["gradients"]
    finally:
        second.stop()

    # the same restart seen from the pool: its worker holds the network before any job, and the
    # first job's document was never asked for (the pool asks only for a worker that lacks it)
    net = engine.parse_network(mlp["network"])
    assert net.id == network_id
    inputs = [engine.decode_tensor(x) for x in mlp["inputs"]]
    # a worker process (the pool in this process, its worker SIGKILLed below): the process design
    settings = Settings(workers=1, device="cpu", executable_store=str(store), registry_path=registry,
                        worker_mode="process")
    loop = asyncio.new_event_loop()
    try:
        pool = Running(loop, settings)
        pool.start()
        try:
            assert pool.pool.snapshot()[0]["networks"] == 1
            result = pool.run(pool.submit(net, inputs, get_by_list=True))
            assert pool.docs.calls == {}  # by reference
            assert result.timing_ms["compile"] == 0.0
            grads = engine.decode_tensor(cold["gradients"][0])
            np.testing.assert_array_equal(result.fields["gradients"][0], grads)
            # respawned (killed): the new incarnation warms again and says so in its hello
            import os
            import signal

            pid = pool.pids()[0]
            os.kill(pid, signal.SIGKILL)
            pool.run(_until(lambda: pool.pids()[0] != pid and pool.pool.ready))
            assert pool.pool.snapshot()[0]["networks"] == 1
            pool.run(pool.submit(net, inputs, get_by_list=True))
            assert pool.docs.calls == {}
        finally:
            pool.stop()

        # deleted meanwhile: not warmed (its programs are still in the store), and a job still works
        third = start_server(tmp_path / "c", executable_store=store, registry_path=registry)
        try:
            with third.client() as c:
                assert c.delete(f"/networks/{network_id}").status_code in (200, 204)
        finally:
            third.stop()
        pool = Running(loop, settings)
        pool.start()
        try:
            assert pool.pool.snapshot()[0]["networks"] == 0
            result = pool.run(pool.submit(net, inputs, get_by_list=True))
            assert pool.docs.calls == {net.id: 1}  # it carried its document
            np.testing.assert_array_equal(result.fields["gradients"][0], grads)
        finally:
            pool.stop()
    finally:
        loop.close()


async def _until(predicate, timeout_s: float = 60.0) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_damaged_and_foreign_entries_are_skipped(tmp_path: Path):
    store = tmp_path / "executables"
    first = start_server(tmp_path / "a", executable_store=store)
    try:
        cold = _grad(first)
    finally:
        first.stop()
    (entry,) = store.glob("*.xla")
    data = bytearray(entry.read_bytes())
    data[-64] ^= 0xFF  # the executable's bytes no longer match their checksum
    entry.write_bytes(bytes(data))
    (store / ("0" * 64 + ".xla")).write_bytes(b"not an entry at all")

    second = start_server(tmp_path / "b", executable_store=store)
    try:
        with second.client() as c:
            assert _metric(c, "gradserve_compile_cache_loaded_total") == 0
        again = _grad(second)
        assert again["timing_ms"]["compile"] > 0  # compiled, and written over the damaged entry
        assert again["gradients"] == cold["gradients"]
        with second.client() as c:
            assert _metric(c, "gradserve_compile_cache_loaded_total") == 0
    finally:
        second.stop()
    sound = []
    for path in store.glob("*.xla"):  # compiled over (a new key if the engine's code changed meanwhile)
        try:
            sound.append(read_header(path.read_bytes()))
        except EntryError:
            pass
    assert len(sound) == 1


def test_registry_store_choice():
    assert settings_config(Settings()) is None
    local = settings_config(Settings(executable_store="registry", registry_path="var/r.sqlite3"))
    assert local == {"kind": "directory", "path": "var/r.sqlite3.executables",
                     "registry": {"kind": "sqlite", "path": "var/r.sqlite3"}}
    shared = settings_config(Settings(executable_store="registry", registry_url="postgresql://h/db"))
    assert shared == {"kind": "postgres", "url": "postgresql://h/db",
                      "registry": {"kind": "postgres", "url": "postgresql://h/db"}}
    assert settings_config(Settings(executable_store="/srv/x", registry_path="var/r.sqlite3")) == {
        "kind": "directory", "path": "/srv/x", "registry": {"kind": "sqlite", "path": "var/r.sqlite3"}}


def test_directory_store_recent_first_and_bounded(tmp_path: Path):
    import os

    store = DirectoryStore(tmp_path, max_entries=3)
    keys = [f"{i:064x}" for i in range(5)]
    for i, key in enumerate(keys):
        store.put(key, "net", bytes([i]))
        os.utime(tmp_path / f"{key}.xla", (1000 + i, 1000 + i))
    assert store.get("f" * 64) is None
    assert store.get(keys[0]) == b"\x00"  # a use: now the most recent
    assert store.recent(2) == [b"\x00", b"\x04"]
    store._prune()
    assert sorted(p.name for p in tmp_path.glob("*.xla")) == sorted(f"{k}.xla" for k in (keys[0], keys[3], keys[4]))
    with pytest.raises(ValueError):
        store.get("../etc/passwd")
