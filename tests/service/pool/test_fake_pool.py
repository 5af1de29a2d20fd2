"""service.pool with in-process fake workers (tests/support/fake_worker.py): routing, admission,
deadlines, errors, crashes and the drain, in milliseconds. The real processes are
tests/service/pool/test_pool.py's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import engine
from engine.transforms import from_wire
from service.errors import (
    DeadlineExceededError,
    EngineFailedError,
    NotReadyError,
    QueueFullError,
    WorkerDiedError,
)
from service.ipc import messages as m
from service.ipc.messages import GradJob, JobResult
from service.pool import WorkerPool
from service.settings import Settings
from tests.support.fake_worker import FakeLauncher
from tests.support.jobs import grad_job

NET = engine.parse_network({
    "format": "gradnet/1", "name": "mul", "inputs": [{"name": "x"}, {"name": "y"}], "parameters": [],
    "nodes": [{"name": "out", "op": "Mul", "inputs": ["x", "y"]}], "outputs": ["out"],
})
X, Y = np.arange(3, dtype=np.float32), np.full(3, 2.0, np.float32)


def job(net: engine.Network = NET, timeout_s: float = 30.0, **flags: Any) -> GradJob:
    return grad_job(net.id, [X, Y], deadline=time.monotonic() + timeout_s, **flags)


def run(scenario: Callable[[WorkerPool, FakeLauncher], Any], launcher: FakeLauncher | None = None,
        **settings: Any) -> Any:
    """Run ``scenario(pool, launcher)`` on a fresh loop with a started, ready pool of fakes."""
    launcher = launcher or FakeLauncher()
    pool = WorkerPool(Settings(**{"workers": 2, "device": "cpu", "queue_size": 2, **settings}), launcher=launcher)

    async def main() -> Any:
        await pool.start()
        for _ in range(100):
            if pool.ready or not launcher.start:
                break
            await asyncio.sleep(0)
        try:
            return await scenario(pool, launcher)
        finally:
            await pool.close()

    return asyncio.run(asyncio.wait_for(main(), 10))


def doc() -> dict[str, Any]:
    return NET.to_json("b64")


def test_a_job_gets_the_real_gradients_and_the_document_crosses_once() -> None:
    async def scenario(pool: WorkerPool, launcher: FakeLauncher) -> list[JobResult]:
        return [await pool.submit(job(), doc) for _ in range(3)]

    results = run(scenario)
    for r in results:
        np.testing.assert_array_equal(r.gradients, Y)  # d(x*y)/dx


def test_jobs_stay_on_the_worker_that_has_the_network() -> None:
    async def scenario(pool: WorkerPool, launcher: FakeLauncher) -> list[int]:
        for _ in range(3):
            await pool.submit(job(), doc)
        return [sum(1 for msg in w.received if msg[0] == m.JOB) for w in launcher.workers]

    counts = run(scenario)
    assert sorted(counts) == [0, 3]


def test_a_busy_warm_worker_gives_the_job_to_an_idle_one() -> None:
    async def scenario(pool: WorkerPool, launcher: FakeLauncher) -> list[int]:
        held = [asyncio.ensure_future(pool.submit(job(), doc)) for _ in range(4)]
        await asyncio.sleep(0)
        counts = [len(w.queue) for w in launcher.workers]
        for w in launcher.workers:
            while w.queue:
                w.finish()
        await asyncio.gather(*held)
        return counts

    # queue_size 4, slack 2: the third job goes to the warm worker, the fourth does not
    assert sorted(run(scenario, FakeLauncher(manual=True), queue_size=4)) == [1, 3]


def test_admission_refuses_at_once_when_every_place_is_held_and_release_gives_it_back() -> None:
    async def scenario(pool: WorkerPool, launcher: FakeLauncher) -> tuple[QueueFullError, int]:
        places = [pool.admit() for _ in range(4)]  # 2 workers x queue_size 2
        with pytest.raises(QueueFullError) as info:
            pool.admit()
        places[0].release()
        places[0].release()  # a second release does nothing
        again = pool.admit()
        with pytest.raises(QueueFullError):
            pool.admit()
        for place in [again, *places[1:]]:
            place.release()
        return info.value, pool._admitted  # noqa: SLF001

    error, admitted = run(scenario)
    assert error.code == "queue_full" and error.retry_after >= 1 and "4 requests" in error.message
    assert admitted == 0


def test_a_full_worker_queue_refuses_the_job() -> None:
    async def scenario(pool: WorkerPool, launcher: FakeLauncher) -> QueueFullError:
        held = [asyncio.ensure_future(pool.submit(job(), doc)) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError) as info:
            await pool.submit(job(), doc)
        for w in launcher.workers:
            while w.queue:
                w.finish()
        await asyncio.gather(*held)
        return info.value

    error = run(scenario, FakeLauncher(manual=True), workers=1)
    assert "queue_size 2" in error.message


def test_the_deadline_fails_the_caller_and_cancels_the_job() -> None:
    async def scenario(pool: WorkerPool, launcher: FakeLauncher) -> list[Any]:
        with pytest.raises(DeadlineExceededError) as info:
            await pool.submit(job(timeout_s=0.05), doc)
        worker = next(w for w in launcher.workers if w.queue)
        worker.finish()  # the worker sees the cancellation: it skips the job
        await asyncio.sleep(0)
        return [info.value, list(worker.received), dict(worker.pending)]

    error, received, pending = run(scenario, FakeLauncher(manual=True))
    assert "computing" in error.message  # the oldest job a worker holds is the one it computes
    assert [msg[0] for msg in received] == [m.JOB, m.CANCEL] and pending == {}


def test_engine_errors_come_back_as_the_engine_classes_and_other_failures_as_internal() -> None:
    def compute(grad_job: GradJob) -> JobResult:
        if from_wire(grad_job.spec).get_all:
            raise engine.ShapeError("no", "nodes[0]")
        raise MemoryError("out of device memory")

    async def scenario(pool: WorkerPool, launcher: FakeLauncher) -> list[BaseException]:
        outcomes = await asyncio.gather(pool.submit(job(get_all=True), doc), pool.submit(job(), doc),
                                        return_exceptions=True)
        return list(outcomes)

    shape, internal = run(scenario, FakeLauncher(compute))
    assert type(shape) is engine.ShapeError and (shape.message, shape.path) == ("no", "nodes[0]")
    assert isinstance(internal, EngineFailedError) and "MemoryError" in internal.message


def test_a_worker_that_lost_the_network_gets_the_job_again_with_its_document() -> None:
    calls: list[int] = []

    def counting_doc() -> dict[str, Any]:
        calls.append(1)
        return doc()

    async def scenario(pool: WorkerPool, launcher: FakeLauncher) -> JobResult:
        await pool.submit(job(), counting_doc)
        worker = next(w for w in launcher.workers if w.known)
        worker.known.clear()  # evicted, and the server does not know yet
        return await pool.submit(job(), counting_doc)

    result = run(scenario, workers=1)
    np.testing.assert_array_equal(result.gradients, Y)
    assert len(calls) == 2


def test_a_dead_worker_fails_its_jobs_and_is_respawned() -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    async def scenario(pool: WorkerPool, launcher: FakeLauncher) -> list[Any]:
        pool._on_event = lambda kind, data: events.append((kind, data))  # noqa: SLF001
        running = asyncio.ensure_future(pool.submit(job(), doc))
        queued = asyncio.ensure_future(pool.submit(job(), doc))
        await asyncio.sleep(0)
        launcher.workers[0].kill()
        outcomes = await asyncio.gather(running, queued, return_exceptions=True)
        for _ in range(100):
            if pool.ready and len(launcher.workers) == 2:
                break
            await asyncio.sleep(0)
        return [*outcomes, len(launcher.workers), pool.snapshot()[0]]

    running, queued, started, row = run(scenario, FakeLauncher(manual=True), workers=1)
    assert isinstance(running, WorkerDiedError) and "while computing this request" in running.message
    assert isinstance(queued, WorkerDiedError) and "waited in its queue" in queued.message
    assert started == 2 and row["restarts"] == 1 and row["ready"]
    restart = next(data for kind, data in events if kind == "worker_restart")
    assert (restart["lost_jobs"], restart["exitcode"]) == (2, -9)


def test_not_ready_until_a_handshake() -> None:
    async def scenario(pool: WorkerPool, launcher: FakeLauncher) -> NotReadyError:
        assert not pool.ready
        pool.admit().release()  # none ready: admission lets submit say why
        with pytest.raises(NotReadyError) as info:
            await pool.submit(job(), doc)
        return info.value

    error = run(scenario, FakeLauncher(start=False))
    assert "starting (0 of 2 ready)" in error.message


def test_drain_waits_for_the_jobs_in_flight_then_stops_the_workers() -> None:
    async def scenario(pool: WorkerPool, launcher: FakeLauncher) -> list[Any]:
        in_flight = asyncio.ensure_future(pool.submit(job(), doc))
        await asyncio.sleep(0)
        drain = asyncio.ensure_future(pool.drain(5.0))
        await asyncio.sleep(0.05)
        with pytest.raises(NotReadyError) as refused:
            await pool.submit(job(), doc)
        assert not drain.done()
        for w in launcher.workers:
            w.finish()
        result = await in_flight
        await drain
        return [result, refused.value, [[msg[0] for msg in w.received][-1] for w in launcher.workers]]

    result, refused, last = run(scenario, FakeLauncher(manual=True))
    np.testing.assert_array_equal(result.gradients, Y)
    assert "draining" in refused.message and last == [m.STOP, m.STOP]
