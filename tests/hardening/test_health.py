"""Truthful readiness (issue 12, finding 9 and point 7): ``/health/ready`` is 503 while no worker
can take work: stopped (SIGSTOP), hung (its loop has not answered the pool's heartbeat for
``worker_hang_s``, and nobody waits on what it computes) or fully booked. Before the fixes it
said 200 in each case."""

from __future__ import annotations

import os
import signal
import time

import httpx
from hardening_helpers import Background, assert_healthy, poll, slow_request, tutorial_request


def test_ready_is_503_while_every_queue_place_is_held(server_factory):
    server = server_factory(workers=1, queue_size=1, timeout_ms=60_000)
    with server.client(timeout=120) as c:
        assert c.get("/health/ready").status_code == 200
        held = Background(lambda: httpx.post(server.url + "/grad", json=slow_request(name="booked"), timeout=120))
        r = poll(lambda: c.get("/health/ready"), lambda r: r.status_code == 503 or held.done(), timeout=60,
                 what="readiness to say 503 while the only place is held")
        assert r.status_code == 503, "the slow request finished before readiness said 503"
        err = r.json()["error"]
        assert err["code"] == "not_ready" and "fully booked" in err["message"], err
        assert held.result().status_code == 200
        poll(lambda: c.get("/health/ready"), lambda r: r.status_code == 200, timeout=30,
             what="readiness to come back once the place is free")


def test_ready_is_503_while_the_worker_is_stopped(server_factory):
    """A worker process stopped (SIGSTOP) while its HTTP process goes on: the process design's
    own case, pinned to it (in the in-process design a stopped process is the HTTP server too)."""
    server = server_factory(workers=1, worker_hang_s=1, worker_mode="process")
    (pid,) = server.worker_pids()
    with server.client(timeout=30) as c:
        assert c.get("/health/ready").status_code == 200
        os.kill(pid, signal.SIGSTOP)
        try:
            r = poll(lambda: c.get("/health/ready"), lambda r: r.status_code == 503, timeout=10,
                     what="readiness to say 503 while the worker is stopped")
            assert "stopped" in r.json()["error"]["message"]
            assert c.get("/health/live").status_code == 200
            time.sleep(2.5)  # past worker_hang_s: its heartbeat is unanswered, and stays 503
            assert c.get("/health/ready").status_code == 503
        finally:
            os.kill(pid, signal.SIGCONT)
        poll(lambda: c.get("/health/ready"), lambda r: r.status_code == 200, timeout=10,
             what="readiness to come back after SIGCONT")
    assert_healthy(server)


def test_ready_is_503_while_the_worker_is_hung_in_a_compute_nobody_waits_for(server_factory, figures):
    """A warm compute runs on the worker's main loop: one that outlives its caller's deadline
    (504) holds the only worker, not stopped and not booked (one job for 64 places), and the
    next request would wait behind it. Before the heartbeat: 200 all along."""
    server = server_factory(workers=1, worker_hang_s=1, timeout_ms=120_000)
    request = slow_request(depth=160, name="hung")
    with server.client(timeout=120) as c:
        t0 = time.monotonic()
        assert c.post("/grad", json=request).status_code == 200  # compiled (on the compile thread), now warm
        first = time.monotonic() - t0
        assert c.get("/health/ready").status_code == 200
        t0 = time.monotonic()
        assert c.post("/grad", json={**request, "timeout_ms": 300}).status_code == 504  # computes on
        r = poll(lambda: c.get("/health/ready"), lambda r: r.status_code == 503, timeout=60,
                 what="readiness to say 503 while the worker is stuck in a compute past its deadline")
        hung_after = time.monotonic() - t0
        err = r.json()["error"]
        assert err["code"] == "not_ready" and "hung" in err["message"], err
        assert c.get("/health/live").status_code == 200
        poll(lambda: c.get("/health/ready"), lambda r: r.status_code == 200, timeout=120,
             what="readiness to come back once the compute is over")
        figures["health_hung_worker"] = {"first_call_s": round(first, 1), "503_after_s": round(hung_after, 1),
                                         "200_again_after_s": round(time.monotonic() - t0, 1)}
    assert_healthy(server)


def test_a_long_compute_someone_waits_for_is_busy_not_hung(server_factory):
    """The same compute within its deadline: readiness stays 200 (the worker is busy; its queue
    has places), so a long request does not take the replica out of a load balancer."""
    server = server_factory(workers=1, worker_hang_s=1, timeout_ms=120_000)
    request = slow_request(depth=160, name="busy")
    with server.client(timeout=120) as c:
        assert c.post("/grad", json=request).status_code == 200  # warm
        busy = Background(lambda: httpx.post(server.url + "/grad", json=request, timeout=120))
        statuses = []
        while not busy.done():
            statuses.append(c.get("/health/ready").status_code)
            time.sleep(0.2)
        assert busy.result().status_code == 200
        assert len(statuses) >= 10 and set(statuses) == {200}, statuses


def test_jobs_go_around_a_hung_worker(server_factory):
    """Two workers; worker 0 holds the tutorial network (affinity) and then hangs in a compute
    whose caller got 504. The next tutorial /grad goes to worker 1 instead of waiting behind
    that compute (before: affinity sent it to worker 0, where it waited for the compute).

    The process design's routing between its workers, pinned to it: in the in-process design each
    HTTP process has one engine and the kernel spreads the connections (nothing to route)."""
    server = server_factory(workers=2, worker_hang_s=1, timeout_ms=120_000, worker_mode="process")
    request = slow_request(depth=160, name="hung-one")
    with server.client(timeout=120) as c:
        assert c.post("/grad", json=tutorial_request()).status_code == 200  # worker 0 (idle, lowest slot)
        assert c.post("/grad", json=request).status_code == 200  # worker 0 again (affinity slack)
        assert c.post("/grad", json={**request, "timeout_ms": 300}).status_code == 504  # worker 0 computes on
        time.sleep(2.5)  # past worker_hang_s
        assert c.get("/health/ready").status_code == 200  # worker 1 can take work
        assert c.post("/grad", json=tutorial_request()).status_code == 200
        # answered while worker 0 is still in its compute: so by worker 1
        assert 'gradserve_worker_queue_depth{worker="0"} 1.0' in c.get("/metrics").text
