"""The handler of every transform route (``POST /grad``, ``/jvp``, ``/vjp``, ``/jacobian``,
``/hvp``; one instance per route): body in, call parsed and validated, job to the pool, answer out.

A request is parsed and validated entirely in the server (orjson, the engine's network parser
and tensor decoder, the validator), so a bad request costs no worker time; only a valid job
goes to the pool. (A network of ``CHECK_NODES`` nodes or more is the exception: its abstract
evaluation is the worker's, see :mod:`.validator`.) The guard (:mod:`service.http.guard`) calls :meth:`GradHandler.__call__`
straight from the ASGI scope: no routing, dependency solving or Request object on the hot path.

Blocking work (parsing a large JSON body or network, the first abstract evaluation of a
network, the registry's SQLite, writing a huge JSON result) runs in the thread pool; a
tutorial-sized call stays on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

import engine
from engine.cache import LRUCache
from engine.errors import ArgumentError
from engine.transforms import to_wire
from service.worker.main import CHECK_NODES

from ..errors import NotReadyError
from ..http import body as http_body
from ..http import encode
from ..http.errors import ERRORS, bug_response, error_response, log_error
from ..http.guard import NAMESPACE
from ..ipc.messages import GradJob, JobResult
from .call import GradCall, decode_tensors, parse_call

if TYPE_CHECKING:
    from ..http.state import State
    from ..pool import Admission

log = logging.getLogger("gradserve.app")
T = TypeVar("T")

#: JSON text larger than this (a request's, or the JSON part of a binary one) is parsed and its
#: tensors decoded in the thread pool; binary tensors are views of the body, decoded in no time.
OFFLOAD_BYTES = 256 * 1024
#: results with more elements than this are written (JSON, b64) in the thread pool
LOOP_ENCODE_ELEMENTS = 1 << 21


#: the status recorded for a request whose client went away before its answer (nginx's 499)
CLIENT_GONE = 499
#: a job not answered within this many seconds starts watching for its client's disconnect (a
#: fast request never pays for the watch)
WATCH_AFTER_S = 0.005


class ClientGoneError(Exception):
    """The client disconnected while its job waited for a worker."""


async def _unless_gone(submitted: Awaitable[T], receive: Receive) -> T:
    """Await ``submitted`` (a pool submission), but give up (:class:`ClientGoneError`) as soon as
    the client disconnects: the submission is cancelled, so the pool tells the worker to skip the
    job if it has not started it. The body has been read, so ASGI ``receive`` returns only at the
    disconnect; it is watched from a task started after :data:`WATCH_AFTER_S`, not for every job."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    gone = False
    watcher: asyncio.Task[Any] | None = None

    def on_message(done: asyncio.Task[Any]) -> None:
        nonlocal gone
        if not done.cancelled() and done.exception() is None and done.result()["type"] == "http.disconnect":
            gone = True
            if task is not None:
                task.cancel()

    def watch() -> None:
        nonlocal watcher
        watcher = loop.create_task(receive())  # type: ignore[arg-type]
        watcher.add_done_callback(on_message)

    timer = loop.call_later(WATCH_AFTER_S, watch)
    try:
        return await submitted
    except asyncio.CancelledError:
        if gone and task is not None:
            task.uncancel()
            raise ClientGoneError from None
        raise
    finally:
        timer.cancel()
        if watcher is not None and not watcher.done():
            watcher.cancel()


class GradHandler:
    """``POST /<transform>`` for one app (its state: settings, registry, validator, pool, metrics)."""

    # how an error becomes an answer: gradserve's own body here; another protocol's handler
    # (a subclass) answers in its own shape
    error_response = staticmethod(error_response)
    bug_response = staticmethod(bug_response)

    def __init__(self, state: State, transform: str = "grad") -> None:
        self.state = state
        self.transform = transform
        self.route = f"POST /{transform}"
        self.settings = state.settings
        self.registry = state.registry
        self.validator = state.validator
        self.metrics = state.metrics
        # one budget of body bytes in flight for every route's handler of this app
        budget = getattr(state, "body_budget", None)
        if budget is None:
            budget = state.body_budget = http_body.BodyBudget(state.settings.max_inflight_bytes)  # type: ignore[attr-defined]
        self.budget: http_body.BodyBudget = budget
        # inline networks, parsed once per distinct network as sent
        self._inline: LRUCache[engine.Network] = LRUCache(state.settings.network_cache_size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer the request; returns the response's status."""
        arrived = time.monotonic()
        try:
            declared = encoding = None
            headers: dict[str, str] = {}
            for name, value in scope["headers"]:
                if name == b"content-length":
                    if declared is None:
                        declared = value.decode("latin-1")
                elif name == b"content-encoding":
                    encoding = value.decode("latin-1")
                elif name == b"inference-header-content-length" and not headers:
                    headers[http_body.BINARY_HEADER] = value.decode("latin-1")
            # Under overload the refusal comes before the body is read (it costs no parsing), but a
            # body being read holds no place: slow bodies must not fill the queues (issue 12). The
            # place is taken once the body is in; the read itself is bounded by the body deadline.
            pool = self.state.pool
            if pool is not None:
                pool.admit().release()
            settings = self.settings
            budget = self.budget
            reserved = budget.reserve_declared(declared)  # the memory budget, before the body is read
            try:
                body = await http_body.receive_body(receive, declared, settings.max_body_bytes,
                                                    timeout_s=settings.body_timeout_s,
                                                    min_rate=settings.min_body_rate)
                if not reserved:
                    reserved = budget.reserve(len(body))
                if encoding is not None:
                    decode = http_body.decode_content
                    body = await run_in_threadpool(decode, body, encoding, settings.max_body_bytes) \
                        if len(body) > OFFLOAD_BYTES else decode(body, encoding, settings.max_body_bytes)
                admission = pool.admit() if pool is not None else None
                try:
                    response = await self._call(scope, body, headers, arrived, admission, receive)
                finally:
                    if admission is not None:
                        admission.release()
            finally:
                budget.release(reserved)
        except ClientGoneError:
            return CLIENT_GONE  # nobody to answer (the worker was told to skip the job)
        except ERRORS as exc:
            log_error(self.route, exc)
            response = self.error_response(exc)
            # The traceback's frames hold the body (and a thread pool's future holds the error, a
            # cycle): without this a refused body waits for the garbage collector (issue 12).
            exc.__traceback__ = None
            body = None  # noqa: F841 - freed before the answer is sent
        except Exception as exc:
            log.error("unhandled error in %s", self.route, exc_info=exc)
            response = self.bug_response(exc)
        await response(scope, receive, send)
        return response.status_code

    def _call(self, scope: Scope, body: bytes, headers: Mapping[str, str], arrived: float,
              admission: Admission | None, receive: Receive) -> Awaitable[Response]:
        """The answer once the body is in (OIP's handler, :mod:`service.http.oip`, reads its model
        from the path: the scope)."""
        return self._grad(scope[NAMESPACE], body, headers, arrived, admission, receive)

    async def _grad(self, namespace: str, body: bytes, headers: Mapping[str, str], arrived: float,
                    admission: Admission | None = None, receive: Receive | None = None) -> Response:
        settings = self.settings
        t0 = time.perf_counter()
        # Only a large JSON text is worth the thread pool (parsing it, decoding its tensors): the
        # binary tensors of the OIP framing are views of the body, decoded in no time.
        json_size = len(body)
        declared = headers.get(http_body.BINARY_HEADER)
        if declared is not None:
            try:
                json_size = min(json_size, max(0, int(declared)))
            except ValueError:
                pass  # parse_body says what is wrong with it
        big = json_size > OFFLOAD_BYTES
        # A large text of base64 strings parses and decodes at memory speed (0.2 ms for the MLP's
        # 540 KB): the three thread-pool hops would cost more than the work (issue 14).
        heavy = big and not http_body.mostly_strings(body, json_size)
        limit = settings.max_tensor_elements
        parse = http_body.parse_body
        # a large body's call tensors keep their numbers and base64 in bulk (service/http/bulk.py)
        parsed = (await run_in_threadpool(parse, body, headers, limit, bulk=True) if heavy
                  else parse(body, headers, limit, bulk=True))
        call = parse_call(parsed.doc, settings.timeout_ms, self.transform)
        net = await self._network(namespace, parsed, big)
        if heavy:
            await run_in_threadpool(decode_tensors, call, parsed)
        else:
            decode_tensors(call, parsed)
        result, decode_ms = await self.compute(net, call, arrived, admission, receive, heavy, t0)
        return await self._respond(net, call, result, decode_ms)

    async def compute(self, net: engine.Network, call: GradCall, arrived: float, admission: Admission | None = None,
                      receive: Receive | None = None, big: bool = False,
                      t0: float | None = None) -> tuple[JobResult, float]:
        """Validate ``call`` (tensors decoded) on ``net`` and compute it on a worker: the result,
        and the milliseconds since ``t0`` before it was submitted (decode). The other protocols
        (:mod:`service.http.umbridge`) build their call and come in here."""
        if t0 is None:
            t0 = time.perf_counter()
        validator = self.validator
        xs = validator.bind_inputs(net, call.inputs)
        if big or not validator.knows(net, xs):
            await run_in_threadpool(validator.validate, net, xs, call)
        else:
            validator.validate(net, xs, call)
        job = GradJob(network_id=net.id, network_path=net.path, inputs=xs, spec=to_wire(call.spec), extra=call.extra,
                      parameters=call.parameters, deadline=arrived + call.timeout_ms / 1e3)
        decode_ms = (time.perf_counter() - t0) * 1e3
        pool = self.state.pool
        if pool is None:
            raise NotReadyError("the engine workers are not started")
        submitted = pool.submit(job, lambda: net.to_json("b64"), admission)
        try:
            result: JobResult = await (submitted if receive is None else _unless_gone(submitted, receive))
        except engine.GradnetError as exc:  # a large network's check was the worker's (validator.py)
            validator.worker_error(net, exc)
            raise
        return result, decode_ms

    async def _network(self, namespace: str, parsed: http_body.Body, big: bool) -> engine.Network:
        doc = parsed.doc
        has_net, has_id = doc.get("network") is not None, doc.get("network_id") is not None
        if has_net == has_id:
            raise ArgumentError(
                "give exactly one of 'network' (the network inline) and 'network_id' (a registered network)",
                "network" if has_net else "network_id",
            )
        if has_id:
            network_id = doc["network_id"]
            if not isinstance(network_id, str):
                raise ArgumentError("'network_id' must be a string like \"sha256:…\"", "network_id")
            net = self.registry.cached(namespace, network_id)
            if net is None:
                net = await run_in_threadpool(self.registry.get, namespace, network_id)
            return net
        fingerprint = parsed.fingerprint
        key = await run_in_threadpool(fingerprint, doc["network"]) if big else fingerprint(doc["network"])
        net = self._inline.get(key)
        if net is not None:
            return net
        # b64 for the parser; without the framing, a tensor that says binary_data_size is refused
        raw = parsed.inline_binary(doc["network"], "network")
        parse = self.state.parse_network
        # Parsing is pure Python (~0.1 ms a node): a 3,000-node network's 140 KB would stall the
        # loop ~250 ms (more under load); in a thread the loop gets the GIL between switch intervals.
        nodes = raw.get("nodes") if isinstance(raw, dict) else None
        many = isinstance(nodes, list) and len(nodes) >= CHECK_NODES
        net = await run_in_threadpool(parse, raw, "network.") if big or many else parse(raw, "network.")
        self._inline.put(key, net)
        return net

    async def _respond(self, net: engine.Network, call: GradCall, result: JobResult, decode_ms: float) -> Response:
        encoding = call.output_encoding
        # The tensors of the answer, in its order; names (gradient_names) are plain JSON.
        fields = result.fields
        tensors = {k: v for k, v in fields.items() if k not in PLAIN}
        t0 = time.perf_counter()
        # Text is written on the loop: orjson holds the GIL, so a thread would not let the loop
        # run meanwhile, only add a hand-off. A huge text (seconds of it) goes to a thread all the
        # same: the GIL's switch interval then lets the loop in between.
        if encoding == "json" and encode.element_count(tensors) > LOOP_ENCODE_ELEMENTS:  # b64 is streamed
            encoded, chunks = await run_in_threadpool(encode.encode_fields, tensors, encoding)
        else:
            encoded, chunks = encode.encode_fields(tensors, encoding)
        timing = self.observe(result, decode_ms, (time.perf_counter() - t0) * 1e3)
        if encoding == "binary" or sum(encode.encoded_size(v) for v in encoded.values()) <= encode.STREAM_BYTES:
            doc: dict[str, Any] = {"network_id": net.id}
            for key, value in fields.items():
                doc[key] = value if key in PLAIN else orjson.Fragment(encoded[key])
            doc["timing_ms"] = timing
            return encode.response(orjson.dumps(doc), chunks, encoding)
        # A large JSON text: sent in its pieces, as orjson.dumps(doc) would have written it.
        parts = [orjson.dumps({"network_id": net.id})[:-1]]
        for key, value in fields.items():
            if key in PLAIN:
                parts.append(b',"' + key.encode() + b'":' + orjson.dumps(value))
            else:
                text = encoded[key]  # a b64 field with large tensors: its parts (encode.Streamed)
                parts += [b',"' + key.encode() + b'":', *(text if isinstance(text, encode.Streamed) else [text])]
        parts.append(b',"timing_ms":' + orjson.dumps(timing) + b"}")
        return encode.PartsResponse(parts, encode.JSON_TYPE)


    def observe(self, result: JobResult, decode_ms: float, encode_ms: float) -> dict[str, float]:
        """A computed answer's ``timing_ms``, recorded in the metrics."""
        worker = result.timing_ms
        timing = {
            "queue": worker.get("queue", 0.0),
            "compile": worker.get("compile", 0.0),
            "compute": worker.get("compute", 0.0),
            "decode": decode_ms,
            "encode": encode_ms,
        }
        self.metrics.observe_grad(timing, compiled=not result.cache_hit)
        self.metrics.observe_batch(worker)
        return timing


#: answer fields that hold no tensors: written as they are
PLAIN = frozenset({"gradient_names"})
