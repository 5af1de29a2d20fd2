"""Overload (issue item 3): one worker, a queue of 2, and a burst of 10x that many concurrent slow
requests (the gradient of a chain of 1000x1000 float32 MatMuls, 5 MiB bodies).

Only 200s and 503s (each 503 with Retry-After), no client waits past the configured deadline,
and the server's RSS comes back near its baseline afterwards (no memory kept from the burst)."""

from __future__ import annotations

import base64
import statistics
import threading
import time

import httpx
import numpy as np
import orjson
from hardening_helpers import assert_healthy, matmul_chain, mib, poll, rss_bytes, worker_held

from tests.support.api_contract import error_of

QUEUE_SIZE = 2
BURST = 10 * QUEUE_SIZE
DEADLINE_MS = 10_000
#: how far above its baseline the server's RSS may stay once the burst is over
RSS_MARGIN = 48 * 2**20
N = 1000


def test_burst_of_10x_capacity(server_factory, figures):
    server = server_factory(workers=1, queue_size=QUEUE_SIZE, timeout_ms=DEADLINE_MS)
    with server.client(timeout=120) as c:
        r = c.post("/networks", json=matmul_chain(3, N))
        assert r.status_code == 201, r.text
        network_id = r.json()["network_id"]
        x = (np.random.default_rng(0).standard_normal((N, N)) * 0.03).astype("<f4")
        body = orjson.dumps({"network_id": network_id,
                             "inputs": [{"dtype": "float32", "shape": [N, N], "b64": base64.b64encode(x.tobytes()).decode()}]})
        headers = {"Content-Type": "application/json"}
        for _ in range(2):  # compile, then one warm call
            warm = c.post("/grad", content=body, headers=headers)
            assert warm.status_code == 200, warm.text
        figures["overload_warm_request_ms"] = round(warm.elapsed.total_seconds() * 1e3)
    pid = server.serving_pid()  # the process that reads the bodies (in the in-process design, the supervisor's child)
    baseline = rss_bytes(pid)

    peak = baseline
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.005)

    results: list[tuple[int, float, httpx.Response]] = []
    lock = threading.Lock()
    start = threading.Barrier(BURST)

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=DEADLINE_MS / 1e3 + 30) as http:
            start.wait()
            t0 = time.monotonic()
            response = http.post("/grad", content=body, headers=headers)
            took = time.monotonic() - t0
        with lock:
            results.append((response.status_code, took, response))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(BURST)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_MS / 1e3 + 60)
        assert not t.is_alive(), "a client is still waiting long past the deadline"
    stop.set()
    sampler.join()

    statuses = sorted(s for s, _, _ in results)
    assert len(results) == BURST
    assert set(statuses) <= {200, 503}, statuses
    ok = [r for s, _, r in results if s == 200]
    refused = [r for s, _, r in results if s == 503]
    assert ok and refused, statuses
    for r in ok:
        assert r.json()["gradients"]["shape"] == [N, N]
    for r in refused:
        err = error_of(r, 503, "queue_full")
        assert "queue_size" in err["message"]
        assert int(r.headers["retry-after"]) >= 1
    slowest = max(t for _, t, _ in results)
    assert slowest < DEADLINE_MS / 1e3, f"a client waited {slowest:.2f} s, past the {DEADLINE_MS} ms deadline"

    after = poll(lambda: rss_bytes(pid), lambda rss: rss < baseline + RSS_MARGIN, timeout=20,
                 what=f"the server's RSS to come back under baseline {mib(baseline)} MiB + {mib(RSS_MARGIN)} MiB")
    figures["overload_statuses"] = f"{len(ok)} x 200, {len(refused)} x 503 of {BURST}"
    figures["overload_latency_s"] = {
        "200_max": round(max(t for s, t, _ in results if s == 200), 2),
        "503_median": round(statistics.median(t for s, t, _ in results if s == 503), 2),
        "slowest": round(slowest, 2),
    }
    figures["overload_rss_mib"] = {"baseline": mib(baseline), "peak": mib(peak), "after": mib(after),
                                   "margin": mib(RSS_MARGIN)}
    assert_healthy(server)


def test_a_full_queue_answers_503_before_reading_the_body(server_factory, figures):
    """With every worker's queue full, ``/grad`` is refused before its body is read: a body that
    is not even JSON gets 503 ``queue_full`` (not 400), and the held request still succeeds."""
    server = server_factory(workers=1, queue_size=1, timeout_ms=60_000)
    x = (np.random.default_rng(1).standard_normal((N, N)) * 0.03).astype("<f4")
    with server.client(timeout=120) as c:
        network_id = c.post("/networks", json=matmul_chain(12, N)).json()["network_id"]
        slow = orjson.dumps({"network_id": network_id,
                             "inputs": [{"dtype": "float32", "shape": [N, N], "b64": base64.b64encode(x.tobytes()).decode()}]})
        headers = {"Content-Type": "application/json"}
        assert c.post("/grad", content=slow, headers=headers).status_code == 200  # compiled: now only compute
        with worker_held(server, lambda: c.post("/grad", content=slow, headers=headers),
                         "the slow request to occupy the worker") as other:
            t0 = time.monotonic()
            refused = other.post("/grad", content=b"this is not JSON", headers=headers)
            figures["queue_full_503_ms"] = round((time.monotonic() - t0) * 1e3, 1)
            err = error_of(refused, 503, "queue_full")
            assert "queue_size 1" in err["message"]
            assert int(refused.headers["retry-after"]) >= 1
            # the same connection serves the next request (the unread body was dropped, not parsed)
            assert other.get("/health/live").status_code == 200
    assert_healthy(server)
