"""ONNX ModelProto -> gradnet/1 document.

The model is parsed, checked and shape-inferred by the official ``onnx`` package; nothing in it
is executed. Each ONNX node becomes one or a few catalog ops (see :mod:`.converters`). Values
the graph computes from constants only (``Shape`` of a static shape, the integer arithmetic the
exporters emit around ``Reshape``) are folded here with NumPy, so the gradnet attrs that need
them (``Reshape``'s ``shape``, ``StridedSlice``'s ``begin``) are static. Floating initializers are
never folded: they are the network's trainable parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from ..dtypes import dtype_name
from ..errors import GradnetError, TooLargeError
from ..ops import OPS
from ..tensors import encode_tensor
from .errors import (
    InvalidOnnxError,
    OnnxExternalDataError,
    UnsupportedOnnxModelError,
    UnsupportedOnnxOpError,
)

#: protobuf cannot hold a message over 2 GiB; the route passes its own, smaller, limit.
PROTOBUF_LIMIT = 2**31 - 1

#: the opsets of the default domain the converters are written for (each converter reads the
#: attr and the input spelling of every opset in this range: Split's ``split``, Reduce*'s
#: ``axes``, Softmax's axis before 13); 11 is what MindSpore's ONNX export writes
MIN_OPSET, MAX_OPSET = 11, 23

#: the most elements of one constant the import builds itself (ConstantOfShape, Expand and the
#: other folds, masks, zero states): a few bytes of ONNX can ask for any size
DEFAULT_MAX_ELEMENTS = 1 << 24
MAX_CONSTANT_ELEMENTS: ContextVar[int] = ContextVar("onnx_max_constant_elements", default=DEFAULT_MAX_ELEMENTS)


@dataclass
class Val:
    """An ONNX value: a gradnet reference, its shape (``None`` entries are free dimensions,
    ``shape=None`` an unknown rank) and dtype, and its value when the importer knows it."""

    ref: str | None
    shape: tuple[int | None, ...] | None
    dtype: np.dtype
    const: np.ndarray | None = None
    foldable: bool = False  # const may be computed on at import time (not a trainable parameter)
    # A shape computed from a tensor with free dimensions (Shape and the integer arithmetic on
    # it): an object array of ints and, for the free entries, the dimension's symbol ('batch';
    # '?' once arithmetic mixed it). Reshape and Expand read it; it never becomes a tensor.
    sym: np.ndarray | None = None
    # A constant standing for a tensor of a free-dimension shape (ConstantOfShape / Expand of a
    # constant to [1, batch, H]): size 1 on the free axes, to be broadcast by what it meets.
    broadcast: bool = False
    symbols: tuple[str | None, ...] | None = None  # the dim_param of each free dimension of shape

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def static(self) -> bool:
        return self.shape is not None and all(d is not None for d in self.shape)


def constant(value: Any, dtype: Any = None) -> Val:
    arr = np.asarray(value, dtype=dtype)
    return Val(None, tuple(arr.shape), arr.dtype, arr, True)


@dataclass
class Node:
    """One ONNX node as the converters see it."""

    name: str
    op_type: str
    domain: str
    opset: int
    attrs: dict[str, Any]
    inputs: list[Val | None]
    outputs: list[str]
    position: int
    input_names: list[str] = field(default_factory=list)

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def input(self, i: int) -> Val | None:
        return self.inputs[i] if i < len(self.inputs) else None

    @property
    def path(self) -> str:
        return f"graph.node[{self.position}]"

    def label(self) -> str:
        return f"node '{self.name}' ({self.op_type}, opset {self.opset})"

    def unsupported(self, why: str) -> UnsupportedOnnxOpError:
        return UnsupportedOnnxOpError(
            f"{self.label()} cannot be converted: {why}", self.path,
            node=self.name, op_type=self.op_type, domain=self.domain, opset=self.opset,
        )


@dataclass
class Builder:
    """Collects the gradnet document while the graph is walked."""

    names: set[str] = field(default_factory=set)
    parameters: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    inferred: dict[str, tuple[tuple[int | None, ...] | None, np.dtype | None]] = field(default_factory=dict)
    symbols: dict[str, tuple[str | None, ...]] = field(default_factory=dict)
    node: Node | None = None  # the ONNX node being converted, for error messages
    allow_broadcast: bool = False
    _helpers: int = 0
    max_nodes: int | None = None

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def parameter(self, name: str, value: np.ndarray, requires_grad: bool) -> str:
        self.names.add(name)
        self.parameters.append({"name": name, "value": encode_tensor(value, "b64"), "requires_grad": requires_grad})
        return name

    def fail(self, why: str) -> GradnetError:
        if self.node is not None:
            return self.node.unsupported(why)
        return UnsupportedOnnxModelError(f"a graph output cannot be converted: {why}")

    def ref(self, v: Val) -> str:
        """The gradnet reference of ``v``; a constant becomes a frozen parameter the first time."""
        if v.sym is not None:
            raise self.fail(
                f"it takes the shape {[str(e) for e in v.sym.reshape(-1)]}, computed from free dimensions, as a "
                "tensor; gradnet/1 can hold it only as an attr (Reshape's, Expand's): export with static shapes")
        if v.ref is None:
            hint = self.node.outputs[0] if self.node is not None and self.node.outputs else "const"
            v.ref = self.parameter(self.fresh(f"{hint}/const"), np.array(v.const, order="C"), False)
        return v.ref

    def op(self, op: str, inputs: Sequence[Val], attrs: dict[str, Any] | None = None,
           name: str | None = None, outputs: int | None = None, broadcast_ok: bool = False) -> Any:
        """Emit one catalog op; returns its :class:`Val` (a list of them for several outputs).

        Shapes and dtypes come from abstract evaluation of the op's own JAX forward where the
        input shapes are static (which also checks the converted node), else from ONNX's shape
        inference of the node's outputs.
        """
        opdef = OPS[op]
        attrs = dict(attrs or {})
        if not (broadcast_ok or self.allow_broadcast) and any(v.broadcast for v in inputs):
            raise self.fail(
                f"a constant of a free-dimension shape reaches {op}, which would not broadcast it; "
                "export with static shapes")
        bound = opdef.bind_attrs(attrs, "attrs")
        count = opdef.num_outputs(bound) if outputs is None else outputs
        if name is None:
            self._helpers += 1
            base = (self.node.outputs[0] if self.node and self.node.outputs else "n") + f"/{op}"
            name = self.fresh(base)
        else:
            name = self.fresh(name)
        refs = [self.ref(v) for v in inputs]
        if self.max_nodes is not None and len(self.nodes) >= self.max_nodes:
            raise TooLargeError(f"the converted network would have more than {self.max_nodes} nodes (the limit); "
                                f"{self.node.label() if self.node else 'the graph'} goes over it",
                                self.node.path if self.node else None)
        self.nodes.append({"name": name, "op": op, "inputs": refs, "attrs": attrs})
        avals = None
        if all(v.static for v in inputs):
            specs = [jax.ShapeDtypeStruct(tuple(v.shape), v.dtype) for v in inputs]
            try:
                out = jax.eval_shape(lambda *xs: opdef.impl(*xs, **bound), *specs)
            except GradnetError:
                raise
            except Exception as exc:
                n = self.node
                raise UnsupportedOnnxOpError(
                    f"{n.label() if n else 'a node'}: the converted {op} does not fit its inputs "
                    f"{[list(v.shape) for v in inputs]}: {str(exc).splitlines()[0]}",
                    n.path if n else None, node=n.name if n else "", op_type=n.op_type if n else "",
                    domain=n.domain if n else "", opset=n.opset if n else None,
                ) from None
            avals = list(out) if isinstance(out, (tuple, list)) else [out]
        elif all(v.shape is not None for v in inputs):
            avals = _symbolic_avals(opdef, bound, inputs)
        vals = []
        for k in range(count):
            ref = name if count == 1 else f"{name}:{k}"
            symbols = None
            if avals is not None:
                shape, dtype = tuple(avals[k].shape), np.dtype(avals[k].dtype)
                if not all(isinstance(d, int) for d in shape):
                    symbols = tuple(None if isinstance(d, int) else avals.names.get(str(d)) for d in shape)
                    shape = tuple(d if isinstance(d, int) else None for d in shape)
            else:
                shape, dtype = None, inputs[0].dtype if inputs else np.dtype(np.float32)
            vals.append(Val(ref, shape, dtype, symbols=symbols))
        return vals[0] if count == 1 else vals

    def adopt(self, val: Val, onnx_name: str) -> Val:
        """``val`` is the ONNX value ``onnx_name``: fill a shape the evaluation could not give
        from ONNX's shape inference (free dimensions stay ``None``)."""
        shape, _ = self.inferred.get(onnx_name, (None, None))
        if val.shape is not None and shape is not None and val.sym is None and (
                len(shape) != len(val.shape) or any(a is not None and b is not None and a != b
                                                    for a, b in zip(shape, val.shape))):
            # a converter disagreeing with ONNX's own shape inference: refuse rather than guess
            raise self.fail(f"its output '{onnx_name}' converts to shape {_dims(val.shape)}, where ONNX's "
                            f"shape inference says {_dims(shape)}")
        syms = self.symbols.get(onnx_name)
        if val.symbols is None and syms is not None and val.shape is not None and len(syms) == len(val.shape):
            val.symbols = syms
        if val.shape is None or val.dtype is None:
            shape, dtype = self.inferred.get(onnx_name, (None, None))
            if val.shape is None:
                val.shape = shape
            if dtype is not None and val.const is None:
                val.dtype = dtype
        return val


def _dims(shape) -> list:
    return ["?" if d is None else d for d in shape]


class _Avals(list):
    names: dict[str, str]


def _symbolic_avals(opdef, bound, inputs) -> _Avals | None:
    """Output shapes for inputs with free dimensions, by abstract evaluation over JAX symbolic
    dimensions (one per ONNX dim_param, so equal names stay equal); ``None`` where that fails
    (the op's own checks compare sizes that are unknown here, or the shapes are unknown)."""
    from jax import export as jax_export

    names: dict[str, str] = {}  # jax symbol -> ONNX dim_param
    by_param: dict[str, str] = {}
    specs = []
    try:
        scope = jax_export.SymbolicScope()
        for v in inputs:
            dims = []
            for i, d in enumerate(v.shape):
                if d is not None:
                    dims.append(str(d))
                    continue
                param = v.symbols[i] if v.symbols and i < len(v.symbols) and v.symbols[i] else None
                key = param if param is not None else f"?{len(by_param)}"
                if key not in by_param:
                    by_param[key] = f"d{len(by_param)}"
                    if param is not None:
                        names[by_param[key]] = param
                dims.append(by_param[key])
            shape = jax_export.symbolic_shape(", ".join(dims), scope=scope) if dims else ()
            specs.append(jax.ShapeDtypeStruct(shape, v.dtype))
        out = jax.eval_shape(lambda *xs: opdef.impl(*xs, **bound), *specs)
    except Exception:
        return None
    avals = _Avals(out if isinstance(out, (tuple, list)) else [out])
    avals.names = names
    return avals


# -- reading the model -----------------------------------------------------------------------------


def _onnx():
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - onnx is a dependency of the project
        raise UnsupportedOnnxModelError(f"the onnx package is not installed ({exc})") from None
    return onnx


def _np_dtype(elem_type: int) -> np.dtype:
    onnx = _onnx()
    try:
        dt = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
        dtype_name(dt)
        return dt
    except Exception:
        name = onnx.TensorProto.DataType.Name(elem_type) if elem_type in onnx.TensorProto.DataType.values() else elem_type
        raise UnsupportedOnnxModelError(f"ONNX element type {name} has no gradnet/1 dtype") from None


def _type_info(value_info) -> tuple[tuple[int | None, ...] | None, np.dtype | None]:
    t = value_info.type
    if t.WhichOneof("value") != "tensor_type":
        return None, None
    tt = t.tensor_type
    dtype = _np_dtype(tt.elem_type) if tt.elem_type else None
    if not tt.HasField("shape"):
        return None, dtype
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    return dims, dtype


def _symbols(value_info) -> tuple[str | None, ...] | None:
    t = value_info.type
    if t.WhichOneof("value") != "tensor_type" or not t.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_param if d.HasField("dim_param") and d.dim_param else None for d in t.tensor_type.shape.dim)


def _check_external(tensor, where: str) -> None:
    onnx = _onnx()
    if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
        location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
        raise OnnxExternalDataError(
            f"{where} '{tensor.name}' keeps its data in the external file '{location}': the importer "
            "reads no files; save the model with its tensors inside it (onnx.save_model(model, path, "
            "save_as_external_data=False)) and send that single file",
            where,
        )


def _to_array(tensor, where: str) -> np.ndarray:
    _check_external(tensor, where)
    onnx = _onnx()
    try:
        arr = onnx.numpy_helper.to_array(tensor)
    except Exception as exc:
        raise InvalidOnnxError(f"{where} '{tensor.name}' cannot be read: {exc}") from None
    if arr.dtype.kind in "OSU":
        raise UnsupportedOnnxModelError(f"{where} '{tensor.name}' is a string tensor: gradnet/1 has no strings")
    try:
        dtype_name(arr.dtype)
    except GradnetError:
        raise UnsupportedOnnxModelError(
            f"{where} '{tensor.name}' is {arr.dtype}, which gradnet/1 has no dtype for") from None
    return np.array(arr, order="C")


def _attrs(node) -> dict[str, Any]:
    onnx = _onnx()
    out = {}
    for a in node.attribute:
        if a.type == onnx.AttributeProto.TENSOR:
            out[a.name] = _to_array(a.t, f"the attribute '{a.name}' of node '{node.name}'")
        elif a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            out[a.name] = a  # subgraphs (If, Loop, Scan): no converter takes them
        else:
            value = onnx.helper.get_attribute_value(a)
            try:
                out[a.name] = value.decode() if isinstance(value, bytes) else (
                    [v.decode() if isinstance(v, bytes) else v for v in value] if isinstance(value, list) else value)
            except UnicodeDecodeError:
                raise InvalidOnnxError(f"the attribute '{a.name}' of node '{node.name}' is not UTF-8 text") from None
    return out


def _check_text(graph) -> None:
    """Every name is text: protobuf hands back bytes for a string field that is not UTF-8."""
    fields = [("the graph's name", graph.name)]
    fields += [(f"graph input {k}", v.name) for k, v in enumerate(graph.input)]
    fields += [(f"graph output {k}", v.name) for k, v in enumerate(graph.output)]
    fields += [(f"initializer {k}", t.name) for k, t in enumerate(graph.initializer)]
    for k, node in enumerate(graph.node):
        fields += [(f"graph.node[{k}]", v) for v in [node.name, node.op_type, node.domain, *node.input, *node.output]]
    bad = next((where for where, v in fields if not isinstance(v, str)), None)
    if bad is not None:
        raise InvalidOnnxError(f"{bad} has a name that is not UTF-8 text")


def load(model_bytes: bytes, max_bytes: int | None):
    """Parse, check, inline and shape-infer; the ModelProto with its inferred value infos."""
    onnx = _onnx()
    if not isinstance(model_bytes, (bytes, bytearray, memoryview)):
        raise InvalidOnnxError(f"an ONNX model is bytes, got {type(model_bytes).__name__}")
    limit = PROTOBUF_LIMIT if max_bytes is None else min(max_bytes, PROTOBUF_LIMIT)
    if len(model_bytes) > limit:
        raise TooLargeError(f"the ONNX model is {len(model_bytes)} bytes, over the limit of {limit} bytes")
    try:
        model = onnx.load_model_from_string(bytes(model_bytes))
    except Exception as exc:
        raise InvalidOnnxError(f"the body is not an ONNX ModelProto: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not model.HasField("graph") or model.ir_version <= 0:
        raise InvalidOnnxError("the body is not an ONNX ModelProto: it has no ir_version or no graph")
    for t in model.graph.initializer:
        _check_external(t, "initializer")
    for node in model.graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                _check_external(a.t, f"the attribute '{a.name}' of node '{node.name}'")
    _check_text(model.graph)
    if len(model.graph.sparse_initializer):
        raise UnsupportedOnnxModelError("the model has sparse initializers, which gradnet/1 cannot hold")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise InvalidOnnxError(f"the ONNX checker refuses the model: {str(exc).strip().splitlines()[0]}") from None
    if len(model.functions):
        try:
            model = onnx.inliner.inline_local_functions(model)
        except Exception as exc:
            raise InvalidOnnxError(f"the model's local functions cannot be inlined: {exc}") from None
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise InvalidOnnxError(f"ONNX shape inference fails on the model: {str(exc).strip().splitlines()[0]}") from None
    return inferred


def _fold(fn, node: Node, args: list) -> list:
    """A folder on constants; what NumPy refuses (an axis out of range) is the model's fault."""
    try:
        return fn(node, *args)
    except GradnetError:
        raise
    except Exception as exc:
        raise InvalidOnnxError(f"{node.label()} cannot be computed on its constant inputs: "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", node.path) from None


def opsets(model) -> dict[str, int]:
    return {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}


def convert(model_bytes: bytes, *, max_bytes: int | None = None, name: str | None = None,
            max_nodes: int | None = None, max_elements: int | None = None) -> dict[str, Any]:
    if not jax.config.jax_enable_x64:  # the shapes are evaluated by JAX, as the Engine runs them
        raise RuntimeError("JAX is not configured for gradserve: call engine.configure_jax() first "
                           "(without x64, a float64 model's constants would silently become float32)")
    token = MAX_CONSTANT_ELEMENTS.set(DEFAULT_MAX_ELEMENTS if max_elements is None else max_elements)
    try:
        return _convert(model_bytes, max_bytes=max_bytes, name=name, max_nodes=max_nodes)
    finally:
        MAX_CONSTANT_ELEMENTS.reset(token)


def _convert(model_bytes: bytes, *, max_bytes: int | None, name: str | None, max_nodes: int | None) -> dict[str, Any]:
    from .converters import BROADCAST_SAFE, CONVERTERS, FOLDERS, SYM_FOLDERS, symbolic

    model = load(model_bytes, max_bytes)
    graph = model.graph
    versions = opsets(model)
    b = Builder(max_nodes=max_nodes)
    for vi in list(graph.value_info) + list(graph.output) + list(graph.input):
        shape, dtype = _type_info(vi)
        b.inferred[vi.name] = (shape, dtype)
        syms = _symbols(vi)
        if syms is not None:
            b.symbols[vi.name] = syms

    vals: dict[str, Val] = {}
    init_names = {t.name for t in graph.initializer}
    inputs = []
    for k, vi in enumerate(graph.input):
        if vi.name in init_names:
            continue  # IR < 4 lists initializers among the inputs too
        if vi.type.WhichOneof("value") != "tensor_type":
            raise UnsupportedOnnxModelError(
                f"graph input '{vi.name}' is a {vi.type.WhichOneof('value')}, not a tensor", f"graph.input[{k}]")
        shape, dtype = _type_info(vi)
        if dtype is None:
            raise UnsupportedOnnxModelError(f"graph input '{vi.name}' has no element type", f"graph.input[{k}]")
        b.names.add(vi.name)
        inputs.append({"name": vi.name, "dtype": dtype_name(dtype), "shape": None if shape is None else list(shape)})
        vals[vi.name] = Val(vi.name, shape, dtype, symbols=b.symbols.get(vi.name))
    for t in graph.initializer:
        arr = _to_array(t, "initializer")
        floating = arr.dtype.kind == "f" or dtype_name(arr.dtype) == "bfloat16"
        b.parameter(t.name, arr, floating)
        # Integer initializers (shapes, axes, indices) are frozen: attrs may be read from them.
        vals[t.name] = Val(t.name, tuple(arr.shape), arr.dtype, arr, not floating)

    for position, proto in enumerate(graph.node):
        domain = "" if proto.domain == "ai.onnx" else proto.domain
        opset = versions.get(domain)
        node = Node(
            name=proto.name or f"{proto.op_type}_{position}",
            op_type=proto.op_type, domain=domain, opset=opset or 0, attrs={},
            inputs=[], outputs=list(proto.output), position=position,
        )
        b.node = node
        if domain != "" or proto.op_type not in CONVERTERS:
            where = f" in domain '{domain}'" if domain else ""
            raise node.unsupported(
                f"the importer has no converter for {proto.op_type}{where}; it converts "
                f"{len(CONVERTERS)} ops of the default domain (engine.onnx.SUPPORTED_OPS)")
        if not MIN_OPSET <= node.opset <= MAX_OPSET:
            raise node.unsupported(f"the importer reads opsets {MIN_OPSET} to {MAX_OPSET} of the default domain")
        node.attrs = _attrs(proto)
        for x in proto.input:
            if x == "":
                node.inputs.append(None)
            elif x in vals:
                node.inputs.append(vals[x])
            else:
                raise InvalidOnnxError(f"{node.label()} reads '{x}', which no earlier node, input or initializer defines",
                                       node.path)
        node.input_names = list(proto.input)
        present = [v for v in node.inputs if v is not None]
        folder = FOLDERS.get(proto.op_type)
        if folder is not None and present and all(v.foldable and not v.broadcast for v in present):
            results = [constant(r) for r in _fold(folder, node, [None if v is None else v.const for v in node.inputs])]
        elif (folder is not None and proto.op_type in BROADCAST_SAFE and node.inputs[0] is not None
              and node.inputs[0].broadcast and all(v.foldable for v in present)):
            # a free-dimension-shaped constant through a slice or a transpose: still one
            results = [constant(r) for r in _fold(folder, node, [None if v is None else v.const for v in node.inputs])]
            for r in results:
                r.broadcast = True
        elif (proto.op_type in SYM_FOLDERS and any(v.sym is not None for v in present)
              and all(v.sym is not None or (v.foldable and not v.broadcast) for v in present)):
            args = [None if v is None else (v.sym if v.sym is not None else v.const) for v in node.inputs]
            results = [symbolic(r) for r in _fold(SYM_FOLDERS[proto.op_type], node, args)]
        else:
            # a free-dimension-shaped tensor through a slice or a transpose stays one
            carried = proto.op_type in BROADCAST_SAFE and bool(node.inputs) and node.inputs[0] is not None \
                and node.inputs[0].broadcast
            b.allow_broadcast = carried
            try:
                results = CONVERTERS[proto.op_type](b, node)
            except GradnetError:
                raise
            except (ValueError, IndexError, KeyError, TypeError, OverflowError, ZeroDivisionError) as exc:
                # attrs the checker let through that the conversion cannot use (an axis out of range)
                raise node.unsupported(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
            b.allow_broadcast = False
            if carried:
                for r in results:
                    if r is not None:
                        r.broadcast = True
        for out_name, val in zip(proto.output, results):
            if out_name and val is not None:
                vals[out_name] = b.adopt(val, out_name)
        missing = [o for o, v in zip(proto.output, list(results) + [None] * len(proto.output)) if o and v is None]
        if missing:
            raise node.unsupported(f"its output(s) {missing} have no conversion")

    b.node = None
    if not len(graph.output):
        raise InvalidOnnxError("the graph has no outputs: there is nothing to differentiate")
    outputs = []
    for k, vi in enumerate(graph.output):
        if vi.name not in vals:
            raise InvalidOnnxError(f"graph output '{vi.name}' is not computed by the graph", f"graph.output[{k}]")
        outputs.append(b.ref(vals[vi.name]))
    return {
        "format": "gradnet/1",
        "name": name if name is not None else (graph.name or "onnx-model"),
        "inputs": inputs,
        "parameters": b.parameters,
        "nodes": b.nodes,
        "outputs": outputs,
    }
