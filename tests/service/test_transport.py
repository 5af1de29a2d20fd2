"""The server <-> worker transport (one frame per message, shared-memory arenas for large
tensors) and the large-result paths of /grad (binary tensors streamed from the result arrays,
JSON text written by the worker and the server together): everything comes back exactly as the
plain paths would have it."""

from __future__ import annotations

import asyncio
import json
import pickle
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest

import engine
from service import codec
from service.jobs import GradJob, JobResult
from service.settings import Settings
from service.worker_main import Arena, FirstFit, RingReleaser, RingWriter, decode_frame, encode_msg
from service.workers import WorkerPool
from tests.support import FIXTURES
from tests.support.api_contract import decode_response, encode_request

MiB = 1 << 20


def roundtrip(msg: Any, alloc: Any = None, arena: Arena | None = None, region: Any = None) -> tuple[Any, int | None]:
    parts, start = encode_msg(msg, alloc, arena)
    frame = b"".join(bytes(memoryview(p).cast("B")) for p in parts)
    (size,) = np.frombuffer(frame[:8], "<u8")
    assert size == len(frame) - 8  # one frame, its length first
    return decode_frame(bytearray(frame[8:]), region), start


# -- framing and arenas ----------------------------------------------------------------------


def test_a_small_message_is_one_part_and_its_arrays_come_back_writable() -> None:
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array(2.5), np.zeros((0, 4), np.int64)]
    parts, start = encode_msg(("result", 1, arrays))
    assert len(parts) == 1 and start is None
    got, _ = roundtrip(("result", 1, arrays))
    for g, e in zip(got[2], arrays):
        assert g.dtype == e.dtype and g.shape == e.shape and g.flags.writeable
        np.testing.assert_array_equal(g, e)


def test_large_buffers_go_through_the_arena_and_small_ones_inline() -> None:
    arena, _ = Arena.create(16 * MiB)
    first_fit = FirstFit(arena)
    big, small = np.random.default_rng(0).random((300, 300)), np.arange(5.0)
    got, start = roundtrip(("job", [big, small]), first_fit.alloc, arena,
                           lambda s, n: arena.region(s % arena.size, n))
    assert start == 0 and first_fit.used == [(0, big.nbytes)]
    np.testing.assert_array_equal(got[1][0], big)
    np.testing.assert_array_equal(got[1][1], small)
    first_fit.free(start)
    assert first_fit.used == []


def test_first_fit_reuses_freed_regions_and_refuses_what_does_not_fit() -> None:
    arena, _ = Arena.create(4 * MiB)
    ff = FirstFit(arena)
    a, b, c = ff.alloc(MiB), ff.alloc(MiB), ff.alloc(MiB)
    assert (a, b, c) == (0, MiB, 2 * MiB)
    assert ff.alloc(2 * MiB) is None  # the message then goes through the socket
    ff.free(b)
    assert ff.alloc(MiB) == MiB  # the hole is reused
    assert ff.alloc(MiB) == 3 * MiB


def test_an_arena_gives_back_what_lies_past_keep_when_it_empties() -> None:
    arena, _ = Arena.create(32 * MiB)
    ff = FirstFit(arena)
    a, b = ff.alloc(6 * MiB), ff.alloc(6 * MiB)
    arena.view[a:a + 6 * MiB] = b"\x01" * (6 * MiB)
    arena.view[b:b + 6 * MiB] = b"\x02" * (6 * MiB)
    ff.free(a)
    assert arena.view[b + 6 * MiB - 1] == 2  # still in use: nothing given back
    ff.free(b)
    assert arena.view[a] == 1 and arena.view[Arena.KEEP - 1] == 2  # kept (warm) below KEEP
    assert arena.view[Arena.KEEP] == 0 and arena.view[b + 6 * MiB - 1] == 0  # given back past it


def test_the_results_ring_releases_when_the_arrays_are_gone_in_any_order() -> None:
    arena, _ = Arena.create(8 * MiB)
    ring, releaser = RingWriter(arena), RingReleaser(arena)

    def send(n_floats: int) -> tuple[Any, int | None]:
        msg, start = roundtrip(("result", np.full(n_floats, 7.0, np.float32)), ring.alloc, arena, releaser.track)
        return msg, start

    held = [send(MiB // 4 * 3) for _ in range(3)]  # 3 MiB each: the third does not fit
    assert [start is None for _, start in held] == [False, False, True]
    assert all(float(m[1][0]) == 7.0 and float(m[1][-1]) == 7.0 for m, _ in held)
    del held[1]  # released out of order: nothing is published until the first one goes
    assert int(arena.mark[0]) == 0
    assert send(MiB // 4 * 3)[1] is None
    del held[0]
    assert int(arena.mark[0]) > 0
    msg, start = send(MiB // 4 * 3)
    assert start is not None and float(msg[1].sum()) == 7.0 * (MiB // 4 * 3)
    del msg, held
    # Empty again: the next result starts at the beginning of the arena (warm pages).
    msg, start = send(100_000)
    assert start is not None and start % arena.size == 0


def test_many_large_results_cycle_through_the_ring() -> None:
    arena, _ = Arena.create(16 * MiB)
    ring, releaser = RingWriter(arena), RingReleaser(arena)
    rng = np.random.default_rng(1)
    for i in range(40):
        a, b = rng.random(700_000).astype(np.float32), rng.random(1_100_000).astype(np.float32)
        r1, s1 = roundtrip(("result", a), ring.alloc, arena, releaser.track)
        r2, s2 = roundtrip(("json_part", [pickle.PickleBuffer(b.tobytes())]), ring.alloc, arena, releaser.track)
        assert s1 is not None and s2 is not None, i  # both fit while the first is still held
        np.testing.assert_array_equal(r1[1], a)
        assert bytes(r2[1][0][:16]) == b.tobytes()[:16]
        del r1, r2


# -- JSON written by two processes -----------------------------------------------------------


def _fields(rng: np.random.Generator) -> list[dict[str, Any]]:
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return [
        {"gradients": [f32(300, 300), f32(7), f32(0, 3), f32(50_000)]},
        {"gradients": [[f32(100, 200)], [f32(200, 300), f32(3)]]},
        {"gradients": f32(400, 400)},
        {"gradients": [f32(20_000), f32(30_000), f32(20_000)], "value": [f32(10), f32(5, 5)]},
        {"gradients": [np.arange(70_000, dtype=np.int64), rng.standard_normal(100)]},
    ]


@pytest.mark.parametrize("share", [0.0, 0.13, 0.5, 0.999, 1.0])
def test_the_split_text_is_byte_for_byte_the_plain_text(share: float) -> None:
    for fields in _fields(np.random.default_rng(2)):
        arrays = codec.flat_tensors(fields)
        split = codec.split_point(arrays, share)
        assert split is not None
        worker = [np.frombuffer(t, np.uint8) for t in codec.write_share(arrays, split, worker=True)]
        server = codec.write_share(arrays, split, worker=False)
        joined = codec.join_shares(fields, split, worker, server)
        plain, _ = codec.encode_fields(fields, "json")
        for name in fields:
            assert b"".join(bytes(memoryview(p).cast("B")) for p in joined[name]) == plain[name]


def test_no_split_for_small_or_odd_results_and_none_for_a_share_with_a_nan() -> None:
    assert codec.split_point([np.ones(100, np.float32)]) is None
    assert codec.split_point([np.ones(100_000, np.float16)]) is None  # not a native dtype
    x = np.ones(100_000, np.float32)
    x[10] = np.nan
    split = codec.split_point([x])
    assert codec.write_share([x], split, worker=True) is None
    assert codec.write_share([x], split, worker=False) is not None


# -- through a real worker ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool() -> Iterator[tuple[asyncio.AbstractEventLoop, WorkerPool]]:
    loop = asyncio.new_event_loop()
    pool = WorkerPool(Settings(workers=1, device="cpu", queue_size=16))

    async def start() -> None:
        await pool.start()
        while not pool.ready:
            await asyncio.sleep(0.01)

    loop.run_until_complete(asyncio.wait_for(start(), 90))
    yield loop, pool
    loop.run_until_complete(pool.drain(5.0))
    loop.close()


def _mlp() -> tuple[engine.Network, list[np.ndarray]]:
    doc = json.loads((FIXTURES / "mlp.json").read_text())
    return engine.parse_network(doc["network"]), engine.decode_inputs(doc["inputs"])


def test_large_inputs_and_results_cross_through_the_arenas(pool: tuple[Any, WorkerPool]) -> None:
    loop, p = pool
    net, xs = _mlp()
    expected = engine.Engine().grad(net, xs, get_by_list=True).gradients

    async def run() -> list[JobResult]:
        jobs = [GradJob(network_id=net.id, inputs=xs, get_by_list=True, deadline=time.monotonic() + 60)
                for _ in range(6)]
        return await asyncio.gather(*(p.submit(j, lambda: net.to_json("b64")) for j in jobs))

    results = loop.run_until_complete(run())
    proc = p._slots[0].proc
    assert proc.jobs_alloc is not None and proc.jobs_alloc.used == []  # every input region freed
    for r in results:
        for g, e in zip(r.gradients, expected):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    del results, r, g
    assert len(proc.releaser.regions) == 0  # the results' regions went back with the arrays


def test_a_split_json_result_comes_in_two_messages(pool: tuple[Any, WorkerPool]) -> None:
    loop, p = pool
    net, xs = _mlp()

    async def run() -> tuple[JobResult, Any]:
        job = GradJob(network_id=net.id, inputs=xs, get_by_list=True, deadline=time.monotonic() + 60,
                      json_split=True)
        result = await p.submit(job, lambda: net.to_json("b64"))
        return result, await result.json_part

    result, theirs = loop.run_until_complete(run())
    assert result.json_split is not None and theirs is not None
    fields = {"gradients": result.gradients}
    mine = codec.write_share(codec.flat_tensors(fields), result.json_split, worker=False)
    joined = codec.join_shares(fields, result.json_split, theirs, mine)
    text = b"".join(bytes(memoryview(x).cast("B")) for x in joined["gradients"])
    assert text == codec.encode_fields(fields, "json")[0]["gradients"]
    assert p._slots[0].proc.pending == {}


def test_a_worker_that_dies_while_writing_its_share_leaves_the_text_to_the_server() -> None:
    loop = asyncio.new_event_loop()
    p = WorkerPool(Settings(workers=1, device="cpu"))
    net, xs = _mlp()

    async def run() -> tuple[Any, Any]:
        await p.start()
        while not p.ready:
            await asyncio.sleep(0.01)
        job = GradJob(network_id=net.id, inputs=xs, get_by_list=True, deadline=time.monotonic() + 60,
                      json_split=True)
        result = await p.submit(job, lambda: net.to_json("b64"))
        p._slots[0].proc.process.kill()  # it is writing its share now (milliseconds of orjson)
        return result, await asyncio.wait_for(result.json_part, 30)

    try:
        result, theirs = loop.run_until_complete(run())
        assert result.json_split is not None
        assert theirs is None or isinstance(theirs, list)  # None: the server writes it all (app.py)
        loop.run_until_complete(asyncio.wait_for(_until(lambda: p.ready), 90))  # respawned
    finally:
        loop.run_until_complete(p.drain(5.0))
        loop.close()


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.02)


# -- over HTTP --------------------------------------------------------------------------------


def _wide_request(x: list[Any]) -> dict[str, Any]:
    """x (1x300) @ w (300x300), summed: d/dw has 90,000 elements (a split JSON result)."""
    w = np.random.default_rng(3).standard_normal((300, 300)).astype(np.float32)
    network = {
        "format": "gradnet/1", "name": "wide", "inputs": [{"name": "x"}],
        "parameters": [{"name": "w", "value": {"dtype": "float32", "shape": [300, 300], "data": w.ravel().tolist()}}],
        "nodes": [{"name": "h", "op": "MatMul", "inputs": ["x", "w"]},
                  {"name": "s", "op": "ReduceSum", "inputs": ["h"], "attrs": {"axis": [], "keep_dims": False}}],
        "outputs": ["s"],
    }
    return {"network": network, "inputs": [{"dtype": "float32", "shape": [1, 300], "data": x}], "get_by_list": True}


@pytest.mark.parametrize("special", [None, "Infinity"])
def test_a_large_json_result_is_what_the_plain_path_writes(client: Any, special: str | None) -> None:
    x: list[Any] = list(np.random.default_rng(4).standard_normal(300).astype(np.float32).tolist())
    if special:
        x[7] = special  # a gradient row of infinities: not split, spelled out as the contract says
    request = _wide_request(x)
    body, headers = encode_request(request, "binary")
    binary = decode_response(client.post("/grad", content=body, headers=headers))
    r = client.post("/grad", content=orjson.dumps(request), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    text = r.content
    start, end = text.index(b'"gradients":') + len(b'"gradients":'), text.index(b',"gradient_names":')
    grads = [np.asarray(g) for g in binary["gradients"]]
    assert text[start:end] == orjson.dumps([engine.encode_tensor(g, "json") for g in grads],
                                           option=orjson.OPT_SERIALIZE_NUMPY)
    assert int(r.headers["content-length"]) == len(text)
    if special:
        assert b'"Infinity"' in text[start:end]


def test_a_large_binary_result_is_streamed_intact(client: Any) -> None:
    request = _wide_request(list(np.linspace(-1, 1, 300)))
    body, headers = encode_request(request, "binary")
    r = client.post("/grad", content=body, headers=headers)
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == len(r.content)
    json_part = orjson.loads(r.content[:int(r.headers["inference-header-content-length"])])
    assert json_part["gradients"][0]["binary_data_size"] == 300 * 300 * 4
    got = decode_response(r)["gradients"][0]
    expected = np.outer(np.linspace(-1, 1, 300).astype(np.float32), np.ones(300, np.float32))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6)
