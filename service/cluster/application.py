"""The Ray Serve application: an ingress deployment in front of an ``engine`` deployment.

- **engine** replicas each run the whole gradserve app (:func:`service.http.app.create_app`:
  the guard, the routes, the handlers, a worker pool of one engine process), called in-process
  as ASGI. So the answers are the single-node server's, byte for byte: same contract, same
  errors. ``num_gpus=1`` per replica on GPU nodes (``device: gpu``), CPU otherwise. Replicas
  share the registry: ``GRADSERVE_REGISTRY_URL=postgresql://…`` (service.registry; a delete
  through one replica is seen by all at once).
- **ingress** (``@serve.ingress`` on a FastAPI app) takes every request and hands it to an
  engine replica through a DeploymentHandle: Serve picks the replica (power of two choices on
  their queues) and counts ongoing requests for the autoscaler (``min_replicas`` ..
  ``max_replicas`` on ``target_ongoing_requests``). Replicas come up warm: their compiled
  programs are shared through the registry (``executable_store: registry``, a table of the
  PostgreSQL registry), and a new replica preloads the most recently used ones before Serve
  routes to it. What Serve itself refuses becomes
  gradserve's error body: back-pressure (``max_queued_requests`` exceeded) is 503 ``queue_full``
  with ``Retry-After``; a replica that died holding the request (its node was lost) is 503
  ``worker_died`` with ``Retry-After``, to be retried, while Serve starts a replacement.

Each answer carries ``x-gradserve-replica: <node id>/<replica id>`` so that a client (and the
tests) can see where it was computed.
"""

# no `from __future__ import annotations`: Serve's class-based FastAPI view reads the route
# method's annotations as objects (as strings, `request: Request` became a required query field: 422)

import asyncio
import contextlib
import logging
import os
from typing import Any

import orjson
from fastapi import FastAPI, Request
from ray import serve
from ray.serve.exceptions import BackPressureError
from starlette.responses import Response

log = logging.getLogger("gradserve.cluster")

#: what a replica is asked (and what Serve's scheduler counts) at most at once
DEFAULTS: dict[str, Any] = {
    "device": "cpu",            # gpu: num_gpus=1 per replica
    "min_replicas": 1,
    "max_replicas": 4,
    "initial_replicas": None,
    "target_ongoing_requests": 4,
    "max_ongoing_requests": 16,  # per replica, in its own queue
    "max_queued_requests": 64,   # waiting in the ingress for a replica: past it, 503
    "upscale_delay_s": 2.0,
    "downscale_delay_s": 30.0,
    "engine_num_cpus": 1.0,
    "retry_after_s": 1,
    "ingress_resources": None,   # e.g. {"ingress": 0.01}: keep the ingress on the head node
    "settings": {},              # gradserve Settings for the replicas (also GRADSERVE_* env vars)
    "access_log": True,          # Serve's line per request in the ingress and engine replicas' logs
}

_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive"}


def _error(status: int, code: str, message: str, path: str | None, retry_after: int | None) -> Response:
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    body = orjson.dumps({"error": {"code": code, "message": message, "path": path}})
    return Response(body, status_code=status, headers=headers, media_type="application/json")


class EngineReplica:
    """One engine replica: gradserve's own app, its lifespan entered once, called as ASGI."""

    async def __init__(self, settings: dict[str, Any] | None = None) -> None:  # type: ignore[misc]
        import ray  # noqa: PLC0415

        from ..http.app import create_app  # noqa: PLC0415
        from ..settings import Settings  # noqa: PLC0415

        given = {"workers": 1, **(settings or {})}
        self.settings = Settings(**given)
        self.app = create_app(self.settings)
        self.state = self.app.state.service
        self._stack = contextlib.AsyncExitStack()
        await self._stack.enter_async_context(self.state.lifespan(self.app))
        # Serve routes requests to a replica once its constructor returns: not before its engine
        # worker is up (else the first ones get the single-node server's 503 not_ready)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 300
        while not self.state.pool.ready:
            if loop.time() > deadline:
                raise RuntimeError(f"the engine worker did not start: {getattr(self.state.pool, 'error', None)}")
            await asyncio.sleep(0.05)
        self.where = f"{ray.get_runtime_context().get_node_id()}/{serve.get_replica_context().replica_id.unique_id}"
        log.info("engine replica %s started (pid %d)", self.where, os.getpid())

    async def check_health(self) -> None:
        pool = self.state.pool
        if pool is None or getattr(pool, "error", None) == "stopped":
            raise RuntimeError("the worker pool is not running")

    async def handle(self, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]],
                     body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
            "root_path": "", "headers": headers, "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0),
            "state": {},
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects: the ingress holds it
            return {"type": "http.disconnect"}

        status, out_headers, parts = 500, [], []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, out_headers
            if message["type"] == "http.response.start":
                status, out_headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                parts.append(bytes(message.get("body", b"")))

        await self.app(scope, receive, send)
        out_headers.append((b"x-gradserve-replica", self.where.encode()))
        return status, out_headers, b"".join(parts)

    async def __del__(self) -> None:
        with contextlib.suppress(Exception):
            await self._stack.aclose()


def _ingress_api() -> FastAPI:
    return FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


def build_app(args: dict[str, Any] | None = None) -> Any:
    """The Serve application from a config's ``args`` (see :data:`DEFAULTS`)."""
    conf = {**DEFAULTS, **(args or {})}
    unknown = set(conf) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown args for service.cluster: {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    gpu = conf["device"] == "gpu"
    # replicas share their compiled programs through the registry (issue 17.5): one the autoscaler
    # adds preloads the programs in use before it takes requests
    settings = {"device": "gpu" if gpu else "cpu", "executable_store": "registry", **conf["settings"]}
    autoscaling = {
        "min_replicas": int(conf["min_replicas"]),
        "max_replicas": int(conf["max_replicas"]),
        "target_ongoing_requests": float(conf["target_ongoing_requests"]),
        "upscale_delay_s": float(conf["upscale_delay_s"]),
        "downscale_delay_s": float(conf["downscale_delay_s"]),
    }
    if conf["initial_replicas"] is not None:
        autoscaling["initial_replicas"] = int(conf["initial_replicas"])
    logging_config = {"enable_access_log": bool(conf["access_log"])}
    actor = {"num_cpus": float(conf["engine_num_cpus"])}
    if gpu:
        actor["num_gpus"] = 1
    engine = serve.deployment(
        EngineReplica, name="engine",
        max_ongoing_requests=int(conf["max_ongoing_requests"]),
        max_queued_requests=int(conf["max_queued_requests"]),
        autoscaling_config=autoscaling,
        ray_actor_options=actor,
        health_check_period_s=5, graceful_shutdown_timeout_s=10, logging_config=logging_config,
    )
    retry_after = int(conf["retry_after_s"])
    api = _ingress_api()
    max_queued = int(conf["max_queued_requests"])

    @serve.ingress(api)
    class Ingress:
        def __init__(self, engine_handle: Any) -> None:
            self.engine = engine_handle.options(method_name="handle")

        @api.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"],
                       include_in_schema=False)
        async def forward(self, request: Request) -> Response:
            body = await request.body()
            headers = [(k, v) for k, v in request.headers.raw if k.decode("latin-1").lower() != "host"]
            try:
                status, out, content = await self.engine.remote(
                    request.method, request.url.path, request.url.query.encode(), headers, body)
            except BackPressureError as exc:
                return _error(503, "queue_full", f"every engine replica is busy ({exc}); retry later",
                              None, retry_after)
            except Exception as exc:  # noqa: BLE001 - a replica (or its node) died holding the request
                if _replica_lost(exc):
                    log.warning("engine replica lost with a request: %s", exc)
                    return _error(503, "worker_died", "the engine replica computing this request was lost "
                                  "(its node went away); retry: Serve is starting a replacement", None,
                                  retry_after)
                raise
            response = Response(content, status_code=status)
            response.raw_headers = [(k, v) for k, v in out if k.decode("latin-1").lower() not in _HOP_HEADERS]
            response.raw_headers.append((b"content-length", str(len(content)).encode()))
            return response

    ingress_options: dict[str, Any] = {"num_cpus": 0}
    if conf["ingress_resources"]:
        ingress_options["resources"] = dict(conf["ingress_resources"])
    ingress = serve.deployment(Ingress, name="ingress", ray_actor_options=ingress_options,
                               max_ongoing_requests=max(1000, max_queued * 4), logging_config=logging_config)
    return ingress.bind(engine.bind(settings))


def _replica_lost(exc: BaseException) -> bool:
    from ray import exceptions as rex  # noqa: PLC0415

    lost = tuple(c for c in (getattr(rex, n, None) for n in (
        "RayActorError", "ActorDiedError", "ActorUnavailableError", "NodeDiedError", "WorkerCrashedError",
        "OwnerDiedError")) if c is not None)
    return isinstance(exc, lost)


#: ``serve run service.cluster:app``: CPU replicas, 1..4, registry from GRADSERVE_* env vars
app = build_app()
