"""Truthful readiness (issue 12, finding 9): ``/health/ready`` is 503 while no worker can take
work: stopped (SIGSTOP) or fully booked. Before the fix it said 200 in both cases."""

from __future__ import annotations

import os
import signal

import httpx
from hardening_helpers import Background, assert_healthy, poll, slow_request


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
    server = server_factory(workers=1)
    (pid,) = server.worker_pids()
    with server.client(timeout=30) as c:
        assert c.get("/health/ready").status_code == 200
        os.kill(pid, signal.SIGSTOP)
        try:
            r = poll(lambda: c.get("/health/ready"), lambda r: r.status_code == 503, timeout=10,
                     what="readiness to say 503 while the worker is stopped")
            assert "stopped" in r.json()["error"]["message"]
            assert c.get("/health/live").status_code == 200
        finally:
            os.kill(pid, signal.SIGCONT)
        poll(lambda: c.get("/health/ready"), lambda r: r.status_code == 200, timeout=10,
             what="readiness to come back after SIGCONT")
    assert_healthy(server)
