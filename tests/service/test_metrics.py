"""service.metrics: the page Prometheus scrapes, from the observations and the pool's snapshot."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from service.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    page = metrics.render().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(page) for s in family.samples}


def test_requests_are_counted_by_route_method_and_status_with_their_latency() -> None:
    m = Metrics()
    m.observe_request("/grad", "POST", 200, 0.0004)
    m.observe_request("/grad", "POST", 200, 0.002)
    m.observe_request("/networks/{network_id}", "GET", 404, 0.01)
    got = samples(m)
    assert got[("gradserve_requests_total", (("method", "POST"), ("route", "/grad"), ("status", "200")))] == 2
    assert got[("gradserve_requests_total", (("method", "GET"), ("route", "/networks/{network_id}"),
                                             ("status", "404")))] == 1
    grad = (("route", "/grad"),)
    assert got[("gradserve_request_seconds_count", grad)] == 2
    assert abs(got[("gradserve_request_seconds_sum", grad)] - 0.0024) < 1e-12
    # cumulative buckets: le is "at most"
    assert got[("gradserve_request_seconds_bucket", (("le", "0.0005"), ("route", "/grad")))] == 1
    assert got[("gradserve_request_seconds_bucket", (("le", "0.0025"), ("route", "/grad")))] == 2
    assert got[("gradserve_request_seconds_bucket", (("le", "+Inf"), ("route", "/grad")))] == 2
    assert not any(name.endswith("_created") for name, _ in got)


def test_grad_stages_and_compile_only_on_a_miss() -> None:
    m = Metrics()
    timing = {"queue": 0.1, "decode": 0.2, "compile": 50.0, "compute": 1.0, "encode": 0.3}
    m.observe_grad(timing, compiled=False)
    m.observe_grad(timing, compiled=True)
    got = samples(m)
    assert got[("gradserve_compute_seconds_count", ())] == 2
    assert got[("gradserve_compile_seconds_count", ())] == 1
    assert abs(got[("gradserve_compile_seconds_sum", ())] - 0.05) < 1e-12


def test_the_pool_is_read_at_scrape_time_and_a_failing_snapshot_fails_no_scrape() -> None:
    m = Metrics()
    rows: list[dict[str, Any]] = [{"index": 0, "alive": True, "queued": 2, "running": 1, "restarts": 3,
                                   "cache": {"hits": 5, "misses": 2, "compile_seconds": 1.5, "size": 2}}]
    m.watch_pool(lambda: rows)
    got = samples(m)
    w0 = (("worker", "0"),)
    assert got[("gradserve_compile_cache_hits_total", w0)] == 5
    assert got[("gradserve_worker_queue_depth", w0)] == 3
    assert got[("gradserve_worker_restarts_total", w0)] == 3 and got[("gradserve_worker_alive", w0)] == 1
    rows[0]["alive"] = False
    assert samples(m)[("gradserve_worker_alive", w0)] == 0

    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("pool gone")

    m.watch_pool(broken)
    assert not any(name.startswith("gradserve_worker") for name, _ in samples(m))
