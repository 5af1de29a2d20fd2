"""Open Inference Protocol v2 (KServe / Triton: ``tritonclient``, ``perf_analyzer``) on the same
server (API.md section 10): its routes, mapped onto the ``/grad`` call path.

A model is a registered network (``{model}``: the hex of its ``network_id``, ``sha256:`` left
out; the full id is taken too); it has one version, ``1``. An infer request's inputs are named
after the network's inputs, ``sens/<output>`` inputs are ``sens`` (their presence means
``sens_param``), and the GradOperation arguments are the request's ``parameters`` (``get_all``,
``get_by_list``, ``weights`` comma-separated, ``return_value``; Triton's ``timeout`` in
microseconds). The outputs are ``grad/<input or parameter>`` and, with ``return_value``,
``value/<output>``. The binary tensor extension works both ways (``parameters.binary_data_size``
on an input, ``binary_data_output`` on the request, ``binary_data`` on a requested output).

Nothing of ``/grad`` is redone here: :class:`InferHandler` is the grad handler
(:class:`service.grad.handler.GradHandler`: admission before the body is read, the body limits,
deadline and memory budget, the validator, the pool) with its own parsing and answer; tensors
are decoded by the engine's one decoder through :class:`service.http.body.Body` (binary tensors
as views of the body). Errors are OIP's ``{"error": "<message>"}`` with the statuses of section 5.
The guard (:mod:`.guard`) hands every ``/v2`` request to :class:`Oip` after its API-key and drain
checks (``/v2/health/*`` is open, like ``/health/*``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
import orjson
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

import engine
from engine.dtypes import OIP_DTYPES, dtype_name
from engine.errors import ArgumentError, CodedError
from engine.tensors import JsonNumbers, encode_tensor

from ..errors import BadRequestError, NotFoundError
from ..grad.call import GradCall, parse_call
from ..grad.handler import LOOP_ENCODE_ELEMENTS, OFFLOAD_BYTES, GradHandler
from . import body as http_body
from . import encode
from .bulk import release as release_bulk
from .errors import log_error
from .guard import NAMESPACE

if TYPE_CHECKING:
    from ..ipc.messages import JobResult
    from ..pool import Admission
    from .state import State

log = logging.getLogger("gradserve.app")

#: the one version a model (a network: content-addressed, immutable) has
VERSION = "1"
#: OIP's datatype of each wire dtype
DATATYPES = {ours: oip for oip, ours in OIP_DTYPES.items()}
#: the request parameters an infer call takes (Triton's own, and the /grad arguments)
PARAMETERS = ("get_all", "get_by_list", "weights", "return_value", "binary_data_output", "timeout")
#: what a requested output's parameters may say
OUTPUT_PARAMETERS = ("binary_data",)
SENS, GRAD, VALUE = "sens/", "grad/", "value/"


# -- errors ---------------------------------------------------------------------------------------


def _json(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type=encode.JSON_TYPE, headers=headers)


def error_response(exc: CodedError, headers: Mapping[str, str] | None = None) -> Response:
    """OIP's error body, ``{"error": "<message>"}``, with gradserve's status and headers
    (Retry-After on 503, Connection: close on an unread body)."""
    from .errors import error_response as ours  # noqa: PLC0415 - the headers are decided there

    return reshape(ours(exc, headers))


def bug_response(exc: Exception) -> Response:
    return _json({"error": f"internal server error ({type(exc).__name__}): this is a bug in gradserve, not in "
                           "your request; it has been logged"}, 500)


def reshape(answer: Response) -> Response:
    """One of gradserve's own error answers (the guard's 401 and drain 503) in OIP's shape."""
    try:
        error = orjson.loads(bytes(answer.body))["error"]
        message = error["message"] + (f" (at {error['path']})" if error.get("path") else "")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return answer
    headers = {k: v for k, v in answer.headers.items() if k.lower() not in ("content-length", "content-type")}
    return _json({"error": message}, answer.status_code, headers)


# -- models -----------------------------------------------------------------------------------------


def _model_id(model: str) -> str:
    return model if model.startswith("sha256:") else "sha256:" + model


def _datatype(dtype: Any) -> str:
    return DATATYPES[dtype_name(dtype)]


async def _network(state: State, scope: Scope) -> engine.Network:
    """The network a model path names (404 for another version than 1, or no such network)."""
    params = scope["path_params"]
    model, version = params["model"], params.get("version")
    if version is not None and version != VERSION:
        raise NotFoundError(f"model {model!r} has no version {version!r}: a network has one version, {VERSION!r}",
                            "version")
    namespace, network_id = scope[NAMESPACE], _model_id(model)
    net = state.registry.cached(namespace, network_id)
    if net is None:
        net = await run_in_threadpool(state.registry.get, namespace, network_id)
    return net


def _tensor_meta(name: str, dtype: str | None, shape: Any) -> dict[str, Any]:
    dims = [-1] if shape is None else [-1 if d is None else d for d in shape]
    return {"name": name, "datatype": DATATYPES[dtype] if dtype else "FP32", "shape": dims}


def model_metadata(state: State, net: engine.Network, model: str) -> dict[str, Any]:
    """The model's metadata: its inputs (an input with no declared dtype is listed as FP32 and
    accepts any; an undeclared dimension is -1), and the outputs a call can have: ``grad/`` of
    each input and parameter, and ``value/`` of each network output where the inputs declare
    their dtypes and shapes (abstract evaluation, no device)."""
    inputs = [_tensor_meta(i.name, i.dtype, i.shape) for i in net.inputs]
    outputs = [_tensor_meta(GRAD + i.name, i.dtype, i.shape) for i in net.inputs]
    outputs += [{"name": GRAD + p.name, "datatype": _datatype(p.value.dtype), "shape": list(p.value.shape)}
                for p in net.parameters]
    if all(i.dtype and i.shape is not None and None not in i.shape for i in net.inputs):
        try:
            avals = state.validator.engine.output_avals(
                net, [jax.ShapeDtypeStruct(tuple(i.shape), np.dtype(engine.dtypes.DTYPES[i.dtype]))  # type: ignore[arg-type]
                      for i in net.inputs])
        except engine.GradnetError:  # declared shapes no call can have: the metadata still answers
            avals = None
        if avals is not None:
            outputs += [{"name": VALUE + str(ref), "datatype": _datatype(a.dtype), "shape": list(a.shape)}
                        for ref, a in zip(net.outputs, avals, strict=True)]
    return {"name": model, "versions": [VERSION], "platform": "gradserve", "inputs": inputs, "outputs": outputs}


def model_config(metadata: dict[str, Any]) -> dict[str, Any]:
    """Triton's model configuration (its ``model_configuration`` extension, not OIP's), from the
    metadata: ``perf_analyzer`` reads it before anything else. No batch dimension
    (``max_batch_size`` 0): a call's shapes are the inputs' own."""
    def tensors(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"name": t["name"], "data_type": "TYPE_" + t["datatype"], "dims": t["shape"]} for t in items]

    return {"name": metadata["name"], "platform": metadata["platform"], "backend": metadata["platform"],
            "max_batch_size": 0, "input": tensors(metadata["inputs"]), "output": tensors(metadata["outputs"])}


# -- infer ------------------------------------------------------------------------------------------


def _binary_inputs(doc: dict[str, Any]) -> Iterator[tuple[str, Any, Any]]:
    """The inputs that say ``parameters.binary_data_size``, in order (the body's binary part)."""
    inputs = doc.get("inputs")
    if not isinstance(inputs, list):
        return
    for i, tensor in enumerate(inputs):
        params = tensor.get("parameters") if isinstance(tensor, dict) else None
        if isinstance(params, dict) and "binary_data_size" in params:
            yield f"inputs[{i}].parameters", tensor, params["binary_data_size"]


def _bool(params: Mapping[str, Any], key: str, where: str = "parameters") -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise ArgumentError(f"'{key}' must be true or false, got {value!r}", f"{where}.{key}")
    return value


def _object(doc: Mapping[str, Any], key: str, path: str) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ArgumentError(f"'{key}' must be an object, got {value!r:.80}", path)
    return value


class Infer:
    """An infer request, checked: the /grad call it means, its tensors still undecoded."""

    __slots__ = ("binary_all", "call", "id", "inputs", "outputs", "sens")

    def __init__(self, doc: dict[str, Any], net: engine.Network, default_timeout_ms: float) -> None:
        request_id = doc.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise ArgumentError(f"'id' must be a string, got {request_id!r:.80}", "id")
        self.id = request_id
        params = _object(doc, "parameters", "parameters")
        for key in params:
            if key not in PARAMETERS:
                raise ArgumentError(
                    f"unknown parameter '{key}': an infer request's parameters are {', '.join(PARAMETERS)} "
                    f"(sens is given as inputs named {SENS}<output>)", f"parameters.{key}")
        grad: dict[str, Any] = {k: _bool(params, k) for k in ("get_all", "get_by_list", "return_value")}
        self.binary_all = _bool(params, "binary_data_output")
        weights = params.get("weights")
        if weights is not None:
            if not isinstance(weights, str):
                raise ArgumentError(f"'weights' must be a comma-separated string of parameter names, got {weights!r:.80}",
                                    "parameters.weights")
            names = [w.strip() for w in weights.split(",") if w.strip()]
            if len(set(names)) != len(names):
                raise ArgumentError(f"'weights' names a parameter twice: {weights!r}", "parameters.weights")
            grad["weights"] = names
        timeout = params.get("timeout")
        if timeout is not None:  # Triton's: microseconds
            if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
                raise ArgumentError(f"'timeout' must be a positive number of microseconds, got {timeout!r:.80}",
                                    "parameters.timeout")
            grad["timeout_ms"] = timeout / 1e3

        raw = doc.get("inputs")
        if not isinstance(raw, list):
            raise ArgumentError("'inputs' must be a list of tensors "
                                "({\"name\", \"datatype\", \"shape\", \"data\"})", "inputs")
        outputs = [str(ref) for ref in net.outputs]
        wanted = set(net.input_names)
        self.inputs: dict[str, tuple[Any, str]] = {}
        sens: dict[str, tuple[Any, str]] = {}
        for i, tensor in enumerate(raw):
            path = f"inputs[{i}]"
            if not isinstance(tensor, dict):
                raise ArgumentError(f"an input must be an object like {{\"name\": \"x\", \"datatype\": \"FP32\", "
                                    f"\"shape\": [2], \"data\": [1, 2]}}, got {tensor!r:.80}", path)
            name = tensor.get("name")
            if not isinstance(name, str):
                raise ArgumentError(f"an input needs a 'name' (a string), got {name!r:.80}", f"{path}.name")
            if not isinstance(tensor.get("shape"), list):
                raise ArgumentError(f"input '{name}' needs a 'shape' (a list of dimensions)", f"{path}.shape")
            # (a large body's flat arrays come parsed in bulk, service/http/bulk.py)
            if "data" in tensor and not isinstance(tensor["data"], (list, JsonNumbers)):
                raise ArgumentError(f"input '{name}': 'data' must be a list", f"{path}.data")
            _object(tensor, "parameters", f"{path}.parameters")
            if name in wanted:
                where = self.inputs
            elif name.startswith(SENS) and name[len(SENS):] in outputs:
                where = sens
            else:
                raise ArgumentError(
                    f"model has no input '{name}': its inputs are {', '.join(net.input_names) or 'none'}, and "
                    f"{', '.join(SENS + o for o in outputs)} for sens", f"{path}.name")
            if name in where:
                raise ArgumentError(f"input '{name}' is given twice", f"{path}.name")
            where[name] = (tensor, path)
        missing = [n for n in net.input_names if n not in self.inputs]
        if missing:
            raise ArgumentError(f"input '{missing[0]}' is missing: the model's inputs are {', '.join(net.input_names)}",
                                "inputs")
        if sens:
            lacking = [o for o in outputs if SENS + o not in sens]
            if lacking:
                raise ArgumentError(f"with sens, every output needs one: input '{SENS}{lacking[0]}' is missing",
                                    "inputs")
            self.sens = [sens[SENS + o] for o in outputs]
        else:
            self.sens = None

        self.outputs: list[tuple[str, bool]] | None = None  # (name, binary) requested, in order
        requested = doc.get("outputs")
        if requested is not None:
            if not isinstance(requested, list):
                raise ArgumentError("'outputs' must be a list of {\"name\": ...} objects", "outputs")
            self.outputs = []
            for i, out in enumerate(requested):
                path = f"outputs[{i}]"
                if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                    raise ArgumentError(f"a requested output must be an object with a 'name', got {out!r:.80}", path)
                oparams = _object(out, "parameters", f"{path}.parameters")
                for key in oparams:
                    if key not in OUTPUT_PARAMETERS:
                        raise ArgumentError(f"unknown output parameter '{key}': an output's parameters are "
                                            f"{', '.join(OUTPUT_PARAMETERS)}", f"{path}.parameters.{key}")
                binary = oparams.get("binary_data", self.binary_all)
                if not isinstance(binary, bool):
                    raise ArgumentError(f"'binary_data' must be true or false, got {binary!r:.80}",
                                        f"{path}.parameters.binary_data")
                self.outputs.append((out["name"], binary))
        if self.outputs:
            self._implied(grad, params, net)
        grad["sens_param"] = self.sens is not None
        self.call: GradCall = parse_call(grad, default_timeout_ms)
        if self.outputs:  # refused before any work is done
            names = _output_names(net, self.call.spec)
            for i, (name, _) in enumerate(self.outputs):
                if name not in names:
                    raise ArgumentError(
                        f"this call has no output '{name}': it has {', '.join(names)} (get_all, get_by_list and "
                        "return_value choose them)", f"outputs[{i}].name")

    def _implied(self, grad: dict[str, Any], params: Mapping[str, Any], net: engine.Network) -> None:
        """The flags the requested outputs need, where the request's parameters leave them out
        (``perf_analyzer`` asks for every output the metadata lists, and sends no parameters):
        ``grad/`` of an input but the first means ``get_all``, ``grad/`` of a parameter
        ``get_by_list`` (with those parameters as ``weights``), ``value/`` ``return_value``."""
        grads = [n[len(GRAD):] for n, _ in self.outputs or () if n.startswith(GRAD)]
        inputs = [g for g in grads if g in net.input_names]
        weights = [g for g in grads if g not in net.input_names and net.parameter(g) is not None]
        if "get_by_list" not in params and weights:
            grad["get_by_list"] = True
            if "weights" not in params:
                grad["weights"] = weights
        # GradOperation answers the first input alone, or every input with get_all (get_by_list
        # alone answers only the weights)
        if "get_all" not in params and (set(inputs) - set(net.input_names[:1]) or inputs and grad["get_by_list"]):
            grad["get_all"] = True
        names = [n for n, _ in self.outputs or ()]
        if "return_value" not in params and any(n.startswith(VALUE) for n in names):
            grad["return_value"] = True

    def decode(self, parsed: http_body.Body) -> None:
        """Decode the tensors (the engine's decoder; binary ones are views of the body)."""
        def one(tensor: Any, path: str) -> Any:
            params = tensor.get("parameters") or {}
            if "binary_data_size" in params and not parsed.binary:
                raise BadRequestError(
                    "this input says 'binary_data_size' but the request is not in the binary framing: send the "
                    "header Inference-Header-Content-Length with the length of the JSON part",
                    f"{path}.parameters.binary_data_size")
            return parsed.tensor(tensor, path)

        self.call.inputs = {name: one(*where) for name, where in self.inputs.items()}
        if self.sens is not None:
            vectors = [one(*where) for where in self.sens]
            self.call.extra = vectors[0] if len(vectors) == 1 else vectors
        release_bulk(parsed.doc)  # a large JSON body's bulk numbers are in the arrays now


def _output_names(net: engine.Network, spec: Any) -> list[str]:
    """The outputs a GradOperation call has, as MindSpore's flags choose its gradients."""
    weights = list(spec.weights if spec.weights is not None else net.trainable) if spec.get_by_list else []
    inputs = list(net.input_names) if spec.get_all else [] if spec.get_by_list else list(net.input_names[:1])
    values = [VALUE + str(ref) for ref in net.outputs] if spec.return_value else []
    return [GRAD + n for n in inputs + weights] + values


def _named(names: Any, values: Any) -> Iterator[tuple[str, Any]]:
    """The (name, gradient) pairs of a GradOperation answer (nested as its gradient_names)."""
    if isinstance(names, str):
        yield names, values
        return
    for n, v in zip(names, values, strict=True):
        yield from _named(n, v)


class InferHandler(GradHandler):
    """``POST /v2/models/{model}[/versions/{version}]/infer``: the grad handler with OIP's body
    and answer (the guard's dispatcher, :class:`Oip`, leaves the path's parameters in the scope)."""

    error_response = staticmethod(error_response)
    bug_response = staticmethod(bug_response)

    def __init__(self, state: State) -> None:
        super().__init__(state, "grad")
        self.route = "POST /v2/models/{model}/infer"

    async def _call(self, scope: Scope, body: bytes, headers: Mapping[str, str], arrived: float,
                    admission: Admission | None, receive: Receive) -> Response:
        t0 = time.perf_counter()
        net = await _network(self.state, scope)
        declared = headers.get(http_body.BINARY_HEADER)
        json_size = len(body)
        if declared is not None and declared.isdigit():
            json_size = min(json_size, int(declared))
        big = json_size > OFFLOAD_BYTES
        limit = self.settings.max_tensor_elements
        parse = http_body.parse_body
        # a large JSON body's flat data arrays are parsed in bulk, as /grad's (service/http/bulk.py:
        # a Python float per number made the peak 7.6x the body); nested ones stay lists
        parsed = await run_in_threadpool(parse, body, headers, limit, _binary_inputs, bulk=True) if big \
            else parse(body, headers, limit, _binary_inputs)
        request = Infer(parsed.doc, net, self.settings.timeout_ms)
        if big:
            await run_in_threadpool(request.decode, parsed)
        else:
            request.decode(parsed)
        result, decode_ms = await self.compute(net, request.call, arrived, admission, receive, big, t0)
        answer = (scope["path_params"]["model"], net, request, result, decode_ms)
        # a huge JSON text is written in the thread pool, as /grad's (binary outputs are views)
        tensors = {k: v for k, v in result.fields.items() if k != "gradient_names"}
        if not (request.binary_all and request.outputs is None) \
                and encode.element_count(tensors) > LOOP_ENCODE_ELEMENTS:
            return await run_in_threadpool(self._answer, *answer)
        return self._answer(*answer)

    def _answer(self, model: str, net: engine.Network, request: Infer, result: JobResult,
                decode_ms: float) -> Response:
        t0 = time.perf_counter()
        fields = result.fields
        produced = {GRAD + name: value for name, value in _named(fields["gradient_names"], fields["gradients"])}
        for ref, value in zip(net.outputs, fields.get("value", ()), strict=False):
            produced[VALUE + str(ref)] = value
        chosen = [(name, request.binary_all) for name in produced] if request.outputs is None else request.outputs
        outputs, chunks = [], []
        for name, binary in chosen:
            arr = np.asarray(produced[name])
            head: dict[str, Any] = {"name": name, "datatype": _datatype(arr.dtype), "shape": list(arr.shape)}
            if binary:
                arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
                raw = memoryview(arr.reshape(-1).view(np.uint8))
                chunks.append(raw)
                head["parameters"] = {"binary_data_size": raw.nbytes}
            else:
                head["data"] = encode_tensor(arr, "json")["data"]
            outputs.append(head)
        doc: dict[str, Any] = {"model_name": model, "model_version": VERSION}
        if request.id is not None:
            doc["id"] = request.id
        doc["outputs"] = outputs
        json_part = encode.dumps(doc)
        self.observe(result, decode_ms, (time.perf_counter() - t0) * 1e3)
        if not chunks:
            return Response(json_part, media_type=encode.JSON_TYPE)
        return encode.response(json_part, chunks, "binary")


# -- the /v2 routes ---------------------------------------------------------------------------------

class Oip:
    """Every ``/v2`` request, after the guard's checks: a route table (no FastAPI routing; each
    route's documentation is :data:`ROUTES`); returns the answer's status."""

    reshape = staticmethod(reshape)  # the guard's own refusals (401, 503 draining) in OIP's shape

    def __init__(self, state: State) -> None:
        self.state = state
        self.infer = InferHandler(state)
        model = r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?"
        table: list[tuple[str, str, Any, str]] = [  # pattern, method, endpoint, route (its metrics label)
            (r"/v2", "GET", self._server, "/v2"),
            (r"/v2/health/live", "GET", self._live, "/v2/health/live"),
            (r"/v2/health/ready", "GET", self._ready, "/v2/health/ready"),
            (model, "GET", self._model, "/v2/models/{model}"),
            (model + "/ready", "GET", self._model_ready, "/v2/models/{model}/ready"),
            (model + "/config", "GET", self._config, "/v2/models/{model}/config"),
            (model + "/infer", "POST", self.infer, "/v2/models/{model}/infer"),
        ]
        routes = {r.path: r for r in ROUTES}
        self.table = [(re.compile(pattern), method, endpoint, routes[label])
                      for pattern, method, endpoint, label in table]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> int:
        path, method = scope["path"], scope["method"]
        allowed = None
        for regex, want, endpoint, route in self.table:
            match = regex.fullmatch(path)
            if match is None:
                continue
            if method != want and not (want == "GET" and method == "HEAD"):
                allowed = want
                continue
            scope["route"] = route  # the metrics' route label
            scope["path_params"] = {k: v for k, v in match.groupdict().items() if v is not None}
            if endpoint is self.infer:
                return await endpoint(scope, receive, send)
            try:
                answer = await endpoint(scope)
            except CodedError as exc:
                log_error(f"{method} {path}", exc)
                answer = error_response(exc)
            except Exception as exc:  # noqa: BLE001 - a bug answers 500; the service stays up
                log.error("unhandled error in %s %s", method, path, exc_info=exc)
                answer = bug_response(exc)
            await answer(scope, receive, send)
            return answer.status_code
        if allowed is not None:
            answer = _json({"error": f"{method} is not allowed on {path} (allowed: {allowed})"}, 405, {"Allow": allowed})
        else:
            answer = _json({"error": f"no Open Inference Protocol route {path}: see /docs for the API"}, 404)
        await answer(scope, receive, send)
        return answer.status_code

    async def _server(self, scope: Scope) -> Response:
        return _json({"name": "gradserve", "version": self.state.version, "extensions": ["binary_tensor_data"]})

    async def _live(self, scope: Scope) -> Response:
        return _json({"live": True})

    async def _ready(self, scope: Scope) -> Response:
        problem = self.state.unready()
        if problem is not None:
            raise problem
        return _json({"ready": True})

    async def _model(self, scope: Scope) -> Response:
        net = await _network(self.state, scope)
        doc = await run_in_threadpool(model_metadata, self.state, net, scope["path_params"]["model"])
        return _json(doc)

    async def _config(self, scope: Scope) -> Response:
        net = await _network(self.state, scope)
        doc = await run_in_threadpool(model_metadata, self.state, net, scope["path_params"]["model"])
        return _json(model_config(doc))

    async def _model_ready(self, scope: Scope) -> Response:
        await _network(self.state, scope)
        problem = self.state.unready()
        if problem is not None:
            raise problem
        return _json({"name": scope["path_params"]["model"], "ready": True})


def is_oip(path: str) -> bool:
    """Whether ``path`` is one of OIP's (``/v2`` and below)."""
    return path.startswith("/v2") and (len(path) == 3 or path[3] == "/")


# -- the OpenAPI document -------------------------------------------------------------------------------


class OipError(BaseModel):
    error: str = Field(..., description="what was wrong and what was expected")


class OipServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class OipLive(BaseModel):
    live: bool


class OipReady(BaseModel):
    ready: bool


class OipModelReady(BaseModel):
    name: str
    ready: bool


class OipTensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(..., description="-1 for a dimension of any size")


class OipModelMetadata(BaseModel):
    name: str = Field(..., description="the network id's hex")
    versions: list[str]
    platform: str
    inputs: list[OipTensorMetadata]
    outputs: list[OipTensorMetadata] = Field(..., description="grad/<input or parameter>, value/<output>")


class TritonTensorConfig(BaseModel):
    name: str
    data_type: str = Field(..., description="TYPE_FP32, …")
    dims: list[int]


class TritonModelConfig(BaseModel):
    name: str
    platform: str
    backend: str
    max_batch_size: int
    input: list[TritonTensorConfig]
    output: list[TritonTensorConfig]


class OipOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = Field(None, description="binary_data_size for a binary output")


class OipInferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OipOutput]


_ERRORS = {
    400: "the body is not JSON, or not the binary framing it claims",
    401: "an API key is configured and the request has none, or a wrong one",
    404: "no such model (network) or version",
    405: "another method than the route's",
    408: "the body did not arrive in time",
    413: "the body or a tensor is over its configured limit",
    415: "an unsupported Content-Encoding",
    422: "well-formed but invalid: unknown input or parameter, dtype or shape mismatch, bad sens",
    500: "a worker died or a bug (the message says which); the service stays up",
    503: "not ready, draining, or the queue is full (Retry-After is set)",
    504: "the timeout passed before the result",
}


def _responses(ok: dict[int, dict[str, Any]], *codes: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = dict(ok)
    for code in codes:
        entry: dict[str, Any] = {"model": OipError, "description": _ERRORS[code]}
        if code == 503:
            entry["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
        out[code] = entry
    return out


_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string", "description": "a network input, or sens/<output>"},
        "datatype": {"type": "string", "enum": list(OIP_DTYPES)},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "data": {"type": "array", "description": "row-major, flat (or nested)"},
        "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
    },
}
_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "get_all": {"type": "boolean"}, "get_by_list": {"type": "boolean"},
                "weights": {"type": "string", "description": "parameter names, comma-separated"},
                "return_value": {"type": "boolean"}, "binary_data_output": {"type": "boolean"},
                "timeout": {"type": "integer", "minimum": 1, "description": "microseconds (Triton's)"},
            },
        },
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "parameters": {
                "type": "object", "additionalProperties": False,
                "properties": {"binary_data": {"type": "boolean"}}}}}},
    },
    "example": {"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [0.8, 0.6, 0.2, 1.8, 1.3, 1.1]},
        {"name": "y", "datatype": "FP32", "shape": [3, 3], "data": [0.11, 3.3, 1.1, 1.1, 0.2, 1.4, 1.1, 2.2, 0.3]},
    ], "parameters": {"get_all": True}},
}
_MODEL_PARAMS = [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"},
                  "description": "the hex of a registered network's id (without sha256:)"}]
_VERSION_PARAM = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"},
                  "description": f"a network has one version, {VERSION!r}"}


def _route(path: str, method: str, name: str, summary: str, ok: dict[int, dict[str, Any]], *codes: int,
           extra: dict[str, Any] | None = None) -> APIRoute:
    async def endpoint(request: Request) -> Response:  # pragma: no cover - documentation only
        raise RuntimeError(f"{method} {path} is answered by service.http.oip")

    endpoint.__name__ = name  # the operationId
    openapi_extra = dict(extra or {})
    if "{model}" in path:
        openapi_extra["parameters"] = _MODEL_PARAMS + ([_VERSION_PARAM] if "{version}" in path else []) \
            + openapi_extra.get("parameters", [])
    return APIRoute(path, endpoint, methods=[method], tags=["open inference protocol"], summary=summary,
                    responses=_responses(ok, *codes), openapi_extra=openapi_extra or None)


_INFER_EXTRA = {
    "parameters": [{"name": "Inference-Header-Content-Length", "in": "header", "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "with a binary body: the length in bytes of its JSON part"}],
    "requestBody": {"required": True, "description": "an OIP v2 infer request (any Content-Type)", "content": {
        "application/json": {"schema": _INFER_REQUEST},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}, "description":
                                     "the binary tensor extension: the JSON request, then the bytes of each input "
                                     "whose parameters say binary_data_size, in order"},
    }},
}
_INFER_OK = {200: {"model": OipInferResponse, "description": "the outputs grad/<name> and value/<output>; with "
                   "binary outputs, application/octet-stream: the JSON part (its length in the header "
                   "Inference-Header-Content-Length), then each binary output's bytes",
                   "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
_MODEL_CODES = (401, 404, 503)

#: OIP's routes as the OpenAPI document shows them (answered by :class:`Oip`, never routed)
ROUTES = [
    _route("/v2", "GET", "oip_server_metadata", "OIP server metadata",
           {200: {"model": OipServerMetadata, "description": "name, version, extensions"}}, 401, 503),
    _route("/v2/health/live", "GET", "oip_live", "OIP liveness", {200: {"model": OipLive, "description": "up"}}),
    _route("/v2/health/ready", "GET", "oip_ready", "OIP readiness",
           {200: {"model": OipReady, "description": "workers can take work"}}, 503),
    _route("/v2/models/{model}", "GET", "oip_model_metadata", "OIP model metadata",
           {200: {"model": OipModelMetadata, "description": "inputs and outputs"}}, *_MODEL_CODES),
    _route("/v2/models/{model}/versions/{version}", "GET", "oip_model_version_metadata",
           "OIP model metadata (version 1)",
           {200: {"model": OipModelMetadata, "description": "inputs and outputs"}}, *_MODEL_CODES),
    _route("/v2/models/{model}/config", "GET", "oip_model_config", "Triton model configuration (for perf_analyzer)",
           {200: {"model": TritonModelConfig, "description": "inputs, outputs, max_batch_size 0"}}, *_MODEL_CODES),
    _route("/v2/models/{model}/versions/{version}/config", "GET", "oip_model_version_config",
           "Triton model configuration (version 1)",
           {200: {"model": TritonModelConfig, "description": "inputs, outputs, max_batch_size 0"}}, *_MODEL_CODES),
    _route("/v2/models/{model}/ready", "GET", "oip_model_ready", "OIP model readiness",
           {200: {"model": OipModelReady, "description": "ready"}}, *_MODEL_CODES),
    _route("/v2/models/{model}/versions/{version}/ready", "GET", "oip_model_version_ready",
           "OIP model readiness (version 1)", {200: {"model": OipModelReady, "description": "ready"}}, *_MODEL_CODES),
    _route("/v2/models/{model}/infer", "POST", "oip_infer", "OIP infer: gradients (GradOperation)", _INFER_OK,
           400, 401, 404, 408, 413, 415, 422, 500, 503, 504, extra=_INFER_EXTRA),
    _route("/v2/models/{model}/versions/{version}/infer", "POST", "oip_version_infer",
           "OIP infer (version 1)", _INFER_OK, 400, 401, 404, 408, 413, 415, 422, 500, 503, 504, extra=_INFER_EXTRA),
]

__all__ = ["ROUTES", "InferHandler", "Oip", "bug_response", "error_response", "is_oip", "reshape"]
