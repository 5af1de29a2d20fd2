"""Prometheus metrics, in a registry of the app's own (two apps in one process never mix).

- ``gradserve_requests_total{route, method, status}``: HTTP responses (``route`` is the route's
  template, ``/networks/{network_id}``, never the raw path).
- ``gradserve_request_seconds{route}``: whole-request latency, as the server sees it.
- ``gradserve_{queue,decode,compile,compute,encode}_seconds``: the stages of a ``/grad`` call
  (``compile`` only for compile-cache misses).
- ``gradserve_compile_cache_{hits,misses}_total{worker}``, ``gradserve_compile_cache_size``,
  ``gradserve_compile_cache_compile_seconds_total``: each worker's engine cache, read from the
  pool's snapshot at scrape time.
- ``gradserve_worker_queue_depth{worker}`` (queued + running), ``gradserve_worker_alive{worker}``,
  ``gradserve_worker_restarts_total{worker}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("gradserve.metrics")

# The *_created series double the page and nobody reads them (a process-wide switch).
disable_created_metrics()

CONTENT_TYPE = CONTENT_TYPE_LATEST
STAGES = ("queue", "decode", "compile", "compute", "encode")
# 50 µs .. 2 min: a warm tutorial-sized call is well under a millisecond, a cold compile seconds.
BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
           1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_STAGE_HELP = {
    "queue": "time from submitting a /grad job to a worker starting it",
    "decode": "time parsing and validating a /grad request in the server",
    "compile": "time compiling a gradient program (compile-cache misses only)",
    "compute": "time running a compiled gradient program in a worker",
    "encode": "time encoding the tensors of a /grad response",
}


class _PoolCollector(Collector):
    """Per-worker figures from ``pool.snapshot()``, read when Prometheus scrapes."""

    def __init__(self, snapshot: Callable[[], list[dict[str, Any]]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        hits = CounterMetricFamily("gradserve_compile_cache_hits", "compile-cache hits", labels=["worker"])
        misses = CounterMetricFamily("gradserve_compile_cache_misses", "compile-cache misses (compiles)",
                                     labels=["worker"])
        seconds = CounterMetricFamily("gradserve_compile_cache_compile_seconds",
                                      "seconds spent compiling, per worker", labels=["worker"])
        size = GaugeMetricFamily("gradserve_compile_cache_size", "compiled programs cached", labels=["worker"])
        depth = GaugeMetricFamily("gradserve_worker_queue_depth", "jobs queued or running on a worker",
                                  labels=["worker"])
        alive = GaugeMetricFamily("gradserve_worker_alive", "1 if the worker process is up", labels=["worker"])
        restarts = CounterMetricFamily("gradserve_worker_restarts", "worker processes restarted after dying",
                                       labels=["worker"])
        try:
            workers = self._snapshot()
        except Exception:  # a scrape must never fail because of the pool
            log.exception("pool snapshot failed")
            workers = []
        for w in workers:
            label = [str(w.get("index", "?"))]
            cache = w.get("cache") or w.get("cache_stats") or {}
            hits.add_metric(label, float(cache.get("hits", 0)))
            misses.add_metric(label, float(cache.get("misses", 0)))
            seconds.add_metric(label, float(cache.get("compile_seconds", 0.0)))
            size.add_metric(label, float(cache.get("size", 0)))
            depth.add_metric(label, float(w.get("queued", 0)) + float(w.get("running", 0)))
            alive.add_metric(label, 1.0 if w.get("alive") else 0.0)
            restarts.add_metric(label, float(w.get("restarts", 0)))
        yield from (hits, misses, seconds, size, depth, alive, restarts)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("gradserve_requests", "HTTP responses by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.request_seconds = Histogram("gradserve_request_seconds", "HTTP request latency in the server",
                                         ["route"], buckets=BUCKETS, registry=r)
        self.stages = {
            stage: Histogram(f"gradserve_{stage}_seconds", _STAGE_HELP[stage], buckets=BUCKETS, registry=r)
            for stage in STAGES
        }
        self._pool_collector: _PoolCollector | None = None
        self._request_children: dict[tuple[str, str, int], Any] = {}
        self._latency_children: dict[str, Any] = {}

    def watch_pool(self, snapshot: Callable[[], list[dict[str, Any]]]) -> None:
        if self._pool_collector is not None:
            self.registry.unregister(self._pool_collector)
        self._pool_collector = _PoolCollector(snapshot)
        self.registry.register(self._pool_collector)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        # Label lookups cost more than the increments: keep the children (bounded by the routes).
        key = (route, method, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, method, str(status))
        child.inc()
        latency = self._latency_children.get(route)
        if latency is None:
            latency = self._latency_children[route] = self.request_seconds.labels(route)
        latency.observe(seconds)

    def observe_grad(self, timing_ms: dict[str, float], compiled: bool) -> None:
        for stage in STAGES:
            if stage == "compile" and not compiled:
                continue
            value = timing_ms.get(stage)
            if value is not None:
                self.stages[stage].observe(value / 1e3)

    def render(self) -> bytes:
        return generate_latest(self.registry)
