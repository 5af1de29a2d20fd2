"""service.worker.batcher.Batcher with a real engine in this process (no socket: the piece any
transport calls), and the worker loop's batches over a real socket pair, driven step by step
(the messages are all in the socket before the worker looks, as under load)."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import engine
from engine.transforms import GradOperation, Vjp, to_wire
from service.ipc import messages as m
from service.ipc.framing import send_msg
from service.worker.batcher import ALONE, Batcher
from service.worker.main import Worker
from tests.support.ipc import recv_msg

NET = engine.parse_network({
    "format": "gradnet/1", "name": "tanh-mm", "inputs": [{"name": "x"}],
    "parameters": [{"name": "w", "value": {"dtype": "float32", "shape": [3, 3],
                                           "data": np.linspace(-1, 1, 9).tolist()}}],
    "nodes": [{"name": "xw", "op": "MatMul", "inputs": ["x", "w"]}, {"name": "out", "op": "Tanh", "inputs": ["xw"]}],
    "outputs": ["out"],
})
RNG = np.random.default_rng(7)
GRAD = to_wire(GradOperation())
CONFIG = {"compile_cache_size": 16, "max_elements": 10_000, "max_nodes": 100, "compile_cache_dir": None,
          "network_cache_size": 4, "max_batch_size": 8}


def x(rows: int = 2) -> np.ndarray:
    return RNG.normal(size=(rows, 3)).astype(np.float32)


def job(inputs: Any = None, spec: Any = GRAD, extra: Any = None, timeout_s: float = 30.0, **fields: Any) -> m.GradJob:
    return m.GradJob(network_id=NET.id, inputs=[x()] if inputs is None else inputs, spec=spec, extra=extra,
                     deadline=time.monotonic() + timeout_s, network_doc=NET.to_json("b64"), **fields)


@pytest.fixture(scope="module")
def eng() -> engine.Engine:
    return engine.Engine(cache_size=16)


def alone(eng: engine.Engine, j: m.GradJob) -> np.ndarray:
    return eng.run(NET, engine.transforms.from_wire(j.spec), j.inputs, extra=j.extra).gradients


def test_plan_groups_by_key_in_arrival_order_at_most_max() -> None:
    b = Batcher(None, 3)  # plan and key need no engine
    items = ["a1", "b1", "a2", "c1", "a3", "a4", "b2", "-1", "-2"]
    groups = b.plan(items, lambda s: None if s[0] == "-" else s[0])
    assert groups == [["a1", "a2", "a3"], ["b1", "b2"], ["c1"], ["a4"], ["-1"], ["-2"]]


def test_key_is_network_spec_and_signatures() -> None:
    b = Batcher(None, 8)
    assert b.key(job()) == b.key(job())  # other values, same shapes
    assert b.key(job()) != b.key(job([x(3)]))
    assert b.key(job()) != b.key(job(spec=to_wire(GradOperation(return_value=True))))
    assert b.key(job(parameters={"w": np.zeros((3, 3), np.float32)})) is None  # its own parameters: alone
    assert Batcher(None, 1).key(job()) is None and not Batcher(None, 1).enabled


def test_a_group_is_one_batch_with_each_its_own_answer(eng: engine.Engine) -> None:
    b = Batcher(eng, 4, background=False)
    jobs = [job() for _ in range(3)]
    outcomes = b.run(NET, GradOperation(), jobs)
    assert all(isinstance(o, engine.GradResult) for o in outcomes)
    for j, o in zip(jobs, outcomes):
        np.testing.assert_allclose(o.gradients, alone(eng, j), rtol=1e-6, atol=1e-7)
    assert eng.batch_compiled(eng.prepare(NET, GradOperation(), jobs[0].inputs), 4)  # 3 calls: bucket 4


def test_a_bad_job_gets_its_own_error_and_the_others_are_batched(eng: engine.Engine) -> None:
    b = Batcher(eng, 4, background=False)
    spec = Vjp()
    good = [job(spec=to_wire(spec), extra=x()) for _ in range(2)]
    bad = job(spec=to_wire(spec), extra=np.zeros((5, 3), np.float32))  # a cotangent of the wrong shape
    outcomes = b.run(NET, spec, [good[0], bad, good[1]])
    assert isinstance(outcomes[1], engine.ShapeError) and outcomes[1].path == "cotangents"
    for j, o in zip(good, (outcomes[0], outcomes[2])):
        np.testing.assert_allclose(o.gradients[0], alone(eng, j)[0], rtol=1e-6, atol=1e-7)


def test_one_job_or_an_odd_one_runs_alone(eng: engine.Engine) -> None:
    b = Batcher(eng, 4, background=False)
    assert b.run(NET, GradOperation(), [job()]) == [ALONE]
    outcomes = b.run(NET, GradOperation(), [job(), job([x(5)]), job()])  # the odd shape is alone
    assert outcomes[1] is ALONE and all(isinstance(outcomes[i], engine.GradResult) for i in (0, 2))


def test_a_batched_compile_that_fails_falls_back_to_unbatched_for_good(monkeypatch: pytest.MonkeyPatch) -> None:
    e = engine.Engine(cache_size=8)
    calls = []

    def fail(*args: Any) -> float:
        calls.append(args)
        raise RuntimeError("XLA said no")

    monkeypatch.setattr(e, "compile_batch", fail)
    b = Batcher(e, 4, background=False)
    assert b.run(NET, GradOperation(), [job(), job()]) == [ALONE, ALONE]
    assert b.run(NET, GradOperation(), [job(), job()]) == [ALONE, ALONE]
    assert len(calls) == 1 and len(b.failed) == 1  # remembered: not tried again
    assert b.run(NET, GradOperation(), [job(), job(), job()]) == [ALONE] * 3  # another bucket is tried
    assert len(calls) == 2


def test_a_batched_run_that_fails_falls_back(eng: engine.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    b = Batcher(eng, 4, background=False)
    monkeypatch.setattr(eng, "run_batch", lambda *a: (_ for _ in ()).throw(MemoryError("out of device memory")))
    assert b.run(NET, GradOperation(), [job(), job()]) == [ALONE, ALONE]
    assert b.failed


def test_batched_programs_compile_in_the_background() -> None:
    e = engine.Engine(cache_size=8)
    b = Batcher(e, 4)
    jobs = [job(), job()]
    assert b.run(NET, GradOperation(), jobs) == [ALONE, ALONE]  # not compiled yet: alone, no wait
    deadline = time.monotonic() + 60
    while not b.idle() and time.monotonic() < deadline:
        time.sleep(0.01)
    outcomes = b.run(NET, GradOperation(), jobs)
    assert all(isinstance(o, engine.GradResult) for o in outcomes)


# -- the worker loop ---------------------------------------------------------------------------


class Stepped:
    """A Worker whose loop the test drives: what it was sent is all in the socket first."""

    def __init__(self, **config: Any) -> None:
        self.server, child = multiprocessing.Pipe()
        self.worker = Worker(child, {**CONFIG, **config})

    def send(self, *msgs: Any) -> None:
        for msg in msgs:
            send_msg(self.server, msg)

    def step(self) -> None:
        """What the loop does with two or more jobs at hand: read them all, then compute."""
        w = self.worker
        w._drain()
        w.run_jobs(w._jobs())

    def answers(self, n: int) -> dict[int, Any]:
        out = {}
        for _ in range(n):
            assert self.server.poll(30), "the worker did not answer"
            msg = recv_msg(self.server)
            out[msg[1]] = msg
        return out

    def warm(self, n: int) -> None:
        """The key's first run (on the compile thread), then its batched program for ``n`` jobs."""
        self.send(m.job(1000, job(), time.monotonic()))
        self.step()
        self.answers(1)
        self.send(*(m.job(1001 + i, job(), time.monotonic()) for i in range(n)))
        self.step()  # the batched program is wanted: compiled in the background, these run alone
        assert all(a[0] == m.RESULT and m.read_result(a)[1].timing_ms["batch_size"] == 1.0
                   for a in self.answers(n).values())
        deadline = time.monotonic() + 60
        while not self.worker.batcher.idle() and time.monotonic() < deadline:
            time.sleep(0.01)


@pytest.fixture
def stepped() -> Iterator[Stepped]:
    s = Stepped()
    yield s
    s.server.close()


def test_the_worker_batches_what_is_queued_and_answers_each(stepped: Stepped, eng: engine.Engine) -> None:
    stepped.warm(4)
    jobs = [job() for _ in range(4)]
    late = job(timeout_s=-1.0)  # its deadline passed while it waited: dropped, not computed
    stepped.send(m.job(1, jobs[0], time.monotonic()), m.job(2, late, time.monotonic()),
                 *(m.job(3 + i, j, time.monotonic()) for i, j in enumerate(jobs[1:])))
    stepped.step()
    answers = stepped.answers(5)
    assert answers[2][0] == m.EXPIRED
    for job_id, j in zip((1, 3, 4, 5), jobs):
        _, result, _ = m.read_result(answers[job_id])
        assert result.timing_ms["batch_size"] == 4.0 and result.timing_ms["batch_wait"] == 0.0
        np.testing.assert_allclose(result.gradients, alone(eng, j), rtol=1e-6, atol=1e-7)


def test_a_cancelled_job_leaves_its_batch(stepped: Stepped) -> None:
    stepped.warm(2)
    stepped.send(m.cancel(2), *(m.job(1 + i, job(), time.monotonic()) for i in range(3)))
    stepped.step()
    answers = stepped.answers(3)
    assert answers[2][0] == m.EXPIRED
    assert [m.read_result(answers[i])[1].timing_ms["batch_size"] for i in (1, 3)] == [2.0, 2.0]


def test_the_delay_waits_for_more_only_with_two_at_hand() -> None:
    s = Stepped(batch_delay_us=300_000, max_batch_size=4)
    try:
        s.warm(2)
        s.send(*(m.job(1 + i, job(), time.monotonic()) for i in range(2)))
        t0 = time.monotonic()
        s.step()  # two at hand, not full (4): waits the 0.3 s for more, none come
        took = time.monotonic() - t0
        results = [m.read_result(a)[1] for a in s.answers(2).values()]
        assert took >= 0.3
        assert all(r.timing_ms["batch_size"] == 2.0 and r.timing_ms["batch_wait"] >= 300 for r in results)
        s.send(*(m.job(10 + i, job(), time.monotonic()) for i in range(4)))
        t0 = time.monotonic()
        s.step()  # a full batch: no wait
        assert time.monotonic() - t0 < 0.3
        assert all(m.read_result(a)[1].timing_ms["batch_wait"] == 0.0 for a in s.answers(4).values())
    finally:
        s.server.close()


def test_a_large_job_runs_alone() -> None:
    b = Batcher(None, 8)
    big = job([np.zeros((Batcher.MAX_JOB_BYTES // 12 + 1, 3), np.float32)])  # just over the limit
    assert b.key(big) is None and b.key(job()) is not None
