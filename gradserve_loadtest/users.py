"""Locust user classes for gradserve (importing this module imports Locust, hence gevent).

:class:`GradUser` posts one prepared /grad body in a loop (Locust's ``FastHttpUser``: one keep-alive
connection per user). Subclasses say what to send by overriding :meth:`GradUser.prepared`; the
bodies come from :mod:`gradserve_loadtest.scenarios`, so the CLI sweep (``gradserve loadtest``) and
``tests/load/locustfile.py`` (Locust's web UI) send the very same bytes.

A non-200 answer is a failure named ``HTTP <code>`` (a transport error: ``HTTP 0``), so Locust's
own failure table counts errors by status code as well.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, ClassVar

from locust import FastHttpUser, constant, constant_throughput, events, task

from .scenarios import PreparedRequest, build_scenario, prepare, registration_body

_lock = threading.Lock()
_cache: dict[tuple[str, str, bool, str], PreparedRequest] = {}


def prepared_for(host: str, scenario: str, encoding: str = "json", network_id_mode: bool = False,
                 mlp_file: str | None = None, headers: dict[str, str] | None = None) -> PreparedRequest:
    """Build (once per process) the body for a scenario; in network-id mode register it first."""
    key = (scenario, encoding, network_id_mode, host)
    with _lock:
        if key not in _cache:
            sc = build_scenario(scenario, **({"mlp_file": mlp_file} if mlp_file else {}))
            network_id = None
            if (network_id_mode or sc.protocol != "grad") and "network" in sc.request:
                from .server import register_network

                network_id = register_network(host, registration_body(sc.request), headers)
            _cache[key] = prepare(sc.request, encoding, network_id, sc.protocol)
        return _cache[key]


class GradUser(FastHttpUser):
    """Posts :meth:`prepared` to ``/grad`` back to back (closed loop), or at
    ``rate_per_user`` requests per second (``constant_throughput``)."""

    abstract = True
    wait_time = constant(0)
    extra_headers: ClassVar[dict[str, str]] = {}
    # FastHttpUser defaults: 60 s network timeout; keep it, a /grad may compile first.

    def prepared(self) -> PreparedRequest:  # pragma: no cover - overridden
        raise NotImplementedError

    def on_start(self) -> None:
        p = self.prepared()
        self._body = p.body
        self._path = p.path
        self._headers = {**p.headers, **self.extra_headers}

    @task
    def grad(self) -> None:
        with self.client.post(self._path, data=self._body, headers=self._headers,
                              catch_response=True, name="POST /grad") as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code or 0}")


def rate_wait(rate_per_user: float | None):
    """The wait_time of a closed loop (None) or of a fixed rate per user."""
    return constant(0) if not rate_per_user else constant_throughput(rate_per_user)


class Recorder:
    """Every request's latency (ms, Locust's own perf_counter measurement), status code and
    wall-clock time, dumped as JSON when the test stops; a progress file is rewritten every
    ``interval`` seconds for the CLI's progress bar."""

    def __init__(self, samples_path: str, progress_path: str | None = None, interval: float = 0.25,
                 duration: float | None = None):
        self.samples_path = samples_path
        self.duration = duration
        self.progress_path = progress_path
        self.interval = interval
        self.latency_ms: list[float] = []
        self.status: list[int] = []
        self.t: list[float] = []
        self.errors = 0
        self.t_start: float | None = None
        self.t_stop: float | None = None
        events.request.add_listener(self.on_request)
        events.test_start.add_listener(self.on_test_start)
        events.test_stop.add_listener(self.on_test_stop)
        events.quitting.add_listener(self.on_quitting)

    def on_request(self, response_time: float = 0.0, response: Any = None, exception: Any = None,
                   **_: Any) -> None:
        code = getattr(response, "status_code", None) or 0
        if exception is not None and code == 200:
            code = 0  # a 200 that the user marked failed cannot happen with GradUser; be safe
        self.latency_ms.append(float(response_time))
        self.status.append(int(code))
        self.t.append(time.time())
        if code != 200:
            self.errors += 1

    def on_test_start(self, environment: Any = None, **_: Any) -> None:
        import gevent

        self.t_start = time.time()
        if self.progress_path:
            gevent.spawn(self._progress_loop)
        if self.duration and environment is not None and environment.runner is not None:
            # Locust's own --run-time timer starts before the test does (by up to a second at
            # start-up); this one runs exactly ``duration`` seconds from the test's start.
            gevent.spawn_later(self.duration, environment.runner.quit)

    def _progress_loop(self) -> None:
        import gevent

        while self.t_stop is None:
            self._write_progress()
            gevent.sleep(self.interval)

    def _write_progress(self) -> None:
        if not self.progress_path:
            return
        tmp = self.progress_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"requests": len(self.status), "errors": self.errors, "t_start": self.t_start,
                       "now": time.time()}, f)
        os.replace(tmp, self.progress_path)

    def on_test_stop(self, **_: Any) -> None:
        self.t_stop = time.time()
        self.dump()

    def on_quitting(self, **_: Any) -> None:
        if self.t_stop is None:
            self.t_stop = time.time()
        self.dump()

    def dump(self) -> None:
        self._write_progress()
        tmp = self.samples_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"latency_ms": self.latency_ms, "status": self.status, "t": self.t,
                       "t_start": self.t_start, "t_stop": self.t_stop}, f)
        os.replace(tmp, self.samples_path)
