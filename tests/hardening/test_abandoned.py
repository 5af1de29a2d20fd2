"""Abandoned requests are dropped before they are computed (issue 12, finding 7).

Before the fix, a request whose client had gone was still computed and counted as a 200: nothing
watched for the disconnect while the job waited in the worker's queue."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from hardening_helpers import Background, assert_healthy, poll, slow_request

from tests.support.api_contract import metric

GONE = 6


def test_requests_whose_clients_left_are_skipped_and_counted(server_factory):
    server = server_factory(workers=1, queue_size=64, timeout_ms=120_000)
    with server.client(timeout=120) as c:
        before = c.get("/metrics").text
        misses0 = metric(before, "gradserve_compile_cache_misses_total", worker="0") or 0
        busy = Background(lambda: httpx.post(server.url + "/grad", json=slow_request(depth=64, name="busy"),
                                             timeout=120))
        poll(lambda: c.get("/metrics").text, lambda t: metric(t, "gradserve_worker_queue_depth", worker="0") == 1,
             timeout=30, what="the busy request to reach the worker")
        # All at once, so that the busy request only has to outlast one client timeout (sent one
        # after another, a fast machine finished the busy compile before the sixth gave up).
        def abandon(i: int) -> str:  # waits behind the busy one; its client gives up after 0.5 s
            try:
                httpx.post(server.url + "/grad", json=slow_request(name=f"gone-{i}"), timeout=0.5)
                return "answered"
            except httpx.TimeoutException:
                return "gave up"

        with ThreadPoolExecutor(GONE) as pool:
            outcomes = list(pool.map(abandon, range(GONE)))
        assert outcomes == ["gave up"] * GONE, f"answered while the worker was busy: {outcomes}"
        assert busy.result(120).status_code == 200
        text = poll(lambda: c.get("/metrics").text,
                    lambda t: metric(t, "gradserve_abandoned_requests_total", reason="client_gone") == GONE,
                    timeout=30, what=f"{GONE} abandoned requests in the metrics")
        assert metric(text, "gradserve_requests_total", route="/grad", method="POST", status="499") == GONE
        assert metric(text, "gradserve_requests_total", route="/grad", method="POST", status="200") == 1
        # none of the abandoned networks was compiled: only the busy one was
        assert metric(text, "gradserve_compile_cache_misses_total", worker="0") == misses0 + 1
        assert metric(text, "gradserve_worker_queue_depth", worker="0") == 0
    assert_healthy(server)
