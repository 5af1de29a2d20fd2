"""UM-Bridge on the same server (API.md section 10): ``GET /Info`` and ``POST /InputSizes``,
``/OutputSizes``, ``/ModelInfo``, ``/Evaluate``, ``/Gradient``, ``/ApplyJacobian``,
``/ApplyHessian``, as the UM-Bridge protocol (version 1.0) and its Python client define them.

A model is a registered network (of the caller's API key) whose inputs all declare their whole
shape; its name is the hex of its ``network_id``. Each network input is one input vector, each
output one output vector, flattened row-major. Nothing is computed here: every request becomes
a call of one of the functional transforms (``engine.transforms``) and goes the way ``/vjp``,
``/jvp`` and ``/hvp`` go (:meth:`service.grad.handler.GradHandler.compute`: the validator, the
pool, a worker):

- ``Evaluate``: ``Vjp`` with zero cotangents, its ``value`` (reverse mode works for every op);
- ``Gradient(outWrt, inWrt, sens)``: ``Vjp``, cotangent ``sens`` on output ``outWrt`` and zeros
  on the others, the gradient of input ``inWrt``;
- ``ApplyJacobian(outWrt, inWrt, vec)``: ``Jvp``, tangent ``vec`` on input ``inWrt`` and zeros
  on the others, the tangent of output ``outWrt``;
- ``ApplyHessian(outWrt, inWrt1, inWrt2, sens, vec)``: ``Hvp`` on a network derived from the
  model (data, made once per model and output): its one output is ``ReduceSum(output[outWrt] *
  sens)``, ``sens`` an extra input that is not differentiated; positions ``[inWrt1, inWrt2]``
  with vectors ``[0, vec]`` give ``H[inWrt1, inWrt2] @ vec`` (one position when they are equal).

Errors are UM-Bridge's ``{"error": {"type", "message"}}``: 400 for the request's faults
(``InvalidInput``, ``ModelNotFound``, ``UnsupportedFeature``), 500 for the server's
(``InternalError``); what a gradserve route answers with another status keeps it (401
``Unauthorized``, 408/413/415 ``InvalidInput``, 503 ``Unavailable`` with Retry-After, 504
``Timeout``). UM-Bridge clients send no headers: with API keys, these routes take HTTP Basic
auth with the key as the password (``http://user:KEY@host:port``), and Bearer as everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

import engine
from engine.cache import LRUCache
from engine.errors import CodedError
from engine.tensors import dtype_name
from engine.transforms import Hvp, Jvp, Vjp

from .. import models as schema_models
from ..errors import NotFoundError
from ..grad.call import GradCall
from ..grad.handler import OFFLOAD_BYTES, GradHandler
from .encode import JSON_TYPE
from .errors import error_response as gradserve_error_response
from .errors import status_of
from .guard import NAMESPACE

if TYPE_CHECKING:
    from ..ipc.messages import JobResult
    from ..pool import Admission
    from .state import State

PROTOCOL_VERSION = 1.0
INFO = "/Info"
#: the routes that compute, and the ones that describe a model
COMPUTE = ("/Evaluate", "/Gradient", "/ApplyJacobian", "/ApplyHessian")
DESCRIBE = ("/InputSizes", "/OutputSizes", "/ModelInfo")
#: the client's shared-memory variants (``HTTPModel(..., use_shmem=True)``): gradserve may run on
#: another host, so they answer UnsupportedFeature and the client falls back to HTTP
SHMEM = ("/TestShMem", "/EvaluateShMem", "/GradientShMem", "/ApplyJacobianShMem", "/ApplyHessianShMem")
POSTS = (*DESCRIBE, *COMPUTE, *SHMEM)
PATHS = frozenset((INFO, *POSTS))
#: the default dtype of an input that declares no dtype (MindSpore's default float)
DEFAULT_DTYPE = "float32"
_NAME = re.compile(r"[0-9a-f]{64}")


# -- errors ----------------------------------------------------------------------------------------


class UmbridgeError(CodedError):
    """A request UM-Bridge calls invalid (400); ``kind`` is its error type."""

    code = "invalid_input"
    kind = "InvalidInput"


class ModelNotFound(UmbridgeError):
    code = "model_not_found"
    kind = "ModelNotFound"


class UnsupportedFeature(UmbridgeError):
    code = "unsupported_feature"
    kind = "UnsupportedFeature"


#: HTTP status (of a gradserve error) -> UM-Bridge error type
_KINDS = {401: "Unauthorized", 405: "InvalidInput", 503: "Unavailable", 504: "Timeout"}


def _kind(status: int, code: str | None) -> tuple[str, int]:
    """The UM-Bridge type and status of a gradserve error answer: the request's faults are 400
    (a 404 unknown network is ModelNotFound), the server's 500; 401, 408, 413, 415, 503, 504 keep
    their status."""
    if code in ("model_not_found", "not_found"):
        return "ModelNotFound", 400
    if code == "unsupported_feature":
        return "UnsupportedFeature", 400
    if status >= 500 and status not in (503, 504):
        return "InternalError", 500
    kind = _KINDS.get(status, "InvalidInput")
    return kind, 400 if status in (404, 422) else status


def _answer(kind: str, message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"error": {"type": kind, "message": message}})
    return Response(body, status_code=status, media_type=JSON_TYPE, headers=headers)


def reshape(response: Response) -> Response:
    """A gradserve error answer (``{"error": {"code", "message", "path"}}``) in UM-Bridge's shape,
    with its headers (Retry-After, Allow, WWW-Authenticate: Basic for a 401)."""
    try:
        error = orjson.loads(bytes(response.body))["error"]
        code, message = error.get("code"), error.get("message") or ""
    except (ValueError, KeyError, TypeError, AttributeError):
        code, message = None, "request refused"
    kind, status = _kind(response.status_code, code)
    headers = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
    if response.status_code == 401:
        headers["www-authenticate"] = 'Basic realm="gradserve"'
        message += " (UM-Bridge clients: the key as the password of the URL, http://user:KEY@host:port)"
    return _answer(kind, message, status, headers)


def error_response(exc: CodedError) -> Response:
    """An error raised on the way (the handler's, the validator's, the pool's) as UM-Bridge answers it."""
    if isinstance(exc, UmbridgeError):
        return _answer(exc.kind, str(exc), 400)
    base = gradserve_error_response(exc)  # the status and headers gradserve gives it
    kind, status = _kind(status_of(exc), exc.code)
    headers = {k: v for k, v in base.headers.items() if k not in ("content-length", "content-type")}
    return _answer(kind, str(exc), status, headers)


def bug_response(exc: Exception) -> Response:
    return _answer("InternalError", f"internal server error ({type(exc).__name__}): this is a bug in gradserve, "
                   "not in your request; it has been logged", 500)


# -- models ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """A network as a UM-Bridge model: its vectors' dtypes, shapes and sizes."""

    net: engine.Network
    in_dtypes: tuple[np.dtype, ...]
    in_shapes: tuple[tuple[int, ...], ...]
    out_dtypes: tuple[np.dtype, ...]
    out_shapes: tuple[tuple[int, ...], ...]

    @property
    def in_sizes(self) -> list[int]:
        return [int(np.prod(s, dtype=np.int64)) for s in self.in_shapes]

    @property
    def out_sizes(self) -> list[int]:
        return [int(np.prod(s, dtype=np.int64)) for s in self.out_shapes]


def name_of(network_id: str) -> str:
    return network_id.removeprefix("sha256:")


def is_model(signature: dict[str, Any]) -> bool:
    """Whether a registered network (its signature) is a UM-Bridge model: every input declares its
    whole shape (UM-Bridge sizes are fixed per model)."""
    return all(i.get("shape") is not None and None not in i["shape"] for i in signature["inputs"])


class Models:
    """The caller's models: looked up in the registry, described once per network (abstract
    evaluation of the outputs' shapes), and the networks ApplyHessian derives from them."""

    def __init__(self, state: State) -> None:
        self.state = state
        size = state.settings.network_cache_size
        self._described: LRUCache[Model] = LRUCache(size)
        self._hessian: LRUCache[engine.Network] = LRUCache(size)

    async def get(self, namespace: str, name: Any) -> Model:
        if not isinstance(name, str):
            raise ModelNotFound("'name' must be the model's name (a string): see GET /Info", "name")
        if _NAME.fullmatch(name) is None:
            raise ModelNotFound(f"no model {name!r}: a model's name is the hex of a registered network's id "
                                "(64 hex digits); see GET /Info", "name")
        registry = self.state.registry
        network_id = f"sha256:{name}"
        net = registry.cached(namespace, network_id)
        if net is None:
            try:
                net = await run_in_threadpool(registry.get, namespace, network_id)
            except NotFoundError:
                raise ModelNotFound(f"no model {name!r} is registered with this API key: see GET /Info",
                                    "name") from None
        model = self._described.get(net.id)
        if model is None:
            model = await run_in_threadpool(self._describe, net)
            self._described.put(net.id, model)
        return model

    def _describe(self, net: engine.Network) -> Model:
        for spec in net.inputs:
            if spec.shape is None or None in spec.shape:
                raise ModelNotFound(f"network {net.id} is not a UM-Bridge model: input '{spec.name}' does not declare "
                                    "its whole shape", "name")
        dtypes = tuple(np.dtype(spec.dtype or DEFAULT_DTYPE) for spec in net.inputs)
        shapes = tuple(tuple(int(d) for d in spec.shape or ()) for spec in net.inputs)
        # zero-strided stand-ins: the abstract evaluation reads shapes and dtypes only
        xs = [np.broadcast_to(np.zeros((), dt), shape) for dt, shape in zip(dtypes, shapes)]
        avals = self.state.validator.engine.output_avals(net, xs)
        return Model(net, dtypes, shapes, tuple(np.dtype(a.dtype) for a in avals),
                     tuple(tuple(int(d) for d in a.shape) for a in avals))

    def hessian_network(self, model: Model, out_wrt: int) -> engine.Network:
        """The model's network with one output, ``ReduceSum(output[out_wrt] * sens)``, and ``sens``
        as an extra last input (declared with the output's dtype and shape)."""
        key = (model.net.id, out_wrt)
        derived = self._hessian.get(key)
        if derived is not None:
            return derived
        net = model.net
        doc = net.to_json("b64")
        taken = {i.name for i in net.inputs} | {p.name for p in net.parameters} | {n.name for n in net.nodes}

        def fresh(name: str) -> str:
            while name in taken:
                name += "_"
            taken.add(name)
            return name

        sens, weighted, total = fresh("umbridge_sens"), fresh("umbridge_weighted"), fresh("umbridge_total")
        doc["inputs"].append({"name": sens, "dtype": dtype_name(model.out_dtypes[out_wrt]),
                              "shape": list(model.out_shapes[out_wrt])})
        doc["nodes"] += [
            {"name": weighted, "op": "Mul", "inputs": [str(net.outputs[out_wrt]), sens]},
            {"name": total, "op": "ReduceSum", "inputs": [weighted], "attrs": {"axis": [], "keep_dims": False}},
        ]
        doc["outputs"] = [total]
        doc["name"] = f"{net.name} (UM-Bridge ApplyHessian of output {out_wrt})"
        derived = self.state.parse_network(doc)
        self._hessian.put(key, derived)
        return derived


# -- the request's fields --------------------------------------------------------------------------


def _index(doc: dict[str, Any], field: str, count: int, what: str) -> int:
    value = doc.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
        raise UmbridgeError(f"Invalid {field} index! Expected an integer between 0 and number of {what} minus one "
                            f"({count - 1}), but got {value!r}", field)
    return value


def _vector(value: Any, size: int, dtype: np.dtype, shape: tuple[int, ...], field: str, what: str) -> np.ndarray:
    """A UM-Bridge vector (a flat JSON list of numbers) as an array of ``dtype`` and ``shape``."""
    if not isinstance(value, list):
        raise UmbridgeError(f"{what} must be a list of numbers, got {type(value).__name__}", field)
    if len(value) != size:
        raise UmbridgeError(f"{what} has invalid length! Expected {size} but got {len(value)}.", field)
    try:
        array = np.asarray(value, dtype=np.float64) if value else np.zeros(0)
    except (ValueError, TypeError):
        array = None
    if array is None or array.ndim != 1 or any(isinstance(v, (bool, str)) or v is None for v in value):
        raise UmbridgeError(f"{what} must be a flat list of numbers", field)
    if dtype.kind in "iub" and not np.array_equal(array, np.trunc(array)):
        raise UmbridgeError(f"{what} is for a {dtype_name(dtype)} tensor: its numbers must be whole", field)
    with np.errstate(over="ignore"):
        out = array.astype(dtype)
    if dtype.kind == "f" and bool((np.isinf(out) & np.isfinite(array)).any()):
        raise UmbridgeError(f"{what} has a number beyond the range of {dtype_name(dtype)}, its tensor's dtype", field)
    return out.reshape(shape)


def _inputs(doc: dict[str, Any], model: Model) -> list[np.ndarray]:
    given = doc.get("input")
    if not isinstance(given, list) or not all(isinstance(v, list) for v in given):
        raise UmbridgeError("'input' must be a list of lists (one vector per model input)", "input")
    if len(given) != len(model.in_shapes):
        raise UmbridgeError(f"Number of input parameters does not match model number of model inputs! Expected "
                            f"{len(model.in_shapes)}, got {len(given)}.", "input")
    return [_vector(v, size, dt, shape, f"input[{i}]", f"Input parameter {i}")
            for i, (v, size, dt, shape) in enumerate(zip(given, model.in_sizes, model.in_dtypes, model.in_shapes))]


def _out_wrt(doc: dict[str, Any], model: Model) -> int:
    return _index(doc, "outWrt", len(model.out_shapes), "outputs")


def _in_wrt(doc: dict[str, Any], model: Model, field: str = "inWrt") -> int:
    return _index(doc, field, len(model.in_shapes), "inputs")


def _sens(doc: dict[str, Any], model: Model, out_wrt: int) -> np.ndarray:
    """The request's ``sens``, a vector of output ``out_wrt``."""
    return _vector(doc.get("sens"), model.out_sizes[out_wrt], model.out_dtypes[out_wrt], model.out_shapes[out_wrt],
                   "sens", "Sensitivity vector sens")


def _vec(doc: dict[str, Any], model: Model, in_wrt: int) -> np.ndarray:
    """The request's ``vec``, a vector of input ``in_wrt``."""
    return _vector(doc.get("vec"), model.in_sizes[in_wrt], model.in_dtypes[in_wrt], model.in_shapes[in_wrt],
                   "vec", "Vector vec")


def _config(doc: dict[str, Any]) -> None:
    config = doc.get("config", {})
    if config is None:
        return
    if not isinstance(config, dict):
        raise UmbridgeError(f"'config' must be an object, got {type(config).__name__}", "config")
    if config:
        raise UnsupportedFeature(f"gradserve models take no config, got {sorted(config)}: send {{}} or leave it out",
                                 "config")


def _flat(array: Any) -> np.ndarray:
    """An answer tensor as a flat array orjson writes as numbers (float32 as float32, so a value
    reads back exactly as /grad gives it)."""
    a = np.ravel(np.asarray(array))
    if a.dtype.kind not in "fiub" or a.dtype == np.float16:
        a = a.astype(np.float64)
    return np.ascontiguousarray(a)


def _output(value: Any) -> Response:
    return Response(orjson.dumps({"output": value}, option=orjson.OPT_SERIALIZE_NUMPY), media_type=JSON_TYPE)


def _one_or_many(value: Any, k: int) -> Any:
    """Entry ``k`` of an answer field that is a tensor for one output and a list for several."""
    return value[k] if isinstance(value, (list, tuple)) else value


# -- the handler -----------------------------------------------------------------------------------


class UmbridgeHandler(GradHandler):
    """``POST`` of one UM-Bridge route: the body read, admitted and limited as every transform
    route's (:class:`GradHandler`), then mapped onto a transform call."""

    error_response = staticmethod(error_response)
    bug_response = staticmethod(bug_response)

    def __init__(self, state: State, path: str, models: Models) -> None:
        super().__init__(state, "grad")
        self.route = f"POST {path}"
        self.path = path
        self.models = models
        self.answer: Callable[..., Any] = getattr(self, "_" + path[1:].lower(), self._shmem)

    async def _grad(self, namespace: str, body: bytes, headers: Any, arrived: float,
                    admission: Admission | None = None, receive: Any = None) -> Response:
        try:  # a large body (a million-element vector) is parsed off the event loop
            doc = await run_in_threadpool(orjson.loads, body) if len(body) > OFFLOAD_BYTES else orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UmbridgeError(f"the body is not JSON: {exc}", "body") from None
        if not isinstance(doc, dict):
            raise UmbridgeError(f"the body must be a JSON object, got {type(doc).__name__}", "body")
        if self.path in SHMEM:
            return await self._shmem()
        model = await self.models.get(namespace, doc.get("name"))
        return await self.answer(model, doc, arrived, admission, receive)

    async def _shmem(self, *_: Any) -> Response:
        raise UnsupportedFeature(f"{self.path[1:]}: gradserve offers no shared memory (it may run on another host); "
                                 "use the route without ShMem", "path")

    async def _inputsizes(self, model: Model, doc: dict[str, Any], *_: Any) -> Response:
        _config(doc)
        return Response(orjson.dumps({"inputSizes": model.in_sizes}), media_type=JSON_TYPE)

    async def _outputsizes(self, model: Model, doc: dict[str, Any], *_: Any) -> Response:
        _config(doc)
        return Response(orjson.dumps({"outputSizes": model.out_sizes}), media_type=JSON_TYPE)

    async def _modelinfo(self, model: Model, doc: dict[str, Any], *_: Any) -> Response:
        support = {"Evaluate": True, "Gradient": True, "ApplyJacobian": True, "ApplyHessian": True}
        return Response(orjson.dumps({"support": support}), media_type=JSON_TYPE)

    async def _run(self, net: engine.Network, spec: Any, xs: list[np.ndarray], extra: Any, arrived: float,
                   admission: Admission | None, receive: Any) -> JobResult:
        call = GradCall(spec, "json", float(self.settings.timeout_ms), inputs=xs, extra=extra)
        result, decode_ms = await self.compute(net, call, arrived, admission, receive)
        worker = result.timing_ms
        self.metrics.observe_grad({"queue": worker.get("queue", 0.0), "compile": worker.get("compile", 0.0),
                                   "compute": worker.get("compute", 0.0), "decode": decode_ms, "encode": 0.0},
                                  compiled=not result.cache_hit)
        self.metrics.observe_batch(worker)
        return result

    async def _evaluate(self, model: Model, doc: dict[str, Any], arrived: float, admission: Admission | None,
                        receive: Any) -> Response:
        _config(doc)
        xs = _inputs(doc, model)
        zeros = [np.zeros(s, dt) for s, dt in zip(model.out_shapes, model.out_dtypes)]
        result = await self._run(model.net, Vjp(), xs, zeros, arrived, admission, receive)
        value = result.fields["value"]
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        return _output([_flat(v) for v in values])

    async def _gradient(self, model: Model, doc: dict[str, Any], arrived: float, admission: Admission | None,
                        receive: Any) -> Response:
        _config(doc)
        xs = _inputs(doc, model)
        out_wrt = _out_wrt(doc, model)
        in_wrt = _in_wrt(doc, model)
        sens = _sens(doc, model, out_wrt)
        cotangents = [sens if k == out_wrt else np.zeros(s, dt)
                      for k, (s, dt) in enumerate(zip(model.out_shapes, model.out_dtypes))]
        result = await self._run(model.net, Vjp(), xs, cotangents, arrived, admission, receive)
        return _output(_flat(result.fields["gradients"][in_wrt]))

    async def _applyjacobian(self, model: Model, doc: dict[str, Any], arrived: float, admission: Admission | None,
                             receive: Any) -> Response:
        _config(doc)
        xs = _inputs(doc, model)
        out_wrt = _out_wrt(doc, model)
        in_wrt = _in_wrt(doc, model)
        vec = _vec(doc, model, in_wrt)
        tangents = [vec if i == in_wrt else np.zeros_like(x) for i, x in enumerate(xs)]
        result = await self._run(model.net, Jvp(), xs, tangents, arrived, admission, receive)
        return _output(_flat(_one_or_many(result.fields["jvp"], out_wrt)))

    async def _applyhessian(self, model: Model, doc: dict[str, Any], arrived: float, admission: Admission | None,
                            receive: Any) -> Response:
        _config(doc)
        xs = _inputs(doc, model)
        out_wrt = _out_wrt(doc, model)
        in1, in2 = _in_wrt(doc, model, "inWrt1"), _in_wrt(doc, model, "inWrt2")
        if model.out_dtypes[out_wrt].kind != "f":
            raise UnsupportedFeature(f"ApplyHessian: output {out_wrt} is {dtype_name(model.out_dtypes[out_wrt])}: "
                                     "only a float output has a second derivative", "outWrt")
        sens = _sens(doc, model, out_wrt)
        vec = _vec(doc, model, in2)
        net = self.models.hessian_network(model, out_wrt)
        if in1 == in2:
            spec, vectors = Hvp(positions=(in1,), bare=False), [vec]
        else:  # H[in1, in1] @ 0 + H[in1, in2] @ vec
            spec, vectors = Hvp(positions=(in1, in2), bare=False), [np.zeros_like(xs[in1]), vec]
        result = await self._run(net, spec, [*xs, sens], vectors, arrived, admission, receive)
        return _output(_flat(result.fields["hvp"][0]))


# -- registration ----------------------------------------------------------------------------------


def install(state: State) -> None:
    """The POST routes into the guard's table (``state.posts``: read, admitted and limited as the
    transform routes), Basic auth and UM-Bridge's error shape on every UM-Bridge path."""
    models = state.umbridge = Models(state)  # type: ignore[attr-defined]
    for path in POSTS:
        state.posts[path] = UmbridgeHandler(state, path, models)
    state.basic_auth |= PATHS
    for path in PATHS:
        state.error_shapes[path] = reshape


def add_routes(app: FastAPI, state: State) -> None:
    """``GET /Info`` (a FastAPI route: the guard answers POST only)."""
    registry = state.registry

    @app.get(INFO, tags=["umbridge"], summary="UM-Bridge: protocol version and models",
             responses={200: {"model": schema_models.UmbridgeInfo, "description": "the models of this API key"},
                        401: {"model": schema_models.UmbridgeError, "description": "missing or wrong API key"},
                        503: {"model": schema_models.UmbridgeError, "description": "draining or the registry is down"}})
    async def umbridge_info(request: Request) -> Response:
        try:
            rows = await run_in_threadpool(registry.list, request.scope[NAMESPACE])
        except CodedError as exc:
            return error_response(exc)
        names = [name_of(row["network_id"]) for row in rows if is_model(row)]
        return Response(orjson.dumps({"protocolVersion": PROTOCOL_VERSION, "models": names}), media_type=JSON_TYPE)


def _doc_route(path: str, summary: str, request: str, ok: type) -> APIRoute:
    async def endpoint(request: Request) -> Response:  # pragma: no cover - documentation only
        raise RuntimeError(f"POST {path} is answered by the guard")

    endpoint.__name__ = "umbridge_" + path[1:]  # the operationId
    errors = {
        400: "InvalidInput (wrong lengths, indexes, not JSON), ModelNotFound or UnsupportedFeature",
        401: "missing or wrong API key (HTTP Basic with the key as the password, or Bearer)",
        413: "the body is over the configured limit",
        500: "InternalError: a worker died or a bug; the service stays up",
        503: "Unavailable: not ready, draining, or the queue is full (Retry-After is set)",
        504: "Timeout: the server's default timeout passed before the result",
    }
    responses: dict[int | str, dict[str, Any]] = {200: {"model": ok, "description": "the answer"}}
    for code, text in errors.items():
        responses[code] = {"model": schema_models.UmbridgeError, "description": text}
    responses[503]["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
    return APIRoute(path, endpoint, methods=["POST"], tags=["umbridge"], summary=summary, responses=responses,
                    openapi_extra={"requestBody": {"required": True, "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}}}})


#: the POST routes as the OpenAPI document shows them (answered by the guard, never routed)
DOC_ROUTES = [
    _doc_route("/InputSizes", "UM-Bridge: the input vectors' sizes", "UmbridgeModelRequest", schema_models.UmbridgeInputSizes),
    _doc_route("/OutputSizes", "UM-Bridge: the output vectors' sizes", "UmbridgeModelRequest",
               schema_models.UmbridgeOutputSizes),
    _doc_route("/ModelInfo", "UM-Bridge: what the model supports", "UmbridgeModelRequest", schema_models.UmbridgeModelInfo),
    _doc_route("/Evaluate", "UM-Bridge: the outputs", "UmbridgeEvaluateRequest", schema_models.UmbridgeOutputs),
    _doc_route("/Gradient", "UM-Bridge: sens^T J (a VJP, /vjp)", "UmbridgeGradientRequest", schema_models.UmbridgeVector),
    _doc_route("/ApplyJacobian", "UM-Bridge: J vec (a JVP, /jvp)", "UmbridgeApplyJacobianRequest",
               schema_models.UmbridgeVector),
    _doc_route("/ApplyHessian", "UM-Bridge: the Hessian of sens . output applied to vec (/hvp)",
               "UmbridgeApplyHessianRequest", schema_models.UmbridgeVector),
]
