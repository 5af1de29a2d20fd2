"""Talking to the server outside the load itself: scrape ``/metrics``, register a network, send a
warm-up request. Standard library only (``urllib``): these are a handful of calls per level."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from .scenarios import PreparedRequest

# Stages of a /grad request, each a histogram gradserve_<stage>_seconds (service/metrics.py).
STAGES = ("queue", "decode", "compile", "compute", "encode")
REQUESTS_COUNTER = "gradserve_requests_total"
CACHE_HITS = "gradserve_compile_cache_hits_total"
CACHE_MISSES = "gradserve_compile_cache_misses_total"
GRAD_ROUTE = "/grad"

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Metrics:
    """One scrape of ``/metrics``: every sample as ``(name, labels) -> value``."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)
    at: float = 0.0
    error: str | None = None

    @classmethod
    def parse(cls, text: str, at: float = 0.0) -> Metrics:
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE.match(line)
            if not m:
                continue
            name, labels, value = m.groups()
            try:
                v = float(value)
            except ValueError:
                continue
            lab = frozenset(
                (k, v_.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\"))
                for k, v_ in _LABEL.findall(labels or "")
            )
            samples[(name, lab)] = v
        return cls(samples, at)

    def total(self, name: str, **match: str | tuple[str, ...]) -> float:
        """The sum of ``name`` over every label set that matches ``match`` (a value or a tuple of
        accepted values per label)."""
        out = 0.0
        for (n, labels), v in self.samples.items():
            if n != name:
                continue
            d = dict(labels)
            if all(d.get(k) in (want if isinstance(want, tuple) else (want,)) for k, want in match.items()):
                out += v
        return out

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.samples)

    def names(self) -> set[str]:
        return {n for n, _ in self.samples}

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(lab).get(label, "") for n, lab in self.samples if n == name}


def _route_labels(m: Metrics, name: str, route: str = GRAD_ROUTE) -> dict[str, Any]:
    """How the requests counter names the /grad route (``route``, ``path``, ``handler`` or
    ``endpoint``), so the match survives a rename on the service side."""
    for key in ("route", "path", "handler", "endpoint"):
        if route in m.label_values(name, key):
            match: dict[str, Any] = {key: route}
            if m.label_values(name, "method") - {""}:
                match["method"] = "POST"
            return match
    return {}


def grad_requests(m: Metrics, route: str = GRAD_ROUTE) -> dict[str, float]:
    """The server's own count of ``POST /grad`` responses (or another ``route``'s), by status code."""
    name = REQUESTS_COUNTER
    if not m.has(name):
        return {}
    match = _route_labels(m, name, route)
    if not match:
        return {}
    status_key = next((k for k in ("status", "code", "status_code") if m.label_values(name, k) - {""}), None)
    if status_key is None:
        return {"all": m.total(name, **match)}
    return {s: m.total(name, **match, **{status_key: s}) for s in sorted(m.label_values(name, status_key))}


def delta(before: Metrics, after: Metrics, route: str = GRAD_ROUTE) -> dict[str, Any]:
    """The server's side of one level: per-stage histogram deltas, the POST /grad counter delta by
    status, compile-cache hits and misses."""
    out: dict[str, Any] = {"stages": {}, "requests": {}, "scrape_ok": before.error is None and after.error is None}
    if not out["scrape_ok"]:
        out["error"] = before.error or after.error
        return out
    for stage in STAGES:
        base = f"gradserve_{stage}_seconds"
        s = after.total(base + "_sum") - before.total(base + "_sum")
        c = after.total(base + "_count") - before.total(base + "_count")
        out["stages"][stage] = {
            "sum_s": s,
            "count": c,
            "mean_ms": (s / c * 1000.0) if c > 0 else None,
            "present": after.has(base + "_count"),
        }
    b, a = grad_requests(before, route), grad_requests(after, route)
    out["requests"] = {k: a.get(k, 0.0) - b.get(k, 0.0) for k in sorted(set(a) | set(b)) if a.get(k, 0.0) - b.get(k, 0.0)}
    out["requests_total"] = sum(out["requests"].values()) if (a or b) else None
    for key, name in (("cache_hits", CACHE_HITS), ("cache_misses", CACHE_MISSES)):
        out[key] = (after.total(name) - before.total(name)) if after.has(name) else None
    return out


def _url(base: str, path: str) -> str:
    return base.rstrip("/") + path


def request(
    base: str,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, bytes, dict[str, str]]:
    """One HTTP call; an HTTP error status is returned, not raised."""
    req = urllib.request.Request(_url(base, path), data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers or {})


def scrape(base: str, headers: dict[str, str] | None = None, timeout: float = 10.0) -> Metrics:
    try:
        status, body, _ = request(base, "/metrics", headers=headers, timeout=timeout)
    except OSError as e:
        return Metrics(at=time.time(), error=f"GET /metrics: {e}")
    if status != 200:
        return Metrics(at=time.time(), error=f"GET /metrics: HTTP {status}")
    return Metrics.parse(body.decode("utf-8", "replace"), at=time.time())


def wait_ready(base: str, timeout: float = 60.0, headers: dict[str, str] | None = None) -> None:
    """Wait until ``GET /health/ready`` says 200."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status, _, _ = request(base, "/health/ready", headers=headers, timeout=5)
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as e:
            last = str(e)
        time.sleep(0.2)
    raise RuntimeError(f"{base} is not ready after {timeout:.0f} s ({last})")


def register_network(base: str, body: bytes, headers: dict[str, str] | None = None) -> str:
    """``POST /networks`` once; the network id."""
    h = {"Content-Type": "application/json", **(headers or {})}
    status, data, _ = request(base, "/networks", "POST", body, h, timeout=120)
    if status not in (200, 201):
        raise RuntimeError(f"POST /networks: HTTP {status}: {data[:500].decode('utf-8', 'replace')}")
    return json.loads(data)["network_id"]


def send(base: str, prepared: PreparedRequest, headers: dict[str, str] | None = None,
         timeout: float = 300.0) -> tuple[int, bytes]:
    """One request exactly as the users send it (warm-up and sanity check)."""
    status, data, _ = request(base, prepared.path, prepared.method, prepared.body,
                              {**prepared.headers, **(headers or {})}, timeout=timeout)
    return status, data
