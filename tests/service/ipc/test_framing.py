"""service.ipc.framing and service.ipc.arenas: one frame per message, large buffers through the
shared-memory arenas, everything back exactly as it was sent."""

from __future__ import annotations

import multiprocessing
import pickle
import threading
from typing import Any

import numpy as np

from service.ipc import messages as m
from service.ipc.arenas import Arena, FirstFit, RingReleaser, RingWriter
from service.ipc.framing import decode_frame, encode_msg, send_msg
from service.ipc.messages import JobResult
from tests.support.ipc import recv_msg

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
        r2, s2 = roundtrip(("text", [pickle.PickleBuffer(b.tobytes())]), ring.alloc, arena, releaser.track)
        assert s1 is not None and s2 is not None, i  # both fit while the first is still held
        np.testing.assert_array_equal(r1[1], a)
        assert bytes(r2[1][0][:16]) == b.tobytes()[:16]
        del r1, r2


# -- over a real socket pair ------------------------------------------------------------------


def test_messages_carry_arrays_as_whole_buffers() -> None:
    import ml_dtypes

    arrays = [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.arange(12, dtype=np.float64).reshape(3, 4).T,  # not C-contiguous
        np.array(3.5, dtype=np.float16),
        np.zeros((0, 5), dtype=np.int64),
        np.array([True, False]),
        np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16),
        np.random.default_rng(1).random((512, 512)),
    ]
    a, b = multiprocessing.Pipe()
    try:
        msg = m.result(7, JobResult({"gradients": arrays, "gradient_names": ["x"]}), [])
        sender = threading.Thread(target=send_msg, args=(a, msg))
        sender.start()
        got = recv_msg(b)
        sender.join()
    finally:
        a.close()
        b.close()
    job_id, result, _ = m.read_result(got)
    assert (got[0], job_id) == (m.RESULT, 7)
    for g, e in zip(result.gradients, arrays):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_array_equal(g, e)
    big = result.gradients[-1]
    assert big.flags.writeable and big.base is not None  # built on a received buffer, not copied item by item
