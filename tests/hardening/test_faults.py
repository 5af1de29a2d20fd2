"""Faults (issue item 4), on real processes with real signals: a worker SIGKILLed under load, a
compile that outlives its deadline, SIGTERM to the server under load, and the registry file deleted
or overwritten under a running server. Each test that kills something has its own server."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from hardening_helpers import (
    HARD_KEY,
    Background,
    assert_healthy,
    poll,
    slow_request,
    tutorial_request,
    worker_pid_from_log,
)

from tests.support.api_contract import chain_request, error_of, metric
from tests.support.servers import start_refused


def _depths(c: httpx.Client, workers: int) -> list[float]:
    text = c.get("/metrics").text
    return [metric(text, "gradserve_worker_queue_depth", worker=str(i)) or 0.0 for i in range(workers)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): look at its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- a worker SIGKILLed under load -----------------------------------------------------------------


def test_sigkill_a_worker_under_load(server_factory, figures):
    """Two workers; six ~1 s requests spread over them; worker 0 is SIGKILLed while it holds some.
    Exactly its requests fail (500 worker_died, naming it), the other worker's succeed, the pool
    respawns it, and the next requests succeed (on both workers).

    The process design's own behaviour (an engine process apart from the HTTP process): pinned to
    it. In the in-process design a SIGKILL takes the HTTP process with its connections, and the
    supervisor restarts it: tests/service/pool/test_inprocess.py tests that."""
    server = server_factory(workers=2, queue_size=8, worker_mode="process")
    pids = {i: worker_pid_from_log(server, i) for i in (0, 1)}
    assert all(pids.values()), server.log()[-2000:]
    with server.client(timeout=120) as c:
        assert c.post("/grad", json=slow_request(name="kill")).status_code == 200  # compiled on worker 0
        calls = [Background(lambda: c.post("/grad", json=slow_request(name="kill"))) for _ in range(6)]
        depths = poll(lambda: _depths(c, 2), lambda d: sum(d) == 6 and d[0] >= 1 and d[1] >= 1, timeout=30,
                      what="the six requests to be queued on both workers")
        killed_at = time.monotonic()
        os.kill(pids[0], signal.SIGKILL)
        results = [call.result() for call in calls]
        statuses = sorted(r.status_code for r in results)
        died = [r for r in results if r.status_code == 500]
        assert set(statuses) <= {200, 500}, statuses
        assert 1 <= len(died) <= depths[0], (statuses, depths)
        assert statuses.count(200) >= depths[1], (statuses, depths)
        for r in died:
            err = error_of(r, 500, "worker_died")
            assert f"worker 0 (pid {pids[0]})" in err["message"] and "SIGKILL" in err["message"], err
        new_pid = poll(lambda: worker_pid_from_log(server, 0, after_pid=pids[0]), lambda p: p is not None,
                       timeout=60, what="worker 0 to be respawned")
        respawned_in = time.monotonic() - killed_at
        assert new_pid != pids[0] and not _alive(pids[0])
        assert _alive(pids[1]), "the other worker was disturbed"
        text = c.get("/metrics").text
        assert metric(text, "gradserve_worker_restarts_total", worker="0") == 1
        assert metric(text, "gradserve_worker_restarts_total", worker="1") == 0
        # the next requests succeed, and the respawned worker takes its share
        misses_before = metric(text, "gradserve_compile_cache_misses_total", worker="0") or 0
        after = [Background(lambda: c.post("/grad", json=slow_request(name="kill"))) for _ in range(4)]
        assert [r.status_code for r in (call.result() for call in after)] == [200] * 4
        assert (metric(c.get("/metrics").text, "gradserve_compile_cache_misses_total", worker="0") or 0) > misses_before
    figures["sigkill"] = {"requests": 6, "held_by_killed_worker": int(depths[0]), "failed_worker_died": len(died),
                          "succeeded": statuses.count(200), "respawn_s": round(respawned_in, 2)}
    assert_healthy(server)


# -- a compile that outlives its deadline ----------------------------------------------------------


def test_compile_past_the_deadline_is_a_504_and_the_worker_goes_on(hard_server, figures):
    """A first-time compile of a 240-node network with timeout_ms 150: 504 at the deadline, while
    the worker compiles, not at the end of the compile. The same worker process (no restart) then
    serves the next requests, and the abandoned compile was not wasted (it is in the cache).

    240 nodes, under the worker's CHECK_NODES (256): a larger network is first checked (abstract
    evaluation) on the worker's check thread, at the lowest CPU priority, and a job whose deadline
    passes there is skipped before its compile starts, by design. With 800 nodes that made this
    test fail on a loaded machine in both designs (the next call compiled for 1.8-2.3 s: 1 of 4
    tries in process, 2 of 4 in inprocess, while a container image was being built)."""
    with hard_server.client(HARD_KEY, timeout=120) as c:
        text = c.get("/metrics").text
        before = metric(text, "gradserve_worker_restarts_total", worker="0")
        compiled_before = metric(text, "gradserve_compile_cache_compile_seconds_total", worker="0") or 0.0
        pid = worker_pid_from_log(hard_server, 0)
        request = chain_request(240)
        # timeout_ms 1: the deadline passes in the server (parse, abstract evaluation): the job never
        # reaches the worker. This also leaves the network parsed and validated in the server, so
        # that the next call's deadline is spent in the worker's compile.
        err = error_of(c.post("/grad", json={**request, "timeout_ms": 1}), 504, "timeout")
        assert "before it reached a worker" in err["message"], err
        t0 = time.monotonic()
        err = error_of(c.post("/grad", json={**request, "timeout_ms": 150}), 504, "timeout")
        took = time.monotonic() - t0
        assert "while it was computing on worker 0" in err["message"], err
        assert took < 1.0, took
        t1 = time.monotonic()
        r = c.post("/grad", json=tutorial_request())  # waits for the abandoned compile to end
        assert r.status_code == 200, r.text
        next_s = time.monotonic() - t1
        again = c.post("/grad", json=request)
        assert again.status_code == 200, again.text
        assert again.json()["timing_ms"]["compile"] == 0.0, again.json()["timing_ms"]
        text = c.get("/metrics").text
        # the engine's compile time grew by the abandoned compile (and the tutorial's, if it was cold):
        # longer than the 504 took, so the 504 came at the deadline, not at the end of the compile
        compiled_s = (metric(text, "gradserve_compile_cache_compile_seconds_total", worker="0") or 0.0) - compiled_before
        assert compiled_s > took, (compiled_s, took)
        assert worker_pid_from_log(hard_server, 0) == pid
        assert metric(text, "gradserve_worker_restarts_total", worker="0") == before
    figures["compile_deadline"] = {"timeout_ms": 150, "answered_504_after_s": round(took, 3),
                                   "abandoned_compile_s": round(compiled_s, 2),
                                   "next_request_s": round(next_s, 2),
                                   "same_network_again_compile_ms": again.json()["timing_ms"]["compile"]}
    assert_healthy(hard_server, HARD_KEY)


# -- SIGTERM under load ----------------------------------------------------------------------------


def test_sigterm_drains_in_flight_requests_and_exits_0(server_factory, figures):
    """SIGTERM with three requests in flight: they finish (200), new ones get 503 draining until
    the listener closes (then refused, not left waiting), the exit status is 0, and the engine
    processes exit with the server: the worker processes (process design), or the supervisor's
    children that hold the engines (in-process design)."""
    server = server_factory(workers=1, queue_size=8, drain_timeout_s=60)
    workers = server.engine_pids()
    assert workers and server.pid not in workers, workers

    def one() -> httpx.Response:
        with server.client(timeout=120) as own:
            return own.post("/grad", json=slow_request(name="term"))

    with server.client(timeout=120) as c:
        assert c.post("/grad", json=slow_request(name="term")).status_code == 200  # compiled
        in_flight = [Background(one) for _ in range(3)]
        poll(lambda: _depths(c, 1), lambda d: d[0] == 3, timeout=30, what="three requests in flight")
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    # New requests, until the listener closes: 503 draining (with Retry-After), or refused.
    refused_503, not_ready, closed_after = 0, 0, None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with httpx.Client(base_url=server.url, timeout=10) as fresh:
                r = fresh.post("/grad", json=tutorial_request())
                ready = fresh.get("/health/ready")
        except httpx.TransportError as exc:
            closed_after = time.monotonic() - signalled
            # refused (or closed), not left to time out: in the in-process design the supervisor
            # holds a copy of the listener too, and must close it (a connection would wait in the backlog)
            assert not isinstance(exc, httpx.TimeoutException), f"a new request waited unanswered: {exc!r}"
            break
        err = error_of(r, 503, "draining")
        assert int(r.headers["retry-after"]) >= 1, err
        refused_503 += 1
        if ready.status_code == 503:
            assert ready.json()["error"]["code"] == "draining"
            not_ready += 1
        time.sleep(0.05)
    assert closed_after is not None, "the listener never closed"
    results = [call.result(timeout=90) for call in in_flight]
    assert [r.status_code for r in results] == [200, 200, 200], [r.text[:200] for r in results]
    assert server.process.wait(60) == 0
    exited_after = time.monotonic() - signalled
    assert refused_503 >= 1 and not_ready >= 1
    poll(lambda: [p for p in workers if _alive(p)], lambda left: not left, timeout=30,
         what="the engine processes to exit with the server")
    assert "Traceback" not in server.log(), server.log()[-3000:]
    figures["sigterm"] = {"in_flight": 3, "in_flight_200": 3, "new_requests_503_draining": refused_503,
                          "listener_closed_after_s": round(closed_after, 2), "exit_code": 0,
                          "exited_after_s": round(exited_after, 2)}


# -- the registry file deleted or overwritten ------------------------------------------------------


def _register(c: httpx.Client, name: str) -> str:
    network = tutorial_request()["network"]
    network["name"] = name
    r = c.post("/networks", json=network)
    assert r.status_code in (200, 201), r.text
    return r.json()["network_id"]


def _assert_registry_unavailable(c: httpx.Client, network_id: str, why: str) -> None:
    inputs = tutorial_request()["inputs"]
    for r in (c.get("/networks"), c.get(f"/networks/{network_id}"), c.delete(f"/networks/{network_id}"),
              c.post("/networks", json={**tutorial_request()["network"], "name": "new"})):
        err = error_of(r, 503, "registry_unavailable")
        assert err["path"] == "registry" and why in err["message"] and "restart" in err["message"], err
        assert int(r.headers["retry-after"]) >= 1
    ready = c.get("/health/ready")
    assert error_of(ready, 503, "registry_unavailable")
    assert c.get("/health/live").status_code == 200
    # networks inline still work; by id, /grad answers what GET answers (no 200 from memory)
    assert c.post("/grad", json=tutorial_request()).status_code == 200
    for _ in range(3):
        by_id = c.post("/grad", json={"network_id": network_id, "inputs": inputs})
        err = error_of(by_id, 503, "registry_unavailable")
        assert why in err["message"], err


def _assert_fresh_and_working(c: httpx.Client) -> str:
    assert c.get("/health/ready").status_code == 200
    network_id = _register(c, "after-restart")
    assert network_id in [n["network_id"] for n in c.get("/networks").json()["networks"]]
    r = c.post("/grad", json={"network_id": network_id, "inputs": tutorial_request()["inputs"]})
    assert r.status_code == 200, r.text
    return network_id


@pytest.mark.parametrize("damage", ["delete", "overwrite"])
def test_registry_file_damaged_under_a_running_server(server_factory, tmp_path_factory, figures, damage):
    directory = tmp_path_factory.mktemp(f"registry-{damage}")
    path = directory / "registry.sqlite3"
    server = server_factory(directory=directory, registry_path=path)
    with server.client() as c:
        network_id = _register(c, "before")
        # warm: the network is parsed in the registry's memory before the damage
        assert c.post("/grad", json={"network_id": network_id, "inputs": tutorial_request()["inputs"]}
                      ).status_code == 200
        if damage == "delete":
            path.unlink()
            why = "deleted"
        else:
            with open(path, "wb") as f:  # same inode, new contents: `echo garbage > registry.sqlite3`
                f.write(b"this is not an SQLite database\n" * 4096)
            why = "corrupted"
        _assert_registry_unavailable(c, network_id, why)
    assert server.process.poll() is None, "the server crashed:\n" + server.log()[-3000:]
    assert server.stop() == 0, server.log()[-3000:]
    assert "Traceback" not in server.log(), server.log()[-3000:]
    if damage == "delete":
        # no file at all is a first start: a fresh registry
        again = server_factory(directory=directory, registry_path=path)
        with again.client() as c:
            _assert_fresh_and_working(c)
        figures["registry_delete"] = {"error": "503 registry_unavailable (deleted)",
                                      "after_restart": "a missing file is a first start: empty, working"}
        assert_healthy(again)
        return
    # a damaged file: the server refuses to start, naming the file and the ways out, and leaves it be
    refused = start_refused(directory, registry_path=path)
    assert refused.returncode != 0
    assert str(path) in refused.output and "--registry-start-empty" in refused.output, refused.output[-3000:]
    assert path.read_bytes().startswith(b"this is not an SQLite database")
    assert not list(directory.glob("registry.sqlite3.corrupt-*"))
    # starting anyway, empty, is an explicit choice; the damaged file is moved aside
    again = server_factory(directory=directory, registry_path=path, registry_start_empty="true")
    with again.client() as c:
        _assert_fresh_and_working(c)
        left = [n["name"] for n in c.get("/networks").json()["networks"]]
    aside = sorted(p.name for p in directory.glob("registry.sqlite3.corrupt-*"))
    assert aside and (directory / aside[0]).read_bytes().startswith(b"this is not an SQLite database")
    figures["registry_overwrite"] = {
        "error": "503 registry_unavailable (corrupted), /grad by id included",
        "restart": f"refused, exit {refused.returncode}, message names the file and --registry-start-empty",
        "with --registry-start-empty true": f"working; networks listed: {left}; moved aside: {aside}"}
    assert_healthy(again)
