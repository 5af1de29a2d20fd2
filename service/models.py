"""Pydantic models of the wire format, for the OpenAPI schema and ``/docs`` only.

The handlers never validate bodies with these: a request is parsed by orjson and checked by the
engine (``engine.parse_network``, ``engine.decode_tensor``), so a million-element tensor is one
NumPy conversion, not a million pydantic validations. Keep these models in step with
``shared/API.md`` and the engine; ``tests/service/test_openapi.py`` checks the examples against
a running server.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.dtypes import DTYPES, OIP_DTYPES
from engine.network import MAX_NAME_CHARS

DType = Literal[tuple(DTYPES)]  # type: ignore[valid-type]
OIPDType = Literal[tuple(OIP_DTYPES)]  # type: ignore[valid-type]

#: MindSpore's autodiff tutorial (r1.5): out = MatMul(x * z, y), the seed of the project; the
#: schema's examples and the load-test scenario both use it.
TUTORIAL_NETWORK: dict[str, Any] = {
    "format": "gradnet/1",
    "name": "tutorial-net",
    "inputs": [{"name": "x"}, {"name": "y"}],
    "parameters": [
        {"name": "z", "value": {"dtype": "float32", "shape": [1], "data": [1.0]}, "requires_grad": True}
    ],
    "nodes": [
        {"name": "xz", "op": "Mul", "inputs": ["x", "z"]},
        {"name": "out", "op": "MatMul", "inputs": ["xz", "y"]},
    ],
    "outputs": ["out"],
}
_X = {"dtype": "float32", "shape": [2, 3], "data": [0.8, 0.6, 0.2, 1.8, 1.3, 1.1]}
_Y = {"dtype": "float32", "shape": [3, 3], "data": [0.11, 3.3, 1.1, 1.1, 0.2, 1.4, 1.1, 2.2, 0.3]}
_NETWORK_ID = "sha256:" + "0" * 64


class Tensor(BaseModel):
    """A tensor: ``data`` (JSON numbers, row-major, flat or nested), ``b64`` (little-endian raw
    bytes) or ``binary_data_size`` (raw bytes after the JSON part, Open Inference Protocol binary
    extension). Exactly one of the three."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"dtype": "float32", "shape": [2, 3], "data": [0.8, 0.6, 0.2, 1.8, 1.3, 1.1]},
                {"dtype": "float32", "shape": [2], "data": ["NaN", "-Infinity"]},
                {"dtype": "float32", "shape": [1], "b64": "AACAPw=="},
                {"datatype": "FP32", "shape": [2, 3], "binary_data_size": 24},
            ]
        }
    )

    dtype: DType | None = Field(None, description="element type (or give the OIP `datatype`)")
    datatype: OIPDType | None = Field(None, description="Open Inference Protocol spelling of `dtype`")
    shape: list[int] | None = Field(
        None, description="dimensions; `[]` is a scalar; may be left out only when `data` is nested"
    )
    data: list[Any] | float | int | bool | None = Field(
        None,
        description='row-major values, flat or nested; "NaN", "Infinity" and "-Infinity" stand for '
        "non-finite floats",
    )
    b64: str | None = Field(None, description="base64 of the little-endian, row-major raw bytes")
    binary_data_size: int | None = Field(
        None, ge=0, description="size of this tensor's raw bytes in the binary part of the body"
    )


class InputSpec(BaseModel):
    name: str = Field(..., min_length=1, max_length=MAX_NAME_CHARS)
    dtype: DType | None = Field(None, description="optional constraint")
    shape: list[int | None] | None = Field(None, description="optional constraint; null = any size")


class ParameterSpec(BaseModel):
    name: str = Field(..., min_length=1, max_length=MAX_NAME_CHARS)
    value: Tensor
    requires_grad: bool = Field(True, description="trainable (in `net.trainable_params()`)")


class Node(BaseModel):
    name: str = Field(..., min_length=1, max_length=MAX_NAME_CHARS)
    op: str = Field(..., description="a MindSpore primitive name: see GET /ops")
    inputs: list[str] = Field(..., description='names of inputs, parameters or nodes ("node:i" for output i)')
    attrs: dict[str, Any] | None = Field(None, description="the primitive's arguments, under MindSpore's names")


class Network(BaseModel):
    """A ``gradnet/1`` network: data, never code."""

    model_config = ConfigDict(json_schema_extra={"examples": [TUTORIAL_NETWORK]})

    format: Literal["gradnet/1"]
    name: str = Field("", max_length=MAX_NAME_CHARS)
    inputs: list[InputSpec]
    parameters: list[ParameterSpec] = []
    nodes: list[Node]
    outputs: str | list[str] = Field(..., description="one name, or several (a tuple output)")


class GradRequest(BaseModel):
    """``POST /grad``: exactly one of ``network`` and ``network_id``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"network": TUTORIAL_NETWORK, "inputs": [_X, _Y]},
                {"network_id": _NETWORK_ID, "inputs": {"x": _X, "y": _Y}, "get_all": True, "get_by_list": True,
                 "output_encoding": "b64"},
                {"network": TUTORIAL_NETWORK, "inputs": [_X, _Y], "sens_param": True,
                 "sens": {"dtype": "float32", "shape": [2, 3], "data": [0.1, 0.6, 0.2, 0.8, 1.3, 1.1]}},
                {"network": TUTORIAL_NETWORK, "inputs": [_X, _Y], "grad_position": [0, 1], "weights": ["z"],
                 "return_value": True},
                {"network": TUTORIAL_NETWORK, "inputs": [_X, _Y], "grad_position": 0,
                 "per_example_axes": [0, None]},
            ]
        }
    )

    network: Network | None = Field(None, description="the network, inline")
    network_id: str | None = Field(None, description="a registered network's id (POST /networks)")
    inputs: list[Tensor] | dict[str, Tensor] = Field(..., description="positional, or by input name")
    parameters: dict[str, Tensor] | None = Field(None, description="parameter values for this call only")
    get_all: bool = Field(False, description="GradOperation get_all: gradients w.r.t. every input")
    get_by_list: bool = Field(False, description="GradOperation get_by_list: gradients w.r.t. the weights")
    sens_param: bool = Field(False, description="GradOperation sens_param: `sens` gives the output cotangents")
    weights: list[str] | None = Field(None, description="with get_by_list: the parameters to differentiate")
    sens: Tensor | list[Tensor] | None = Field(None, description="one tensor per output (required iff sens_param)")
    return_value: bool = Field(False, description="also return the network's outputs as `value`")
    grad_position: int | list[int] | None = Field(
        None, description="the mindspore.grad form (its presence selects it; not with get_all/get_by_list): "
        "the input position(s) to differentiate, or null for the weights alone")
    has_aux: bool = Field(False, description="mindspore.grad form: differentiate the first output; `aux` holds the others")
    return_ids: bool = Field(False, description="mindspore.grad form: each gradient as [position or name, tensor]")
    per_example_axes: list[int | None] | None = Field(
        None, description="one axis (or null) per input, as mindspore.vmap's in_axes: per-example gradients "
        "stacked on a new leading axis")
    output_encoding: Literal["json", "b64", "binary"] = Field("json", description="how tensors come back")
    timeout_ms: int | None = Field(None, ge=1, description="deadline (default: the server's --timeout-ms)")


#: a network whose first output is a scalar (for /hvp): sum(x * x * y)
SCALAR_NETWORK: dict[str, Any] = {
    "format": "gradnet/1",
    "name": "scalar-net",
    "inputs": [{"name": "x"}, {"name": "y"}],
    "nodes": [
        {"name": "xx", "op": "Mul", "inputs": ["x", "x"]},
        {"name": "xxy", "op": "Mul", "inputs": ["xx", "y"]},
        {"name": "out", "op": "ReduceSum", "inputs": ["xxy"], "attrs": {"axis": [], "keep_dims": False}},
    ],
    "outputs": ["out"],
}
_V = {"dtype": "float32", "shape": [2, 3], "data": [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]}


class _Call(BaseModel):
    """The fields of every transform route: what to run on, and how to answer."""

    network: Network | None = Field(None, description="the network, inline")
    network_id: str | None = Field(None, description="a registered network's id (POST /networks)")
    inputs: list[Tensor] | dict[str, Tensor] = Field(..., description="positional, or by input name")
    parameters: dict[str, Tensor] | None = Field(None, description="parameter values for this call only")
    output_encoding: Literal["json", "b64", "binary"] = Field("json", description="how tensors come back")
    timeout_ms: int | None = Field(None, ge=1, description="deadline (default: the server's --timeout-ms)")


class JvpRequest(_Call):
    """``POST /jvp``: ``mindspore.ops.jvp(fn, inputs, tangents, has_aux)``."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"network": TUTORIAL_NETWORK, "inputs": [_X, _Y], "tangents": [_X, _Y]},
    ]})

    tangents: list[Tensor] = Field(..., description="one tensor per input (with batched: a leading axis K each)")
    has_aux: bool = Field(False, description="`value` and `jvp` are the first output's; `aux` holds the others")
    batched: bool = Field(False, description="K tangents per input in one call, one compiled program")


class VjpRequest(_Call):
    """``POST /vjp``: ``mindspore.ops.vjp(fn, *inputs, weights, has_aux)`` and then ``vjp_fn(cotangents)``."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"network": TUTORIAL_NETWORK, "inputs": [_X, _Y], "cotangents": _X, "weights": ["z"]},
    ]})

    cotangents: Tensor | list[Tensor] = Field(
        ..., description="one tensor per output (a tensor for a one-output network; with batched: a leading K)")
    weights: list[str] | None = Field(None, description="parameters to differentiate too: gradients [inputs, weights]")
    has_aux: bool = Field(False, description="differentiate the first output; `aux` holds the others")
    batched: bool = Field(False, description="K cotangents per output in one call, one compiled program")


class JacobianRequest(_Call):
    """``POST /jacobian``: ``mindspore.jacrev`` / ``mindspore.jacfwd(fn, grad_position)``."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"network": TUTORIAL_NETWORK, "inputs": [_X, _Y], "grad_position": 0, "mode": "forward"},
    ]})

    grad_position: int | list[int] = Field(0, description="the input position(s)")
    mode: Literal["reverse", "forward"] = Field("reverse", description="jacrev or jacfwd")


class HvpRequest(_Call):
    """``POST /hvp``: the Hessian of the first (scalar) output times ``vectors``, forward over reverse."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"network": SCALAR_NETWORK, "inputs": [_X, _X], "grad_position": 0, "vectors": _V},
    ]})

    grad_position: int | list[int] = Field(0, description="the input position(s)")
    vectors: Tensor | list[Tensor] = Field(
        ..., description="one tensor per position (one tensor for an int grad_position; with batched: a leading K)")
    batched: bool = Field(False, description="K vectors per position in one call, one compiled program")


class Timing(BaseModel):
    queue: float = Field(..., description="ms from submission to a worker starting the job")
    compile: float = Field(..., description="ms compiling (0 on a compile-cache hit)")
    compute: float = Field(..., description="ms running the compiled gradient")
    decode: float = Field(..., description="ms parsing and validating the request in the server")
    encode: float = Field(..., description="ms encoding the response tensors")


class GradResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "network_id": _NETWORK_ID,
                    "gradients": {"dtype": "float32", "shape": [2, 3],
                                  "data": [4.51, 2.7, 3.6, 4.51, 2.7, 3.6]},
                    "gradient_names": "x",
                    "timing_ms": {"queue": 0.1, "compile": 0.0, "compute": 0.2, "decode": 0.1, "encode": 0.1},
                }
            ]
        }
    )

    network_id: str
    gradients: Tensor | list[Any] = Field(
        ..., description="GradOperation: one tensor (no flags), a list (get_all or get_by_list), or [[inputs], "
        "[weights]]; the mindspore.grad form: as mindspore.grad nests it, each gradient [id, tensor] with return_ids")
    gradient_names: str | list[Any] = Field(..., description="the same nesting, with names")
    aux: list[Tensor] | None = Field(None, description="with has_aux: the outputs after the first")
    value: Tensor | list[Tensor] | None = Field(None, description="the outputs (only with return_value)")
    timing_ms: Timing


class JvpResponse(BaseModel):
    network_id: str
    value: Tensor | list[Tensor] = Field(..., description="the outputs (a tensor for a one-output network)")
    jvp: Tensor | list[Tensor] = Field(..., description="one tensor per output (a tensor for a one-output network)")
    aux: Tensor | list[Tensor] | None = Field(None, description="with has_aux: the other outputs")
    timing_ms: Timing


class VjpResponse(BaseModel):
    network_id: str
    value: Tensor | list[Tensor] = Field(..., description="the outputs (a tensor for a one-output network)")
    gradients: list[Tensor] | list[list[Tensor]] = Field(
        ..., description="one per input, or [inputs part, weights part] with weights")
    aux: Tensor | list[Tensor] | None = Field(None, description="with has_aux: the other outputs")
    timing_ms: Timing


class JacobianResponse(BaseModel):
    network_id: str
    jacobian: Tensor | list[Tensor] | list[list[Tensor]] = Field(
        ..., description="output shape + input shape; a list per output when there are several, a list per "
        "position when grad_position is a list of two or more")
    value: Tensor | list[Tensor] = Field(..., description="the outputs")
    timing_ms: Timing


class HvpResponse(BaseModel):
    network_id: str
    hvp: Tensor | list[Tensor] = Field(..., description="one tensor per position (a tensor for an int position)")
    timing_ms: Timing


class ParameterInfo(BaseModel):
    name: str
    dtype: DType
    shape: list[int]
    requires_grad: bool


class NetworkInfo(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "network_id": _NETWORK_ID,
                    "name": "tutorial-net",
                    "inputs": [{"name": "x", "dtype": None, "shape": None}, {"name": "y", "dtype": None, "shape": None}],
                    "parameters": [{"name": "z", "dtype": "float32", "shape": [1], "requires_grad": True}],
                    "outputs": ["out"],
                }
            ]
        }
    )

    network_id: str = Field(..., description='"sha256:" + hex of the canonical form')
    name: str
    inputs: list[InputSpec]
    parameters: list[ParameterInfo]
    outputs: list[str]


class NetworkList(BaseModel):
    networks: list[NetworkInfo] = Field(..., description="the networks visible with this API key")


class AttrInfo(BaseModel):
    name: str
    type: str
    required: bool
    default: Any = None
    choices: list[Any] | None = None
    doc: str | None = None


class OpInfo(BaseModel):
    name: str = Field(..., description="the MindSpore primitive name")
    aliases: list[str] = Field(default_factory=list, description="MindSpore's older names for this primitive, "
                               "accepted as a node's op; the network keeps (and its id uses) `name`")
    inputs: list[str] = Field(..., description='tensor inputs ("*x" = any number)')
    attrs: list[AttrInfo]
    outputs: int | str
    doc: str


class OnnxOps(BaseModel):
    domain: str = Field("", description='the ONNX domain the importer reads ("": the default, ai.onnx)')
    opsets: list[int] = Field(..., description="the lowest and highest opset the importer reads")
    ops: list[str] = Field(..., description="the ONNX op types POST /networks (application/onnx) converts")
    constant_only: list[str] = Field(..., description="op types converted only when every input is a constant "
                                     "(shape arithmetic, folded at import)")


class OpCatalog(BaseModel):
    ops: list[OpInfo]
    onnx: OnnxOps | None = Field(None, description="the ONNX ops the importer supports (API.md section 8)")


class Health(BaseModel):
    status: Literal["ok", "ready"]
    workers: int | None = Field(None, description="engine workers ready (readiness only)")


class ErrorDetail(BaseModel):
    code: str = Field(..., description="machine-readable: shape_mismatch, unknown_op, queue_full, …")
    message: str = Field(..., description="what was wrong and what was expected")
    path: str | None = Field(None, description="where in the request: inputs[0], network.nodes[1].attrs.axis "
                                 "(a network inline in the request), nodes[1] (a registered network), …")


class ErrorResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"error": {"code": "shape_mismatch",
                           "message": "node 'out' (MatMul) cannot take inputs xz, y of float32[2, 3], float32[2, 2]: …",
                           "path": "nodes[1]"}}
            ]
        }
    )

    error: ErrorDetail


# -- UM-Bridge (API.md section 10; service/http/umbridge.py) --------------------------------------

_UMB_NAME = "a model's name: the hex of a registered network's id (GET /Info lists them)"
_UMB_VECTOR = list[float]


class UmbridgeModelRequest(BaseModel):
    """``POST /InputSizes``, ``/OutputSizes``, ``/ModelInfo``."""

    name: str = Field(..., description=_UMB_NAME)
    config: dict[str, Any] | None = Field(None, description="must be empty: gradserve models take no config")


class UmbridgeEvaluateRequest(UmbridgeModelRequest):
    """``POST /Evaluate``: one flat (row-major) vector per network input."""

    input: list[_UMB_VECTOR] = Field(..., description="one vector per network input, flattened row-major")


class UmbridgeGradientRequest(UmbridgeEvaluateRequest):
    outWrt: int = Field(..., ge=0, description="the output whose cotangent is sens")
    inWrt: int = Field(..., ge=0, description="the input the gradient is of")
    sens: _UMB_VECTOR = Field(..., description="the cotangent, of output outWrt's size")


class UmbridgeApplyJacobianRequest(UmbridgeEvaluateRequest):
    outWrt: int = Field(..., ge=0, description="the output whose tangent is answered")
    inWrt: int = Field(..., ge=0, description="the input vec is a tangent of")
    vec: _UMB_VECTOR = Field(..., description="the tangent, of input inWrt's size")


class UmbridgeApplyHessianRequest(UmbridgeEvaluateRequest):
    outWrt: int = Field(..., ge=0, description="the output weighted by sens")
    inWrt1: int = Field(..., ge=0, description="the input the answer is of")
    inWrt2: int = Field(..., ge=0, description="the input vec is of")
    sens: _UMB_VECTOR = Field(..., description="weights of output outWrt (its size)")
    vec: _UMB_VECTOR = Field(..., description="of input inWrt2's size")


class UmbridgeInfo(BaseModel):
    protocolVersion: float = Field(..., description="1.0")
    models: list[str] = Field(..., description="the models of this API key: networks whose inputs declare their shapes")


class UmbridgeInputSizes(BaseModel):
    inputSizes: list[int]


class UmbridgeOutputSizes(BaseModel):
    outputSizes: list[int]


class UmbridgeSupport(BaseModel):
    Evaluate: bool
    Gradient: bool
    ApplyJacobian: bool
    ApplyHessian: bool


class UmbridgeModelInfo(BaseModel):
    support: UmbridgeSupport


class UmbridgeOutputs(BaseModel):
    output: list[_UMB_VECTOR] = Field(..., description="one vector per network output")


class UmbridgeVector(BaseModel):
    output: _UMB_VECTOR


class UmbridgeErrorDetail(BaseModel):
    type: str = Field(..., description="InvalidInput, ModelNotFound, UnsupportedFeature, Unauthorized, Unavailable, "
                      "Timeout or InternalError")
    message: str


class UmbridgeError(BaseModel):
    """UM-Bridge's error body (not gradserve's)."""

    error: UmbridgeErrorDetail


#: Models whose schemas the OpenAPI document carries even where no route names them directly.
SCHEMA_MODELS = (Tensor, Network, GradRequest, GradResponse, NetworkInfo, NetworkList, OpCatalog, ErrorResponse,
                 JvpRequest, JvpResponse, VjpRequest, VjpResponse, JacobianRequest, JacobianResponse,
                 HvpRequest, HvpResponse,
                 UmbridgeModelRequest, UmbridgeEvaluateRequest, UmbridgeGradientRequest, UmbridgeApplyJacobianRequest,
                 UmbridgeApplyHessianRequest)
