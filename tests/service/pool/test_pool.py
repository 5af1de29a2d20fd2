"""service.pool, with real worker processes on the CPU (no fakes: tests/service/pool/test_fake_pool.py
has those). Every pool here is ``worker_mode="process"``: these tests are of that transport (worker
processes, their pids, SIGKILL of one); the in-process one has tests/service/pool/test_inprocess.py.

Two pools live for the whole module (starting one costs about two seconds): ``pool2`` (two
workers) and ``pool1`` (one worker, a queue of two, room for one parsed network). Tests that
stop a pool start their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import engine
from service.errors import (
    DeadlineExceededError,
    EngineFailedError,
    NotReadyError,
    QueueFullError,
    WorkerDiedError,
)
from service.http.errors import status_of
from service.ipc.messages import GradJob, JobResult
from service.pool import PoolStartError, WorkerPool
from service.pool.probe import cpu_plan, gpu_plan, may_have_gpu
from service.settings import Settings
from tests.support import FIXTURES, ROOT
from tests.support.jobs import grad_job

TUTORIAL = json.loads((FIXTURES / "tutorial.json").read_text())["cases"]
START_TIMEOUT_S = 60.0


# -- helpers -------------------------------------------------------------------------------


def chain_network(n_matmuls: int, name: str = "chain") -> engine.Network:
    """x @ x @ ... @ x: with a 1500x1500 input (six MatMuls), about a second of CPU per call."""
    nodes, prev = [], "x"
    for i in range(n_matmuls):
        nodes.append({"name": f"m{i}", "op": "MatMul", "inputs": [prev, "x"]})
        prev = f"m{i}"
    return engine.parse_network({
        "format": "gradnet/1", "name": name, "inputs": [{"name": "x"}], "parameters": [],
        "nodes": nodes, "outputs": [prev],
    })


def tutorial_network(name: str = "tutorial-net") -> engine.Network:
    doc = dict(TUTORIAL[0]["request"]["network"], name=name)
    return engine.parse_network(doc)


def tutorial_inputs() -> list[np.ndarray]:
    return engine.decode_inputs(TUTORIAL[0]["request"]["inputs"])


TUTORIAL_GRAD = engine.decode_tensor(TUTORIAL[0]["expected_gradients"])


class Docs:
    """``network_doc`` callables that count how often the pool asked for the document."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def __call__(self, net: engine.Network) -> Callable[[], dict[str, Any]]:
        def doc() -> dict[str, Any]:
            self.calls[net.id] = self.calls.get(net.id, 0) + 1
            return net.to_json("b64")

        return doc


def job(net: engine.Network, inputs: Any, timeout_s: float = 30.0, **flags: Any) -> GradJob:
    return grad_job(net.id, inputs, deadline=time.monotonic() + timeout_s, **flags)


def slow_input(n: int = 1500) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.random((n, n), dtype=np.float32) / n).astype(np.float32)]


def assert_tensors(got: Any, expected: Any) -> None:
    if isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_tensors(g, e)
        return
    want = engine.decode_tensor(expected)
    assert isinstance(got, np.ndarray)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


async def wait_for(predicate: Callable[[], bool], timeout_s: float = START_TIMEOUT_S, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.01)


async def together(*aws: Any) -> list[Any]:
    """``asyncio.gather`` on the running loop (called outside it, gather would pick another)."""
    return await asyncio.gather(*aws)


def gone(pid: int) -> bool:
    """The process has exited (a zombie counts: it runs no code and holds no device)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


class Running:
    """A pool on an event loop that the synchronous tests drive with ``run``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: Settings) -> None:
        self.loop = loop
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.pool = WorkerPool(settings, on_event=lambda kind, data: self.events.append((kind, data)))
        self.docs = Docs()

    def run(self, coro: Any, timeout_s: float = 60.0) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout_s))

    def start(self) -> None:
        self.run(self.pool.start())
        self.run(wait_for(lambda: self.pool.ready, what="the workers' handshakes"))

    def submit(self, net: engine.Network, inputs: Any, **kwargs: Any) -> Any:
        timeout_s = kwargs.pop("timeout_s", 30.0)
        return self.pool.submit(job(net, inputs, timeout_s, **kwargs), self.docs(net))

    def pids(self) -> list[int]:
        return [w["pid"] for w in self.pool.snapshot()]

    def stop(self) -> None:
        pids = self.pids()
        self.run(self.pool.drain(5.0))
        deadline = time.monotonic() + 10
        while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(gone(pid) for pid in pids), "worker processes outlived the pool"


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def pool2(loop: asyncio.AbstractEventLoop) -> Iterator[Running]:
    running = Running(loop, Settings(workers=2, device="cpu", queue_size=4, worker_mode="process"))
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def pool1(loop: asyncio.AbstractEventLoop) -> Iterator[Running]:
    running = Running(loop, Settings(workers=1, device="cpu", queue_size=2, network_cache_size=1,
                                     worker_mode="process"))
    running.start()
    yield running
    running.stop()


# -- routing, results, errors --------------------------------------------------------------


@pytest.mark.parametrize("case", TUTORIAL, ids=[c["name"] for c in TUTORIAL])
def test_tutorial_gradients(pool2: Running, case: dict[str, Any]) -> None:
    req = case["request"]
    net = engine.parse_network(req["network"])
    result = pool2.run(pool2.submit(
        net,
        engine.decode_inputs(req["inputs"]),
        get_all=req.get("get_all", False),
        get_by_list=req.get("get_by_list", False),
        sens_param=req.get("sens_param", False),
        weights=req.get("weights"),
        sens=engine.decode_sens(req.get("sens")),
        parameters=engine.decode_parameters(req.get("parameters")),
    ))
    assert isinstance(result, JobResult)
    assert_tensors(result.gradients, case["expected_gradients"])
    assert {"compile", "compute", "queue"} <= set(result.timing_ms)
    assert result.cache_stats["misses"] >= 1


def test_a_network_goes_back_to_the_worker_that_compiled_it(pool2: Running) -> None:
    net = tutorial_network("affinity-net")
    before = {w["index"]: dict(w["cache"]) for w in pool2.pool.snapshot()}

    first = pool2.run(pool2.submit(net, tutorial_inputs()))
    second = pool2.run(pool2.submit(net, tutorial_inputs()))
    np.testing.assert_allclose(second.gradients, TUTORIAL_GRAD, rtol=1e-5)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert pool2.docs.calls[net.id] == 1  # the document crossed the pipe once

    after = {w["index"]: w["cache"] for w in pool2.pool.snapshot()}
    misses = {i: after[i]["misses"] - before[i].get("misses", 0) for i in after}
    hits = {i: after[i]["hits"] - before[i].get("hits", 0) for i in after}
    assert sorted(misses.values()) == [0, 1], "compiled once, on one worker"
    assert [i for i in hits if hits[i]] == [i for i in misses if misses[i]], "the hit is on the compiling worker"

    # A deleted network is forgotten: the next request sends its document again.
    pool2.run(pool2.pool.forget(net.id))
    third = pool2.run(pool2.submit(net, tutorial_inputs()))
    np.testing.assert_allclose(third.gradients, TUTORIAL_GRAD, rtol=1e-5)
    assert pool2.docs.calls[net.id] == 2
    assert third.cache_hit is False  # its executables were dropped too


def test_engine_errors_come_back_with_code_path_and_status(pool2: Running) -> None:
    net = tutorial_network()
    x, _ = tutorial_inputs()
    with pytest.raises(engine.ShapeError) as info:
        pool2.run(pool2.submit(net, [x, np.ones((4, 3), np.float32)]))
    assert info.value.code == "shape_mismatch" and status_of(info.value) == 422
    # nodes[i] for a registered network, network.nodes[i] for one inline (the worker may know either)
    assert info.value.path and re.fullmatch(r"(network\.)?nodes\[\d+\]", info.value.path), info.value.path

    with pytest.raises(engine.ArgumentError) as info:
        pool2.run(pool2.submit(net, [x]))
    assert (info.value.code, info.value.path, status_of(info.value)) == ("bad_argument", "inputs", 422)

    # anything else the engine raises is an internal error (500), and the worker carries on
    strings = np.array([["a", "b", "c"]] * 2, dtype=object)
    with pytest.raises(EngineFailedError) as info:
        pool2.run(pool2.submit(net, [strings, np.ones((3, 3), np.float32)]))
    assert (info.value.code, status_of(info.value)) == ("internal_error", 500)
    assert info.value.message.startswith("the engine failed: TypeError")
    assert all(w["restarts"] == 0 and w["alive"] for w in pool2.pool.snapshot())

    # the workers are fine afterwards
    result = pool2.run(pool2.submit(net, tutorial_inputs()))
    np.testing.assert_allclose(result.gradients, TUTORIAL_GRAD, rtol=1e-5)


def test_a_killed_worker_costs_only_its_requests_and_is_respawned(pool2: Running) -> None:
    net = chain_network(6, "kill-me")
    bystander = tutorial_network("bystander")  # new to both workers: goes to the idle one

    async def scenario() -> tuple[BaseException | JobResult, JobResult, int]:
        slow = asyncio.ensure_future(pool2.submit(net, slow_input()))
        await wait_for(lambda: any(w["running"] for w in pool2.pool.snapshot()), what="the slow job to start")
        victim = next(w for w in pool2.pool.snapshot() if w["running"])
        # the other worker keeps serving while this one dies
        other = asyncio.ensure_future(pool2.submit(bystander, tutorial_inputs()))
        os.kill(victim["pid"], signal.SIGKILL)
        outcome = (await asyncio.gather(slow, return_exceptions=True))[0]
        return outcome, await other, victim["index"]

    outcome, other, index = pool2.run(scenario())
    assert isinstance(outcome, WorkerDiedError), outcome
    assert status_of(outcome) == 500 and outcome.code == "worker_died"
    assert f"worker {index}" in outcome.message and "SIGKILL" in outcome.message
    assert "while computing this request" in outcome.message
    np.testing.assert_allclose(other.gradients, TUTORIAL_GRAD, rtol=1e-5)

    pool2.run(wait_for(lambda: pool2.pool.snapshot()[index]["ready"], what="the respawned worker"))
    row = pool2.pool.snapshot()[index]
    assert row["restarts"] == 1 and row["alive"] and row["queued"] == 0 and row["running"] == 0
    assert [d["worker"] for k, d in pool2.events if k == "worker_restart"] == [index]
    restart = next(d for k, d in pool2.events if k == "worker_restart")
    assert restart["lost_jobs"] == 1 and restart["exitcode"] == -signal.SIGKILL

    # The new process starts empty: both workers take work again (the network is resent).
    results = pool2.run(together(*(pool2.submit(net, slow_input(64)) for _ in range(4))))
    assert all(r.gradients.shape == (64, 64) for r in results)
    assert all(w["alive"] and w["ready"] for w in pool2.pool.snapshot())


# -- queueing and deadlines ----------------------------------------------------------------


def test_deadline_answers_504_and_the_worker_goes_on(pool1: Running) -> None:
    slow_net = chain_network(6, "deadline")
    queued_net = tutorial_network("never-computed")

    async def scenario() -> tuple[list[Any], float]:
        t0 = time.monotonic()
        slow = asyncio.ensure_future(pool1.submit(slow_net, slow_input(2000), timeout_s=0.5))
        await wait_for(lambda: pool1.pool.snapshot()[0]["running"] or slow.done(), what="the slow job to start")
        queued = asyncio.ensure_future(pool1.submit(queued_net, tutorial_inputs(), timeout_s=0.3))
        outcomes = await asyncio.gather(slow, queued, return_exceptions=True)
        took = time.monotonic() - t0
        assert pool1.pool.snapshot()[0]["running"] == 1, "the abandoned job is still being computed"
        return outcomes, took

    before = pool1.pool.snapshot()[0]["cache"]
    (slow, queued), took = pool1.run(scenario())
    assert isinstance(slow, DeadlineExceededError) and status_of(slow) == 504, slow
    assert isinstance(queued, DeadlineExceededError), queued
    assert took < 1.5, "the caller did not wait for the slow job"

    # The next job waits for the abandoned one to finish, then runs on the same worker.
    result = pool1.run(pool1.submit(tutorial_network("after-deadline"), tutorial_inputs()))
    np.testing.assert_allclose(result.gradients, TUTORIAL_GRAD, rtol=1e-5)
    after = pool1.pool.snapshot()[0]
    # compiled: the slow chain and the tutorial net; the expired job was skipped, not compiled
    assert after["cache"]["misses"] - before.get("misses", 0) == 2
    assert (after["queued"], after["running"], after["restarts"]) == (0, 0, 0)


def test_a_full_queue_answers_503_with_retry_after(pool1: Running) -> None:
    net = chain_network(6, "queue")

    async def scenario() -> tuple[list[Any], QueueFullError]:
        held = [asyncio.ensure_future(pool1.submit(net, slow_input())),
                asyncio.ensure_future(pool1.submit(net, slow_input(32)))]
        await wait_for(lambda: pool1.pool.snapshot()[0]["queued"] + pool1.pool.snapshot()[0]["running"] == 2,
                       what="two jobs held")
        with pytest.raises(QueueFullError) as info:
            await pool1.submit(net, slow_input(32))
        return await asyncio.gather(*held), info.value

    results, error = pool1.run(scenario())
    assert status_of(error) == 503 and error.code == "queue_full" and error.retry_after >= 1
    assert [r.gradients.shape for r in results] == [(1500, 1500), (32, 32)]


def test_an_evicted_network_is_sent_again(pool1: Running) -> None:
    # pool1 keeps one parsed network. With A there, B then A back to back make the worker evict
    # A for B before the server hears of it: the worker asks for A's document again.
    a, b = tutorial_network("evict-a"), tutorial_network("evict-b")
    first = pool1.run(pool1.submit(a, tutorial_inputs()))
    results = pool1.run(together(pool1.submit(b, tutorial_inputs()), pool1.submit(a, tutorial_inputs())))
    for r in [first, *results]:
        np.testing.assert_allclose(r.gradients, TUTORIAL_GRAD, rtol=1e-5)
    assert pool1.docs.calls[a.id] == 2 and pool1.docs.calls[b.id] == 1


# -- lifecycle -----------------------------------------------------------------------------


def test_not_ready_until_the_handshake_and_drain_waits_for_in_flight_jobs(loop: asyncio.AbstractEventLoop) -> None:
    running = Running(loop, Settings(workers=1, device="cpu", queue_size=4, worker_mode="process"))
    net = chain_network(6, "drain")

    async def scenario() -> tuple[JobResult, NotReadyError, NotReadyError, float, float]:
        await running.pool.start()
        assert not running.pool.ready
        with pytest.raises(NotReadyError) as starting:
            await running.submit(net, slow_input(8))
        await wait_for(lambda: running.pool.ready)
        in_flight = asyncio.ensure_future(running.submit(net, slow_input()))
        await wait_for(lambda: running.pool.snapshot()[0]["running"], what="the job to start")
        t0 = time.monotonic()
        drain = asyncio.ensure_future(running.pool.drain(30.0))
        await asyncio.sleep(0)
        assert not running.pool.ready
        with pytest.raises(NotReadyError) as draining:
            await running.submit(net, slow_input(8))
        result = await in_flight
        finished = time.monotonic() - t0
        await drain
        return result, starting.value, draining.value, finished, time.monotonic() - t0

    pid = None
    try:
        result, starting, draining, finished, drained = running.run(scenario())
        pid = running.pids()[0]
    finally:
        if pid is None:
            running.run(running.pool.close())
    assert result.gradients.shape == (1500, 1500)
    assert "starting" in starting.message and status_of(starting) == 503
    assert "draining" in draining.message and status_of(draining) == 503
    assert drained >= finished
    row = running.pool.snapshot()[0]
    assert not row["alive"] and row["restarts"] == 0
    deadline = time.monotonic() + 10
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid)


def test_workers_exit_when_the_server_dies(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from service.settings import Settings
        from service.pool import WorkerPool

        async def main():
            pool = WorkerPool(Settings(workers=1, device="cpu", worker_mode="process"))
            await pool.start()
            while not pool.ready:
                await asyncio.sleep(0.02)
            print(json.dumps([w["pid"] for w in pool.snapshot()]), flush=True)
            await asyncio.sleep(120)

        if __name__ == "__main__":
            asyncio.run(main())
    """))
    server = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(server.stdout.readline())
        assert pids and not any(gone(p) for p in pids)
    finally:
        server.kill()
        server.wait()
    deadline = time.monotonic() + 10
    while not all(gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(gone(p) for p in pids), "orphaned worker processes"


# -- devices -------------------------------------------------------------------------------


def test_gpu_workers_each_own_one_visible_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    plan = gpu_plan(Settings(device="gpu"), ["cuda:0", "cuda:1"])
    assert [label for label, _ in plan] == ["gpu:0", "gpu:1"]
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in plan] == ["0", "1"]
    assert all(env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" for _, env in plan)

    # the server's own CUDA_VISIBLE_DEVICES is respected; more workers than GPUs share them
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    plan = gpu_plan(Settings(device="gpu", workers=3), ["cuda:0", "cuda:1"])
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in plan] == ["2", "3", "2"]
    assert [label for label, _ in cpu_plan(Settings(device="cpu", workers=2))] == ["cpu", "cpu"]


@pytest.mark.skipif(may_have_gpu(), reason="this machine may have a GPU")
def test_device_gpu_without_a_gpu_fails_at_start() -> None:
    pool = WorkerPool(Settings(device="gpu", worker_mode="process"))

    async def start() -> None:
        await pool.start()

    with pytest.raises(PoolStartError, match="JAX sees no GPU"):
        asyncio.run(start())
    assert pool.snapshot() == [] and not pool.ready
