"""One converter per ONNX op type: ``convert(builder, node) -> [Val per output]``.

A converter emits catalog ops (MindSpore primitive names, :mod:`engine.ops`) through
``builder.op``. Inputs that gradnet takes as attrs (shapes, axes, pads) must be constants at
import time; a converter asks for them with :func:`static`. ``FOLDERS`` compute an op on
constants with NumPy (the shape arithmetic the exporters emit); they run only when every input is
a constant, never on a trainable initializer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import TooLargeError
from .importer import MAX_CONSTANT_ELEMENTS, Builder, Node, Val, constant

Converter = Callable[[Builder, Node], list]
CONVERTERS: dict[str, Converter] = {}
FOLDERS: dict[str, Callable[..., list]] = {}

INT64_MAX = 2**63 - 1


def converter(*names: str):
    def register(fn: Converter) -> Converter:
        for name in names:
            CONVERTERS[name] = fn
        return fn

    return register


def folder(*names: str):
    def register(fn):
        for name in names:
            FOLDERS[name] = fn
        return fn

    return register


def room(n: Node, shape, what: str) -> None:
    """Refuse, before allocating it, a constant the import would build over the element limit
    (a ConstantOfShape of [10**6, 10**6] is a few bytes of ONNX)."""
    count = math.prod(max(0, int(d)) for d in shape)
    limit = MAX_CONSTANT_ELEMENTS.get()
    if count > limit:
        raise TooLargeError(f"{n.label()}: {what} would hold {count} elements, over the import's limit of {limit}",
                            n.path)


def static(node: Node, i: int, what: str) -> np.ndarray:
    v = node.input(i)
    if v is None or v.const is None:
        raise node.unsupported(
            f"its {what} (input {i}) must be known when the model is imported (a constant, an integer "
            "initializer, or computed from static shapes); gradnet/1 takes it as an attr")
    return v.const


def need_rank(node: Node, v: Val, what: str = "its input") -> int:
    if v.rank is None:
        raise node.unsupported(f"the rank of {what} is unknown (ONNX shape inference gave none)")
    return v.rank


def need_static(node: Node, v: Val, what: str = "its input") -> tuple[int, ...]:
    if not v.static:
        shape = None if v.shape is None else ["?" if d is None else d for d in v.shape]
        raise node.unsupported(f"the shape of {what} must be static here, got {shape}")
    return tuple(v.shape)


def axis_of(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def scalar(value: float, like: Val) -> Val:
    return constant(np.asarray(value, dtype=like.dtype))


def ints(value: Any) -> list[int]:
    return [int(v) for v in np.asarray(value).reshape(-1)]


def out(node: Node, k: int = 0) -> str:
    return node.outputs[k]


# -- elementwise -----------------------------------------------------------------------------------

BINARY = {"Add": "Add", "Sub": "Sub", "Mul": "Mul", "Div": "Div", "Pow": "Pow", "Equal": "Equal",
          "Less": "Less", "Greater": "Greater", "LessOrEqual": "LessEqual", "GreaterOrEqual": "GreaterEqual"}
UNARY = {"Neg": "Neg", "Sqrt": "Sqrt", "Exp": "Exp", "Log": "Log", "Erf": "Erf", "Tanh": "Tanh",
         "Sigmoid": "Sigmoid", "Relu": "ReLU", "Abs": "Abs", "Reciprocal": "Reciprocal", "Floor": "Floor",
         "Sin": "Sin", "Cos": "Cos", "Sign": "Sign", "Softplus": "Softplus"}


@converter(*BINARY)
def _binary(b: Builder, n: Node) -> list:
    x, y = n.inputs[0], n.inputs[1]
    # a free-dimension-shaped constant (size 1 there) broadcasts against a full operand
    ok = (x.broadcast != y.broadcast) and (y if x.broadcast else x).rank is not None and \
        (y if x.broadcast else x).rank >= (x if x.broadcast else y).rank
    if n.op_type == "Div" and np.issubdtype(x.dtype, np.integer):
        raise n.unsupported("integer Div of non-constant tensors (ONNX truncates, the catalog's Div floors)")
    if n.op_type == "Pow" and y.dtype != x.dtype and y.const is not None:
        y = constant(y.const.astype(x.dtype))  # x ** 2 with an integer exponent: x's dtype
    return [b.op(BINARY[n.op_type], [x, y], name=out(n), broadcast_ok=ok)]


@converter(*UNARY)
def _unary(b: Builder, n: Node) -> list:
    return [b.op(UNARY[n.op_type], [n.inputs[0]], name=out(n))]


@converter("Max", "Min", "Sum", "Mean")
def _variadic(b: Builder, n: Node) -> list:
    op = {"Max": "Maximum", "Min": "Minimum", "Sum": "Add", "Mean": "Add"}[n.op_type]
    xs = [v for v in n.inputs if v is not None]
    acc = xs[0]
    for k, x in enumerate(xs[1:]):
        last = k == len(xs) - 2 and n.op_type != "Mean"
        acc = b.op(op, [acc, x], name=out(n) if last else None)
    if n.op_type == "Mean":
        acc = b.op("Mul", [acc, scalar(1 / len(xs), acc)], name=out(n))
    elif len(xs) == 1:
        return [xs[0]]
    return [acc]


@converter("Identity", "Dropout")
def _identity(b: Builder, n: Node) -> list:
    if n.op_type == "Dropout" and n.input(2) is not None:
        training = n.input(2).const
        if training is None or bool(np.asarray(training)):
            raise n.unsupported("training_mode must be a constant false: Dropout is converted for inference")
    results = [n.inputs[0]]
    if n.op_type == "Dropout" and len(n.outputs) > 1 and n.outputs[1]:
        x = n.inputs[0]
        room(n, need_static(n, x), "its mask")
        results.append(constant(np.ones(need_static(n, x), np.bool_)))
    return results


@converter("LeakyRelu")
def _leaky_relu(b: Builder, n: Node) -> list:
    return [b.op("LeakyReLU", [n.inputs[0]], {"alpha": float(n.attr("alpha", 0.01))}, name=out(n))]


@converter("Gelu")
def _gelu(b: Builder, n: Node) -> list:
    x = n.inputs[0]
    if n.attr("approximate", "none") == "tanh":
        return [b.op("GeLU", [x], name=out(n))]
    # exact: x * 0.5 * (1 + erf(x / sqrt(2)))
    e = b.op("Erf", [b.op("Mul", [x, scalar(1 / math.sqrt(2), x)])])
    return [b.op("Mul", [b.op("Mul", [x, scalar(0.5, x)]), b.op("Add", [e, scalar(1.0, x)])], name=out(n))]


def _elu(b: Builder, x: Val, alpha: float, name: str | None) -> Val:
    # exp of min(x, 0): the branch Select leaves out must stay finite, or its zero cotangent
    # times an infinite derivative would be NaN
    neg = b.op("Minimum", [x, scalar(0.0, x)])
    em1 = b.op("Sub", [b.op("Exp", [neg]), scalar(1.0, x)])
    return b.op("Select", [b.op("Greater", [x, scalar(0.0, x)]), x, b.op("Mul", [em1, scalar(alpha, x)])], name=name)


@converter("Elu")
def _elu_op(b: Builder, n: Node) -> list:
    return [_elu(b, n.inputs[0], float(n.attr("alpha", 1.0)), out(n))]


@converter("Selu")
def _selu(b: Builder, n: Node) -> list:
    x = n.inputs[0]
    alpha = float(n.attr("alpha", 1.67326319217681884765625))
    gamma = float(n.attr("gamma", 1.05070102214813232421875))
    return [b.op("Mul", [_elu(b, x, alpha, None), scalar(gamma, x)], name=out(n))]


@converter("Celu")
def _celu(b: Builder, n: Node) -> list:
    # max(0, x) + alpha * (exp(min(0, x) / alpha) - 1)
    x = n.inputs[0]
    alpha = float(n.attr("alpha", 1.0))
    neg = b.op("Mul", [b.op("Minimum", [x, scalar(0.0, x)]), scalar(1 / alpha, x)])
    em1 = b.op("Mul", [b.op("Sub", [b.op("Exp", [neg]), scalar(1.0, x)]), scalar(alpha, x)])
    return [b.op("Add", [b.op("Maximum", [x, scalar(0.0, x)]), em1], name=out(n))]


def _hard_sigmoid(b: Builder, x: Val, alpha: float, beta: float, name: str | None) -> Val:
    lin = b.op("Add", [b.op("Mul", [x, scalar(alpha, x)]), scalar(beta, x)])
    return b.op("Maximum", [b.op("Minimum", [lin, scalar(1.0, x)]), scalar(0.0, x)], name=name)


@converter("HardSigmoid")
def _hard_sigmoid_op(b: Builder, n: Node) -> list:
    return [_hard_sigmoid(b, n.inputs[0], float(n.attr("alpha", 0.2)), float(n.attr("beta", 0.5)), out(n))]


@converter("HardSwish")
def _hard_swish(b: Builder, n: Node) -> list:
    x = n.inputs[0]
    return [b.op("Mul", [x, _hard_sigmoid(b, x, 1 / 6, 0.5, None)], name=out(n))]


@converter("Mish")
def _mish(b: Builder, n: Node) -> list:
    x = n.inputs[0]
    return [b.op("Mul", [x, b.op("Tanh", [b.op("Softplus", [x])])], name=out(n))]


@converter("Softsign")
def _softsign(b: Builder, n: Node) -> list:
    x = n.inputs[0]
    return [b.op("Div", [x, b.op("Add", [b.op("Abs", [x]), scalar(1.0, x)])], name=out(n))]


@converter("PRelu")
def _prelu(b: Builder, n: Node) -> list:
    x, slope = n.inputs[0], n.inputs[1]
    neg = b.op("Less", [x, scalar(0.0, x)])
    return [b.op("Select", [neg, b.op("Mul", [x, slope]), x], name=out(n))]


@converter("Trilu")
def _trilu(b: Builder, n: Node) -> list:
    # x times a constant 0/1 mask of its last two (static) dimensions
    x = n.inputs[0]
    k = int(np.asarray(static(n, 1, "k")).reshape(-1)[0]) if n.input(1) is not None else 0
    rows, cols = need_static(n, x)[-2:] if x.rank and x.rank >= 2 else need_static(n, x)
    room(n, (rows, cols), "its mask")
    ones = np.ones((rows, cols), x.dtype)
    mask = np.triu(ones, k) if n.attr("upper", 1) else np.tril(ones, k)
    return [b.op("Mul", [x, constant(mask)], name=out(n))]


@converter("Clip")
def _clip(b: Builder, n: Node) -> list:
    x = n.inputs[0]
    lo, hi = n.input(1), n.input(2)
    if "min" in n.attrs or "max" in n.attrs:  # opset < 11 spelling
        lo = constant(np.asarray(n.attr("min", -np.inf), x.dtype)) if "min" in n.attrs else None
        hi = constant(np.asarray(n.attr("max", np.inf), x.dtype)) if "max" in n.attrs else None
    y = x
    if lo is not None:
        y = b.op("Maximum", [y, lo], name=None if hi is not None else out(n))
    if hi is not None:
        y = b.op("Minimum", [y, hi], name=out(n))
    return [y]


@converter("Softmax", "LogSoftmax")
def _softmax(b: Builder, n: Node) -> list:
    x = n.inputs[0]
    if n.opset >= 13:
        return [b.op(n.op_type, [x], {"axis": int(n.attr("axis", -1))}, name=out(n))]
    # before opset 13: the input is seen as 2-D, [prod(shape[:axis]), prod(shape[axis:])], and
    # normalized over its second axis: over all the axes from `axis` on
    r = need_rank(n, x)
    axes = list(range(axis_of(int(n.attr("axis", 1)), r), r))
    if len(axes) == 1 or n.op_type == "Softmax":
        return [b.op(n.op_type, [x], {"axis": axes[0] if len(axes) == 1 else axes}, name=out(n))]
    lse = b.op("LogSumExp", [x], {"axis": axes, "keep_dims": True})
    return [b.op("Sub", [x, lse], name=out(n))]


@converter("Cast")
def _cast(b: Builder, n: Node) -> list:
    from ..dtypes import dtype_name
    from .importer import _np_dtype

    target = _np_dtype(n.attr("to"))
    x = n.inputs[0]
    if x.dtype == target:
        return [x]
    return [b.op("Cast", [x], {"dtype": dtype_name(target)}, name=out(n))]


@converter("CastLike")
def _cast_like(b: Builder, n: Node) -> list:
    from ..dtypes import dtype_name

    x, like = n.inputs[0], n.inputs[1]
    if x.dtype == like.dtype:
        return [x]
    return [b.op("Cast", [x], {"dtype": dtype_name(like.dtype)}, name=out(n))]


@converter("Where")
def _where(b: Builder, n: Node) -> list:
    return [b.op("Select", list(n.inputs[:3]), name=out(n))]


# -- constants and shapes ----------------------------------------------------------------------------


@converter("Constant")
def _constant(b: Builder, n: Node) -> list:
    return [constant(_constant_value(n))]


def _constant_value(n: Node) -> np.ndarray:
    a = n.attrs
    if "value" in a:
        return a["value"]
    if "value_float" in a:
        return np.asarray(a["value_float"], np.float32)
    if "value_floats" in a:
        return np.asarray(a["value_floats"], np.float32)
    if "value_int" in a:
        return np.asarray(a["value_int"], np.int64)
    if "value_ints" in a:
        return np.asarray(a["value_ints"], np.int64)
    raise n.unsupported(f"Constant with {sorted(a)}: only value, value_float(s) and value_int(s) are read")


@converter("ConstantOfShape")
def _constant_of_shape(b: Builder, n: Node) -> list:
    shape = _shape_entries(n, 0, "shape")
    value = n.attr("value")
    value = np.zeros(1, np.float32) if value is None else value
    free = [isinstance(d, str) for d in shape]
    room(n, [1 if f else d for d, f in zip(shape, free)], "the constant")
    v = constant(np.full([1 if f else d for d, f in zip(shape, free)], value.reshape(-1)[0], value.dtype))
    v.broadcast = any(free)
    return [v]


@converter("Shape", "Size")
def _shape(b: Builder, n: Node) -> list:
    x = n.inputs[0]
    if x.rank is None or (n.op_type == "Size" and not x.static):
        raise n.unsupported("the shape of its input is unknown")
    dims = list(x.shape)
    if n.op_type == "Size":
        return [constant(np.asarray(math.prod(dims), np.int64))]
    r = len(dims)
    start, end = n.attr("start", 0), n.attr("end", r)
    start, end = max(0, min(r, axis_of(start, r))), max(0, min(r, axis_of(end, r)))
    picked = dims[start:end]
    if all(d is not None for d in picked):
        return [constant(np.asarray(picked, np.int64))]
    # free dimensions: a symbolic shape, which Reshape and Expand can still read
    symbols = x.symbols or (None,) * r
    entries = [d if d is not None else (symbols[start + i] or f"?{n.input_names[0]}[{start + i}]")
               for i, d in enumerate(picked)]
    return [symbolic(np.asarray(entries, dtype=object))]


def symbolic(value: np.ndarray) -> Val:
    """A folded shape value: a constant when every entry is known, else a symbolic one."""
    value = np.asarray(value)
    if value.dtype.kind in "US":  # np.take of an object array hands back a bare str
        value = value.astype(object)
    if value.dtype != object:
        return constant(value)
    if all(isinstance(e, (int, np.integer)) for e in value.reshape(-1)):
        return constant(value.astype(np.int64))
    return Val(None, tuple(value.shape), np.dtype(np.int64), sym=value)


def _shape_entries(n: Node, i: int, what: str) -> list:
    """A shape input's entries: ints, and a symbol (str) for each free dimension."""
    v = n.input(i)
    if v is not None and v.sym is not None:
        return [e if isinstance(e, str) else int(e) for e in v.sym.reshape(-1)]
    return ints(static(n, i, what))


@converter("Reshape")
def _reshape(b: Builder, n: Node) -> list:
    x = n.inputs[0]
    shape = _shape_entries(n, 1, "shape")
    allowzero = n.attr("allowzero", 0)
    target: list[int | None] = []
    for i, d in enumerate(shape):
        if isinstance(d, str):
            target.append(None)  # a free dimension: inferred (-1) below
        elif d == 0 and not allowzero:
            if x.rank is None or i >= x.rank:
                raise n.unsupported("a 0 in shape copies an input dimension, but the input's rank is unknown")
            target.append(x.shape[i])
        else:
            target.append(d)
    if x.static and None not in target:
        size = math.prod(x.shape)
        known = math.prod(d for d in target if d != -1)
        final = [size // known if d == -1 and known else d for d in target]
    else:
        unknown = [i for i, d in enumerate(target) if d is None or d == -1]
        if len(unknown) > 1:
            raise n.unsupported(f"the target shape {shape} leaves {len(unknown)} dimensions to infer from a "
                                "tensor with free dimensions; gradnet's Reshape infers one (-1)")
        final = [-1 if d is None else d for d in target]
    y = b.op("Reshape", [x], {"shape": final}, name=out(n))
    if y.shape is None or len(y.shape) != len(final):  # the free entry is the one left to infer
        y.shape = tuple(None if d == -1 else d for d in final)
        free = [shape[i] for i, d in enumerate(final) if d == -1]
        y.symbols = tuple((free[0] if free and isinstance(free[0], str) and not free[0].startswith("?") else None)
                          if d == -1 else None for d in final)
    return [y]


@converter("Flatten")
def _flatten(b: Builder, n: Node) -> list:
    x = n.inputs[0]
    r = need_rank(n, x)
    axis = axis_of(n.attr("axis", 1), r)
    head, tail = x.shape[:axis], x.shape[axis:]
    lead = None if any(d is None for d in head) else math.prod(head)
    rest = None if any(d is None for d in tail) else math.prod(tail)
    if lead is None and rest is None:
        raise n.unsupported("both sides of the flattening axis have free dimensions")
    return [b.op("Reshape", [x], {"shape": [-1 if lead is None else lead, -1 if rest is None else rest]}, name=out(n))]


@converter("Transpose")
def _transpose(b: Builder, n: Node) -> list:
    x = n.inputs[0]
    perm = n.attr("perm")
    if perm is None:
        perm = list(reversed(range(need_rank(n, x))))
    return [b.op("Transpose", [x], {"input_perm": [int(p) for p in perm]}, name=out(n))]


def _axes(n: Node, index: int, required: bool = False) -> list[int] | None:
    if "axes" in n.attrs:
        return [int(a) for a in n.attrs["axes"]]
    if n.input(index) is not None:
        return ints(static(n, index, "axes"))
    if required:
        raise n.unsupported("it has no axes")
    return None


@converter("Squeeze")
def _squeeze(b: Builder, n: Node) -> list:
    axes = _axes(n, 1)
    return [b.op("Squeeze", [n.inputs[0]], {"axis": [] if axes is None else axes}, name=out(n))]


@converter("Unsqueeze")
def _unsqueeze(b: Builder, n: Node) -> list:
    x = n.inputs[0]
    axes = _axes(n, 1, required=True)
    r = need_rank(n, x) + len(axes)
    axes = sorted(axis_of(a, r) for a in axes)
    for k, a in enumerate(axes):
        x = b.op("ExpandDims", [x], {"axis": a}, name=out(n) if k == len(axes) - 1 else None)
    return [x]


@converter("Concat")
def _concat(b: Builder, n: Node) -> list:
    xs = [v for v in n.inputs if v is not None and (v.shape is None or 0 not in v.shape or len(n.inputs) == 1)]
    xs = xs or [n.inputs[0]]
    return [b.op("Concat", xs, {"axis": int(n.attr("axis"))}, name=out(n))]


@converter("Split")
def _split(b: Builder, n: Node) -> list:
    x = n.inputs[0]
    r = need_rank(n, x)
    axis = axis_of(n.attr("axis", 0), r)
    count = len(n.outputs)
    sizes = n.attr("split")
    if sizes is None and n.input(1) is not None:
        sizes = ints(static(n, 1, "split"))
    dim = x.shape[axis]
    if sizes is None:
        count = n.attr("num_outputs", count)
        if dim is not None and dim % count:  # opset 18: the last part is smaller
            step = -(-dim // count)
            sizes = [step] * (dim // step) + ([dim % step] if dim % step else [])
    if sizes is None or len(set(sizes)) == 1 and len(sizes) == count:
        if count == 1:
            return [x]
        parts = b.op("Split", [x], {"axis": axis, "output_num": count})
        return list(parts)
    if dim is None:
        raise n.unsupported("unequal parts of an axis of free size")
    results, start = [], 0
    for k, size in enumerate(sizes):
        begin = [0] * r
        size_list = [-1] * r
        begin[axis], size_list[axis] = start, int(size)
        results.append(b.op("Slice", [x], {"begin": begin, "size": size_list}, name=n.outputs[k] or None))
        start += int(size)
    return results


@converter("Slice")
def _slice(b: Builder, n: Node) -> list:
    x = n.inputs[0]
    r = need_rank(n, x)
    starts = ints(static(n, 1, "starts"))
    ends = ints(static(n, 2, "ends"))
    axes = ints(static(n, 3, "axes")) if n.input(3) is not None else list(range(len(starts)))
    steps = ints(static(n, 4, "steps")) if n.input(4) is not None else [1] * len(starts)
    begin, end, strides = [0] * r, [0] * r, [1] * r
    begin_mask = end_mask = (1 << r) - 1  # whole axes unless sliced
    limit = 2**62
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = axis_of(a, r)
        begin[a], end[a], strides[a] = max(-limit, min(limit, s)), max(-limit, min(limit, e)), st
        begin_mask &= ~(1 << a)
        end_mask &= ~(1 << a)
        if st < 0 and e < -limit:  # ONNX: INT64_MIN with a negative step runs through index 0
            end_mask |= 1 << a
    attrs = {"begin": begin, "end": end, "strides": strides, "begin_mask": begin_mask, "end_mask": end_mask}
    return [b.op("StridedSlice", [x], attrs, name=out(n))]


@converter("Gather")
def _gather(b: Builder, n: Node) -> list:
    data, idx = n.inputs[0], n.inputs[1]
    r = need_rank(n, data)
    axis = axis_of(n.attr("axis", 0), r)
    if idx.const is not None and data.shape is not None and data.shape[axis] is not None:
        wrapped = np.where(idx.const < 0, idx.const + data.shape[axis], idx.const)
        idx = constant(wrapped.astype(idx.const.dtype))
    return [b.op("Gather", [data, idx], {"axis": axis}, name=out(n))]


@converter("Expand")
def _expand(b: Builder, n: Node) -> list:
    x = n.inputs[0]
    shape = _shape_entries(n, 1, "shape")
    r = max(need_rank(n, x), len(shape))
    xs = [1] * (r - x.rank) + list(x.shape)
    xsyms = [None] * (r - x.rank) + list(x.symbols or (None,) * x.rank)
    ts = [1] * (r - len(shape)) + shape
    target = []
    placeholder = False
    for i, (a, t) in enumerate(zip(xs, ts)):
        if isinstance(t, str):
            if a is None and xsyms[i] == t and i >= r - x.rank:
                target.append(-1)  # the input's own free dimension
            elif a == 1:
                target.append(1)  # size 1, to be broadcast along the free dimension by what it meets
                placeholder = True
            else:
                raise n.unsupported(f"it expands axis {i} to the free dimension '{t}'")
        elif t == 1:
            target.append(-1 if a is None and i >= r - x.rank else (a if a is not None else 1))
        else:
            target.append(t)
    if placeholder:
        full = [1 if d == -1 else d for d in target]
        if x.const is not None and x.foldable:
            room(n, full, "the expanded constant")
            v = constant(np.broadcast_to(x.const.reshape([1] * (r - x.rank) + list(x.const.shape)), full).copy())
        else:
            v = b.op("BroadcastTo", [x], {"shape": full}, name=out(n), broadcast_ok=x.broadcast)
        v.broadcast = True
        return [v]
    if target == xs and r == x.rank:
        return [x]
    return [b.op("BroadcastTo", [x], {"shape": target}, name=out(n))]


@converter("Tile")
def _tile(b: Builder, n: Node) -> list:
    return [b.op("Tile", [n.inputs[0]], {"multiples": ints(static(n, 1, "repeats"))}, name=out(n))]


@converter("Pad")
def _pad(b: Builder, n: Node) -> list:
    x = n.inputs[0]
    r = need_rank(n, x)
    mode = n.attr("mode", "constant")
    if mode != "constant":
        raise n.unsupported(f"mode '{mode}' (only 'constant')")
    pads = ints(static(n, 1, "pads")) if "pads" not in n.attrs else [int(p) for p in n.attrs["pads"]]
    value = 0.0
    if n.input(2) is not None:
        value = float(np.asarray(static(n, 2, "constant_value")).reshape(-1)[0])
    axes = ints(static(n, 3, "axes")) if n.input(3) is not None else list(range(r))
    pairs = [0] * (2 * r)
    k = len(axes)
    for j, a in enumerate(axes):
        a = axis_of(a, r)
        pairs[2 * a], pairs[2 * a + 1] = pads[j], pads[j + k]
    return [b.op("Pad", [x], {"paddings": pairs, "value": value}, name=out(n))]


@converter("Resize", "Upsample")
def _resize(b: Builder, n: Node) -> list:
    """Nearest-neighbour upsampling by integer factors: each element repeated, which is what
    nearest mode gives for an integer scale whichever coordinate mode (asymmetric + floor,
    half_pixel + round_prefer_floor, ...) except align_corners."""
    x = n.inputs[0]
    r = need_rank(n, x)
    mode = n.attr("mode", "nearest")
    if mode != "nearest":
        raise n.unsupported(f"mode '{mode}' (only 'nearest' with integer scales)")
    if n.attr("coordinate_transformation_mode", "half_pixel") in ("align_corners", "tf_crop_and_resize"):
        raise n.unsupported(f"coordinate_transformation_mode '{n.attr('coordinate_transformation_mode')}'")
    if n.attr("axes") is not None or n.attr("antialias", 0):
        raise n.unsupported("axes or antialias")
    if n.op_type == "Upsample":
        scales = [float(v) for v in np.asarray(static(n, 1, "scales")).reshape(-1)]
    else:
        sizes_in = n.input(3)
        scales_in = n.input(2)
        if scales_in is not None and scales_in.const is not None and scales_in.const.size:
            scales = [float(v) for v in scales_in.const.reshape(-1)]
        elif sizes_in is not None:
            sizes = ints(static(n, 3, "sizes"))
            dims = need_static(n, x)
            scales = [o / i for o, i in zip(sizes, dims)]
        else:
            raise n.unsupported("it has neither constant scales nor constant sizes")
    if len(scales) != r or any(s < 1 or s != int(s) for s in scales):
        raise n.unsupported(f"scales {scales} (only integer factors >= 1, one per axis)")
    factors = [int(s) for s in scales]
    if all(f == 1 for f in factors):
        return [x]
    if any(d is None for d, f in zip(x.shape, factors) if f != 1):
        raise n.unsupported("an upsampled axis has a free size")
    # [.., d, ..] -> [.., d, 1, ..] -> broadcast [.., d, f, ..] -> [.., d * f, ..]
    expanded, target, final = [], [], []
    for d, f in zip(x.shape, factors):
        expanded += [-1 if d is None else d, 1]
        target += [-1 if d is None else d, f]
        final.append(-1 if d is None else d * f)
    y = b.op("Reshape", [x], {"shape": expanded})
    y = b.op("BroadcastTo", [y], {"shape": target})
    return [b.op("Reshape", [y], {"shape": final}, name=out(n))]


# -- linear algebra and reductions ---------------------------------------------------------------------


@converter("MatMul")
def _matmul(b: Builder, n: Node) -> list:
    x, y = n.inputs[0], n.inputs[1]
    op = "MatMul" if x.rank == 2 and y.rank == 2 else "BatchMatMul"
    return [b.op(op, [x, y], name=out(n))]


@converter("Gemm")
def _gemm(b: Builder, n: Node) -> list:
    a, w, c = n.inputs[0], n.inputs[1], n.input(2)
    alpha, beta = float(n.attr("alpha", 1.0)), float(n.attr("beta", 1.0))
    attrs = {"transpose_a": bool(n.attr("transA", 0)), "transpose_b": bool(n.attr("transB", 0))}
    last = c is None and alpha == 1.0
    y = b.op("MatMul", [a, w], attrs, name=out(n) if last else None)
    if alpha != 1.0:
        y = b.op("Mul", [y, scalar(alpha, y)], name=out(n) if c is None else None)
    if c is not None:
        if beta != 1.0:
            c = b.op("Mul", [c, scalar(beta, c)])
        y = b.op("Add", [y, c], name=out(n))
    return [y]


@converter("Einsum")
def _einsum(b: Builder, n: Node) -> list:
    return [b.op("Einsum", list(n.inputs), {"equation": n.attr("equation")}, name=out(n))]


REDUCE = {"ReduceMean": "ReduceMean", "ReduceSum": "ReduceSum", "ReduceMax": "ReduceMax",
          "ReduceMin": "ReduceMin", "ReduceProd": "ReduceProd", "ReduceLogSumExp": "LogSumExp"}


@converter(*REDUCE, "ReduceL2", "ReduceSumSquare")
def _reduce(b: Builder, n: Node) -> list:
    x = n.inputs[0]
    axes = _axes(n, 1)
    keep = bool(n.attr("keepdims", 1))
    if not axes:
        if n.attr("noop_with_empty_axes", 0):
            return [x]
        axes = []
    attrs = {"axis": axes, "keep_dims": keep}
    if n.op_type in ("ReduceL2", "ReduceSumSquare"):
        s = b.op("ReduceSum", [b.op("Square", [x])], attrs, name=out(n) if n.op_type == "ReduceSumSquare" else None)
        return [s if n.op_type == "ReduceSumSquare" else b.op("Sqrt", [s], name=out(n))]
    return [b.op(REDUCE[n.op_type], [x], attrs, name=out(n))]


# -- neural-network ops -------------------------------------------------------------------------------


def _spatial_attrs(n: Node, rank: int, kernel: list[int]) -> tuple[list[int], list[int], list[int]]:
    k = len(kernel)
    strides = [int(s) for s in n.attr("strides", [1] * k)]
    dilations = [int(d) for d in n.attr("dilations", [1] * k)]
    pads = [int(p) for p in n.attr("pads", [0] * (2 * k))]
    return strides, dilations, pads


def _auto_pads(n: Node, x: Val, kernel, strides, dilations) -> list[int] | None:
    """Explicit pads for auto_pad SAME_UPPER / SAME_LOWER (needs static spatial sizes)."""
    mode = n.attr("auto_pad", "NOTSET")
    if mode in ("NOTSET", "VALID"):
        return None
    spatial = need_static(n, x)[2:]
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        out_size = -(-size // s)
        total = max(0, (out_size - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else large)
        end.append(large if mode == "SAME_UPPER" else small)
    return begin + end


def _to_2d(b: Builder, n: Node, x: Val, what: str) -> tuple[Val, bool]:
    """A rank-3 (1-D spatial) tensor gains a height of 1; rank 4 stays; others are refused."""
    r = need_rank(n, x, what)
    if r == 4:
        return x, False
    if r == 3:
        return b.op("ExpandDims", [x], {"axis": 2}), True
    raise n.unsupported(f"{what} has rank {r}: only 1-D and 2-D {n.op_type} (rank 3 and 4) are converted")


@converter("Conv")
def _conv(b: Builder, n: Node) -> list:
    x, w, bias = n.inputs[0], n.inputs[1], n.input(2)
    wshape = need_static(n, w, "its weight")
    kernel = [int(k) for k in n.attr("kernel_shape", wshape[2:])]
    strides, dilations, pads = _spatial_attrs(n, len(wshape), kernel)
    pads = _auto_pads(n, x, kernel, strides, dilations) or pads
    x2, one_d = _to_2d(b, n, x, "its input")
    if one_d:
        w = b.op("ExpandDims", [w], {"axis": 2})
        kernel, strides, dilations = [1] + kernel, [1] + strides, [1] + dilations
        pads = [0, pads[0], 0, pads[1]]
    top, left, bottom, right = pads
    explicit = any(pads)
    attrs = {
        "out_channel": int(wshape[0]), "kernel_size": kernel, "stride": strides, "dilation": dilations,
        "group": int(n.attr("group", 1)), "pad_mode": "pad" if explicit else "valid",
        "pad": [top, bottom, left, right] if explicit else 0,
    }
    last = bias is None and not one_d
    y = b.op("Conv2D", [x2, w], attrs, name=out(n) if last else None)
    if bias is not None:
        y = b.op("BiasAdd", [y, bias], name=None if one_d else out(n))
    if one_d:
        y = b.op("Squeeze", [y], {"axis": [2]}, name=out(n))
    return [y]


@converter("ConvTranspose")
def _conv_transpose(b: Builder, n: Node) -> list:
    x, w, bias = n.inputs[0], n.inputs[1], n.input(2)
    wshape = need_static(n, w, "its weight")
    group = int(n.attr("group", 1))
    kernel = [int(k) for k in n.attr("kernel_shape", wshape[2:])]
    strides, dilations, pads = _spatial_attrs(n, len(wshape), kernel)
    k = len(kernel)
    output_padding = [int(p) for p in n.attr("output_padding", [0] * k)]
    if n.attr("output_shape") is not None or n.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        spatial = need_static(n, x)[2:]
        want = n.attr("output_shape")
        want = [int(v) for v in want][-k:] if want is not None else [s * st for s, st in zip(spatial, strides)]
        # the spec: SAME_UPPER puts the smaller half first; SAME_LOWER and an output_shape
        # without auto_pad put it last
        lower = n.attr("auto_pad", "NOTSET") != "SAME_UPPER"
        begin, end = [], []
        for size, kk, s, d, op_, o in zip(spatial, kernel, strides, dilations, output_padding, want):
            total = s * (size - 1) + op_ + (kk - 1) * d + 1 - o
            small, large = total // 2, total - total // 2
            begin.append(large if lower else small)
            end.append(small if lower else large)
        pads = begin + end
    x2, one_d = _to_2d(b, n, x, "its input")
    if one_d:
        w = b.op("ExpandDims", [w], {"axis": 2})
        kernel, strides, dilations = [1] + kernel, [1] + strides, [1] + dilations
        output_padding = [0] + output_padding
        pads = [0, pads[0], 0, pads[1]]
    top, left, bottom, right = pads
    attrs = {
        "out_channel": int(wshape[1]) * group, "kernel_size": kernel, "stride": strides, "dilation": dilations,
        "group": group, "pad_mode": "pad" if any(pads) else "valid", "pad": [top, bottom, left, right] if any(pads) else 0,
        "output_padding": output_padding,
    }
    y = b.op("Conv2DTranspose", [x2, w], attrs, name=out(n) if bias is None and not one_d else None)
    if bias is not None:
        y = b.op("BiasAdd", [y, bias], name=None if one_d else out(n))
    if one_d:
        y = b.op("Squeeze", [y], {"axis": [2]}, name=out(n))
    return [y]


def _pool_geometry(n: Node, x: Val, kernel: list[int]):
    strides, dilations, pads = _spatial_attrs(n, 4, kernel)
    if any(d != 1 for d in dilations):
        raise n.unsupported(f"dilations {dilations} (only 1)")
    mode = n.attr("auto_pad", "NOTSET")
    ceil = bool(n.attr("ceil_mode", 0))
    if mode == "VALID":
        pads = [0] * (2 * len(kernel))
    elif mode in ("SAME_UPPER", "SAME_LOWER"):
        pads = _auto_pads(n, x, kernel, strides, dilations)
    if ceil:
        spatial = need_static(n, x)[2:]
        k = len(kernel)
        for i, (size, kk, s) in enumerate(zip(spatial, kernel, strides)):
            padded = size + pads[i] + pads[i + k]
            out_size = -(-(padded - kk) // s) + 1
            if (out_size - 1) * s >= size + pads[i]:  # the last window must start inside the input
                out_size -= 1
            pads[i + k] += max(0, (out_size - 1) * s + kk - padded)
    return strides, pads


@converter("MaxPool", "AveragePool")
def _pool(b: Builder, n: Node) -> list:
    x = n.inputs[0]
    if len(n.outputs) > 1 and n.outputs[1]:
        raise n.unsupported("its Indices output")
    x2, one_d = _to_2d(b, n, x, "its input")
    kernel = [int(k) for k in n.attr("kernel_shape")]
    strides, pads = _pool_geometry(n, x, kernel)
    if one_d:
        kernel, strides, pads = [1] + kernel, [1] + strides, [0, pads[0], 0, pads[1]]
    top, left, bottom, right = pads
    attrs = {"kernel_size": kernel, "strides": strides, "pad_mode": "valid"}
    final = None if one_d else out(n)
    if n.op_type == "MaxPool":
        if any(pads):
            lowest = float(np.finfo(x.dtype).min) if np.issubdtype(x.dtype, np.floating) else -2.0**63
            x2 = b.op("Pad", [x2], {"paddings": [0, 0, 0, 0, top, bottom, left, right], "value": lowest})
        y = b.op("MaxPool", [x2], attrs, name=final)
    else:
        include = bool(n.attr("count_include_pad", 0))
        if any(pads):
            h, w_ = need_static(n, x2, "its input")[2:]
            x2 = b.op("Pad", [x2], {"paddings": [0, 0, 0, 0, top, bottom, left, right], "value": 0.0})
            y = b.op("AvgPool", [x2], attrs)
            # AvgPool over the padded input divides by the window; ONNX divides by the count of
            # real elements (count_include_pad=0) or of elements inside the explicit pads (=1).
            ceil_extra = [0, 0]
            if n.attr("ceil_mode", 0):
                base = [int(p) for p in n.attr("pads", [0, 0, 0, 0])] if n.attr("auto_pad", "NOTSET") == "NOTSET" else None
                if base is not None and not one_d:
                    ceil_extra = [bottom - base[2], right - base[3]]
            room(n, (h, w_), "its divisor")
            counts = _pool_counts((h, w_), kernel, strides, (top, bottom, left, right), include, ceil_extra)
            factor = (kernel[0] * kernel[1]) / counts
            y = b.op("Mul", [y, constant(factor.astype(x.dtype))], name=final)
        else:
            y = b.op("AvgPool", [x2], attrs, name=final)
    if one_d:
        y = b.op("Squeeze", [y], {"axis": [2]}, name=out(n))
    return [y]


def _pool_counts(spatial, kernel, strides, pads, include, ceil_extra) -> np.ndarray:
    (h, w), (kh, kw), (sh, sw) = spatial, kernel, strides
    top, bottom, left, right = pads
    rows, cols = [], []
    for size, k, s, lo, hi, extra, acc in ((h, kh, sh, top, bottom, ceil_extra[0], rows),
                                           (w, kw, sw, left, right, ceil_extra[1], cols)):
        n_out = (size + lo + hi - k) // s + 1
        for i in range(n_out):
            start = i * s - lo
            stop = start + k
            if include:  # inside the explicit padding, not the ceil_mode extra
                acc.append(min(stop, size + hi - extra) - max(start, -lo))
            else:
                acc.append(min(stop, size) - max(start, 0))
    return np.outer(np.asarray(rows, np.float64), np.asarray(cols, np.float64)).reshape(1, 1, len(rows), len(cols))


@converter("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(b: Builder, n: Node) -> list:
    x = n.inputs[0]
    r = need_rank(n, x)
    op = "ReduceMean" if n.op_type == "GlobalAveragePool" else "ReduceMax"
    return [b.op(op, [x], {"axis": list(range(2, r)), "keep_dims": True}, name=out(n))]


@converter("BatchNormalization")
def _batch_norm(b: Builder, n: Node) -> list:
    if n.attr("training_mode", 0):
        raise n.unsupported("training_mode=1 (only inference statistics are converted)")
    x, scale, bias, mean, var = n.inputs[:5]
    eps = float(n.attr("epsilon", 1e-5))
    y = b.op("BatchNorm", [x, scale, bias, mean, var], {"epsilon": eps}, name=out(n))
    return [y[0]]


@converter("LayerNormalization")
def _layer_norm(b: Builder, n: Node) -> list:
    x, scale, bias = n.inputs[0], n.inputs[1], n.input(2)
    r = need_rank(n, x)
    axis = axis_of(n.attr("axis", -1), r)
    eps = float(n.attr("epsilon", 1e-5))
    want = x.shape[axis:]
    if any(d is None for d in want):
        raise n.unsupported("the normalized axes have free dimensions")
    if tuple(scale.shape) != tuple(want):
        scale = b.op("BroadcastTo", [scale], {"shape": list(want)})
    if bias is None:
        room(n, want, "its zero bias")
        bias = constant(np.zeros(want, x.dtype))
    elif tuple(bias.shape) != tuple(want):
        bias = b.op("BroadcastTo", [bias], {"shape": list(want)})
    y, mean, var = b.op("LayerNorm", [x, scale, bias],
                        {"begin_norm_axis": axis, "begin_params_axis": axis, "epsilon": eps})
    results = [y]
    if len(n.outputs) > 1 and n.outputs[1]:
        results.append(mean)
    if len(n.outputs) > 2 and n.outputs[2]:
        results.append(b.op("Rsqrt", [b.op("Add", [var, scalar(eps, var)])], name=n.outputs[2]))
    return results


@converter("InstanceNormalization")
def _instance_norm(b: Builder, n: Node) -> list:
    x, scale, bias = n.inputs[:3]
    r = need_rank(n, x)
    eps = float(n.attr("epsilon", 1e-5))
    axes = list(range(2, r))
    mean = b.op("ReduceMean", [x], {"axis": axes, "keep_dims": True})
    d = b.op("Sub", [x, mean])
    var = b.op("ReduceMean", [b.op("Mul", [d, d])], {"axis": axes, "keep_dims": True})
    normed = b.op("Mul", [d, b.op("Rsqrt", [b.op("Add", [var, scalar(eps, var)])])])
    per_channel = [-1] + [1] * (r - 2)
    s = b.op("Reshape", [scale], {"shape": per_channel})
    c = b.op("Reshape", [bias], {"shape": per_channel})
    return [b.op("Add", [b.op("Mul", [normed, s]), c], name=out(n))]


@converter("GroupNormalization")
def _group_norm(b: Builder, n: Node) -> list:
    """Normalize each group of channels over (its channels, the spatial axes), then scale and
    shift per channel (opset 21; the checker refuses opset 18's deprecated per-group form)."""
    x, scale, bias = n.inputs[:3]
    r = need_rank(n, x)
    groups = int(n.attr("num_groups"))
    eps = float(n.attr("epsilon", 1e-5))
    c = x.shape[1]
    if c is None or any(d is None for d in x.shape[2:]):
        raise n.unsupported("the channel and spatial sizes must be static")
    if c % groups:
        raise n.unsupported(f"num_groups {groups} does not divide the {c} channels")
    lead = -1 if x.shape[0] is None else x.shape[0]
    g = b.op("Reshape", [x], {"shape": [lead, groups, -1]})
    mean = b.op("ReduceMean", [g], {"axis": [2], "keep_dims": True})
    d = b.op("Sub", [g, mean])
    var = b.op("ReduceMean", [b.op("Mul", [d, d])], {"axis": [2], "keep_dims": True})
    normed = b.op("Mul", [d, b.op("Rsqrt", [b.op("Add", [var, scalar(eps, var)])])])
    normed = b.op("Reshape", [normed], {"shape": [lead] + list(x.shape[1:])})
    per_channel = [c] + [1] * (r - 2)

    def channels(v: Val) -> Val:
        return b.op("Reshape", [v], {"shape": per_channel})

    return [b.op("Add", [b.op("Mul", [normed, channels(scale)]), channels(bias)], name=out(n))]


# -- recurrent layers, unrolled over a static sequence length -----------------------------------------


def _rnn_common(n: Node, gates: int):
    if n.input(4) is not None:
        raise n.unsupported("sequence_lens (variable-length sequences); leave the input empty")
    if n.attr("clip") is not None:
        raise n.unsupported("clip")
    if n.attr("activations") is not None:
        default = ["sigmoid", "tanh", "tanh"] if gates == 4 else ["sigmoid", "tanh"]
        acts = [a.lower() for a in n.attr("activations")]
        if acts != default * (len(acts) // len(default)) or len(acts) % len(default):
            raise n.unsupported(f"activations {n.attr('activations')} (only the defaults)")
    layout = int(n.attr("layout", 0))  # 1 (batch first): the caller transposes
    hidden = int(n.attr("hidden_size"))
    direction = n.attr("direction", "forward")
    dirs = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]
    return hidden, dirs, layout


def _rnn(b: Builder, n: Node, kind: str) -> list:
    gates = 4 if kind == "LSTM" else 3
    hidden, dirs, layout = _rnn_common(n, gates)
    x, w, r_, bias = n.inputs[0], n.inputs[1], n.inputs[2], n.input(3)
    if kind == "LSTM" and n.input(7) is not None:
        raise n.unsupported("peepholes (input P)")
    if kind == "LSTM" and n.attr("input_forget", 0):
        raise n.unsupported("input_forget=1")
    if layout:
        x = b.op("Transpose", [x], {"input_perm": [1, 0, 2]})
    if x.rank != 3 or x.shape[0] is None:
        raise n.unsupported("its input X needs a static sequence length (the steps are unrolled)")
    seq, batch = x.shape[0], x.shape[1] or 1  # a free batch: zero states of size 1 broadcast
    h0, c0 = n.input(5), n.input(6) if kind == "LSTM" else None
    if layout:
        h0 = None if h0 is None else b.op("Transpose", [h0], {"input_perm": [1, 0, 2]})
        c0 = None if c0 is None else b.op("Transpose", [c0], {"input_perm": [1, 0, 2]})
    room(n, (batch, hidden * gates), "its zero states")
    steps = b.op("Split", [x], {"axis": 0, "output_num": seq}) if seq > 1 else [x]
    steps = steps if isinstance(steps, list) else [steps]
    steps = [b.op("Squeeze", [s], {"axis": [0]}) for s in steps]
    ys, hs, cs = [], [], []
    for d, reverse in enumerate(dirs):
        def pick(v: Val | None, d: int = d) -> Val | None:
            if v is None:
                return None
            # an initial state may be a zeros constant of a free batch size (size 1 there): the
            # step's Add broadcasts it
            return b.op("Squeeze", [b.op("Slice", [v], {"begin": [d] + [0] * (v.rank - 1),
                                                       "size": [1] + [-1] * (v.rank - 1)}, broadcast_ok=True)],
                        {"axis": [0]})

        wd, rd = pick(w), pick(r_)  # [G*H, I], [G*H, H]
        bd = pick(bias)  # [2*G*H]
        if bd is not None:
            wb, rb = b.op("Split", [bd], {"axis": 0, "output_num": 2})
        else:
            wb = rb = constant(np.zeros(gates * hidden, x.dtype))
        h = pick(h0) if h0 is not None else constant(np.zeros((batch, hidden), x.dtype))
        c = (pick(c0) if c0 is not None else constant(np.zeros((batch, hidden), x.dtype))) if kind == "LSTM" else None
        if kind == "GRU":
            wz, wr, wh = b.op("Split", [wd], {"axis": 0, "output_num": 3})
            rz, rr, rh = b.op("Split", [rd], {"axis": 0, "output_num": 3})
            if bd is not None:
                wbz, wbr, wbh = b.op("Split", [wb], {"axis": 0, "output_num": 3})
                rbz, rbr, rbh = b.op("Split", [rb], {"axis": 0, "output_num": 3})
            else:
                wbz = wbr = wbh = rbz = rbr = rbh = constant(np.zeros(hidden, x.dtype))
        outs = []
        order = range(seq - 1, -1, -1) if reverse else range(seq)
        for t in order:
            xt = steps[t]
            if kind == "LSTM":
                g = b.op("Add", [b.op("MatMul", [xt, wd], {"transpose_b": True}),
                                 b.op("MatMul", [h, rd], {"transpose_b": True})])
                g = b.op("Add", [b.op("Add", [g, wb]), rb])
                i, o, f, cc = b.op("Split", [g], {"axis": 1, "output_num": 4})
                i, o, f = (b.op("Sigmoid", [v]) for v in (i, o, f))
                cc = b.op("Tanh", [cc])
                c = b.op("Add", [b.op("Mul", [f, c]), b.op("Mul", [i, cc])])
                h = b.op("Mul", [o, b.op("Tanh", [c])])
            else:
                def lin(a, wt, bb):
                    return b.op("Add", [b.op("MatMul", [a, wt], {"transpose_b": True}), bb])

                z = b.op("Sigmoid", [b.op("Add", [lin(xt, wz, wbz), lin(h, rz, rbz)])])
                rg = b.op("Sigmoid", [b.op("Add", [lin(xt, wr, wbr), lin(h, rr, rbr)])])
                if n.attr("linear_before_reset", 0):
                    hh = b.op("Add", [lin(xt, wh, wbh), b.op("Mul", [rg, lin(h, rh, rbh)])])
                else:
                    hh = b.op("Add", [lin(xt, wh, wbh), lin(b.op("Mul", [rg, h]), rh, rbh)])
                hh = b.op("Tanh", [hh])
                # (1 - z) * hh + z * h = hh + z * (h - hh)
                h = b.op("Add", [hh, b.op("Mul", [z, b.op("Sub", [h, hh])])])
            outs.append(h)
        if reverse:
            outs = outs[::-1]
        ys.append(b.op("Stack", outs, {"axis": 0}) if len(outs) > 1 else b.op("ExpandDims", [outs[0]], {"axis": 0}))
        hs.append(h)
        cs.append(c)

    def join(values, axis, name):
        values = [b.op("ExpandDims", [v], {"axis": axis}) for v in values]
        return values[0] if len(values) == 1 else b.op("Concat", values, {"axis": axis}, name=name)

    y = join(ys, 1, None)  # [seq, dirs, batch, H]
    yh = join(hs, 0, None)  # [dirs, batch, H]
    results = [y, yh]
    if kind == "LSTM":
        results.append(join(cs, 0, None))
    if layout:
        results[0] = b.op("Transpose", [results[0]], {"input_perm": [2, 0, 1, 3]})
        results[1:] = [b.op("Transpose", [v], {"input_perm": [1, 0, 2]}) for v in results[1:]]
    return results


@converter("LSTM")
def _lstm(b: Builder, n: Node) -> list:
    return _rnn(b, n, "LSTM")


@converter("GRU")
def _gru(b: Builder, n: Node) -> list:
    return _rnn(b, n, "GRU")


# -- folding: NumPy on constants -----------------------------------------------------------------------


def _np_binary(fn):
    def fold(n, x, y):
        room(n, np.broadcast_shapes(np.shape(x), np.shape(y)), "the folded value")
        return [np.asarray(fn(x, y))]

    return fold


def _trunc_div(x, y):
    if np.issubdtype(np.result_type(x, y), np.integer):
        return (np.trunc(x / y)).astype(np.result_type(x, y))
    return (x / y).astype(np.result_type(x, y))


for _name, _fn in {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": _trunc_div,
                   "Equal": np.equal, "Less": np.less, "Greater": np.greater, "And": np.logical_and,
                   "Or": np.logical_or, "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal,
                   "Mod": np.fmod}.items():
    FOLDERS[_name] = _np_binary(_fn)

for _name, _fn in {"Neg": np.negative, "Abs": np.abs, "Sqrt": np.sqrt, "Not": np.logical_not,
                   "Reciprocal": np.reciprocal, "Floor": np.floor, "Ceil": np.ceil, "Exp": np.exp,
                   "Log": np.log}.items():
    FOLDERS[_name] = (lambda fn: lambda n, x: [np.asarray(fn(x)).astype(x.dtype)])(_fn)


@folder("Pow")
def _fold_pow(n, x, y):
    return [np.power(x, y).astype(x.dtype)]


@folder("Trilu")
def _fold_trilu(n, x, k=None):
    k = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    return [np.triu(x, k) if n.attr("upper", 1) else np.tril(x, k)]


@folder("Identity")
def _fold_identity(n, x, *rest):
    return [x]


@folder("Cast")
def _fold_cast(n, x):
    from .importer import _np_dtype

    return [x.astype(_np_dtype(n.attr("to")))]


@folder("CastLike")
def _fold_cast_like(n, x, like):
    return [x.astype(like.dtype)]


@folder("Concat")
def _fold_concat(n, *xs):
    return [np.concatenate([x for x in xs if x is not None], axis=n.attr("axis"))]


@folder("Unsqueeze")
def _fold_unsqueeze(n, x, axes=None):
    axes = [int(a) for a in (n.attr("axes") if axes is None else axes.reshape(-1))]
    r = x.ndim + len(axes)
    return [np.expand_dims(x, tuple(sorted(axis_of(a, r) for a in axes)))]


@folder("Squeeze")
def _fold_squeeze(n, x, axes=None):
    axes = n.attr("axes") if axes is None else axes.reshape(-1)
    return [np.squeeze(x) if axes is None else np.squeeze(x, tuple(axis_of(int(a), x.ndim) for a in axes))]


@folder("Gather")
def _fold_gather(n, x, idx):
    return [np.take(x, idx, axis=n.attr("axis", 0))]


@folder("Slice")
def _fold_slice(n, x, starts, ends, axes=None, steps=None):
    index = [slice(None)] * x.ndim
    axes = range(len(starts)) if axes is None else axes.reshape(-1)
    steps = [1] * len(starts) if steps is None else steps.reshape(-1)
    for s, e, a, st in zip(starts.reshape(-1), ends.reshape(-1), axes, steps):
        e = None if (st < 0 and e < -x.shape[int(a)] - 1) else int(e)
        index[axis_of(int(a), x.ndim)] = slice(int(s), e, int(st))
    return [x[tuple(index)]]


@folder("Reshape")
def _fold_reshape(n, x, shape):
    shape = [x.shape[i] if d == 0 and not n.attr("allowzero", 0) else int(d) for i, d in enumerate(shape.reshape(-1))]
    return [x.reshape(shape)]


@folder("Transpose")
def _fold_transpose(n, x):
    return [np.transpose(x, n.attr("perm"))]


@folder("Expand")
def _fold_expand(n, x, shape):
    target = np.broadcast_shapes(x.shape, tuple(int(d) for d in shape.reshape(-1)))
    room(n, target, "the expanded constant")
    return [np.broadcast_to(x, target).copy()]


@folder("Where")
def _fold_where(n, c, x, y):
    room(n, np.broadcast_shapes(np.shape(c), np.shape(x), np.shape(y)), "the folded value")
    return [np.where(c, x, y)]


@folder("Range")
def _fold_range(n, start, limit, delta):
    if delta == 0:
        raise n.unsupported("Range with delta 0")
    room(n, [max(0, math.ceil((float(limit) - float(start)) / float(delta)))], "the range")
    return [np.arange(start, limit, delta, dtype=start.dtype)]


@folder("Max", "Min")
def _fold_max(n, *xs):
    fn = np.maximum if n.op_type == "Max" else np.minimum
    acc = xs[0]
    for x in xs[1:]:
        acc = fn(acc, x)
    return [acc]


@folder("ReduceProd", "ReduceSum", "ReduceMax", "ReduceMin")
def _fold_reduce(n, x, axes=None):
    fn = {"ReduceProd": np.prod, "ReduceSum": np.sum, "ReduceMax": np.max, "ReduceMin": np.min}[n.op_type]
    axes = n.attr("axes") if axes is None else [int(a) for a in axes.reshape(-1)]
    if not axes and n.attr("noop_with_empty_axes", 0):
        return [x]
    return [np.asarray(fn(x, axis=tuple(axes) if axes else None, keepdims=bool(n.attr("keepdims", 1)))).astype(x.dtype)]


@folder("ConstantOfShape")
def _fold_constant_of_shape(n, shape):
    value = n.attr("value")
    value = np.zeros(1, np.float32) if value is None else value
    room(n, [int(d) for d in shape.reshape(-1)], "the constant")
    return [np.full([int(d) for d in shape.reshape(-1)], value.reshape(-1)[0], value.dtype)]


@folder("Shape")
def _fold_shape(n, x):
    r = x.ndim
    start, end = n.attr("start", 0), n.attr("end", r)
    return [np.asarray(x.shape[max(0, min(r, axis_of(start, r))):max(0, min(r, axis_of(end, r)))], np.int64)]


SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(CONVERTERS))

#: ops computed only at import time, when every input is a constant (shape arithmetic)
CONSTANT_ONLY_OPS: tuple[str, ...] = tuple(sorted(set(FOLDERS) - set(CONVERTERS)))


def _constant_only(b: Builder, n: Node) -> list:
    raise n.unsupported(f"{n.op_type} is converted only when all its inputs are constants (shape arithmetic)")


for _name in CONSTANT_ONLY_OPS:
    CONVERTERS[_name] = _constant_only


# -- folding shapes with free dimensions: the same folders on object arrays ---------------------------


def _sym_arith(fn):
    def entry(a, c):
        if isinstance(a, str) or isinstance(c, str):
            return "?"
        return int(fn(int(a), int(c)))

    vec = np.frompyfunc(entry, 2, 1)

    def fold(n, x, y):
        return [np.asarray(vec(np.asarray(x, dtype=object), np.asarray(y, dtype=object)), dtype=object)]

    return fold


def _sym_cast(n, x, *rest):
    return [x]


SYM_FOLDERS: dict[str, Callable[..., list]] = {
    name: FOLDERS[name] for name in ("Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Identity", "Reshape")
}
SYM_FOLDERS.update({"Cast": _sym_cast, "CastLike": _sym_cast, "Add": _sym_arith(lambda a, c: a + c),
                    "Sub": _sym_arith(lambda a, c: a - c), "Mul": _sym_arith(lambda a, c: a * c),
                    "Div": _sym_arith(lambda a, c: math.trunc(a / c))})

#: folders that keep a free-dimension-shaped constant one (its size-1 free axes stay where they are)
BROADCAST_SAFE = frozenset({"Slice", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Cast", "CastLike"})
