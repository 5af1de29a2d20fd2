"""service.worker.main.Worker in this process, over a real socket pair: what it answers to each
message (the real worker process is tests/service/pool/test_pool.py's)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import engine
from service.ipc import messages as m
from service.ipc.framing import send_msg
from service.worker.main import Worker
from tests.support.ipc import recv_msg

NET = engine.parse_network({
    "format": "gradnet/1", "name": "mul", "inputs": [{"name": "x"}, {"name": "y"}], "parameters": [],
    "nodes": [{"name": "out", "op": "Mul", "inputs": ["x", "y"]}], "outputs": ["out"],
})
OTHER = engine.parse_network({
    "format": "gradnet/1", "name": "add", "inputs": [{"name": "x"}, {"name": "y"}], "parameters": [],
    "nodes": [{"name": "out", "op": "Add", "inputs": ["x", "y"]}], "outputs": ["out"],
})
X, Y = np.arange(3, dtype=np.float32), np.full(3, 2.0, np.float32)
CONFIG = {"compile_cache_size": 4, "max_elements": 1000, "max_nodes": 100, "compile_cache_dir": None,
          "network_cache_size": 1}


class Served:
    """A Worker serving one end of a socket pair on a thread; the test holds the other end."""

    def __init__(self) -> None:
        self.server, child = multiprocessing.Pipe()
        self.worker = Worker(child, CONFIG)
        self.thread = threading.Thread(target=self.worker.serve, args=(os.getppid(),), daemon=True)
        self.thread.start()

    def send(self, msg: Any) -> None:
        send_msg(self.server, msg)

    def recv(self) -> Any:
        assert self.server.poll(30), "the worker did not answer"
        return recv_msg(self.server)


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served()
    yield s
    s.send(m.stop())
    s.thread.join(10)
    assert not s.thread.is_alive(), "the worker did not stop"


def job(net: engine.Network = NET, doc: bool = True, timeout_s: float = 30.0, **flags: Any) -> m.GradJob:
    return m.GradJob(network_id=net.id, inputs=[X, Y], deadline=time.monotonic() + timeout_s,
                     network_doc=net.to_json("b64") if doc else None, **flags)


def test_a_job_is_answered_with_its_gradients_and_the_worker_keeps_the_network(served: Served) -> None:
    served.send(m.job(1, job(), time.monotonic()))
    msg = served.recv()
    assert msg[0] == m.RESULT
    job_id, result, evicted = m.read_result(msg)
    assert (job_id, evicted, result.gradient_names) == (1, [], "x")
    np.testing.assert_array_equal(result.gradients, Y)
    assert {"compile", "compute", "queue"} <= set(result.timing_ms) and result.cache_stats["misses"] == 1

    served.send(m.job(2, job(doc=False), time.monotonic()))  # no document: it has the network
    _, again, _ = m.read_result(served.recv())
    assert again.cache_hit


def test_an_evicted_or_forgotten_network_is_asked_for_again(served: Served) -> None:
    served.send(m.job(1, job(), time.monotonic()))
    served.recv()
    served.send(m.job(2, job(OTHER), time.monotonic()))  # room for one network: NET is evicted
    assert m.read_result(served.recv())[2] == [NET.id]
    served.send(m.job(3, job(doc=False), time.monotonic()))
    assert served.recv() == m.unknown_network(3)
    served.send(m.forget(OTHER.id))
    served.send(m.job(4, job(OTHER, doc=False), time.monotonic()))
    assert served.recv() == m.unknown_network(4)


def test_errors_are_reported_by_kind_and_the_worker_goes_on(served: Served) -> None:
    served.send(m.job(1, m.GradJob(network_id=NET.id, inputs=[X], network_doc=NET.to_json("b64")), 0.0))
    job_id, kind, message, path, _, _ = m.read_error(served.recv())
    assert (job_id, kind, path) == (1, "ArgumentError", "inputs") and "2 input(s)" in message

    strings = np.array(["a", "b", "c"], dtype=object)
    served.send(m.job(2, m.GradJob(network_id=NET.id, inputs=[strings, Y]), 0.0))
    job_id, kind, message, _, _, _ = m.read_error(served.recv())
    assert (job_id, kind) == (2, m.INTERNAL) and message.startswith("the engine failed")

    served.send(m.job(3, job(doc=False), time.monotonic()))
    assert served.recv()[0] == m.RESULT


def test_a_cancelled_or_late_job_is_not_computed(served: Served) -> None:
    served.send(m.cancel(1))
    served.send(m.job(1, job(), time.monotonic()))
    assert m.read_expired(served.recv())[0] == 1
    served.send(m.job(2, job(timeout_s=-1.0), time.monotonic()))
    assert m.read_expired(served.recv())[0] == 2
    served.send(m.job(3, job(), time.monotonic()))
    assert m.read_result(served.recv())[1].cache_stats["misses"] == 1  # the first compile: 1 and 2 ran nothing


def test_a_batchs_answers_are_written_together_in_the_order_they_were_sent(served):
    """answers_together (Worker._run_batch): nothing reaches the server until the batch is
    answered, then every answer at once; another thread's answer meanwhile (the compile thread)
    goes out at once, behind what was held, so the socket keeps the order of sending."""
    worker = served.worker
    with worker.answers_together():
        worker.send(m.expired(1, {}))
        worker.send(m.expired(2, {}))
        assert not served.server.poll(0.2), "an answer left before the batch was answered"
        other = threading.Thread(target=worker.send, args=(m.expired(3, {}),))
        other.start()
        other.join(10)
        assert served.server.poll(10), "another thread's answer was held"
        got = [m.read_expired(served.recv())[0] for _ in range(3)]
        assert got == [1, 2, 3]
        worker.send(m.expired(4, {}))
        assert not served.server.poll(0.2)
    assert m.read_expired(served.recv())[0] == 4
