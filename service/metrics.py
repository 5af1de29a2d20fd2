"""Prometheus metrics, in a registry of the app's own (two apps in one process never mix).

- ``gradserve_requests_total{route, method, status}``: HTTP responses (``route`` is the route's
  template, ``/networks/{network_id}``, never the raw path).
- ``gradserve_request_seconds{route}``: whole-request latency, as the server sees it.
- ``gradserve_{queue,decode,compile,compute,encode}_seconds``: the stages of a ``/grad`` call
  (``compile`` only for compile-cache misses).
- ``gradserve_compile_cache_{hits,misses}_total{worker}``, ``gradserve_compile_cache_size``,
  ``gradserve_compile_cache_compile_seconds_total``: each worker's engine cache, read from the
  pool's snapshot at scrape time.
- ``gradserve_abandoned_requests_total{reason}``: requests dropped before their computation,
  ``client_gone`` (the client disconnected: status 499) or ``deadline``.
- ``gradserve_batch_size``: per computed request, how many requests its worker computed with it
  as one batch (1: alone); ``gradserve_batch_wait_seconds``: how long it waited in its worker
  for its batch to fill (``--batch-delay-us``; 0 when its batch did not wait).
- ``gradserve_worker_queue_depth{worker}`` (queued + running), ``gradserve_worker_alive{worker}``,
  ``gradserve_worker_restarts_total{worker}``.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

log = logging.getLogger("gradserve.metrics")

# The *_created series double the page and nobody reads them (a process-wide switch).
disable_created_metrics()

CONTENT_TYPE = CONTENT_TYPE_LATEST
STAGES = ("queue", "decode", "compile", "compute", "encode")
# 50 µs .. 2 min: a warm tutorial-sized call is well under a millisecond, a cold compile seconds.
BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
           1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# a batch's size: the buckets its programs are compiled for (engine/batching.py)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# the wait for a batch: 0 (no wait) up to a few milliseconds of --batch-delay-us
BATCH_WAITS = (0.000001, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
               0.025, 0.05, 0.1)
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
        loaded = CounterMetricFamily("gradserve_compile_cache_loaded", "programs loaded from the executable store "
                                     "(--executable-store) instead of compiled", labels=["worker"])
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
            loaded.add_metric(label, float(cache.get("loaded", 0)))
            depth.add_metric(label, float(w.get("queued", 0)) + float(w.get("running", 0)))
            alive.add_metric(label, 1.0 if w.get("alive") else 0.0)
            restarts.add_metric(label, float(w.get("restarts", 0)))
        yield from (hits, misses, seconds, size, loaded, depth, alive, restarts)


class _Histogram:
    """One histogram series, observed with a bisect and two additions (prometheus_client's
    Histogram takes a lock per update and walks the buckets in Python: a few microseconds per
    request on the hot path). Only the event loop observes it."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = list(buckets)
        self.counts = [0] * (len(buckets) + 1)  # the last: +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, count in zip([*self.bounds, math.inf], self.counts):
            total += count
            out.append((floatToGoString(bound), float(total)))
        return out


class _Histograms(Collector):
    """Histogram families of :class:`_Histogram` series, exposed as prometheus_client exposes
    its own (``_bucket{le}``, ``_count``, ``_sum``)."""

    def __init__(self) -> None:
        self.families: list[tuple[str, str, list[str], dict[tuple[str, ...], _Histogram]]] = []

    def family(self, name: str, documentation: str, labels: list[str]) -> dict[tuple[str, ...], _Histogram]:
        series: dict[tuple[str, ...], _Histogram] = {}
        self.families.append((name, documentation, labels, series))
        return series

    def collect(self) -> Iterator[Metric]:
        for name, documentation, labels, series in self.families:
            family = HistogramMetricFamily(name, documentation, labels=labels)
            for values, histogram in list(series.items()):
                family.add_metric(list(values), histogram.cumulative(), histogram.sum)
            yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("gradserve_requests", "HTTP responses by route, method and status",
                                ["route", "method", "status"], registry=r)
        # Requests dropped unanswered before their computation (client gone), or whose deadline
        # passed first: not 200s, not 400s (status 499 in gradserve_requests for the gone ones).
        self.abandoned = Counter("gradserve_abandoned_requests", "requests dropped before they were computed, "
                                 "by reason (client_gone, deadline)", ["reason"], registry=r)
        histograms = _Histograms()
        self._request_seconds = histograms.family("gradserve_request_seconds", "HTTP request latency in the server",
                                                  ["route"])
        self.stages = {}
        for stage in STAGES:
            series = histograms.family(f"gradserve_{stage}_seconds", _STAGE_HELP[stage], [])
            self.stages[stage] = series[()] = _Histogram(BUCKETS)
        self.batch_size = histograms.family(
            "gradserve_batch_size", "requests computed as one batch, observed once per computed request "
            "(1: alone)", [])[()] = _Histogram(BATCH_SIZES)
        self.batch_wait = histograms.family(
            "gradserve_batch_wait_seconds", "time a computed request waited in its worker for its batch to "
            "fill (--batch-delay-us)", [])[()] = _Histogram(BATCH_WAITS)
        r.register(histograms)
        self._pool_collector: _PoolCollector | None = None
        self._request_children: dict[tuple[str, str, int], Any] = {}

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
        latency = self._request_seconds.get((route,))
        if latency is None:
            latency = self._request_seconds[(route,)] = _Histogram(BUCKETS)
        latency.observe(seconds)

    def observe_grad(self, timing_ms: dict[str, float], compiled: bool) -> None:
        for stage in STAGES:
            if stage == "compile" and not compiled:
                continue
            value = timing_ms.get(stage)
            if value is not None:
                self.stages[stage].observe(value / 1e3)

    def observe_batch(self, worker_timing_ms: dict[str, float]) -> None:
        """The batch a request was computed in, from its worker's timing (``batch_size``,
        ``batch_wait`` in ms; absent from a worker that does not batch)."""
        size = worker_timing_ms.get("batch_size")
        if size is not None:
            self.batch_size.observe(size)
            self.batch_wait.observe(worker_timing_ms.get("batch_wait", 0.0) / 1e3)

    def render(self) -> bytes:
        return generate_latest(self.registry)
