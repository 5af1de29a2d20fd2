"""Deterministic generator of gradserve conformance cases.

Pure numpy + stdlib: this module never imports MindSpore, so the engine's tests and any tool can
read the cases.  ``tools/mindspore_oracle.py`` (run under /work/msvenv) executes every case with
MindSpore's ``ops.GradOperation`` and writes the expected results to ``tests/golden/mindspore/``.

Each case is a dict shaped like ``tests/fixtures/tutorial.json``'s cases::

    {"name": str,
     "request": {"network": <gradnet/1 dict>, "inputs": [<tensor>, ...],
                 "get_all": bool, "get_by_list": bool, "sens_param": bool,   (only when set)
                 "weights": [names], "sens": <tensor> | [<tensor>, ...],     (optional)
                 "parameters": {name: <tensor>}},                            (optional)
     "note": str,                                                            (optional)
     "api_md_zero_inputs": [i], "api_md_broadcast_inputs": [i]}              (optional, see below)

Where API.md overrides MindSpore the oracle records API.md's answer (``"expected_source"``):
integer and bool inputs always get zeros of their own dtype; ``api_md_zero_inputs`` lists float
inputs that get zeros too (their only path to the outputs is an integer Cast), and
``api_md_broadcast_inputs`` those whose MindSpore gradient has another shape than the input and
is broadcast to it (SparseSoftmaxCrossEntropyWithLogits with is_grad=True: MindSpore's bprop
returns the output's first row).

Tensors are ``{"dtype", "shape", "data"}`` with flat row-major data; floats are written as
``float(x)`` of the numpy value, so they round-trip exactly (float16/float32 values are exact
in a double).

Random data is drawn per case from ``np.random.default_rng([SEED, crc32(case name)])``, so adding
or removing a case does not change the others.  Data is chosen to be non-degenerate: no ties for
Maximum/Minimum/ReduceMax/MaxPool, nothing at the kinks of ReLU/ReLU6/Abs/Sign/Floor, positive
inputs for Log/Sqrt/Rsqrt/Reciprocal/Div/Pow.  The deliberate tie/kink cases live in the
``semantics`` group (they pin MindSpore's conventions there).

Usage::

    python tools/conformance_cases.py            # summary: cases per group and per op
    python tools/conformance_cases.py --dump DIR # write the raw cases (no expectations)
"""

from __future__ import annotations

import json
import sys
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

SEED = 20240611

# ---------------------------------------------------------------------------------------------
# tensors and random data


def tensor(a: Any, dtype: str | None = None) -> dict:
    """numpy array -> wire tensor dict (flat row-major data, repr-exact floats)."""
    arr = np.asarray(a, dtype=dtype) if dtype is not None else np.asarray(a)
    kind = arr.dtype.kind
    flat = arr.reshape(-1)
    if kind == "f":
        # non-finite floats as API.md section 1's strings, so every file stays strict JSON
        data = [float(v) if np.isfinite(v) else ("NaN" if np.isnan(v) else ("Infinity" if v > 0 else "-Infinity"))
                for v in flat]
    elif kind in "iu":
        data = [int(v) for v in flat]
    elif kind == "b":
        data = [bool(v) for v in flat]
    else:  # pragma: no cover - generator bug
        raise TypeError(f"unsupported dtype {arr.dtype}")
    return {"dtype": str(arr.dtype), "shape": [int(s) for s in arr.shape], "data": data}


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng([SEED, zlib.crc32(name.encode("utf-8"))])


def uni(rng, shape, lo=-2.0, hi=2.0, dtype="float32") -> np.ndarray:
    return rng.uniform(lo, hi, size=shape).astype(dtype)


def distinct(rng, shape, lo=-2.0, hi=2.0, dtype="float32") -> np.ndarray:
    """Shuffled values, pairwise at least ~0.4*(hi-lo)/n apart: no ties anywhere."""
    n = int(np.prod(shape, dtype=np.int64))
    base = (np.arange(n) + 0.5 + rng.uniform(-0.3, 0.3, n)) / max(n, 1)
    vals = lo + (hi - lo) * base
    rng.shuffle(vals)
    return vals.reshape(shape).astype(dtype)


def away(rng, shape, lo, hi, points: Iterable[float], margin=0.1, dtype="float32") -> np.ndarray:
    """Uniform in [lo, hi) but at least `margin` away from each of `points`."""
    pts = list(points)
    out = rng.uniform(lo, hi, size=shape)
    for _ in range(1000):
        bad = np.zeros(out.shape, bool)
        for p in pts:
            bad |= np.abs(out - p) < margin
        if not bad.any():
            break
        out[bad] = rng.uniform(lo, hi, size=int(bad.sum()))
    else:  # pragma: no cover
        raise RuntimeError("could not draw data away from the points")
    return out.astype(dtype)


def away_from_integers(rng, shape, lo, hi, margin=0.05, dtype="float32") -> np.ndarray:
    out = rng.uniform(lo, hi, size=shape)
    for _ in range(1000):
        bad = np.abs(out - np.round(out)) < margin
        if not bad.any():
            break
        out[bad] = rng.uniform(lo, hi, size=int(bad.sum()))
    return out.astype(dtype)


# ---------------------------------------------------------------------------------------------
# network / case builders


def node(name: str, op: str, inputs: Sequence[str], **attrs) -> dict:
    d = {"name": name, "op": op, "inputs": list(inputs)}
    if attrs:
        d["attrs"] = attrs
    return d


def make_case(
    name: str,
    nodes: list[dict],
    outputs: Sequence[str] | str,
    inputs: Sequence[tuple[str, np.ndarray]],
    params: Sequence[tuple] = (),
    *,
    get_all: bool | None = None,
    get_by_list: bool | None = None,
    sens_param: bool | None = None,
    sens: Any = None,
    weights: Sequence[str] | None = None,
    parameters: dict[str, np.ndarray] | None = None,
    note: str | None = None,
    net_name: str | None = None,
    explicit_flags: bool = False,
    input_decls: Sequence[dict] | None = None,
) -> dict:
    """params: (name, array) or (name, array, requires_grad)."""
    outs = [outputs] if isinstance(outputs, str) else list(outputs)
    pdecl = []
    for p in params:
        pname, arr = p[0], p[1]
        rg = p[2] if len(p) > 2 else True
        pdecl.append({"name": pname, "value": tensor(arr), "requires_grad": bool(rg)})
    network = {
        "format": "gradnet/1",
        "name": net_name or name,
        "inputs": list(input_decls) if input_decls is not None else [{"name": n} for n, _ in inputs],
        "parameters": pdecl,
        "nodes": nodes,
        "outputs": outs,
    }
    req: dict[str, Any] = {"network": network, "inputs": [tensor(a) for _, a in inputs]}
    for flag, val in (("get_all", get_all), ("get_by_list", get_by_list), ("sens_param", sens_param)):
        if explicit_flags:
            req[flag] = bool(val)
        elif val:
            req[flag] = True
    if weights is not None:
        req["weights"] = list(weights)
    if sens_param:
        if sens is None:
            raise ValueError(f"{name}: sens_param without sens")
        req["sens"] = [tensor(s) for s in sens] if isinstance(sens, (list, tuple)) else tensor(sens)
    if parameters:
        req["parameters"] = {k: tensor(v) for k, v in parameters.items()}
    case = {"name": name, "request": req}
    if note:
        case["note"] = note
    return case


def ops_of(case: dict) -> list[str]:
    return [n["op"] for n in case["request"]["network"]["nodes"]]


# ---------------------------------------------------------------------------------------------
# groups


def _binary_data(op: str, rng, sx, sy, dtype="float32"):
    if op in ("Div", "RealDiv"):
        return uni(rng, sx, -2, 2, dtype), away(rng, sy, 0.5, 2.0, [], dtype=dtype) * np.where(
            rng.uniform(size=sy) < 0.5, -1, 1).astype(dtype)
    if op == "Pow":
        return uni(rng, sx, 0.5, 2.0, dtype), uni(rng, sy, -1.5, 2.5, dtype)
    if op in ("Maximum", "Minimum"):
        # distinct across x and y (also after broadcasting): draw disjoint interleaved sets
        nx, ny = int(np.prod(sx)), int(np.prod(sy))
        allv = distinct(rng, (nx + ny,), -2, 2, dtype)
        return allv[:nx].reshape(sx), allv[nx:].reshape(sy)
    return uni(rng, sx, -2, 2, dtype), uni(rng, sy, -2, 2, dtype)


BINARY_OPS = ["Add", "Sub", "Mul", "Div", "RealDiv", "Pow", "Maximum", "Minimum", "SquaredDifference"]


def group_elementwise_binary() -> list[dict]:
    cases = []
    for op in BINARY_OPS:
        name = f"{op}"
        rng = rng_for(name)
        x, y = _binary_data(op, rng, (2, 3), (2, 3))
        cases.append(make_case(name, [node("out", op, ["x", "y"])], "out", [("x", x), ("y", y)],
                               get_all=True))
    broadcast = [
        ("Add", (2, 3), (3,)), ("Sub", (), (2, 2)), ("Mul", (2, 1, 3), (4, 1)), ("Div", (2, 3), (2, 1)),
        ("RealDiv", (3,), (2, 3)), ("Pow", (2, 3), (1,)), ("Maximum", (2, 3), (3,)),
        ("Minimum", (4, 1), (1, 3)), ("SquaredDifference", (3, 1), (1, 4)),
    ]
    for op, sx, sy in broadcast:
        name = f"{op}-broadcast-{'x'.join(map(str, sx)) or 'scalar'}-{'x'.join(map(str, sy))}"
        rng = rng_for(name)
        x, y = _binary_data(op, rng, sx, sy)
        cases.append(make_case(name, [node("out", op, ["x", "y"])], "out", [("x", x), ("y", y)],
                               get_all=True))
    # sens_param variants
    for op in ("Mul", "Div", "Pow"):
        name = f"{op}-sens"
        rng = rng_for(name)
        x, y = _binary_data(op, rng, (3, 2), (3, 2))
        cases.append(make_case(name, [node("out", op, ["x", "y"])], "out", [("x", x), ("y", y)],
                               get_all=True, sens_param=True, sens=uni(rng, (3, 2))))
    # binary op against a trainable parameter
    name = "Mul-parameter-get_by_list"
    rng = rng_for(name)
    cases.append(make_case(name, [node("out", "Mul", ["x", "w"])], "out", [("x", uni(rng, (2, 3)))],
                           [("w", uni(rng, (3,)))], get_all=True, get_by_list=True))
    return cases


def _unary_domain(op: str, rng, shape, dtype="float32"):
    if op in ("Log", "Sqrt", "Rsqrt", "Reciprocal"):
        return uni(rng, shape, 0.5, 3.0, dtype)
    if op == "Log1p":
        return uni(rng, shape, -0.5, 2.0, dtype)
    if op in ("ReLU", "Abs", "Sign"):
        return away(rng, shape, -2, 2, [0.0], 0.1, dtype)
    if op == "ReLU6":
        return away(rng, shape, -2, 8, [0.0, 6.0], 0.1, dtype)
    if op == "Floor":
        return away_from_integers(rng, shape, -3, 3, 0.05, dtype)
    return uni(rng, shape, -2, 2, dtype)


UNARY_OPS = ["Neg", "Abs", "Exp", "Log", "Log1p", "Sqrt", "Rsqrt", "Square", "Reciprocal", "Sin", "Cos",
             "Tanh", "Sigmoid", "ReLU", "ReLU6", "GeLU", "Softplus", "Erf"]


def group_elementwise_unary() -> list[dict]:
    cases = []
    for op in UNARY_OPS:
        name = op
        rng = rng_for(name)
        shape = (2, 4) if op == "ReLU6" else (2, 3)
        x = _unary_domain(op, rng, shape)
        cases.append(make_case(name, [node("out", op, ["x"])], "out", [("x", x)]))
    for op in ("Exp", "Tanh", "Sigmoid", "GeLU", "Softplus", "Erf", "Sqrt", "Log", "Reciprocal", "Rsqrt"):
        name = f"{op}-sens"
        rng = rng_for(name)
        x = _unary_domain(op, rng, (4,))
        cases.append(make_case(name, [node("out", op, ["x"])], "out", [("x", x)],
                               sens_param=True, sens=uni(rng, (4,))))
    # Sign / Floor have zero derivative: keep the net differentiable through a Mul
    for op in ("Sign", "Floor"):
        name = f"{op}-times-y"
        rng = rng_for(name)
        x = _unary_domain(op, rng, (2, 3))
        y = uni(rng, (2, 3))
        cases.append(make_case(name, [node("s", op, ["x"]), node("out", "Mul", ["s", "y"])], "out",
                               [("x", x), ("y", y)], get_all=True))
    # a chain of unary ops
    name = "unary-chain-Exp-Log1p-Tanh-Square"
    rng = rng_for(name)
    x = uni(rng, (3, 2), -1, 1)
    nodes = [node("a", "Exp", ["x"]), node("b", "Log1p", ["a"]), node("c", "Tanh", ["b"]),
             node("out", "Square", ["c"])]
    cases.append(make_case(name, nodes, "out", [("x", x)]))
    return cases


def group_compare_select_cast() -> list[dict]:
    cases = []

    def xy(name, shape=(2, 3)):
        rng = rng_for(name)
        v = distinct(rng, (2,) + shape)
        return rng, v[0], v[1]

    name = "Select-Greater"
    rng, x, y = xy(name)
    cases.append(make_case(name, [node("c", "Greater", ["x", "y"]), node("out", "Select", ["c", "x", "y"])],
                           "out", [("x", x), ("y", y)], get_all=True))
    name = "Select-GreaterEqual-Mul-Sub"
    rng, x, y = xy(name)
    cases.append(make_case(name, [node("c", "GreaterEqual", ["x", "y"]), node("m", "Mul", ["x", "y"]),
                                  node("s", "Sub", ["x", "y"]), node("out", "Select", ["c", "m", "s"])],
                           "out", [("x", x), ("y", y)], get_all=True))
    name = "Select-Equal"
    rng = rng_for(name)
    x = uni(rng, (2, 3))
    y = x.copy()
    y[0, 1] = x[0, 1] + 0.5
    y[1, 2] = x[1, 2] - 0.75
    cases.append(make_case(name, [node("c", "Equal", ["x", "y"]), node("ex", "Exp", ["x"]),
                                  node("sq", "Square", ["y"]), node("out", "Select", ["c", "ex", "sq"])],
                           "out", [("x", x), ("y", y)], get_all=True))
    name = "Select-Less-sens"
    rng, x, y = xy(name)
    cases.append(make_case(name, [node("c", "Less", ["x", "y"]), node("out", "Select", ["c", "y", "x"])],
                           "out", [("x", x), ("y", y)], get_all=True, sens_param=True, sens=uni(rng, (2, 3))))
    name = "Select-LessEqual-Exp-Neg"
    rng, x, y = xy(name)
    cases.append(make_case(name, [node("c", "LessEqual", ["x", "y"]), node("e", "Exp", ["x"]),
                                  node("n", "Neg", ["y"]), node("out", "Select", ["c", "e", "n"])],
                           "out", [("x", x), ("y", y)], get_all=True))
    name = "Select-condition-input"
    rng = rng_for(name)
    c = rng.uniform(size=(2, 3)) < 0.5
    c[0, 0], c[0, 1] = True, False
    x, y = uni(rng, (2, 3)), uni(rng, (2, 3))
    cases.append(make_case(name, [node("out", "Select", ["c", "x", "y"])], "out",
                           [("c", c), ("x", x), ("y", y)], get_all=True,
                           note="bool condition input: its gradient is zeros of dtype bool"))
    # comparisons feeding a Cast
    for cmp_op in ("Less", "Greater", "Equal", "GreaterEqual", "LessEqual"):
        name = f"Cast-{cmp_op}-times-x"
        rng, x, y = xy(name)
        if cmp_op == "Equal":
            y = y.copy()
            y[0, 0] = x[0, 0]
            y[1, 1] = x[1, 1]
        cases.append(make_case(name, [node("c", cmp_op, ["x", "y"]),
                                      node("f", "Cast", ["c"], dtype="float32"),
                                      node("out", "Mul", ["f", "x"])],
                               "out", [("x", x), ("y", y)], get_all=True))
    # float casts
    name = "Cast-float32-to-float64"
    rng = rng_for(name)
    cases.append(make_case(name, [node("c", "Cast", ["x"], dtype="float64"), node("out", "Mul", ["c", "y"])],
                           "out", [("x", uni(rng, (2, 3))), ("y", uni(rng, (2, 3), dtype="float64"))],
                           get_all=True))
    name = "Cast-float64-to-float32"
    rng = rng_for(name)
    cases.append(make_case(name, [node("c", "Cast", ["x"], dtype="float32"), node("e", "Exp", ["c"]),
                                  node("out", "Mul", ["e", "y"])],
                           "out", [("x", uni(rng, (3,), dtype="float64")), ("y", uni(rng, (3,)))],
                           get_all=True))
    name = "Cast-float32-to-float16"
    rng = rng_for(name)
    cases.append(make_case(name, [node("c", "Cast", ["x"], dtype="float16"), node("out", "Mul", ["c", "y"])],
                           "out", [("x", uni(rng, (2, 2))), ("y", uni(rng, (2, 2), dtype="float16"))],
                           get_all=True))
    name = "Cast-float32-to-float32-sens"
    rng = rng_for(name)
    cases.append(make_case(name, [node("c", "Cast", ["x"], dtype="float32"), node("out", "Sin", ["c"])],
                           "out", [("x", uni(rng, (3,)))], sens_param=True, sens=uni(rng, (3,))))
    return cases


def group_shape() -> list[dict]:
    cases = []

    def single(name, op, x, out_shape, attrs, extra_inputs=(), get_all=False):
        rng = rng_for(name + "/sens")
        inputs = [("x", x)] + list(extra_inputs)
        cases.append(make_case(name, [node("out", op, [n for n, _ in inputs], **attrs)], "out", inputs,
                               get_all=get_all or None, sens_param=True, sens=uni(rng, out_shape)))

    r = rng_for("Reshape")
    single("Reshape", "Reshape", uni(r, (2, 3, 4)), (6, 4), {"shape": [6, 4]})
    r = rng_for("Reshape-minus-one")
    single("Reshape-minus-one", "Reshape", uni(r, (2, 6)), (3, 2, 2), {"shape": [3, -1, 2]})
    r = rng_for("Transpose")
    single("Transpose", "Transpose", uni(r, (2, 3, 4)), (4, 2, 3), {"input_perm": [2, 0, 1]})
    r = rng_for("Transpose-2d")
    single("Transpose-2d", "Transpose", uni(r, (2, 3)), (3, 2), {"input_perm": [1, 0]})
    r = rng_for("ExpandDims")
    single("ExpandDims", "ExpandDims", uni(r, (2, 3)), (2, 1, 3), {"axis": 1})
    r = rng_for("ExpandDims-negative-axis")
    single("ExpandDims-negative-axis", "ExpandDims", uni(r, (2, 3)), (2, 3, 1), {"axis": -1})
    r = rng_for("Squeeze")
    single("Squeeze", "Squeeze", uni(r, (2, 1, 3, 1)), (2, 3, 1), {"axis": [1]})
    r = rng_for("Squeeze-all")
    single("Squeeze-all", "Squeeze", uni(r, (1, 3, 1, 2)), (3, 2), {"axis": []})
    r = rng_for("Tile")
    single("Tile", "Tile", uni(r, (2, 1, 3)), (4, 3, 3), {"multiples": [2, 3, 1]})
    r = rng_for("Tile-more-dims")
    single("Tile-more-dims", "Tile", uni(r, (2, 3)), (2, 4, 3), {"multiples": [2, 2, 1]})
    r = rng_for("BroadcastTo")
    single("BroadcastTo", "BroadcastTo", uni(r, (3, 1)), (2, 3, 4), {"shape": [2, 3, 4]})
    r = rng_for("BroadcastTo-row")
    single("BroadcastTo-row", "BroadcastTo", uni(r, (1, 3)), (2, 3), {"shape": [2, 3]})

    name = "Concat"
    r = rng_for(name)
    cases.append(make_case(name, [node("out", "Concat", ["a", "b", "c"], axis=1)], "out",
                           [("a", uni(r, (2, 1))), ("b", uni(r, (2, 3))), ("c", uni(r, (2, 2)))],
                           get_all=True, sens_param=True, sens=uni(r, (2, 6))))
    name = "Concat-axis0-mixed"
    r = rng_for(name)
    cases.append(make_case(name, [node("e", "Exp", ["a"]), node("out", "Concat", ["e", "b", "a"], axis=0)],
                           "out", [("a", uni(r, (1, 3))), ("b", uni(r, (2, 3)))], get_all=True,
                           sens_param=True, sens=uni(r, (4, 3))))
    name = "Stack"
    r = rng_for(name)
    cases.append(make_case(name, [node("out", "Stack", ["a", "b"], axis=0)], "out",
                           [("a", uni(r, (2, 3))), ("b", uni(r, (2, 3)))],
                           get_all=True, sens_param=True, sens=uni(r, (2, 2, 3))))
    name = "Stack-last-axis"
    r = rng_for(name)
    cases.append(make_case(name, [node("out", "Stack", ["a", "b", "c"], axis=-1)], "out",
                           [("a", uni(r, (3,))), ("b", uni(r, (3,))), ("c", uni(r, (3,)))],
                           get_all=True, sens_param=True, sens=uni(r, (3, 3))))
    name = "Split-unused-part"
    r = rng_for(name)
    cases.append(make_case(name, [node("s", "Split", ["x"], axis=1, output_num=3),
                                  node("out", "Mul", ["s:0", "s:2"])], "out", [("x", uni(r, (2, 6)))],
                           note="the middle part s:1 is unused: its slice of the gradient is zero"))
    name = "Split-axis0-sens"
    r = rng_for(name)
    cases.append(make_case(name, [node("s", "Split", ["x"], axis=0, output_num=2),
                                  node("out", "Sub", ["s:1", "s:0"])], "out", [("x", uni(r, (4, 3)))],
                           sens_param=True, sens=uni(r, (2, 3))))
    r = rng_for("Slice")
    single("Slice", "Slice", uni(r, (3, 4, 2)), (2, 2, 2), {"begin": [1, 1, 0], "size": [2, 2, 2]})
    r = rng_for("Slice-to-end")
    single("Slice-to-end", "Slice", uni(r, (3, 4)), (2, 3), {"begin": [1, 1], "size": [2, 3]})
    r = rng_for("Slice-minus-one-size")
    single("Slice-minus-one-size", "Slice", uni(r, (3, 4)), (2, 3), {"begin": [1, 1], "size": [-1, 3]})
    def ss(**kw):
        return {"begin_mask": 0, "end_mask": 0, "ellipsis_mask": 0, "new_axis_mask": 0,
                "shrink_axis_mask": 0, **kw}
    r = rng_for("StridedSlice")
    single("StridedSlice", "StridedSlice", uni(r, (4, 5)), (2, 2),
           ss(begin=[0, 1], end=[4, 5], strides=[2, 2]))
    r = rng_for("StridedSlice-begin-mask")
    single("StridedSlice-begin-mask", "StridedSlice", uni(r, (3, 4, 5)), (2, 2, 2),
           ss(begin=[0, 1, 1], end=[2, 3, 5], strides=[1, 1, 2], begin_mask=1))
    r = rng_for("StridedSlice-shrink")
    single("StridedSlice-shrink", "StridedSlice", uni(r, (3, 4, 5)), (1, 5),
           ss(begin=[1, 1, 0], end=[2, 2, 5], strides=[1, 1, 1], shrink_axis_mask=2))
    r = rng_for("StridedSlice-negative-stride")
    single("StridedSlice-negative-stride", "StridedSlice", uni(r, (5,)), (3,),
           ss(begin=[-1], end=[-4], strides=[-1]))
    r = rng_for("StridedSlice-negative-stride-2d")
    single("StridedSlice-negative-stride-2d", "StridedSlice", uni(r, (3, 6)), (3, 3),
           ss(begin=[0, -1], end=[3, -7], strides=[1, -2]))
    # The next four expose MindSpore 2.10 CPU StridedSliceGrad bugs (right forward, wrong gradient);
    # the oracle's finite-difference check keeps them out of the golden files and lists them in
    # UNSUPPORTED.md.  They stay here so a later MindSpore can be re-checked.
    r = rng_for("StridedSlice-end-mask-shrink")
    single("StridedSlice-end-mask-shrink", "StridedSlice", uni(r, (3, 4, 5)), (3, 2),
           ss(begin=[0, 1, 2], end=[2, 3, 5], strides=[1, 1, 2], begin_mask=1, end_mask=1,
              shrink_axis_mask=2))
    r = rng_for("StridedSlice-new-axis-ellipsis")
    single("StridedSlice-new-axis-ellipsis", "StridedSlice", uni(r, (2, 3, 4)), (1, 2, 3, 2),
           ss(begin=[0, 0, 1], end=[1, 0, 3], strides=[1, 1, 1], new_axis_mask=1, ellipsis_mask=2))
    r = rng_for("StridedSlice-negative-stride-full")
    single("StridedSlice-negative-stride-full", "StridedSlice", uni(r, (5,)), (5,),
           ss(begin=[-1], end=[-6], strides=[-1]))
    r = rng_for("StridedSlice-negative-stride-positive-begin")
    single("StridedSlice-negative-stride-positive-begin", "StridedSlice", uni(r, (4,)), (3,),
           ss(begin=[3], end=[0], strides=[-1]))

    name = "Gather-axis0-repeated-indices"
    r = rng_for(name)
    cases.append(make_case(name, [node("out", "Gather", ["p", "i"], axis=0)], "out",
                           [("p", uni(r, (5, 3))), ("i", np.array([4, 0, 2, 0], np.int32))],
                           get_all=True, sens_param=True, sens=uni(r, (4, 3)),
                           note="indices get zeros of int32; repeated index 0 accumulates"))
    name = "Gather-axis1"
    r = rng_for(name)
    cases.append(make_case(name, [node("out", "Gather", ["p", "i"], axis=1)], "out",
                           [("p", uni(r, (2, 4))), ("i", np.array([[3, 1], [1, 1]], np.int32))],
                           sens_param=True, sens=uni(r, (2, 2, 2))))
    name = "Gather-parameter-embedding"
    r = rng_for(name)
    cases.append(make_case(name, [node("g", "Gather", ["emb", "ids"], axis=0), node("t", "Tanh", ["g"]),
                                  node("out", "ReduceSum", ["t"], axis=[], keep_dims=False)],
                           "out", [("ids", np.array([1, 3, 1], np.int32))], [("emb", uni(r, (4, 2)))],
                           get_by_list=True))
    name = "OneHot"
    r = rng_for(name)
    cases.append(make_case(name, [node("oh", "OneHot", ["i"], depth=4, on_value=1.0, off_value=0.0, axis=-1),
                                  node("m", "Mul", ["oh", "x"]),
                                  node("out", "ReduceSum", ["m"], axis=[1], keep_dims=False)],
                           "out", [("x", uni(r, (3, 4))), ("i", np.array([2, 0, 3], np.int32))],
                           get_all=True,
                           note="on_value/off_value are numbers; the one-hot output is float32"))
    name = "OneHot-axis0-onoff"
    r = rng_for(name)
    cases.append(make_case(name, [node("oh", "OneHot", ["i"], depth=3, on_value=2.0, off_value=-0.5, axis=0),
                                  node("out", "Mul", ["oh", "x"])],
                           "out", [("x", uni(r, (3, 2))), ("i", np.array([1, 2], np.int32))]))
    name = "ZerosLike-OnesLike"
    r = rng_for(name)
    cases.append(make_case(name, [node("z", "ZerosLike", ["x"]), node("o", "OnesLike", ["y"]),
                                  node("a", "Add", ["z", "y"]), node("b", "Mul", ["o", "x"]),
                                  node("out", "Mul", ["a", "b"])],
                           "out", [("x", uni(r, (2, 3))), ("y", uni(r, (2, 3)))], get_all=True,
                           note="ZerosLike/OnesLike pass no gradient to their argument"))
    return cases


def group_linalg_reduce() -> list[dict]:
    cases = []
    for ta, tb in ((False, False), (True, False), (False, True), (True, True)):
        name = f"MatMul-ta{int(ta)}-tb{int(tb)}"
        r = rng_for(name)
        a = uni(r, (4, 2) if ta else (2, 4))
        b = uni(r, (3, 4) if tb else (4, 3))
        cases.append(make_case(name, [node("out", "MatMul", ["a", "b"], transpose_a=ta, transpose_b=tb)],
                               "out", [("a", a), ("b", b)], get_all=True, sens_param=True,
                               sens=uni(r, (2, 3))))
    name = "MatMul-default-attrs-ones-sens"
    r = rng_for(name)
    cases.append(make_case(name, [node("out", "MatMul", ["a", "w"])], "out", [("a", uni(r, (3, 2)))],
                           [("w", uni(r, (2, 2)))], get_all=True, get_by_list=True))
    for ta, tb in ((False, False), (True, False), (False, True), (True, True)):
        name = f"BatchMatMul-ta{int(ta)}-tb{int(tb)}"
        r = rng_for(name)
        a = uni(r, (2, 4, 3) if ta else (2, 3, 4))
        b = uni(r, (2, 2, 4) if tb else (2, 4, 2))
        cases.append(make_case(name, [node("out", "BatchMatMul", ["a", "b"], transpose_a=ta, transpose_b=tb)],
                               "out", [("a", a), ("b", b)], get_all=True, sens_param=True,
                               sens=uni(r, (2, 3, 2))))
    name = "BatchMatMul-rank4"
    r = rng_for(name)
    cases.append(make_case(name, [node("out", "BatchMatMul", ["a", "b"])], "out",
                           [("a", uni(r, (2, 2, 3, 2))), ("b", uni(r, (2, 2, 2, 3)))], get_all=True))

    red_variants = [
        ("axis1", [1], False, (2, 3, 4), (2, 4)),
        ("axis-int-keep", 2, True, (2, 3, 4), (2, 3, 1)),
        ("all", [], False, (2, 3, 4), ()),
        ("all-axes-explicit", [0, 1, 2], False, (2, 3, 4), ()),
        ("multi-keep", [0, 2], True, (2, 3, 4), (1, 3, 1)),
        ("negative-axis", [-1], False, (3, 4), (3,)),
    ]
    for op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "LogSumExp"):
        for tag, axis, keep, shape, oshape in red_variants:
            name = f"{op}-{tag}"
            r = rng_for(name)
            if op in ("ReduceMax", "ReduceMin"):
                x = distinct(r, shape)
            elif op == "ReduceProd":
                x = (uni(r, shape, 0.6, 1.4) * np.where(r.uniform(size=shape) < 0.3, -1, 1)).astype("float32")
            else:
                x = uni(r, shape)
            cases.append(make_case(name, [node("out", op, ["x"], axis=axis, keep_dims=keep)], "out",
                                   [("x", x)], sens_param=True, sens=uni(r, oshape)))
    name = "ReduceMean-ones-sens"
    r = rng_for(name)
    cases.append(make_case(name, [node("out", "ReduceMean", ["x"], axis=[0], keep_dims=False)], "out",
                           [("x", uni(r, (4, 2)))]))

    for excl, rev in ((False, False), (True, False), (False, True), (True, True)):
        name = f"CumSum-exclusive{int(excl)}-reverse{int(rev)}"
        r = rng_for(name)
        cases.append(make_case(name, [node("out", "CumSum", ["x"], axis=1, exclusive=excl, reverse=rev)],
                               "out", [("x", uni(r, (2, 4)))], sens_param=True, sens=uni(r, (2, 4))))
    name = "CumSum-axis0-ones-sens"
    r = rng_for(name)
    cases.append(make_case(name, [node("out", "CumSum", ["x"], axis=0)], "out", [("x", uni(r, (3, 2)))]))
    return cases


def group_nn() -> list[dict]:
    cases = []
    for op in ("Softmax", "LogSoftmax"):
        for axis, shape in ((-1, (2, 4)), (0, (3, 2)), (1, (2, 3, 2))):
            name = f"{op}-axis{axis}"
            r = rng_for(name)
            cases.append(make_case(name, [node("out", op, ["x"], axis=axis)], "out", [("x", uni(r, shape))],
                                   sens_param=True, sens=uni(r, shape)))
    name = "LogSoftmax-default-axis-ones-sens"
    r = rng_for(name)
    cases.append(make_case(name, [node("out", "LogSoftmax", ["x"])], "out", [("x", uni(r, (2, 3)))]))

    name = "BiasAdd-NCHW"
    r = rng_for(name)
    cases.append(make_case(name, [node("out", "BiasAdd", ["x", "b"])], "out",
                           [("x", uni(r, (2, 3, 2, 2))), ("b", uni(r, (3,)))], get_all=True,
                           sens_param=True, sens=uni(r, (2, 3, 2, 2))))
    name = "BiasAdd-2d-parameter"
    r = rng_for(name)
    cases.append(make_case(name, [node("h", "BiasAdd", ["x", "b"], data_format="NCHW"), node("out", "Tanh", ["h"])],
                           "out", [("x", uni(r, (3, 4)))], [("b", uni(r, (4,)))], get_all=True,
                           get_by_list=True))

    conv = [
        ("valid", dict(out_channel=4, kernel_size=3, pad_mode="valid"), (2, 3, 5, 5), (4, 3, 3, 3), (2, 4, 3, 3)),
        ("same", dict(out_channel=2, kernel_size=3, pad_mode="same"), (1, 3, 4, 4), (2, 3, 3, 3), (1, 2, 4, 4)),
        ("pad", dict(out_channel=2, kernel_size=[2, 3], pad_mode="pad", pad=1), (1, 2, 4, 5), (2, 2, 2, 3),
         (1, 2, 5, 5)),
        ("pad4-stride2", dict(out_channel=3, kernel_size=3, pad_mode="pad", pad=[1, 0, 2, 1], stride=2),
         (1, 2, 6, 6), (3, 2, 3, 3), (1, 3, 3, 4)),
        ("same-stride2", dict(out_channel=2, kernel_size=3, pad_mode="same", stride=2), (1, 2, 5, 6),
         (2, 2, 3, 3), (1, 2, 3, 3)),
        ("dilation2", dict(out_channel=2, kernel_size=2, pad_mode="valid", dilation=2), (1, 2, 5, 5),
         (2, 2, 2, 2), (1, 2, 3, 3)),
        ("group2", dict(out_channel=4, kernel_size=3, pad_mode="valid", group=2), (1, 4, 5, 5), (4, 2, 3, 3),
         (1, 4, 3, 3)),
    ]
    for tag, attrs, xs, ws, os_ in conv:
        name = f"Conv2D-{tag}"
        r = rng_for(name)
        cases.append(make_case(name, [node("out", "Conv2D", ["x", "w"], **attrs)], "out",
                               [("x", uni(r, xs, -1, 1)), ("w", uni(r, ws, -1, 1))], get_all=True,
                               sens_param=True, sens=uni(r, os_)))
    name = "Conv2D-weight-parameter-BiasAdd-ReLU"
    r = rng_for(name)
    cases.append(make_case(name, [node("c", "Conv2D", ["x", "w"], out_channel=2, kernel_size=2),
                                  node("h", "BiasAdd", ["c", "b"]), node("out", "ReLU", ["h"])], "out",
                           [("x", uni(r, (2, 1, 4, 4), -1, 1))],
                           [("w", uni(r, (2, 1, 2, 2), -1, 1)), ("b", np.array([0.05, -0.1], np.float32))],
                           get_by_list=True,
                           note="random data; a pre-activation exactly at 0 is astronomically unlikely"))

    pools = [
        ("MaxPool", "valid-k2-s2", dict(kernel_size=2, strides=2, pad_mode="valid"), (1, 2, 4, 4), (1, 2, 2, 2)),
        ("MaxPool", "same-k3-s1", dict(kernel_size=3, strides=1, pad_mode="same"), (1, 1, 4, 4), (1, 1, 4, 4)),
        ("MaxPool", "VALID-k2x3-s1x2", dict(kernel_size=[2, 3], strides=[1, 2], pad_mode="VALID"), (2, 1, 3, 5),
         (2, 1, 2, 2)),
        ("AvgPool", "VALID-k2-s2", dict(kernel_size=2, strides=2, pad_mode="VALID"), (1, 2, 4, 4), (1, 2, 2, 2)),
        ("AvgPool", "same-k3-s1", dict(kernel_size=3, strides=1, pad_mode="same"), (1, 1, 4, 4), (1, 1, 4, 4)),
        ("AvgPool", "same-k2-s2-odd", dict(kernel_size=2, strides=2, pad_mode="same"), (1, 1, 5, 5),
         (1, 1, 3, 3)),
        ("AvgPool", "valid-k3-s1", dict(kernel_size=3, strides=1, pad_mode="valid"), (1, 1, 4, 5), (1, 1, 2, 3)),
    ]
    for op, tag, attrs, xs, os_ in pools:
        name = f"{op}-{tag}"
        r = rng_for(name)
        cases.append(make_case(name, [node("out", op, ["x"], **attrs)], "out", [("x", distinct(r, xs))],
                               sens_param=True, sens=uni(r, os_)))

    name = "LayerNorm-last-axis"
    r = rng_for(name)
    cases.append(make_case(name, [node("ln", "LayerNorm", ["x", "g", "b"], begin_norm_axis=1, begin_params_axis=1,
                                       epsilon=1e-5)], "ln:0",
                           [("x", uni(r, (3, 4))), ("g", uni(r, (4,), 0.5, 1.5)), ("b", uni(r, (4,)))],
                           get_all=True, sens_param=True, sens=uni(r, (3, 4))))
    name = "LayerNorm-default-attrs-parameters"
    r = rng_for(name)
    cases.append(make_case(name, [node("ln", "LayerNorm", ["x", "gamma", "beta"]), node("out", "Mul", ["ln:0", "y"])],
                           "out", [("x", uni(r, (2, 5))), ("y", uni(r, (2, 5)))],
                           [("gamma", uni(r, (5,), 0.5, 1.5)), ("beta", uni(r, (5,)))],
                           get_all=True, get_by_list=True,
                           note="default epsilon 1e-7"))
    name = "LayerNorm-begin-norm-axis1-rank3"
    r = rng_for(name)
    cases.append(make_case(name, [node("ln", "LayerNorm", ["x", "g", "b"], begin_norm_axis=1, begin_params_axis=1)],
                           "ln:0", [("x", uni(r, (2, 3, 2))), ("g", uni(r, (3, 2), 0.5, 1.5)),
                                    ("b", uni(r, (3, 2)))],
                           get_all=True, sens_param=True, sens=uni(r, (2, 3, 2))))
    name = "LayerNorm-params-axis-minus1"
    r = rng_for(name)
    cases.append(make_case(name, [node("ln", "LayerNorm", ["x", "g", "b"], begin_norm_axis=-1, begin_params_axis=-1)],
                           "ln:0", [("x", uni(r, (2, 2, 3))), ("g", uni(r, (3,), 0.5, 1.5)), ("b", uni(r, (3,)))],
                           get_all=True, sens_param=True, sens=uni(r, (2, 2, 3))))

    name = "BatchNorm-inference"
    r = rng_for(name)
    cases.append(make_case(name, [node("bn", "BatchNorm", ["x", "scale", "bias", "mean", "variance"],
                                       is_training=False, epsilon=1e-5)], "bn:0",
                           [("x", uni(r, (2, 3, 2, 2))), ("scale", uni(r, (3,), 0.5, 1.5)),
                            ("bias", uni(r, (3,))), ("mean", uni(r, (3,), -0.5, 0.5)),
                            ("variance", uni(r, (3,), 0.5, 2.0))],
                           get_all=True, sens_param=True, sens=uni(r, (2, 3, 2, 2)),
                           note="MindSpore's inference-mode BatchNorm bprop returns zeros for mean and variance"))
    name = "BatchNorm-inference-2d-parameters"
    r = rng_for(name)
    cases.append(make_case(name, [node("bn", "BatchNorm", ["x", "gamma", "beta", "moving_mean", "moving_var"],
                                       is_training=False, epsilon=1e-3, momentum=0.9),
                                  node("out", "Sigmoid", ["bn:0"])], "out",
                           [("x", uni(r, (4, 3)))],
                           [("gamma", uni(r, (3,), 0.5, 1.5)), ("beta", uni(r, (3,))),
                            ("moving_mean", uni(r, (3,), -0.5, 0.5), False),
                            ("moving_var", uni(r, (3,), 0.5, 2.0), False)],
                           get_all=True, get_by_list=True))

    name = "SoftmaxCrossEntropyWithLogits"
    r = rng_for(name)
    lab = r.uniform(0.1, 1.0, size=(3, 4))
    lab = (lab / lab.sum(axis=1, keepdims=True)).astype("float32")
    cases.append(make_case(name, [node("sce", "SoftmaxCrossEntropyWithLogits", ["logits", "labels"])], "sce:0",
                           [("logits", uni(r, (3, 4))), ("labels", lab)], get_all=True,
                           note="MindSpore's bprop gives the labels a zero gradient"))
    name = "SoftmaxCrossEntropyWithLogits-sens-onehot"
    r = rng_for(name)
    cases.append(make_case(name, [node("sce", "SoftmaxCrossEntropyWithLogits", ["logits", "labels"])], "sce:0",
                           [("logits", uni(r, (2, 3))), ("labels", np.eye(3, dtype="float32")[[2, 0]])],
                           sens_param=True, sens=uni(r, (2,))))
    name = "SparseSoftmaxCrossEntropyWithLogits"
    r = rng_for(name)
    cases.append(make_case(name, [node("out", "SparseSoftmaxCrossEntropyWithLogits", ["logits", "labels"])],
                           "out", [("logits", uni(r, (3, 4))), ("labels", np.array([1, 3, 0], np.int32))],
                           get_all=True, note="is_grad=False: the output is the mean loss, a scalar"))
    name = "SparseSoftmaxCrossEntropyWithLogits-sens"
    r = rng_for(name)
    cases.append(make_case(name, [node("out", "SparseSoftmaxCrossEntropyWithLogits", ["logits", "labels"],
                                       is_grad=False)],
                           "out", [("logits", uni(r, (4, 3))), ("labels", np.array([2, 2, 0, 1], np.int32))],
                           sens_param=True, sens=np.array(1.7, np.float32)))
    name = "SparseSoftmaxCrossEntropyWithLogits-is_grad-false-matmul"
    r = rng_for(name)
    cases.append(make_case(name, [node("logits", "MatMul", ["x", "w"]),
                                  node("out", "SparseSoftmaxCrossEntropyWithLogits", ["logits", "labels"],
                                       is_grad=False)],
                           "out", [("x", uni(r, (3, 2))), ("labels", np.array([0, 3, 1], np.int64))],
                           [("w", uni(r, (2, 4)))], get_all=True, get_by_list=True))
    # is_grad=True: the op's output is d(mean loss)/d(logits), and MindSpore's bprop returns
    # `out[0]` (the first row of that output, shape [C]) whatever the sensitivity.
    name = "SparseSoftmaxCrossEntropyWithLogits-is_grad"
    r = rng_for(name)
    cases.append(make_case(name, [node("out", "SparseSoftmaxCrossEntropyWithLogits", ["logits", "labels"],
                                       is_grad=True)],
                           "out", [("logits", uni(r, (3, 4))), ("labels", np.array([2, 0, 3], np.int32))],
                           get_all=True, sens_param=True, sens=uni(r, (3, 4)),
                           note="is_grad=True: the output is the gradient (softmax - onehot) / N. MindSpore's bprop "
                                "returns out[0], the output's first row (shape [C]), ignoring sens; API.md: a "
                                "gradient has its input's shape, so that row is broadcast to the logits' [N, C] "
                                "(what MindSpore itself does when the logits come from another op)"))
    cases[-1]["api_md_broadcast_inputs"] = [0]
    name = "SparseSoftmaxCrossEntropyWithLogits-is_grad-parameter"
    r = rng_for(name)
    cases.append(make_case(name, [node("logits", "Mul", ["x", "w"]),
                                  node("out", "SparseSoftmaxCrossEntropyWithLogits", ["logits", "labels"],
                                       is_grad=True)],
                           "out", [("x", uni(r, (3, 4))), ("labels", np.array([1, 1, 3], np.int32))],
                           [("w", uni(r, (3, 4)))], get_all=True, get_by_list=True,
                           note="is_grad=True behind Mul: MindSpore's bprop row out[0] reaches Mul's bprop, which "
                                "broadcasts it, so every row of the logits gets the output's first row"))
    name = "L2Loss"
    r = rng_for(name)
    cases.append(make_case(name, [node("out", "L2Loss", ["x"])], "out", [("x", uni(r, (2, 3)))]))
    name = "L2Loss-parameter-sens"
    r = rng_for(name)
    cases.append(make_case(name, [node("d", "Sub", ["x", "w"]), node("out", "L2Loss", ["d"])], "out",
                           [("x", uni(r, (4,)))], [("w", uni(r, (4,)))], get_by_list=True, sens_param=True,
                           sens=np.array(0.5, np.float32)))
    return cases


def _flag_combos():
    for ga in (False, True):
        for gbl in (False, True):
            for sp in (False, True):
                yield ga, gbl, sp


def _flag_tag(ga, gbl, sp):
    return f"ga{int(ga)}-gbl{int(gbl)}-sp{int(sp)}"


def group_flags() -> list[dict]:
    cases = []
    # 1. Split-based multi-output network (three outputs, one of them a raw Split output)
    r = rng_for("split-net")
    x, y, w = uni(r, (2, 6)), uni(r, (2, 2)), uni(r, (2, 2))
    nodes = [node("s", "Split", ["x"], axis=1, output_num=3), node("a", "Mul", ["s:0", "w"]),
             node("b", "Mul", ["s:1", "y"]), node("c", "Exp", ["s:2"])]
    sens = [uni(r, (2, 2)), uni(r, (2, 2)), uni(r, (2, 2))]
    for ga, gbl, sp in _flag_combos():
        cases.append(make_case(f"split-net-{_flag_tag(ga, gbl, sp)}", nodes, ["a", "b", "c"],
                               [("x", x), ("y", y)], [("w", w)], get_all=ga, get_by_list=gbl, sens_param=sp,
                               sens=sens if sp else None, explicit_flags=True, net_name="split-net"))
    # 2. tuple output of two nodes
    r = rng_for("tuple-net")
    x, y, w = uni(r, (2, 3)), uni(r, (2, 3)), uni(r, (3, 2))
    nodes = [node("out1", "MatMul", ["x", "w"]), node("xy", "Mul", ["x", "y"]),
             node("out2", "ReduceSum", ["xy"], axis=[1], keep_dims=False)]
    sens = [uni(r, (2, 2)), uni(r, (2,))]
    for ga, gbl, sp in _flag_combos():
        cases.append(make_case(f"tuple-net-{_flag_tag(ga, gbl, sp)}", nodes, ["out1", "out2"],
                               [("x", x), ("y", y)], [("w", w)], get_all=ga, get_by_list=gbl, sens_param=sp,
                               sens=sens if sp else None, explicit_flags=True, net_name="tuple-net"))
    # 3. one frozen and one trainable parameter
    r = rng_for("frozen-net")
    x, y = uni(r, (2, 3)), uni(r, (3, 2))
    params = [("w_frozen", uni(r, (3,)), False), ("w_train", uni(r, (2,)), True)]
    nodes = [node("h", "Mul", ["x", "w_frozen"]), node("m", "MatMul", ["h", "y"]),
             node("out", "Add", ["m", "w_train"])]
    sens = uni(r, (2, 2))
    for ga, gbl, sp in _flag_combos():
        cases.append(make_case(f"frozen-net-{_flag_tag(ga, gbl, sp)}", nodes, "out", [("x", x), ("y", y)], params,
                               get_all=ga, get_by_list=gbl, sens_param=sp, sens=sens if sp else None,
                               explicit_flags=True, net_name="frozen-net"))
    for tag, wl, ga, sp in (("weights-frozen", ["w_frozen"], False, False),
                            ("weights-frozen-train", ["w_frozen", "w_train"], False, False),
                            ("weights-train-frozen-get_all", ["w_train", "w_frozen"], True, False),
                            ("weights-frozen-sens", ["w_frozen"], True, True)):
        cases.append(make_case(f"frozen-net-{tag}", nodes, "out", [("x", x), ("y", y)], params,
                               get_all=ga, get_by_list=True, sens_param=sp, sens=sens if sp else None,
                               weights=wl, net_name="frozen-net",
                               note="a requires_grad=false parameter named in weights gets zeros"))
    # explicit weights on the split net and tuple net
    r = rng_for("split-net")
    x, y, w = uni(r, (2, 6)), uni(r, (2, 2)), uni(r, (2, 2))
    cases.append(make_case("split-net-weights-explicit",
                           [node("s", "Split", ["x"], axis=1, output_num=3), node("a", "Mul", ["s:0", "w"]),
                            node("b", "Mul", ["s:1", "y"]), node("c", "Exp", ["s:2"])],
                           ["a", "b", "c"], [("x", x), ("y", y)], [("w", w)], get_by_list=True, weights=["w"],
                           net_name="split-net"))
    # two trainable parameters, weights in a different order than declared
    name = "weights-reordered"
    r = rng_for(name)
    cases.append(make_case(name, [node("h", "MatMul", ["x", "w1"]), node("t", "Tanh", ["h"]),
                                  node("out", "MatMul", ["t", "w2"])], "out", [("x", uni(r, (2, 3)))],
                           [("w1", uni(r, (3, 4))), ("w2", uni(r, (4, 1)))], get_by_list=True,
                           weights=["w2", "w1"]))
    name = "get_all-single-input"
    r = rng_for(name)
    cases.append(make_case(name, [node("out", "Exp", ["x"])], "out", [("x", uni(r, (3,)))], get_all=True,
                           note="get_all with one input: a list of one"))
    name = "parameters-override"
    r = rng_for(name)
    cases.append(make_case(name, [node("h", "Mul", ["x", "w"]), node("out", "Sin", ["h"])], "out",
                           [("x", uni(r, (3,)))], [("w", uni(r, (3,)))], get_all=True, get_by_list=True,
                           parameters={"w": uni(r, (3,))},
                           note="request 'parameters' replaces the parameter's value for this call"))
    return cases


def group_special() -> list[dict]:
    cases = []
    name = "StopGradient-parameter"
    r = rng_for(name)
    cases.append(make_case(name, [node("h", "Mul", ["x", "w"]), node("hs", "StopGradient", ["h"]),
                                  node("a", "Mul", ["hs", "x"]), node("out", "Add", ["a", "h"])], "out",
                           [("x", uni(r, (2, 2)))], [("w", uni(r, (2, 2)))], get_all=True, get_by_list=True))
    name = "StopGradient-whole-output"
    r = rng_for(name)
    cases.append(make_case(name, [node("e", "Exp", ["x"]), node("out", "StopGradient", ["e"])], "out",
                           [("x", uni(r, (3,)))], note="every path blocked: zeros"))
    name = "unused-input"
    r = rng_for(name)
    cases.append(make_case(name, [node("out", "Mul", ["x", "y"])], "out",
                           [("x", uni(r, (2, 2))), ("y", uni(r, (2, 2))), ("u", uni(r, (3,)))], get_all=True,
                           note="input u is not used: zeros of its shape"))
    name = "unused-first-input"
    r = rng_for(name)
    cases.append(make_case(name, [node("out", "Exp", ["y"])], "out",
                           [("u", uni(r, (2,))), ("y", uni(r, (3,)))]))
    # int32 input: API.md says zeros of the input's dtype; MindSpore differs (recorded by the oracle)
    name = "int32-input-cast"
    r = rng_for(name)
    cases.append(make_case(name, [node("c", "Cast", ["k"], dtype="float32"), node("out", "Mul", ["c", "y"])], "out",
                           [("k", np.array([[1, -2, 3], [4, 0, 2]], np.int32)), ("y", uni(r, (2, 3)))],
                           get_all=True,
                           note="API.md: integer inputs get zeros of their own dtype; MindSpore pushes the "
                                "float cotangent through Cast and truncates it to int32"))
    name = "int32-input-first"
    r = rng_for(name)
    cases.append(make_case(name, [node("c", "Cast", ["k"], dtype="float32"), node("e", "Exp", ["y"]),
                                  node("out", "Mul", ["c", "e"])], "out",
                           [("k", np.array([3, 1, 2], np.int32)), ("y", uni(r, (3,)))],
                           note="API.md: zeros of int32 (MindSpore gives truncated e^y)"))
    # float64
    name = "float64-mlp"
    r = rng_for(name)
    cases.append(make_case(name, [node("h", "MatMul", ["x", "w1"]), node("hb", "BiasAdd", ["h", "b1"]),
                                  node("a", "Tanh", ["hb"]), node("o", "MatMul", ["a", "w2"]),
                                  node("out", "ReduceMean", ["o"], axis=[], keep_dims=False)], "out",
                           [("x", uni(r, (3, 4), dtype="float64"))],
                           [("w1", uni(r, (4, 5), dtype="float64")), ("b1", uni(r, (5,), dtype="float64")),
                            ("w2", uni(r, (5, 2), dtype="float64"))], get_all=True, get_by_list=True))
    name = "float64-softmax-exp-log"
    r = rng_for(name)
    cases.append(make_case(name, [node("s", "Softmax", ["x"], axis=-1), node("l", "Log", ["s"]),
                                  node("e", "Exp", ["y"]), node("out", "Mul", ["l", "e"])], "out",
                           [("x", uni(r, (2, 3), dtype="float64")), ("y", uni(r, (2, 3), dtype="float64"))],
                           get_all=True))
    name = "float64-sens-reduce"
    r = rng_for(name)
    cases.append(make_case(name, [node("sq", "Square", ["x"]), node("out", "ReduceSum", ["sq"], axis=[0],
                                                                      keep_dims=True)], "out",
                           [("x", uni(r, (3, 2), dtype="float64"))], sens_param=True,
                           sens=uni(r, (1, 2), dtype="float64")))
    # float16
    name = "float16-add-mul"
    r = rng_for(name)
    cases.append(make_case(name, [node("a", "Add", ["x", "y"]), node("out", "Mul", ["a", "y"])], "out",
                           [("x", uni(r, (2, 3), dtype="float16")), ("y", uni(r, (2, 3), dtype="float16"))],
                           get_all=True))
    name = "float16-matmul-sigmoid"
    r = rng_for(name)
    cases.append(make_case(name, [node("m", "MatMul", ["x", "w"]), node("out", "Sigmoid", ["m"])], "out",
                           [("x", uni(r, (2, 3), dtype="float16"))], [("w", uni(r, (3, 2), dtype="float16"))],
                           get_all=True, get_by_list=True))
    name = "float16-relu-sens"
    r = rng_for(name)
    cases.append(make_case(name, [node("out", "ReLU", ["x"])], "out",
                           [("x", away(r, (4,), -2, 2, [0.0], 0.1, dtype="float16"))], sens_param=True,
                           sens=uni(r, (4,), dtype="float16")))
    name = "float16-reducesum"
    r = rng_for(name)
    cases.append(make_case(name, [node("e", "Exp", ["x"]), node("out", "ReduceSum", ["e"], axis=[1], keep_dims=False)],
                           "out", [("x", uni(r, (2, 4), -1, 1, dtype="float16"))]))
    return cases


def group_semantics() -> list[dict]:
    """Deliberate ties and kinks: these pin MindSpore's subgradient conventions."""
    cases = []
    name = "tie-Maximum"
    cases.append(make_case(name, [node("out", "Maximum", ["x", "y"])], "out",
                           [("x", np.array([1.0, 2.0, -1.0], np.float32)), ("y", np.array([1.0, 3.0, -1.0], np.float32))],
                           get_all=True, note="at x == y MindSpore splits the gradient 0.5 / 0.5"))
    name = "tie-Minimum"
    cases.append(make_case(name, [node("out", "Minimum", ["x", "y"])], "out",
                           [("x", np.array([1.0, 2.0, 0.5], np.float32)), ("y", np.array([1.0, 3.0, 0.5], np.float32))],
                           get_all=True, note="at x == y MindSpore splits the gradient 0.5 / 0.5"))
    name = "kink-ReLU-at-0"
    cases.append(make_case(name, [node("out", "ReLU", ["x"])], "out",
                           [("x", np.array([0.0, 1.0, -1.0, 0.0], np.float32))], note="ReLU'(0) = 0"))
    name = "kink-ReLU6-at-0-and-6"
    cases.append(make_case(name, [node("out", "ReLU6", ["x"])], "out",
                           [("x", np.array([0.0, 6.0, 3.0, 7.0, -1.0], np.float32))]))
    name = "kink-Abs-at-0"
    cases.append(make_case(name, [node("out", "Abs", ["x"])], "out",
                           [("x", np.array([0.0, 2.0, -2.0], np.float32))], note="Abs'(0) = 0"))
    name = "tie-ReduceMax"
    cases.append(make_case(name, [node("out", "ReduceMax", ["x"], axis=[1], keep_dims=False)], "out",
                           [("x", np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], np.float32))],
                           note="ties share the gradient equally"))
    name = "tie-ReduceMin"
    cases.append(make_case(name, [node("out", "ReduceMin", ["x"], axis=[], keep_dims=False)], "out",
                           [("x", np.array([[1.0, 3.0], [1.0, 2.0]], np.float32))]))
    name = "tie-MaxPool"
    cases.append(make_case(name, [node("out", "MaxPool", ["x"], kernel_size=2, strides=2, pad_mode="valid")], "out",
                           [("x", np.array([[[[1.0, 1.0, 0.0, 2.0], [1.0, 0.5, 2.0, 2.0]]]], np.float32))],
                           note="within a window the first maximum (row-major) takes the whole gradient"))
    name = "Cast-through-int32-straight-through"
    r = rng_for(name)
    cases.append(make_case(name, [node("i", "Cast", ["x"], dtype="int32"), node("f", "Cast", ["i"], dtype="float32"),
                                  node("out", "Mul", ["f", "y"])], "out",
                           [("x", np.array([1.5, -2.25, 0.75], np.float32)), ("y", uni(r, (3,)))], get_all=True,
                           note="MindSpore's Cast bprop casts the cotangent to the source dtype, so a "
                                "float->int32->float round trip passes the cotangent through truncated to int32 "
                                "(here trunc(y)), not zero. API.md: the service does not push truncated values "
                                "through casts, so x gets zeros"))
    cases[-1]["api_md_zero_inputs"] = [0]
    # MindSpore's backward rules that are not the derivative of the forward (docs/backward-rules.md)
    name = "SoftmaxCrossEntropyWithLogits-labels-not-summing-to-1"
    cases.append(make_case(name, [node("sce", "SoftmaxCrossEntropyWithLogits", ["logits", "labels"])], "sce:0",
                           [("logits", np.array([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]], np.float32)),
                            ("labels", np.array([[0.5, 0.5, 0.5], [0.2, 0.0, 0.0]], np.float32))], get_all=True,
                           note="label rows sum to 1.5 and 0.2: MindSpore's bprop is (softmax(logits) - labels) * "
                                "dloss whatever the labels sum to, not the loss's derivative "
                                "(softmax * sum(labels) - labels); labels get zeros"))
    name = "SoftmaxCrossEntropyWithLogits-labels-not-summing-to-1-sens"
    cases.append(make_case(name, [node("sce", "SoftmaxCrossEntropyWithLogits", ["logits", "labels"])],
                           ["sce:0", "sce:1"],
                           [("logits", np.array([[0.3, -1.0, 2.0, 0.0]], np.float32)),
                            ("labels", np.array([[1.0, 0.0, 1.0, 0.0]], np.float32))], get_all=True,
                           sens_param=True, sens=[np.array([2.0], np.float32),
                                                  np.array([[1.0, -1.0, 0.5, 3.0]], np.float32)],
                           note="dlogits = (softmax - labels) * dloss; the second output's sens is ignored"))
    name = "Pow-exponent-at-x-zero-and-negative"
    cases.append(make_case(name, [node("out", "Pow", ["x", "y"])], "out",
                           [("x", np.array([-2.0, -2.0, 0.5, 0.0, 0.0, 0.0, 0.0, 2.0], np.float32)),
                            ("y", np.array([3.0, 2.0, 1.5, 1.0, 0.5, -1.0, 0.0, -2.0], np.float32))], get_all=True,
                           note="the exponent's gradient out * log(x): NaN for x < 0 (as JAX); at x == 0 MindSpore "
                                "gives 0 for y >= 0 and -inf for y < 0 (JAX: NaN for y < 0)"))
    for op in ("Maximum", "Minimum"):
        name = f"{op}-NaN-operand"
        cases.append(make_case(name, [node("out", op, ["x", "y"])], "out",
                               [("x", np.array([np.nan, 2.0, 1.0, np.nan], np.float32)),
                                ("y", np.array([np.nan, 2.0, 3.0, np.nan], np.float32))], get_all=True,
                               note="an element where x or y is NaN is neither a tie, less nor greater: "
                                    "MindSpore gives both sides the whole gradient (JAX: 0 to both). Only "
                                    "NaN-NaN pairs here: with one NaN, MindSpore's CPU forward returns y "
                                    "(max(NaN, 1) = 1, max(1, NaN) = NaN) where the engine returns NaN"))
    return cases


GROUPS = {
    "elementwise_binary": group_elementwise_binary,
    "elementwise_unary": group_elementwise_unary,
    "compare_select_cast": group_compare_select_cast,
    "shape": group_shape,
    "linalg_reduce": group_linalg_reduce,
    "nn": group_nn,
    "flags": group_flags,
    "special": group_special,
    "semantics": group_semantics,
}

REQUIRED_OPS = """Add Sub Mul Div RealDiv Pow Maximum Minimum SquaredDifference Neg Abs Exp Log Log1p Sqrt Rsqrt
Square Reciprocal Sin Cos Tanh Sigmoid ReLU ReLU6 GeLU Softplus Erf Sign Floor Cast Select Equal Greater
GreaterEqual Less LessEqual Reshape Transpose ExpandDims Squeeze Tile BroadcastTo Concat Stack Split Slice
StridedSlice Gather OneHot ZerosLike OnesLike MatMul BatchMatMul ReduceSum ReduceMean ReduceMax ReduceMin
ReduceProd LogSumExp CumSum Softmax LogSoftmax BiasAdd Conv2D MaxPool AvgPool LayerNorm BatchNorm
SoftmaxCrossEntropyWithLogits SparseSoftmaxCrossEntropyWithLogits L2Loss StopGradient""".split()


def cases_by_group() -> dict[str, list[dict]]:
    out = {g: f() for g, f in GROUPS.items()}
    names = [c["name"] for cs in out.values() for c in cs]
    dup = [n for n, k in Counter(names).items() if k > 1]
    if dup:
        raise AssertionError(f"duplicate case names: {dup}")
    return out


def all_cases() -> list[dict]:
    return [c for cs in cases_by_group().values() for c in cs]


def op_counts(cases: Iterable[dict]) -> Counter:
    cnt: Counter = Counter()
    for c in cases:
        for op in set(ops_of(c)):
            cnt[op] += 1
    return cnt


def main(argv: list[str]) -> int:
    groups = cases_by_group()
    if len(argv) > 1 and argv[1] == "--dump":
        import os
        os.makedirs(argv[2], exist_ok=True)
        for g, cs in groups.items():
            with open(os.path.join(argv[2], f"{g}.json"), "w") as f:
                json.dump({"cases": cs}, f)
    cnt = op_counts(all_cases())
    for g, cs in groups.items():
        print(f"{g}: {len(cs)} cases")
    print("total:", sum(len(cs) for cs in groups.values()))
    missing = [op for op in REQUIRED_OPS if op not in cnt]
    print("cases per op:", ", ".join(f"{op} {cnt[op]}" for op in REQUIRED_OPS))
    if missing:
        print("MISSING OPS:", missing)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
