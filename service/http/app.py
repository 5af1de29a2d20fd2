"""The HTTP app: ``create_app(settings)`` builds the FastAPI application.

A ``/grad`` request is parsed and validated entirely in the server (orjson, the engine's
network parser and tensor codec, the engine's argument binding and abstract shape evaluation),
so a bad request costs no worker time; only a valid job goes to the :class:`WorkerPool`.
Bodies are read by the handlers themselves (:mod:`service.codec`), never by pydantic: the
models in :mod:`service.models` exist for the OpenAPI schema only.

Blocking work (parsing a large JSON body or network, SQLite, the first abstract evaluation of a
network, writing a huge JSON result) runs in the thread pool; a tutorial-sized call stays on the
event loop. ``POST /grad`` is answered by :class:`_Guard` straight from the ASGI scope
(:meth:`Service.grad_asgi`): the FastAPI route is kept for the schema only.

Run it with ``gradserve serve`` (:mod:`service.cli`), or ``uvicorn --factory service.app:create_app``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import asynccontextmanager
from importlib import metadata
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import engine
from engine.engine import signature

from . import codec, models
from .auth import Authenticator
from .errors import NotReadyError, PayloadTooLargeError, UnavailableError
from .jobs import GradJob, JobResult
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .registry import NetworkRegistry, RegistryUnavailableError
from .settings import Settings

if TYPE_CHECKING:
    from .workers import Admission

log = logging.getLogger("gradserve.app")

#: JSON text larger than this (a request's, or the JSON part of a binary one) is parsed and its
#: tensors decoded in the thread pool; binary tensors are views of the body, decoded in no time.
OFFLOAD_BYTES = 256 * 1024
#: results with more elements than this are written (JSON, b64) in the thread pool
LOOP_ENCODE_ELEMENTS = 1 << 21
#: scope key under which the auth middleware leaves the caller's registry namespace
NAMESPACE = "gradserve.namespace"
GRAD_FIELDS = frozenset({
    "network", "network_id", "inputs", "parameters", "get_all", "get_by_list", "sens_param", "weights",
    "sens", "return_value", "output_encoding", "timeout_ms",
})
FLAGS = ("get_all", "get_by_list", "sens_param", "return_value")
_NO_DEVICE = "none: the server's validator never runs anything"

try:
    VERSION = metadata.version("gradserve")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0.1.0"


# -- validation in the server ---------------------------------------------------------------------


class Validator:
    """The engine's own checks (:meth:`engine.Engine.check`), run in the server so that a request
    that would fail in a worker fails here: wrong inputs, weights, parameters or sens, shape and
    dtype mismatches anywhere in the graph, intermediates over the size limit. A call that passed
    once passes again without a second look.

    Its engine never compiles or runs anything, so it gets no JAX device: asking JAX for one would
    start its backends in the server process (and take a GPU)."""

    def __init__(self, *, max_elements: int | None, cache_size: int) -> None:
        self.engine = engine.Engine(cache_size=cache_size, device=_NO_DEVICE, max_elements=max_elements)  # type: ignore[arg-type]
        self._seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._seen_size = cache_size * 4
        self._seen_lock = threading.Lock()  # validate() runs on the loop and in the thread pool
        self._valid: dict[tuple[Any, ...], None] = {}  # calls that passed (no parameters, no sens)

    def knows(self, net: engine.Network, xs: list[np.ndarray]) -> bool:
        """Whether this network and input signature were evaluated already (validate is cheap)."""
        return (net.id, signature(xs)) in self._seen

    def bind_inputs(self, net: engine.Network, inputs: Any) -> list[np.ndarray]:
        return self.engine.bind_inputs(net, inputs)

    def validate(self, net: engine.Network, xs: list[np.ndarray], call: Mapping[str, Any]) -> None:
        # A call without parameters or sens is valid or not by its network, input signature and
        # flags alone: one that passed already passes again (a dict lookup on the hot path).
        sig = signature(xs)
        known = None
        if call["parameters"] is None and call["sens"] is None and not call["sens_param"]:
            weights = call["weights"]
            known = (net.id, sig, call["get_all"], call["get_by_list"],
                     None if weights is None else tuple(weights), call["return_value"])
            if known in self._valid:
                return
        self.engine.check(net, xs, parameters=call["parameters"], get_all=call["get_all"],
                          get_by_list=call["get_by_list"], sens_param=call["sens_param"], weights=call["weights"],
                          sens=call["sens"], return_value=call["return_value"])
        key = (net.id, sig)
        with self._seen_lock:
            self._seen[key] = None
            self._seen.move_to_end(key)
            while len(self._seen) > self._seen_size:
                self._seen.popitem(last=False)
            if known is not None:
                self._valid[known] = None
                while len(self._valid) > self._seen_size:
                    del self._valid[next(iter(self._valid))]


# -- the service state ----------------------------------------------------------------------------


class Service:
    """Everything a running app holds: settings, registry, pool, metrics, drain state."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.auth = Authenticator(settings.keys())
        self.metrics = Metrics()
        self.registry = NetworkRegistry(
            settings.registry_path,
            cache_size=settings.network_cache_size,
            max_nodes=settings.max_nodes,
            max_elements=settings.max_tensor_elements,
        )
        self.validator = Validator(max_elements=settings.max_tensor_elements,
                                   cache_size=settings.network_cache_size)
        self.pool: Any = None  # service.workers.WorkerPool, once started
        self._inline: OrderedDict[bytes, engine.Network] = OrderedDict()
        self._ops_body = orjson.dumps({"ops": engine.catalog()})
        self.draining = False
        self.inflight = 0
        self._idle = asyncio.Event()
        self.routes: list[Any] | None = None  # the app's routes, once built

    # -- lifecycle --------------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> Any:
        from .workers import WorkerPool  # noqa: PLC0415 - spawns processes: only when serving

        await run_in_threadpool(self.registry.open)
        self.pool = WorkerPool(self.settings, on_event=self._on_pool_event)
        self.metrics.watch_pool(self.pool.snapshot)
        try:
            await self.pool.start()
            log.info("gradserve %s: registry %s, keys %s", VERSION, self.settings.registry_path,
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
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout_s)
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
        log.info("pool event %s: %s", kind, data)

    def unready(self) -> UnavailableError | None:
        """Why the service cannot take work now (None: it can)."""
        if self.draining:
            return _draining()
        try:
            self.registry.check()
        except RegistryUnavailableError as exc:
            return exc
        pool = self.pool
        if pool is None or not pool.ready:
            why = getattr(pool, "error", None) if pool is not None else None
            return NotReadyError("the engine workers are starting" + (f" ({why})" if why else ""))
        return None

    # -- /grad ------------------------------------------------------------------------------------

    async def grad(self, request: Request) -> Response:
        """The FastAPI route's handler (unused while :class:`_Guard` answers ``POST /grad`` with
        :meth:`grad_asgi`; kept so the route, and its schema, stay as they are)."""
        arrived = time.monotonic()
        body = await codec.read_body(request, self.settings.max_body_bytes)
        return await self._grad(request.scope[NAMESPACE], body, request.headers, arrived)

    async def grad_asgi(self, scope: Scope, receive: Receive, send: Send) -> int:
        """``POST /grad`` straight from the ASGI scope: no routing, dependency solving or Request
        object on the hot path, the same answers and errors as the route (its exception handlers
        are inlined here). Returns the response's status."""
        arrived = time.monotonic()
        try:
            declared = None
            headers: dict[str, str] = {}
            for name, value in scope["headers"]:
                if name == b"content-length":
                    if declared is None:
                        declared = value.decode("latin-1")
                elif name == b"inference-header-content-length" and not headers:
                    headers[codec.BINARY_HEADER] = value.decode("latin-1")
            # A place in the queues before the body is read: under overload a 503 costs no parsing.
            admission = self.pool.admit() if self.pool is not None else None
            try:
                body = await codec.receive_body(receive, declared, self.settings.max_body_bytes)
                response = await self._grad(scope[NAMESPACE], body, headers, arrived, admission)
            finally:
                if admission is not None:
                    admission.release()
        except engine.GradnetError as exc:
            if exc.status >= 500:
                log.warning("POST /grad: %s %s", exc.code, exc.message)
            response = error_response(exc)
        except Exception as exc:
            log.error("unhandled error in POST /grad", exc_info=exc)
            response = _bug_response(exc)
        await response(scope, receive, send)
        return response.status_code

    async def _grad(self, namespace: str, body: bytes, headers: Mapping[str, str], arrived: float,
                    admission: Admission | None = None) -> Response:
        settings = self.settings
        t0 = time.perf_counter()
        # Only a large JSON text is worth the thread pool (parsing it, decoding its tensors): the
        # binary tensors of the OIP framing are views of the body, decoded in no time.
        json_size = len(body)
        declared = headers.get(codec.BINARY_HEADER)
        if declared is not None:
            try:
                json_size = min(json_size, max(0, int(declared)))
            except ValueError:
                pass  # parse_body says what is wrong with it
        big = json_size > OFFLOAD_BYTES
        parsed = await run_in_threadpool(codec.parse_body, body, headers) if big else codec.parse_body(body, headers)
        doc = parsed.doc
        unknown = [k for k in doc if k not in GRAD_FIELDS]
        if unknown:
            raise engine.ArgumentError(
                f"unknown field '{unknown[0]}': a /grad request has {', '.join(sorted(GRAD_FIELDS))}", unknown[0]
            )
        call = _call_options(doc, settings.timeout_ms)
        net = await self._network(namespace, parsed, big)
        decoded = await run_in_threadpool(self._decode, parsed, call) if big else self._decode(parsed, call)
        xs = self.validator.bind_inputs(net, decoded["inputs"])
        if big or not self.validator.knows(net, xs):
            await run_in_threadpool(self.validator.validate, net, xs, decoded)
        else:
            self.validator.validate(net, xs, decoded)
        job = GradJob(
            network_id=net.id,
            network_path=net.path,
            inputs=xs,
            get_all=call["get_all"],
            get_by_list=call["get_by_list"],
            sens_param=call["sens_param"],
            weights=call["weights"],
            sens=decoded["sens"],
            parameters=decoded["parameters"],
            return_value=call["return_value"],
            deadline=arrived + call["timeout_ms"] / 1e3,
            json_split=call["output_encoding"] == "json",
        )
        decode_ms = (time.perf_counter() - t0) * 1e3
        if self.pool is None:
            raise NotReadyError("the engine workers are not started")
        result: JobResult = await self.pool.submit(job, lambda: net.to_json("b64"), admission)
        return await self._grad_response(net, call, result, decode_ms)

    def _decode(self, parsed: codec.Body, call: dict[str, Any]) -> dict[str, Any]:
        limit = self.settings.max_tensor_elements
        doc = parsed.doc
        parameters = doc.get("parameters")
        if parameters is not None and not isinstance(parameters, Mapping):
            raise engine.ArgumentError("'parameters' must be an object of named tensors", "parameters")
        sens = doc.get("sens")
        if isinstance(sens, list):
            sens = parsed.tensors(sens, "sens", limit, named=False)
        elif sens is not None:
            sens = parsed.tensor(sens, "sens", limit)
        return {
            **call,
            "inputs": parsed.tensors(doc.get("inputs", []), "inputs", limit),
            "parameters": parsed.tensors(parameters, "parameters", limit) if parameters else None,
            "sens": sens,
        }

    async def _network(self, namespace: str, parsed: codec.Body, big: bool) -> engine.Network:
        doc = parsed.doc
        has_net, has_id = doc.get("network") is not None, doc.get("network_id") is not None
        if has_net == has_id:
            raise engine.ArgumentError(
                "give exactly one of 'network' (the network inline) and 'network_id' (a registered network)",
                "network" if has_net else "network_id",
            )
        if has_id:
            network_id = doc["network_id"]
            if not isinstance(network_id, str):
                raise engine.ArgumentError("'network_id' must be a string like \"sha256:…\"", "network_id")
            net = self.registry.cached(namespace, network_id)
            if net is None:
                net = await run_in_threadpool(self.registry.get, namespace, network_id)
            return net
        # Inline: parsed once per distinct network as sent, then kept in an LRU.
        fingerprint = parsed.fingerprint
        key = await run_in_threadpool(fingerprint, doc["network"]) if big else fingerprint(doc["network"])
        net = self._inline.get(key)
        if net is not None:
            self._inline.move_to_end(key)
            return net
        # b64 for the parser; without the framing, a tensor that says binary_data_size is refused
        raw = parsed.inline_binary(doc["network"], "network")
        parse = self._parse_network
        net = await run_in_threadpool(parse, raw, "network.") if big else parse(raw, "network.")
        self._inline[key] = net
        while len(self._inline) > self.settings.network_cache_size:
            self._inline.popitem(last=False)
        return net

    def _parse_network(self, doc: Any, path: str = "") -> engine.Network:
        return engine.parse_network(doc, max_nodes=self.settings.max_nodes,
                                    max_elements=self.settings.max_tensor_elements, path=path)

    async def _grad_response(self, net: engine.Network, call: dict[str, Any], result: JobResult,
                             decode_ms: float) -> Response:
        encoding = call["output_encoding"]
        fields: dict[str, Any] = {"gradients": result.gradients}
        if call["return_value"]:
            fields["value"] = result.value or []
        t0 = time.perf_counter()
        chunks: list[Any] = []
        pieces: dict[str, list[Any]] | None = None
        # Text is written on the loop: orjson holds the GIL, so a thread would not let the loop
        # run meanwhile, only add a hand-off. A huge text (seconds of it) goes to a thread all the
        # same: the GIL's switch interval then lets the loop in between.
        huge = encoding != "binary" and sum(a.size for a in codec.flat_tensors(fields)) > LOOP_ENCODE_ELEMENTS
        if result.json_split is not None and encoding == "json":
            # The worker writes the text before the split point (it has started already), this
            # process the rest. Without both shares (a NaN, the worker died) the general path
            # below writes it all.
            write = functools.partial(codec.write_share, codec.flat_tensors(fields), result.json_split, worker=False)
            mine = await run_in_threadpool(write) if huge else write()
            theirs = await result.json_part if result.json_part is not None else None
            if mine is not None and theirs is not None:
                pieces = codec.join_shares(fields, result.json_split, theirs, mine)
        if pieces is None:
            if huge:
                encoded, chunks = await run_in_threadpool(codec.encode_fields, fields, encoding)
            else:
                encoded, chunks = codec.encode_fields(fields, encoding)
            pieces = {name: [text] for name, text in encoded.items()}
        encode_ms = (time.perf_counter() - t0) * 1e3
        worker = result.timing_ms
        timing = {
            "queue": worker.get("queue", 0.0),
            "compile": worker.get("compile", 0.0),
            "compute": worker.get("compute", 0.0),
            "decode": decode_ms,
            "encode": encode_ms,
        }
        self.metrics.observe_grad(timing, compiled=not result.cache_hit)
        gradients, value = pieces["gradients"], pieces.get("value")
        if encoding == "binary" or (len(gradients) == 1 and (value is None or len(value) == 1)
                                    and len(gradients[0]) <= codec.STREAM_BYTES):
            doc: dict[str, Any] = {
                "network_id": net.id,
                "gradients": orjson.Fragment(gradients[0]),
                "gradient_names": result.gradient_names,
            }
            if value is not None:
                doc["value"] = orjson.Fragment(value[0])
            doc["timing_ms"] = timing
            return codec.response(orjson.dumps(doc), chunks, encoding)
        # A large JSON text: sent in its pieces, as orjson.dumps(doc) would have written it.
        parts = [orjson.dumps({"network_id": net.id})[:-1] + b',"gradients":', *gradients,
                 b',"gradient_names":' + orjson.dumps(result.gradient_names)]
        if value is not None:
            parts += [b',"value":', *value]
        parts.append(b',"timing_ms":' + orjson.dumps(timing) + b"}")
        return codec.PartsResponse(parts, codec.JSON_TYPE)

    # -- /networks --------------------------------------------------------------------------------

    async def register(self, request: Request) -> Response:
        namespace = request.scope[NAMESPACE]
        body = await codec.read_body(request, self.settings.max_body_bytes)
        parsed = await run_in_threadpool(codec.parse_body, body, request.headers)
        doc, path = parsed.doc, ""
        if "network" in doc and "format" not in doc:  # {"network": {...}} is accepted too
            if len(doc) != 1:
                extra = next(k for k in doc if k != "network")
                raise engine.ArgumentError(f"unknown field '{extra}': POST /networks takes a gradnet/1 network "
                                           "(or {\"network\": <network>})", extra)
            doc, path = doc["network"], "network."
        net = await run_in_threadpool(self._parse_network, parsed.inline_binary(doc, path.rstrip(".")), path)
        signature, created = await run_in_threadpool(self.registry.put, namespace, net)
        return Response(
            codec.dumps(signature),
            status_code=201 if created else 200,
            media_type=codec.JSON_TYPE,
            headers={"Location": f"/networks/{net.id}"},
        )

    async def list_networks(self, request: Request) -> Response:
        rows = await run_in_threadpool(self.registry.list, request.scope[NAMESPACE])
        return _json({"networks": rows})

    async def get_network(self, request: Request, network_id: str) -> Response:
        doc = await run_in_threadpool(self.registry.document, request.scope[NAMESPACE], network_id)
        return Response(doc, media_type=codec.JSON_TYPE)

    async def delete_network(self, request: Request, network_id: str) -> Response:
        still_used = await run_in_threadpool(self.registry.delete, request.scope[NAMESPACE], network_id)
        if not still_used and self.pool is not None:
            await self.pool.forget(network_id)
        return Response(status_code=204)

    # -- the rest ---------------------------------------------------------------------------------

    def ops(self) -> Response:
        return Response(self._ops_body, media_type=codec.JSON_TYPE)

    def ready(self) -> Response:
        problem = self.unready()
        if problem is not None:
            return error_response(problem)
        workers = sum(1 for w in self.pool.snapshot() if w.get("ready"))
        return _json({"status": "ready", "workers": workers})

    def metrics_page(self) -> Response:
        return Response(self.metrics.render(), media_type=METRICS_CONTENT_TYPE)


def _draining() -> NotReadyError:
    exc = NotReadyError("the service is draining (shutting down): retry on another instance", retry_after=5.0)
    exc.code = "draining"
    return exc


def _call_options(doc: Mapping[str, Any], default_timeout_ms: int) -> dict[str, Any]:
    """The flags and options of a /grad request, type-checked (tensors are decoded later)."""
    call: dict[str, Any] = {}
    for flag in FLAGS:
        value = doc.get(flag, False)
        if not isinstance(value, bool):
            raise engine.ArgumentError(f"'{flag}' must be true or false, got {value!r}", flag)
        call[flag] = value
    weights = doc.get("weights")
    if weights is not None and not (isinstance(weights, list) and all(isinstance(w, str) for w in weights)):
        raise engine.ArgumentError("'weights' must be a list of parameter names", "weights")
    call["weights"] = weights
    encoding = doc.get("output_encoding", "json")
    if encoding not in codec.ENCODINGS:
        raise engine.ArgumentError(
            f"'output_encoding' must be one of {', '.join(map(repr, codec.ENCODINGS))}, got {encoding!r}",
            "output_encoding",
        )
    call["output_encoding"] = encoding
    timeout = doc.get("timeout_ms", default_timeout_ms)
    if timeout is None:
        timeout = default_timeout_ms
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0 or math.isinf(timeout):
        raise engine.ArgumentError(f"'timeout_ms' must be a positive number of milliseconds, got {timeout!r}",
                                   "timeout_ms")
    call["timeout_ms"] = float(timeout)
    return call


def _json(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(codec.dumps(obj), status_code=status, media_type=codec.JSON_TYPE, headers=headers)


# -- errors ---------------------------------------------------------------------------------------


def error_response(exc: engine.GradnetError, headers: Mapping[str, str] | None = None) -> Response:
    """``{"error": {"code", "message", "path"}}`` with the error's status (and Retry-After on 503)."""
    extra = dict(headers or {})
    if isinstance(exc, UnavailableError) or exc.status == 503:
        extra["Retry-After"] = str(max(1, math.ceil(getattr(exc, "retry_after", 1.0))))
    if isinstance(exc, PayloadTooLargeError) and exc.path == "body":
        extra["Connection"] = "close"  # the rest of the body was never read
    return _json({"error": exc.to_dict()}, exc.status, extra)


def _error(status: int, code: str, message: str, path: str | None = None,
           headers: Mapping[str, str] | None = None) -> Response:
    return _json({"error": {"code": code, "message": message, "path": path}}, status, headers)


async def _on_gradnet_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, engine.GradnetError)
    if exc.status >= 500:
        log.warning("%s %s: %s %s", request.method, request.url.path, exc.code, exc.message)
    return error_response(exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    method, path = request.method, request.url.path
    if exc.status_code == 404:
        return _error(404, "not_found", f"no route {path}: see /docs for the API", "path")
    if exc.status_code == 405:
        # Starlette names the methods of the first route that matched the path; list them all.
        methods = {m for route in request.app.router.routes
                   if getattr(route, "path_regex", None) is not None and route.path_regex.match(path)
                   for m in (getattr(route, "methods", None) or ()) if m != "HEAD"}
        allowed = ", ".join(sorted(methods)) or (exc.headers or {}).get("Allow", "")
        return _error(405, "method_not_allowed", f"{method} is not allowed on {path} (allowed: {allowed})",
                      "method", {"Allow": allowed})
    return _error(exc.status_code, "http_error", str(exc.detail), None, exc.headers)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    path = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    return _error(422, "invalid_request", f"{first.get('msg', 'invalid request')}", path)


async def _on_bug(request: Request, exc: Exception) -> Response:
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return _bug_response(exc)


def _bug_response(exc: Exception) -> Response:
    return _error(500, "internal_error",
                  f"internal server error ({type(exc).__name__}): this is a bug in gradserve, not in your "
                  "request; it has been logged", None)


# -- middleware: auth, drain, metrics -------------------------------------------------------------


class _Guard:
    """Pure ASGI middleware (no per-request task or body copy): API keys, the drain, in-flight
    accounting and the request metrics. ``/health/*`` is always open."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        service = self.service
        start = time.perf_counter()
        path: str = scope["path"]
        # POST /grad, the hot path, is answered here by Service.grad_asgi (no routing, no FastAPI
        # handler, no send wrapper: it returns the status); its route stays, for the schema.
        hot = path == "/grad" and scope["method"] == "POST"
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if path.startswith("/health/"):
                await self.app(scope, receive, send_status)
                return
            refusal = self._refusal(scope, path)
            if refusal is not None:
                status = refusal.status_code
                await refusal(scope, receive, send)
                return
            service.inflight += 1
            try:
                if hot:
                    status = await service.grad_asgi(scope, receive, send)
                else:
                    await self.app(scope, receive, send_status)
            finally:
                service.inflight -= 1
                if service.inflight == 0:
                    service._idle.set()
        finally:
            service.metrics.observe_request("/grad" if hot else service.route_template(scope), scope["method"],
                                            status, time.perf_counter() - start)

    def _refusal(self, scope: Scope, path: str) -> Response | None:
        """The answer to a request without the right API key (401), or one that comes while the
        service drains (503, but /metrics); None, with the caller's namespace in the scope."""
        service = self.service
        authorization = None
        if service.auth.enabled:
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value
                    break
        namespace = service.auth.namespace(authorization)
        if namespace is None:
            return _error(
                401, "unauthorized",
                "missing or wrong API key: send the header 'Authorization: Bearer <key>'" if authorization
                is None else "wrong API key, or not 'Authorization: Bearer <key>'",
                "headers.authorization", {"WWW-Authenticate": 'Bearer realm="gradserve"'},
            )
        scope[NAMESPACE] = namespace
        if service.draining and path != "/metrics":
            return error_response(_draining())
        return None


# -- the app --------------------------------------------------------------------------------------

_ERRORS = {
    400: "the body is not JSON, or not the binary framing it claims",
    401: "an API key is configured and the request has none, or a wrong one",
    404: "unknown network_id",
    413: "the body, a tensor or the network is over its configured limit",
    422: "well-formed but invalid: unknown op, bad attr, shape or dtype mismatch, cycle, bad sens",
    500: "a worker died or a bug (the message says which); the service stays up",
    503: "not ready, draining, or the queue is full (Retry-After is set)",
    504: "timeout_ms passed before the result",
}


def _responses(*codes: int, ok: dict[int, dict[str, Any]] | None = None) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = dict(ok or {})
    for code in codes:
        entry: dict[str, Any] = {"model": models.ErrorResponse, "description": _ERRORS[code]}
        if code == 503:
            entry["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
        out[code] = entry
    return out


_BINARY_BODY = {
    "schema": {"type": "string", "format": "binary"},
    "description": "Open Inference Protocol binary tensor extension: the JSON object, then the raw bytes of "
    "each tensor that says `binary_data_size`, in order; the header Inference-Header-Content-Length gives the "
    "JSON part's length.",
}
_BINARY_HEADER_PARAM = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "required": False,
    "description": "with a binary body: the length in bytes of its JSON part",
    "schema": {"type": "integer", "minimum": 0},
}


def _request_body(model: str, description: str) -> dict[str, Any]:
    return {
        "parameters": [_BINARY_HEADER_PARAM],
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}},
                "application/octet-stream": _BINARY_BODY,
            },
        },
    }


class GradserveApp(FastAPI):
    """FastAPI with :class:`_Guard` in front of its whole middleware stack: ``POST /grad`` is
    answered there (straight from the ASGI scope, with the server's own ``send``) without
    passing through Starlette's error middleware, FastAPI's telemetry and body-limit layers and
    their ``send`` wrappers; every other request goes on to FastAPI as usual."""

    guard: _Guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.guard(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The gradserve app. Nothing starts until its lifespan runs (under a server)."""
    settings = settings or Settings()
    service = Service(settings)
    app = GradserveApp(
        title="gradserve",
        version=VERSION,
        description=(
            "Gradients with MindSpore's `ops.GradOperation(get_all, get_by_list, sens_param)` semantics, "
            "computed by JAX. Networks are data (`gradnet/1`), never code. Every error is "
            '`{"error": {"code", "message", "path"}}`. With API keys configured, every route but '
            "`/health/*` needs `Authorization: Bearer <key>`; networks registered with one key are "
            "visible only with that key."
        ),
        lifespan=service.lifespan,
        separate_input_output_schemas=False,
        openapi_tags=[
            {"name": "gradients", "description": "GradOperation"},
            {"name": "networks", "description": "the registry of networks (content-addressed)"},
            {"name": "service", "description": "ops catalog, health, metrics"},
        ],
    )
    app.state.service = service

    @app.post(
        "/grad", tags=["gradients"], summary="Gradients of a network (GradOperation)",
        responses=_responses(400, 401, 404, 413, 422, 500, 503, 504, ok={200: {
            "model": models.GradResponse,
            "description": "the gradients; `output_encoding: binary` answers application/octet-stream in "
            "the binary framing (header Inference-Header-Content-Length)",
            "content": {"application/octet-stream": _BINARY_BODY},
        }}),
        openapi_extra=_request_body("GradRequest", "the network (inline or by id), inputs and GradOperation flags"),
    )
    async def grad(request: Request) -> Response:
        return await service.grad(request)

    @app.post(
        "/networks", tags=["networks"], summary="Register a network (idempotent)", status_code=201,
        responses=_responses(400, 401, 413, 422, 503, ok={
            201: {"model": models.NetworkInfo, "description": "registered"},
            200: {"model": models.NetworkInfo, "description": "already registered with this key"},
        }),
        openapi_extra=_request_body("Network", "a gradnet/1 network (or {\"network\": <network>})"),
    )
    async def register(request: Request) -> Response:
        return await service.register(request)

    @app.get("/networks", tags=["networks"], summary="The networks registered with this API key",
             responses=_responses(401, 503, ok={200: {"model": models.NetworkList, "description": "their signatures"}}))
    async def list_networks(request: Request) -> Response:
        return await service.list_networks(request)

    # The id is read from request.path_params (a typed parameter would add FastAPI's own 422 schema).
    network_id_param = {"parameters": [{"name": "network_id", "in": "path", "required": True,
                                        "description": 'a network id, "sha256:…"', "schema": {"type": "string"}}]}

    @app.get("/networks/{network_id}", tags=["networks"], summary="A registered network's document",
             responses=_responses(401, 404, 503, ok={200: {"model": models.Network,
                                                           "description": "the gradnet/1 document (parameters in b64)"}}),
             openapi_extra=network_id_param)
    async def get_network(request: Request) -> Response:
        return await service.get_network(request, request.path_params["network_id"])

    @app.delete("/networks/{network_id}", tags=["networks"], summary="Remove a registered network",
                status_code=204, responses=_responses(401, 404, 503, ok={204: {"description": "removed"}}),
                openapi_extra=network_id_param)
    async def delete_network(request: Request) -> Response:
        return await service.delete_network(request, request.path_params["network_id"])

    @app.get("/ops", tags=["service"], summary="The op catalog",
             responses=_responses(401, ok={200: {"model": models.OpCatalog, "description": "every supported primitive"}}))
    async def ops() -> Response:
        return service.ops()

    @app.get("/health/live", tags=["service"], summary="Liveness",
             responses={200: {"model": models.Health, "description": "the process is up"}})
    async def live() -> Response:
        return _json({"status": "ok"})

    @app.get("/health/ready", tags=["service"], summary="Readiness",
             responses=_responses(503, ok={200: {"model": models.Health, "description": "workers can take work"}}))
    async def ready() -> Response:
        return service.ready()

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics",
             responses=_responses(401, ok={200: {"description": "Prometheus text format",
                                                 "content": {"text/plain": {"schema": {"type": "string"}}}}}))
    async def metrics() -> Response:
        return service.metrics_page()

    app.add_exception_handler(engine.GradnetError, _on_gradnet_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_bug)
    app.guard = _Guard(functools.partial(FastAPI.__call__, app), service)
    service.routes = list(app.router.routes)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes,
        tags=app.openapi_tags, separate_input_output_schemas=False,
    )
    _, defs = models_json_schema([(m, "validation") for m in models.SCHEMA_MODELS],
                                 ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).update(defs.get("$defs", {}))
    components["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer",
                       "description": "an API key; required only when the server has keys configured"}
    }
    for path, item in schema.get("paths", {}).items():
        if not path.startswith("/health/"):
            for operation in item.values():
                operation["security"] = [{"bearerAuth": []}, {}]
    app.openapi_schema = schema
    return schema


__all__ = ["Service", "Validator", "create_app", "error_response"]
