"""Warm restarts (issue 17.5): a server started on the executable store of one that ran before
answers its first /grad on a known network without compiling (the worker preloaded the program),
the same answer; a damaged or foreign entry in the store is skipped, never fatal. Real servers,
real restarts."""

from __future__ import annotations

import json
import re
from pathlib import Path

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
    assert local == {"kind": "directory", "path": "var/r.sqlite3.executables"}
    shared = settings_config(Settings(executable_store="registry", registry_url="postgresql://h/db"))
    assert shared == {"kind": "postgres", "url": "postgresql://h/db"}
    assert settings_config(Settings(executable_store="/srv/x")) == {"kind": "directory", "path": "/srv/x"}


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
