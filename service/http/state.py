"""What a running app holds: settings, auth, registry, validator, pool, metrics, drain state,
and its lifespan (open the registry, start the pool; drain, stop the pool, close the registry).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import Scope

import engine
from engine.request import REQUESTS

from ..auth import Authenticator
from ..errors import DrainingError, NotReadyError, RegistryUnavailableError, UnavailableError
from ..grad.handler import GradHandler
from ..grad.validator import Validator
from ..metrics import Metrics
from ..registry import registry_from_settings
from ..settings import Settings
from . import oip, umbridge

log = logging.getLogger("gradserve.app")


def onnx_catalog() -> dict[str, Any]:
    """``GET /ops``'s ``onnx`` section: the ONNX ops ``POST /networks`` (application/onnx) converts."""
    import engine.onnx  # noqa: PLC0415

    return {"domain": "", "opsets": [engine.onnx.MIN_OPSET, engine.onnx.MAX_OPSET],
            "ops": list(engine.onnx.SUPPORTED_OPS), "constant_only": list(engine.onnx.CONSTANT_ONLY_OPS)}


class State:
    """Everything a running app holds (``app.state.service``)."""

    def __init__(self, settings: Settings, version: str, launcher: Any = None) -> None:
        engine.configure_jax()  # the validator's abstract evaluation runs JAX in this process
        self.settings = settings
        self.version = version
        self.auth = Authenticator(settings.keys())
        self.metrics = Metrics()
        self.registry = registry_from_settings(settings)  # SQLite, or PostgreSQL for registry_url
        self.validator = Validator(max_elements=settings.max_tensor_elements,
                                   cache_size=settings.network_cache_size)
        self.pool: Any = None  # service.pool.WorkerPool, once started
        self.launcher = launcher  # what starts the pool's workers (None: processes)
        self.ops_body = orjson.dumps({"ops": engine.catalog(), "onnx": onnx_catalog()})
        self.draining = False
        self.inflight = 0
        self.idle = asyncio.Event()
        self.routes: list[Any] | None = None  # the app's routes, once built
        # POST routes the guard answers itself, by path: one handler per transform
        self.posts = {f"/{t}": GradHandler(self, t) for t in REQUESTS}
        self.grad = self.posts["/grad"]
        # the other protocols' paths: where HTTP Basic auth is taken too, and how a refusal the
        # guard answers (401, 503 draining, 405) is reshaped into that protocol's error body
        self.basic_auth: frozenset[str] = frozenset()
        self.error_shapes: dict[str, Callable[[Response], Response]] = {}
        umbridge.install(self)  # UM-Bridge's POST routes (API.md section 10)
        self.oip = oip.Oip(self)  # Open Inference Protocol v2: every /v2 request (API.md section 10)

    def parse_network(self, doc: Any, path: str = "") -> engine.Network:
        return engine.parse_network(doc, max_nodes=self.settings.max_nodes,
                                    max_elements=self.settings.max_tensor_elements, path=path)

    # -- lifecycle --------------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> Any:
        from ..pool import WorkerPool  # noqa: PLC0415 - spawns processes: only when serving

        await run_in_threadpool(self.registry.open)
        # a warm start (issue 17.5): the hot networks parsed and validated while the worker starts
        from ..registry.executables import warm_server  # noqa: PLC0415

        self._warming = asyncio.ensure_future(run_in_threadpool(warm_server, self.settings, self.registry,
                                                                self.validator))
        self.pool = WorkerPool(self.settings, on_event=self._on_pool_event, launcher=self.launcher)
        self.metrics.watch_pool(self.pool.snapshot)
        try:
            await self.pool.start()
            log.info("gradserve %s: registry %s, keys %s", self.version, self.registry.describe(),
                     "on" if self.auth.enabled else "off")
            yield
        finally:
            self.draining = True
            await self.pool.drain(self.settings.drain_timeout_s)
            await run_in_threadpool(self.registry.close)

    async def drain(self, timeout_s: float) -> None:
        """Stop taking requests (503, readiness 503) and wait up to ``timeout_s`` for the ones in
        flight. The listener stays open meanwhile, so clients get a 503, not a refused connection."""
        self.draining = True
        if self.inflight:
            log.info("draining: waiting up to %.1f s for %d request(s)", timeout_s, self.inflight)
            self.idle.clear()
            try:
                await asyncio.wait_for(self.idle.wait(), timeout_s)
            except TimeoutError:
                log.warning("drain timeout: %d request(s) still in flight", self.inflight)

    def route_template(self, scope: Scope) -> str:
        """The template of the route a request is for (metrics label), without dispatching it."""
        route = scope.get("route")
        if route is None and self.routes is not None:
            path = scope["path"]
            route = next((r for r in self.routes if getattr(r, "path_regex", None) is not None
                          and r.path_regex.match(path)), None)
        return getattr(route, "path", None) or "unmatched"

    def _on_pool_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "job_skipped":  # a job dropped before it was computed (issue 12.6)
            self.metrics.abandoned.labels(data["reason"]).inc()
            return
        log.info("pool event %s: %s", kind, data)

    def unready(self) -> UnavailableError | None:
        """Why the service cannot take work now (None: it can)."""
        if self.draining:
            return DrainingError()
        try:
            self.registry.check()
        except RegistryUnavailableError as exc:
            return exc
        pool = self.pool
        if pool is None or not pool.ready:
            why = getattr(pool, "error", None) if pool is not None else None
            return NotReadyError("the engine workers are starting" + (f" ({why})" if why else ""))
        busy = pool.unavailable()
        if busy is not None:
            return NotReadyError(busy)
        return None
