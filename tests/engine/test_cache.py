"""The LRU cache, the engine's in-memory compile cache and the persistent XLA compile cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from engine import Engine, ShapeError, parse_network
from engine.cache import LRUCache

ROOT = Path(__file__).resolve().parents[2]


def has_compiled(engine: Engine, network_id: str) -> bool:
    """Whether ``engine`` holds a compiled program for the network (a test's look at its cache)."""
    return any(key[0] == network_id for key in engine._compiled.keys())  # noqa: SLF001


# -- LRUCache --------------------------------------------------------------------------------------


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        LRUCache(0)


def test_get_put_and_stats():
    cache: LRUCache[str] = LRUCache(2)
    assert cache.get("a") is None
    cache.put("a", "A")
    assert cache.get("a") == "A"
    assert "a" in cache and "b" not in cache and len(cache) == 1
    assert cache.stats.as_dict() == {"hits": 1, "misses": 1, "evictions": 0, "compile_seconds": 0.0, "size": 1,
                                     "loaded": 0}


def test_evicts_the_least_recently_used():
    cache: LRUCache[int] = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)  # evicts "b"
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.stats.evictions == 1 and cache.stats.size == 2
    cache.put("a", 10)  # replacing refreshes, does not evict
    cache.put("d", 4)  # evicts "c"
    assert list(cache._items) == ["a", "d"] and cache.get("a") == 10
    assert cache.stats.evictions == 2 and len(cache) == 2


def test_a_cached_none_is_a_hit():
    cache: LRUCache[None] = LRUCache(2)
    cache.put("a", None)
    assert "a" in cache and cache.get("a", "missing") is None
    assert (cache.stats.hits, cache.stats.misses) == (1, 0)
    made: list[int] = []
    value, hit = cache.get_or_create("a", lambda: made.append(1))
    assert (value, hit, made) == (None, True, [])
    assert cache.get("b", "missing") == "missing" and cache.stats.misses == 1


def test_put_returns_the_evicted_keys_and_pop_forgets():
    cache: LRUCache[int] = LRUCache(2)
    assert cache.put("a", 1) == [] and cache.put("b", 2) == []
    assert cache.put("c", 3) == ["a"]
    cache.pop("b")
    cache.pop("missing")
    assert cache.keys() == ["c"] and cache.stats.size == 1


def test_get_or_create():
    cache: LRUCache[list] = LRUCache(4)
    made = []
    value, hit = cache.get_or_create("k", lambda: made.append(1) or ["v"])
    assert (value, hit) == (["v"], False)
    value2, hit2 = cache.get_or_create("k", lambda: made.append(1) or ["w"])
    assert value2 is value and hit2 and made == [1]
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)


def test_failed_create_stores_nothing():
    cache: LRUCache[int] = LRUCache(4)
    with pytest.raises(RuntimeError):
        cache.get_or_create("k", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert "k" not in cache and cache.stats.size == 0


def test_discard_where():
    cache: LRUCache[int] = LRUCache(8)
    for key in [("n1", 1), ("n1", 2), ("n2", 1), "n1"]:
        cache.put(key, 0)
    cache.discard_where(lambda k: k == "n1" or (isinstance(k, tuple) and k[0] == "n1"))
    assert list(cache._items) == [("n2", 1)] and cache.stats.size == 1


def test_threads_respect_the_bound():
    cache: LRUCache[int] = LRUCache(16)

    def work(offset: int) -> None:
        for i in range(500):
            cache.put((offset, i % 40), i)
            cache.get((offset, (i * 7) % 40))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 16 == cache.stats.size
    assert cache.stats.hits + cache.stats.misses == 2000


# -- the engine's compile cache ----------------------------------------------------------------------

NET = {
    "format": "gradnet/1",
    "inputs": [{"name": "x"}, {"name": "y"}],
    "parameters": [
        {"name": "w", "value": {"dtype": "float32", "shape": [3], "data": [1.0, 2.0, 3.0]}},
        {"name": "b", "value": {"dtype": "float32", "shape": [3], "data": [0.0, 0.5, 1.0]}},
    ],
    "nodes": [
        {"name": "xw", "op": "Mul", "inputs": ["x", "w"]},
        {"name": "h", "op": "Add", "inputs": ["xw", "b"]},
        {"name": "out", "op": "Mul", "inputs": ["h", "y"]},
    ],
    "outputs": ["out"],
}
X = np.ones((2, 3), np.float32)
Y = np.full((2, 3), 2.0, np.float32)


@pytest.fixture
def net():
    return parse_network(NET)


def test_same_call_twice_is_one_miss_then_one_hit(net):
    engine = Engine()
    first = engine.grad(net, [X, Y], get_all=True)
    second = engine.grad(net, [X, Y], get_all=True)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    stats = engine.stats
    assert (stats["misses"], stats["hits"], stats["size"], stats["evictions"]) == (1, 1, 1, 0)
    assert stats["compile_seconds"] > 0
    assert has_compiled(engine, net.id)


def test_new_values_of_the_same_signature_hit(net):
    engine = Engine()
    engine.grad(net, [X, Y])
    engine.grad(net, [X * 3, Y - 1])
    # a fresh parse of the same document is the same network
    engine.grad(parse_network(json.loads(json.dumps(NET))), [X, Y])
    assert (engine.stats["misses"], engine.stats["hits"]) == (1, 2)


@pytest.mark.parametrize(
    "call",
    [
        dict(inputs=[np.ones((4, 3), np.float32), np.ones((4, 3), np.float32)]),      # shapes
        dict(inputs=[X.astype(np.float64), Y]),                                        # dtypes
        dict(get_all=True),                                                            # flags
        dict(get_by_list=True),
        dict(get_all=True, get_by_list=True),
        dict(get_by_list=True, weights=["b"]),                                         # weights
        dict(get_by_list=True, weights=["b", "w"]),
        dict(sens_param=True, sens=np.ones((2, 3), np.float32)),
        dict(return_value=True),
    ],
)
def test_different_signatures_get_separate_entries(net, call):
    engine = Engine()
    base = engine.grad(net, [X, Y], get_by_list=True, weights=["w"])
    call = dict(call)
    inputs = call.pop("inputs", [X, Y])
    r = engine.grad(net, inputs, **call)
    assert not base.cache_hit and not r.cache_hit
    assert (engine.stats["misses"], engine.stats["size"]) == (2, 2)
    assert engine.grad(net, inputs, **call).cache_hit


def test_default_and_explicit_weights_share_an_entry(net):
    engine = Engine()
    engine.grad(net, [X, Y], get_by_list=True)
    assert engine.grad(net, [X, Y], get_by_list=True, weights=["w", "b"]).cache_hit


def test_different_networks_get_separate_entries(net):
    engine = Engine()
    other = parse_network(dict(NET, outputs=["h"]))
    engine.grad(net, [X, Y])
    assert not engine.grad(other, [X, Y]).cache_hit
    assert engine.stats["size"] == 2


def test_capacity_bound_is_respected(net):
    engine = Engine(cache_size=2)
    shapes = [(1, 3), (2, 3), (3, 3)]
    for n, _ in shapes:
        engine.grad(net, [np.ones((n, 3), np.float32)] * 2)
    assert engine.stats["size"] == 2 and engine.stats["evictions"] == 1
    assert engine.grad(net, [np.ones((3, 3), np.float32)] * 2).cache_hit  # most recent: still there
    assert not engine.grad(net, [np.ones((1, 3), np.float32)] * 2).cache_hit  # the oldest was evicted
    assert engine.stats["size"] == 2 and engine.stats["evictions"] == 2
    assert len(engine._out_avals) <= 8 and len(engine._params) <= 2


def test_forget_drops_a_networks_entries(net):
    engine = Engine()
    other = parse_network(dict(NET, outputs=["h"]))
    engine.grad(net, [X, Y])
    engine.grad(net, [X, Y], get_all=True, sens_param=True, sens=Y)
    engine.grad(other, [X, Y])
    assert engine.stats["size"] == 3
    engine.forget(net.id)
    assert not has_compiled(engine, net.id) and has_compiled(engine, other.id)
    assert engine.stats["size"] == 1
    assert all(k[0] != net.id for k in engine._out_avals._items)
    assert net.id not in engine._params and other.id in engine._params
    misses = engine.stats["misses"]
    assert not engine.grad(net, [X, Y]).cache_hit
    assert engine.stats["misses"] == misses + 1
    assert engine.grad(other, [X, Y]).cache_hit
    engine.forget("sha256:unknown")  # forgetting an unknown id is a no-op
    assert engine.stats["size"] == 2


def test_failed_compile_is_not_cached(net):
    engine = Engine()
    with pytest.raises(ShapeError):
        engine.grad(net, [np.ones((2, 4), np.float32), Y])
    assert engine.stats["size"] == 0 and not has_compiled(engine, net.id)


# -- the persistent compile cache -------------------------------------------------------------------

SCRIPT = r"""
import json, os, sys
events = []
import jax.monitoring
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
import numpy as np
import engine

engine.configure_jax()
directory = sys.argv[1]
eng = engine.Engine(compile_cache_dir=directory)
net = engine.parse_network(json.loads(sys.argv[2]))
r = eng.grad(net, [np.ones((2, 3), np.float32), np.full((2, 3), 2.0, np.float32)], get_all=True)
files = sorted(os.path.relpath(os.path.join(d, f), directory) for d, _, fs in os.walk(directory) for f in fs)
print(json.dumps({
    "disk_hits": events.count("/jax/compilation_cache/cache_hits"),
    "disk_misses": events.count("/jax/compilation_cache/cache_misses"),
    "files": files,
    "gradient": np.asarray(r.gradients[0]).tolist(),
}))
"""


def _run(directory: Path, doc: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(directory), json.dumps(doc)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_persistent_compile_cache_survives_a_restart(tmp_path):
    directory = tmp_path / "xla-cache"
    first = _run(directory, NET)
    assert first["files"], "the first process wrote nothing to the compile cache"
    assert first["disk_misses"] >= 1 and first["disk_hits"] == 0

    second = _run(directory, NET)
    assert second["disk_hits"] >= 1 and second["disk_misses"] == 0  # served from disk, not compiled
    assert second["files"] == first["files"]  # nothing new written for the same network
    assert second["gradient"] == first["gradient"]

    third = _run(directory, dict(NET, outputs=["h"]))  # another network compiles and adds an entry
    assert third["disk_misses"] >= 1
    assert set(first["files"]) < set(third["files"])


def test_warm_fast_path_matches_the_general_path_and_still_validates():
    """A warm list-input call skips binding; a call of another signature is validated again."""
    from engine import DTypeError

    doc = dict(NET, inputs=[{"name": "x", "dtype": "float32", "shape": [2, 3]}, {"name": "y"}])
    constrained = parse_network(doc)
    engine = Engine()
    cold = engine.grad(constrained, [X, Y], get_all=True)
    warm = engine.grad(constrained, [X * 2, Y], get_all=True)
    general = engine.grad(constrained, {"x": X * 2, "y": Y}, get_all=True)  # dict inputs: general path
    assert warm.cache_hit and general.cache_hit and not cold.cache_hit
    for a, b in zip(warm.gradients, general.gradients, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(DTypeError):
        engine.grad(constrained, [X.astype(np.float64), Y], get_all=True)
    assert engine.stats["hits"] == 2 and engine.stats["misses"] == 1
