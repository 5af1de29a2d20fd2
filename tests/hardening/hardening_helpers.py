"""Shared by the hardening tests: the tutorial request, a health check that proves the service still
works after an attack, polling with deadlines (never a sleep as an assertion), RSS, a background
request, networks slow to compute, a worker held by one. (Raw-socket requests: ``tests.support.raw_http``.)"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np

from tests.support import FIXTURES
from tests.support.api_contract import decode_response, metric

T = TypeVar("T")

#: the shared hardening server's keys: ``HARD_KEY`` for the tests, ``FUZZ_KEY`` for the fuzzers
HARD_KEY, FUZZ_KEY = "hardening-key", "hardening-fuzz-key"
#: its limits: a body limit large enough for a 10^6-node network to reach the max_nodes check
HARD_LIMITS = {"max_body_bytes": 64 * 2**20, "max_tensor_elements": 4_000_000, "max_nodes": 10_000}

#: MindSpore's answer for the tutorial (GradOperation() w.r.t. x), as float32
TUTORIAL_GRADIENT = np.array([[4.51, 2.7, 3.6], [4.51, 2.7, 3.6]], dtype=np.float32)


def tutorial_request() -> dict[str, Any]:
    """A fresh copy of the seed tutorial's /grad request (inline network, JSON tensors)."""
    return json.loads((FIXTURES / "tutorial.json").read_text())["cases"][0]["request"]


def assert_healthy(server: Any, key: str | None = None) -> None:
    """Readiness is 200 and the tutorial gradient comes back right."""
    with server.client(key, timeout=60) as c:
        ready = poll(lambda: c.get("/health/ready"), lambda r: r.status_code == 200, timeout=60,
                     what="GET /health/ready to answer 200")
        assert ready.json()["status"] == "ready"
        r = c.post("/grad", json=tutorial_request())
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(decode_response(r)["gradients"], TUTORIAL_GRADIENT, rtol=1e-5)
    assert server.process.poll() is None, "the server exited"


def poll(fn: Callable[[], T], ok: Callable[[T], bool], *, timeout: float, interval: float = 0.02,
         what: str = "the condition") -> T:
    """Call ``fn`` until ``ok(result)``; fail after ``timeout`` seconds. Exceptions of ``fn``
    (a refused connection) count as not ok."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fn()
            if ok(last):
                return last
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def mib(n: float) -> float:
    return round(n / 2**20, 1)


class Background:
    """Run ``fn`` in a daemon thread; ``result()`` joins it and returns (or raises) its outcome.
    ``started``/``finished`` are time.monotonic() stamps."""

    def __init__(self, fn: Callable[[], T], name: str = "request") -> None:
        self._fn = fn
        self._box: dict[str, Any] = {}
        self.started = time.monotonic()
        self.finished: float | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._box["value"] = self._fn()
        except BaseException as exc:  # noqa: BLE001 - handed to result()
            self._box["error"] = exc
        self.finished = time.monotonic()

    @property
    def elapsed(self) -> float:
        assert self.finished is not None
        return self.finished - self.started

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout: float = 120.0) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"{self._thread.name} still running after {timeout} s"
        if "error" in self._box:
            raise self._box["error"]
        return self._box["value"]


def slow_network(depth: int = 24, n: int = 1000, name: str = "slow") -> dict[str, Any]:
    """A network whose gradient takes about a second on a CPU core with a tiny request: x [1, n] is
    broadcast to [n, n] and multiplied by itself ``depth`` times. ``name`` changes its id (so a
    fresh one must be compiled)."""
    nodes: list[dict[str, Any]] = [{"name": "b", "op": "BroadcastTo", "inputs": ["x"], "attrs": {"shape": [n, n]}}]
    prev = "b"
    for i in range(depth):
        nodes.append({"name": f"m{i}", "op": "MatMul", "inputs": [prev, "b"]})
        prev = f"m{i}"
    nodes.append({"name": "s", "op": "ReduceSum", "inputs": [prev]})
    return {"format": "gradnet/1", "name": name, "inputs": [{"name": "x"}], "nodes": nodes, "outputs": ["s"]}


def model_name(server: Any, network: dict[str, Any]) -> str:
    """Register ``network`` on ``server`` (with ``HARD_KEY``): its OIP model's and UM-Bridge
    model's name, the network id's hex."""
    with server.client(HARD_KEY) as c:
        r = c.post("/networks", json=network)
        assert r.status_code in (200, 201), r.text
        return r.json()["network_id"].removeprefix("sha256:")


def matmul_chain(depth: int, n: int = 1000, name: str = "matmul-chain") -> dict[str, Any]:
    """x [n, n] (declared) multiplied by itself ``depth`` times, summed: with a 1000 x 1000 x a call
    computes for a while on a CPU once compiled (12 MatMuls: long enough to hold a worker)."""
    nodes, prev = [], "x"
    for i in range(depth):
        nodes.append({"name": f"m{i}", "op": "MatMul", "inputs": [prev, "x"]})
        prev = f"m{i}"
    nodes.append({"name": "s", "op": "ReduceSum", "inputs": [prev]})
    return {"format": "gradnet/1", "name": name,
            "inputs": [{"name": "x", "dtype": "float32", "shape": [n, n]}], "nodes": nodes, "outputs": ["s"]}


@contextlib.contextmanager
def worker_held(server: Any, slow: Callable[[], httpx.Response], what: str) -> Iterator[httpx.Client]:
    """While ``slow()`` (a call already compiled, sent in a thread) computes on ``server``'s one
    worker: a second client, once the worker's queue depth is 1 (with ``queue_size=1`` every
    place is taken). After the block, ``slow()`` has answered 200."""
    held: list[httpx.Response] = []
    holder = threading.Thread(target=lambda: held.append(slow()))
    holder.start()
    with server.client(timeout=30) as other:
        poll(lambda: metric(other.get("/metrics").text, "gradserve_worker_queue_depth", worker="0"),
             lambda depth: depth == 1, timeout=30, what=what)
        yield other
    holder.join(120)
    assert held and held[0].status_code == 200, held


def slow_request(depth: int = 24, n: int = 1000, name: str = "slow", **extra: Any) -> dict[str, Any]:
    x = {"dtype": "float32", "shape": [1, n],
         "b64": base64.b64encode(np.full((1, n), 1e-3, dtype="<f4").tobytes()).decode()}
    return {"network": slow_network(depth, n, name), "inputs": [x], **extra}


def worker_pid_from_log(server: Any, index: int, *, after_pid: int | None = None, event: str = "ready") -> int | None:
    """The pid of worker ``index`` from the server log's "worker <index> <event> (pid N" lines: the
    latest one, or None. With ``after_pid``, only a pid other than that one counts."""
    found = None
    for m in re.finditer(rf"worker {index} {event} \(pid (\d+)", server.log()):
        pid = int(m.group(1))
        if pid != after_pid:
            found = pid
    return found
