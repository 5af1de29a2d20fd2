"""Stored executables (engine/executables.py, issue 17.5): an engine that finds a program in its
store runs it without compiling, and answers what a compile would; a damaged entry or one of
another environment is ignored and compiled over; nothing is unpickled."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import engine
from engine import executables as x
from engine.transforms import GradOperation, Vjp
from tests.support import FIXTURES


class DictStore:
    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}
        self.puts = 0

    def get(self, key: str) -> bytes | None:
        return self.entries.get(key)

    def put(self, key: str, network_id: str, data: bytes) -> None:
        self.puts += 1
        self.entries[key] = data

    def recent(self, limit: int) -> list[bytes]:
        return list(self.entries.values())[-limit:]


def _mlp():
    request = json.loads((FIXTURES / "mlp.json").read_text())
    return engine.parse_network(request["network"]), list(engine.decode_inputs(request["inputs"]))


def _tutorial():
    request = json.loads((FIXTURES / "tutorial.json").read_text())["cases"][0]["request"]
    return engine.parse_network(request["network"]), list(engine.decode_inputs(request["inputs"]))


MLP_SPEC = GradOperation(get_by_list=True)


def _same(a, b) -> None:
    a, b = (a if isinstance(a, list) else [a]), (b if isinstance(b, list) else [b])
    assert len(a) == len(b)
    for u, v in zip(a, b):
        if isinstance(u, list):
            _same(u, v)
        else:
            np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_a_stored_program_runs_without_compiling_and_answers_the_same():
    net, xs = _mlp()
    store = DictStore()
    first = engine.Engine(executables=store)
    cold = first.run(net, MLP_SPEC, xs)
    assert cold.timing_ms["compile"] > 0 and store.puts == 1
    (data,) = store.entries.values()
    assert data.startswith(x.MAGIC)
    with pytest.raises(Exception):  # noqa: B017 - our bytes are not a pickle at all
        pickle.loads(data)

    second = engine.Engine(executables=store)
    warm = second.run(net, MLP_SPEC, xs)
    assert second.stats["loaded"] == 1 and second.stats["compile_seconds"] == 0.0
    assert store.puts == 1  # loaded, not compiled and written again
    _same(warm.gradients, cold.gradients)
    again = second.run(net, MLP_SPEC, xs)  # the warm path with a stored program
    assert again.cache_hit
    _same(again.gradients, cold.gradients)


def test_preload_puts_the_program_in_the_cache_before_the_first_call():
    net, xs = _mlp()
    store = DictStore()
    cold = engine.Engine(executables=store).run(net, MLP_SPEC, xs)
    fresh = engine.Engine(executables=store)
    assert [fresh.preload(d) for d in store.recent(8)] == [True]
    assert fresh.preload(next(iter(store.entries.values()))) is False  # already cached
    result = fresh.run(net, MLP_SPEC, xs)
    assert result.cache_hit and result.timing_ms["compile"] == 0.0
    assert fresh.stats["loaded"] == 1 and fresh.stats["compile_seconds"] == 0.0
    _same(result.gradients, cold.gradients)


def test_vectors_of_a_call_keep_their_place():
    # /vjp: the cotangent is the call's third argument; tutorial's two inputs and one parameter first
    net, xs = _tutorial()
    spec = Vjp()
    cot = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    store = DictStore()
    cold = engine.Engine(executables=store).run(net, spec, xs, extra=[cot])
    fresh = engine.Engine(executables=store)
    warm = fresh.run(net, spec, xs, extra=[cot])
    assert fresh.stats["loaded"] == 1
    assert cold.fields.keys() == warm.fields.keys()
    for key in cold.fields:
        _same(cold.fields[key], warm.fields[key])


def _rewrite(data: bytes, change) -> bytes:
    header, payload = x.read_header(data)
    change(header)
    header["sha256"] = __import__("hashlib").sha256(payload).hexdigest()
    text = json.dumps(header, sort_keys=True).encode()
    return x.MAGIC + x._LEN.pack(len(text)) + text + bytes(payload)


@pytest.mark.parametrize("what", ["jax", "device_kind", "engine"])
def test_an_entry_of_another_environment_is_ignored_and_compiled_over(what):
    net, xs = _mlp()
    store = DictStore()
    cold = engine.Engine(executables=store).run(net, MLP_SPEC, xs)
    (key,) = store.entries
    store.entries[key] = _rewrite(store.entries[key], lambda h: h["env"].__setitem__(what, "other"))
    fresh = engine.Engine(executables=store)
    assert fresh.preload(store.entries[key]) is False
    result = fresh.run(net, MLP_SPEC, xs)
    assert fresh.stats["loaded"] == 0 and fresh.stats["compile_seconds"] > 0
    _same(result.gradients, cold.gradients)
    x.load(store.entries[key], fresh.device)  # compiled over: the entry is sound again


@pytest.mark.parametrize("damage", ["payload", "header", "truncated", "garbage", "empty"])
def test_a_damaged_entry_is_ignored_not_fatal(damage):
    net, xs = _mlp()
    store = DictStore()
    cold = engine.Engine(executables=store).run(net, MLP_SPEC, xs)
    (key,) = store.entries
    data = bytearray(store.entries[key])
    if damage == "payload":
        data[-100] ^= 0xFF
    elif damage == "header":
        data[len(x.MAGIC) + 6] ^= 0xFF
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytearray(b"\x80\x04not an entry" * 10)
    else:
        data = bytearray()
    store.entries[key] = bytes(data)
    with pytest.raises(x.EntryError):
        x.load(bytes(data), engine.Engine().device)
    fresh = engine.Engine(executables=store)
    assert fresh.preload(bytes(data)) is False
    result = fresh.run(net, MLP_SPEC, xs)
    assert fresh.stats["loaded"] == 0 and fresh.stats["compile_seconds"] > 0
    _same(result.gradients, cold.gradients)


def test_a_store_that_fails_is_a_compile():
    class Broken(DictStore):
        def get(self, key):
            raise OSError("disk gone")

        def put(self, key, network_id, data):
            raise OSError("disk gone")

    net, xs = _tutorial()
    eng = engine.Engine(executables=Broken())
    result = eng.run(net, GradOperation(get_all=True), xs)
    assert eng.stats["compile_seconds"] > 0 and len(result.gradients) == 2


def test_the_output_tree_round_trips_through_json():
    import jax

    for tree in ([1, 2], (1, [2, (3, None)]), {"a": 1, "b": (2, 3)}, [], ((),), None):
        treedef = jax.tree_util.tree_structure(tree)
        doc = json.loads(json.dumps(x.treedef_json(treedef)))
        assert x.treedef_from_json(doc) == treedef
    with pytest.raises(x.EntryError):
        x.treedef_from_json({"pickle": "x"})


def test_batched_programs_are_stored_loaded_and_preloaded():
    net, xs = _tutorial()
    spec = GradOperation(get_all=True)
    rng = np.random.default_rng(0)
    rows = [[rng.standard_normal(x.shape).astype(x.dtype) for x in xs] for _ in range(3)]
    store = DictStore()
    first = engine.Engine(executables=store)
    calls = [first.prepare(net, spec, r) for r in rows]
    cold = first.run_batch(net, calls, 4)
    assert store.puts == 1 and first.stats["compile_seconds"] > 0

    second = engine.Engine(executables=store)  # loads the batched program when it is first needed
    warm = second.run_batch(net, [second.prepare(net, spec, r) for r in rows], 4)
    assert second.stats["loaded"] == 1 and second.stats["compile_seconds"] == 0.0
    third = engine.Engine(executables=store)  # or preloads it, as a starting worker does
    assert third.preload(next(iter(store.entries.values())))
    calls3 = [third.prepare(net, spec, r) for r in rows]
    assert third.batch_compiled(calls3[0], 4) and not third.batch_compiled(calls3[0], 2)
    pre = third.run_batch(net, calls3, 4)
    assert third.stats["compile_seconds"] == 0.0
    for a, b, c in zip(cold, warm, pre):
        _same(a.gradients, b.gradients)
        _same(a.gradients, c.gradients)
