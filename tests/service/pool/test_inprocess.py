"""The in-process transport (``worker_mode=inprocess``, issue 14.4): service/pool/inprocess.py and
its supervisor (service/supervisor.py), on real servers and real signals.

- the pool with an engine thread answers what a worker process answers (the same engine), tiny
  warm calls on the event loop, the rest on the thread; deadlines and a full queue as before;
- over HTTP the answers equal the process design's, byte for byte in every encoding;
- a SIGKILLed serving process fails exactly the requests on its connections; the other one's
  succeed; the supervisor starts it again on the same socket;
- a full queue answers 503 with Retry-After before the body is read; the compile budget still
  fails an over-budget compile with 422 and remembers it.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

import engine
from service.errors import DeadlineExceededError, QueueFullError
from service.ipc.messages import GradJob
from service.pool import WorkerPool
from service.pool.inprocess import InProcessWorker
from service.settings import Settings
from tests.hardening.hardening_helpers import poll, slow_request, tutorial_request
from tests.support import FIXTURES
from tests.support.api_contract import error_of, metric
from tests.support.servers import start_server

TUTORIAL = json.loads((FIXTURES / "tutorial.json").read_text())


# -- the pool with an engine thread ------------------------------------------------------------------


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _job(net: engine.Network, x: np.ndarray, **kw: Any) -> GradJob:
    return GradJob(network_id=net.id, network_path="", inputs=[x], **kw)


def test_the_pool_computes_on_an_engine_thread_and_tiny_warm_calls_on_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # what counts as tiny is a duration: a loaded machine stretches the tutorial's ~50 µs call
    monkeypatch.setattr("service.pool.inprocess.INLINE_MAX_MS", 50.0)
    case = TUTORIAL["cases"][0]
    net = engine.parse_network(case["request"]["network"])
    inputs = engine.decode_inputs(case["request"]["inputs"])
    want = engine.Engine().grad(net, inputs)

    async def main() -> tuple[list[Any], int, int]:
        pool = WorkerPool(Settings(device="cpu", workers=1, worker_mode="inprocess"))
        await pool.start()
        poll_until = time.monotonic() + 60
        while not pool.ready:
            assert time.monotonic() < poll_until, pool.snapshot()
            await asyncio.sleep(0.02)
        worker = pool._slots[0].proc
        assert isinstance(worker, InProcessWorker) and worker.pid == os.getpid()
        results = []
        for _ in range(6):  # the first compiles (compile thread), then warm
            # a call is inlined only while the engine thread waits for work: after an answer the
            # thread still has to get back to its wait, which a loaded machine (CI's whole-suite
            # run) can delay past the next submit, so wait for it as a client's think time would
            idle_by = time.monotonic() + 10
            while not (worker.idle and not worker.inbox) and time.monotonic() < idle_by:
                await asyncio.sleep(0.005)
            job = GradJob(network_id=net.id, network_path="", inputs=inputs)
            results.append(await pool.submit(job, lambda: net.to_json("b64")))
        inlined = worker.inlined
        why = {"tiny": list(worker.tiny.values()), "warm": len(worker.worker.compiles.warm),
               "timings": [r.timing_ms for r in results]}
        # behind a job that is not tiny (on the engine thread), tiny ones wait their turn there
        slow = slow_request(depth=60, name="inproc-behind")  # well over 50 ms
        slow_net = engine.parse_network(slow["network"])
        slow_x = engine.decode_inputs(slow["inputs"])
        for _ in range(2):  # compiled, then known not to be tiny
            await pool.submit(GradJob(network_id=slow_net.id, network_path="", inputs=slow_x),
                              lambda: slow_net.to_json("b64"))
        before = worker.inlined
        batched = 0
        for _ in range(20):  # the batched program compiles in the background: until then they run alone
            behind = asyncio.ensure_future(pool.submit(GradJob(network_id=slow_net.id, network_path="", inputs=slow_x),
                                                       lambda: slow_net.to_json("b64")))
            await asyncio.sleep(0)
            jobs = [pool.submit(GradJob(network_id=net.id, network_path="", inputs=inputs), lambda: net.to_json("b64"))
                    for _ in range(4)]
            got = await asyncio.gather(*jobs)
            await behind
            results += got
            # the worker's batcher (service/worker/batcher.py) runs in this transport too
            batched = max(batched, *(int(r.timing_ms.get("batch_size", 1)) for r in got))
            if batched > 1:
                break
        await pool.drain(10)
        assert batched > 1, "jobs queued together on the engine thread were never batched"
        return results, inlined, worker.inlined - before, why

    results, inlined, after, why = _run(main())
    for result in results:
        np.testing.assert_array_equal(np.asarray(result.fields["gradients"]), np.asarray(want.fields["gradients"]))
    assert inlined >= 2, f"only {inlined} of the 5 warm tutorial calls ran on the event loop: {why}"
    assert after == 0, "jobs queued behind a running one were computed on the loop instead of the engine thread"


def test_deadline_and_full_queue_with_an_engine_thread() -> None:
    request = slow_request(depth=24, name="inproc-slow")
    net = engine.parse_network(request["network"])
    x = engine.decode_inputs(request["inputs"])

    async def main() -> None:
        pool = WorkerPool(Settings(device="cpu", workers=1, worker_mode="inprocess", queue_size=2))
        await pool.start()
        while not pool.ready:
            await asyncio.sleep(0.02)
        doc = lambda: net.to_json("b64")  # noqa: E731
        await pool.submit(GradJob(network_id=net.id, network_path="", inputs=x), doc)  # compiled
        running = asyncio.ensure_future(pool.submit(GradJob(network_id=net.id, network_path="", inputs=x), doc))
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        late = GradJob(network_id=net.id, network_path="", inputs=x, deadline=time.monotonic() + 0.05)
        with pytest.raises(DeadlineExceededError, match="queued"):
            await pool.submit(late, doc)
        assert time.monotonic() - t0 < 0.5, "the deadline waited for the job ahead of it"
        pool.admit()  # the second of two places
        with pytest.raises(QueueFullError) as refused:
            pool.admit()
        assert refused.value.retry_after >= 1
        await running
        await pool.drain(10)

    _run(main())


# -- over HTTP ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def designs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    servers = {mode: start_server(tmp_path_factory.mktemp(mode), worker_mode=mode) for mode in ("process", "inprocess")}
    yield servers
    for server in servers.values():
        server.stop()


def _post(server: Any, body: dict[str, Any], network: dict[str, Any], encoding: str) -> bytes:
    with server.client(timeout=120) as c:
        network_id = c.post("/networks", json=network).json()["network_id"]
        r = c.post("/grad", json={**body, "network_id": network_id, "output_encoding": encoding})
        assert r.status_code == 200, r.text[:500]
        if encoding == "binary":
            size = int(r.headers["inference-header-content-length"])
            head = orjson.loads(r.content[:size])
            head.pop("timing_ms")
            return orjson.dumps(head) + r.content[size:]
        doc = r.json()
        doc.pop("timing_ms")
        return orjson.dumps(doc)


@pytest.mark.parametrize("encoding", ["json", "b64", "binary"])
def test_answers_equal_the_process_design(designs: dict[str, Any], encoding: str) -> None:
    """Every tutorial case, and the MLP (a b64 answer over the streaming threshold), the same bytes
    from both designs."""
    mlp = json.loads((FIXTURES / "mlp.json").read_text())
    cases = [c["request"] for c in TUTORIAL["cases"]] + [mlp]
    for request in cases:
        body = {k: v for k, v in request.items() if k not in ("network", "output_encoding")}
        got = {mode: _post(server, body, request["network"], encoding) for mode, server in designs.items()}
        assert got["inprocess"] == got["process"], request.get("network", {}).get("name")


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, ValueError):
                pass
    return sorted(out)


def _serving_child(children: list[int], server_port: int, client_port: int) -> int | None:
    """Which child holds the server end of the connection from ``client_port`` (/proc/net/tcp)."""
    inode = None
    want_local, want_remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want_local and fields[2] == want_remote and fields[9] != "0":
            inode = fields[9]
    if inode is None:
        return None
    for pid in children:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:  # closed since the listing
                continue
    return None


def test_sigkill_of_a_serving_process_fails_only_its_requests_and_the_supervisor_restarts_it(tmp_path: Path) -> None:
    server = start_server(tmp_path, worker_mode="inprocess", workers=2, queue_size=8, timeout_ms=120_000)
    try:
        port = int(server.url.rsplit(":", 1)[1])
        request = slow_request(depth=24, name="inproc-kill")
        with server.client(timeout=120) as c:
            network_id = c.post("/networks", json=request["network"]).json()["network_id"]
        body = orjson.dumps({"network_id": network_id, "inputs": request["inputs"]})
        children = poll(lambda: _children(server.pid), lambda ch: len(ch) == 2, timeout=30, what="two children")
        # both have their engine ready (each logs its own "worker 0 ready (pid <its pid>")
        poll(lambda: {int(p) for p in re.findall(r"worker 0 ready \(pid (\d+)", server.log())},
             lambda ready: set(children) <= ready, timeout=120, what="both children to be ready")

        def call(conn: http.client.HTTPConnection) -> tuple[int | None, str]:
            try:
                conn.request("POST", "/grad", body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                return r.status, ""
            except (OSError, http.client.HTTPException) as exc:
                return None, type(exc).__name__

        # Four connections on each child: while one is stopped (SIGSTOP) the other accepts them all.
        # (Used within a second: the server closes a connection idle for --idle-timeout-s.)
        conns: list[http.client.HTTPConnection] = []
        owners: list[int] = []
        for accepting, stopped in ((children[0], children[1]), (children[1], children[0])):
            os.kill(stopped, signal.SIGSTOP)
            try:
                for _ in range(4):
                    cn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                    cn.connect()
                    owner = poll(lambda cn=cn: _serving_child(children, port, cn.sock.getsockname()[1]),
                                 lambda o: o is not None, timeout=10, what="the connection to be accepted")
                    assert owner == accepting, (owner, accepting)
                    conns.append(cn)
                    owners.append(owner)
            finally:
                os.kill(stopped, signal.SIGCONT)
        results: list[Any] = [None] * len(conns)

        def run(i: int) -> None:
            results[i] = call(conns[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(conns))]
        for t in threads:
            t.start()
        victim = owners[0]
        time.sleep(0.5)  # the requests are sent (whether the victim has read them or not, they are its own)
        os.kill(victim, signal.SIGKILL)
        for t in threads:
            t.join(180)
        for owner, (status, why) in zip(owners, results):
            if owner == victim:
                assert status is None, f"a request held by the killed process answered {status}"
            else:
                assert status == 200, f"a request of the other process failed: {status} {why}"
        # the supervisor starts a new child on the same socket; requests succeed again
        new = poll(lambda: _children(server.pid), lambda ch: len(ch) == 2 and victim not in ch, timeout=60,
                   what="the supervisor to restart the killed child")
        assert server.process.poll() is None
        with server.client(timeout=120) as c:
            poll(lambda: c.get("/health/ready"), lambda r: r.status_code == 200, timeout=90, what="readiness")
            for _ in range(6):  # both children serve (connections spread over them)
                r = c.post("/grad", json=tutorial_request())
                assert r.status_code == 200, r.text
        assert "child" in server.log() and "killed by SIGKILL" in server.log(), server.log()[-2000:]
        assert set(new) != set(children)
    finally:
        assert server.stop() == 0, server.log()[-3000:]


def test_a_full_queue_answers_503_before_reading_the_body(tmp_path: Path) -> None:
    server = start_server(tmp_path, worker_mode="inprocess", workers=1, queue_size=1, timeout_ms=60_000)
    try:
        request = slow_request(depth=40, name="inproc-full")
        with server.client(timeout=120) as c:
            assert c.post("/grad", json=request).status_code == 200  # compiled: now only compute
            held: list[Any] = []
            holder = threading.Thread(target=lambda: held.append(c.post("/grad", json=request)))
            holder.start()
            with server.client(timeout=30) as other:
                poll(lambda: metric(other.get("/metrics").text, "gradserve_worker_queue_depth", worker="0"),
                     lambda depth: depth == 1, timeout=30, what="the slow request to occupy the engine")
                refused = other.post("/grad", content=b"this is not JSON", headers={"Content-Type": "application/json"})
                err = error_of(refused, 503, "queue_full")
                assert "queue_size 1" in err["message"]
                assert int(refused.headers["retry-after"]) >= 1
            holder.join(120)
            assert held and held[0].status_code == 200
    finally:
        server.stop()


def test_the_compile_budget_fails_an_over_budget_compile_and_remembers_it(tmp_path: Path) -> None:
    server = start_server(tmp_path, worker_mode="inprocess", workers=1, timeout_ms=120_000, compile_timeout_s=1.5)
    try:
        with server.client(timeout=120) as c:
            t0 = time.monotonic()
            err = error_of(c.post("/grad", json=slow_request(depth=120, name="inproc-over")), 422, "compile_failed")
            assert "more than the compile budget" in err["message"], err
            assert time.monotonic() - t0 < 30
            t0 = time.monotonic()
            error_of(c.post("/grad", json=slow_request(depth=120, name="inproc-over")), 422, "compile_failed")
            assert time.monotonic() - t0 < 1.0, "the remembered failure compiled again"
            assert c.post("/grad", json=tutorial_request()).status_code == 200  # warm work goes on
    finally:
        server.stop()


def test_b64_inputs_decode_fast_in_both_designs(designs: dict[str, Any]) -> None:
    """The MLP's 540 KB b64 body decodes (parse, b64, validation) in well under the ~2.5 ms of the
    standard library's base64 and the thread-pool hops (issue 14.2; the goal, 0.5 ms, is
    measured in docs/benchmarks.md; a loaded CI machine gets slack here)."""
    mlp = json.loads((FIXTURES / "mlp.json").read_text())
    x = engine.decode_tensor(mlp["inputs"][0])
    y = engine.decode_tensor(mlp["inputs"][1])
    for server in designs.values():
        with server.client(timeout=120) as c:
            network_id = c.post("/networks", json=mlp["network"]).json()["network_id"]
            body = {"network_id": network_id, "get_by_list": True, "output_encoding": "b64",
                    "inputs": [{"dtype": "float32", "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode()}
                               for a in (x, y)]}
            decode = sorted(c.post("/grad", json=body).json()["timing_ms"]["decode"] for _ in range(7))
        assert decode[3] < 2.0, f"{server.url}: median decode {decode[3]:.2f} ms"
