"""Each ONNX converter, one node at a time, against the ONNX reference implementation.

A one-node model is built with ``onnx.helper``; ``onnx.reference.ReferenceEvaluator`` (the
official NumPy implementation of the ONNX spec, in the ``onnx`` package) gives the expected
outputs. The model is imported to gradnet/1 and run by the engine, which must give the same
values. Attribute variants and opsets (13 to 21) are spelled out per case. For the converters
that compose several catalog ops (pooling with explicit pads, InstanceNormalization, the
recurrent layers, exact Gelu, 1-D convolutions) the gradients are checked by central differences
in float64 as well.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import engine
import engine.onnx

RNG = np.random.default_rng(0)
F = np.float32


def f32(*shape, low=-1.0, high=1.0):
    return RNG.uniform(low, high, size=shape).astype(F)


def f64(*shape):
    return RNG.normal(size=shape)


def elem(arr: np.ndarray) -> int:
    return helper.np_dtype_to_tensor_dtype(arr.dtype)


def build(op: str, inputs: dict[str, np.ndarray], attrs: dict[str, Any] | None = None, *,
          inits: dict[str, np.ndarray] | None = None, opset: int = 17, outputs: int = 1,
          order: list[str] | None = None):
    """A one-node model: graph inputs ``inputs``, initializers ``inits``; ``order`` names the
    node's inputs ('' for an empty optional one). Returns (model bytes, expected outputs)."""
    inits = inits or {}
    names = order if order is not None else list(inputs) + list(inits)
    outs = [f"y{k}" for k in range(outputs)]
    node = helper.make_node(op, names, outs, name=f"the_{op.lower()}", **(attrs or {}))

    def model(out_infos):
        graph = helper.make_graph(
            [node], f"one-{op}",
            [helper.make_tensor_value_info(k, elem(v), list(v.shape)) for k, v in inputs.items()],
            out_infos, [numpy_helper.from_array(v, k) for k, v in inits.items()])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)

    ref = ReferenceEvaluator(model([helper.make_empty_tensor_value_info(o) for o in outs]))
    expected = ref.run(None, inputs)
    infos = [helper.make_tensor_value_info(o, elem(np.asarray(e)), list(np.shape(e))) for o, e in zip(outs, expected)]
    return model(infos).SerializeToString(), [np.asarray(e) for e in expected]


@pytest.fixture(scope="module")
def eng():
    return engine.Engine(cache_size=512)


def run(eng, data: bytes, inputs: dict[str, np.ndarray]):
    net = engine.parse_network(engine.onnx.import_model(data))
    xs = [inputs[s.name] for s in net.inputs]
    return net, eng.grad(net, xs, get_all=True, return_value=True)


def check(eng, op, inputs, attrs=None, *, tol=1e-5, fd=False, **kw):
    data, expected = build(op, inputs, attrs, **kw)
    net, result = run(eng, data, inputs)
    assert len(result.value) == len(expected)
    for k, (got, want) in enumerate(zip(result.value, expected)):
        assert got.shape == want.shape, f"{op} output {k}: shape {got.shape}, the reference's {want.shape}"
        assert got.dtype == want.dtype, f"{op} output {k}: dtype {got.dtype}, the reference's {want.dtype}"
        np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=tol, atol=tol)
    if fd:
        finite_differences(eng, net, inputs, result)
    return net, result


def finite_differences(eng, net, inputs, result, h=1e-6, tol=1e-6):
    """get_all gradients with a random sens against central differences (float64 inputs)."""
    xs = [inputs[s.name] for s in net.inputs]
    sens = [RNG.normal(size=v.shape) for v in result.value]
    kwargs = dict(get_all=True, sens_param=True, sens=sens if len(sens) > 1 else sens[0], return_value=True)
    grads = eng.grad(net, xs, **kwargs).gradients

    def loss(args):
        values = eng.grad(net, args, **kwargs).value
        return sum(float(np.sum(s * v)) for s, v in zip(sens, values))

    for i, (x, g) in enumerate(zip(xs, grads)):
        if x.dtype != np.float64:
            continue
        numeric = np.zeros(x.shape)
        for j in np.ndindex(x.shape):
            plus, minus = x.copy(), x.copy()
            plus[j] += h
            minus[j] -= h
            numeric[j] = (loss(xs[:i] + [plus] + xs[i + 1:]) - loss(xs[:i] + [minus] + xs[i + 1:])) / (2 * h)
        np.testing.assert_allclose(g, numeric, rtol=tol, atol=tol, err_msg=f"input {net.inputs[i].name}")


# -- elementwise ------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow"])
@pytest.mark.parametrize("opset", [13, 21])
def test_binary(eng, op, opset):
    x, y = f32(2, 3, low=0.5, high=2), f32(3, low=0.5, high=2)
    check(eng, op, {"x": x, "y": y}, opset=opset)


def test_pow_with_an_integer_exponent(eng):
    check(eng, "Pow", {"x": f32(2, 3)}, inits={"p": np.asarray(2, np.int64)}, opset=15)


@pytest.mark.parametrize("op", ["Neg", "Sqrt", "Exp", "Log", "Erf", "Tanh", "Sigmoid", "Relu", "Abs", "Reciprocal",
                                "Softplus", "Sin", "Cos"])
def test_unary(eng, op):
    check(eng, op, {"x": f32(2, 3, low=0.2, high=2)})


@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
def test_variadic(eng, op):
    check(eng, op, {"a": f32(2, 3), "b": f32(3), "c": f32(2, 1)})


def test_leaky_relu(eng):
    check(eng, "LeakyRelu", {"x": f32(2, 5)}, {"alpha": 0.3})
    check(eng, "LeakyRelu", {"x": f32(2, 5)})  # ONNX's default alpha 0.01, not MindSpore's 0.2


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_opset_20(eng, approximate):
    # the reference evaluates Gelu's function body, whose constants are float32: 1e-6 apart
    x = f64(2, 3)
    _, result = check(eng, "Gelu", {"x": x}, {"approximate": approximate}, opset=20, tol=1e-6, fd=True)
    if approximate == "none":
        exact = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.reshape(-1)]
        np.testing.assert_allclose(result.value[0].reshape(-1), exact, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("op, attrs", [
    ("Elu", {}), ("Elu", {"alpha": 0.5}), ("Selu", {}), ("Celu", {"alpha": 1.5}), ("HardSigmoid", {}),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("HardSwish", {}), ("Mish", {}), ("Softsign", {}),
])
def test_activations(eng, op, attrs):
    x = f64(3, 4) * 3
    x[0, 0] = 100.0  # exp(100) in the branch Select drops must not make the gradient NaN
    # ONNX float attrs (and the reference's defaults) are float32: 1e-6 apart from float64 ones
    check(eng, op, {"x": x}, attrs, opset=18, tol=1e-6, fd=True)


def test_prelu(eng):
    check(eng, "PRelu", {"x": f64(2, 3, 2, 2), "slope": f64(3, 1, 1)}, opset=16, tol=1e-12, fd=True)


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, -1, 2])
def test_trilu(eng, upper, k):
    inits = {} if k is None else {"k": np.asarray(k, np.int64)}
    check(eng, "Trilu", {"x": f64(2, 3, 4)}, {"upper": upper}, inits=inits, opset=14, tol=0, fd=True)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax(eng, op, axis):
    check(eng, op, {"x": f32(2, 3, 2)}, {"axis": axis}, opset=13)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_softmax_before_opset_13_normalizes_the_trailing_axes(eng, op, axis):
    # The reference evaluator implements opset 13's Softmax for every opset; opset 11's spec:
    # the input seen as [prod(shape[:axis]), prod(shape[axis:])], normalized along its rows.
    x = f64(2, 3, 2)
    data, _ = build(op, {"x": x}, {"axis": axis}, opset=11)
    _, result = run(eng, data, {"x": x})
    k = axis % 3
    rows = x.reshape(int(np.prod(x.shape[:k])), -1)
    z = rows - rows.max(axis=1, keepdims=True)
    soft = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    expected = (soft if op == "Softmax" else np.log(soft)).reshape(x.shape)
    np.testing.assert_allclose(result.value[0], expected, rtol=1e-12, atol=1e-12)


def test_opset_11_spellings(eng):
    check(eng, "Squeeze", {"x": f32(1, 3, 1)}, {"axes": [0]}, opset=11)
    check(eng, "Unsqueeze", {"x": f32(3)}, {"axes": [0, 2]}, opset=11)
    check(eng, "Split", {"x": f32(2, 5)}, {"axis": 1, "split": [2, 3]}, outputs=2, opset=11)
    check(eng, "ReduceSum", {"x": f32(2, 3)}, {"axes": [1], "keepdims": 0}, opset=11)
    check(eng, "Dropout", {"x": f32(2, 3)}, {"ratio": 0.3}, opset=11)


def test_clip(eng):
    check(eng, "Clip", {"x": f32(2, 5)}, inits={"lo": np.asarray(-0.5, F), "hi": np.asarray(0.25, F)}, opset=13)
    check(eng, "Clip", {"x": f32(2, 5)}, inits={"hi": np.asarray(0.25, F)}, order=["x", "", "hi"], opset=13)


@pytest.mark.parametrize("to", [TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.INT32])
def test_cast_and_cast_like(eng, to):
    check(eng, "Cast", {"x": f32(2, 3) * 4}, {"to": to})
    like = np.zeros(1, helper.tensor_dtype_to_np_dtype(to))
    check(eng, "CastLike", {"x": f32(2, 3) * 4}, inits={"like": like}, opset=15)


def test_where(eng):
    check(eng, "Where", {"c": RNG.random((2, 3)) < 0.5, "x": f32(2, 3), "y": f32(3)})


def test_identity_and_dropout(eng):
    check(eng, "Identity", {"x": f32(2, 3)})
    check(eng, "Dropout", {"x": f32(2, 3)}, inits={"ratio": np.asarray(0.5, F), "training": np.asarray(False)})
    check(eng, "Dropout", {"x": f32(2, 3)}, outputs=2, opset=13)  # the mask output: all true


@pytest.mark.parametrize("attrs", [
    {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},  # torch's
    {"mode": "nearest"},  # half_pixel, round_prefer_floor
])
@pytest.mark.parametrize("scales", [[1, 1, 2, 2], [1, 1, 3, 1]])
def test_resize_nearest_by_integer_factors(eng, attrs, scales):
    check(eng, "Resize", {"x": f64(1, 2, 3, 2)}, attrs, inits={"scales": np.asarray(scales, F)},
          order=["x", "", "scales"], opset=13, tol=0, fd=True)


def test_resize_by_sizes_and_the_refusals(eng):
    check(eng, "Resize", {"x": f32(1, 2, 3, 2)}, {"mode": "nearest"},
          inits={"sizes": np.asarray([1, 2, 6, 4], np.int64)}, order=["x", "", "", "sizes"], opset=13)
    data, _ = build("Resize", {"x": f32(1, 1, 2, 2)}, {"mode": "linear"}, inits={"scales": np.asarray([1, 1, 2, 2], F)},
                    order=["x", "", "scales"], opset=13)
    with pytest.raises(engine.onnx.UnsupportedOnnxOpError, match="mode 'linear'"):
        engine.onnx.import_model(data)


# -- linear algebra and reductions --------------------------------------------------------------------


@pytest.mark.parametrize("shapes", [((2, 3), (3, 4)), ((2, 2, 3), (3, 4)), ((2, 1, 2, 3), (3, 3, 2)), ((3,), (3, 2))])
def test_matmul(eng, shapes):
    check(eng, "MatMul", {"a": f32(*shapes[0]), "b": f32(*shapes[1])})


@pytest.mark.parametrize("attrs", [{}, {"transA": 1}, {"transB": 1, "alpha": 0.5, "beta": 2.0}, {"transA": 1, "transB": 1}])
@pytest.mark.parametrize("bias", [True, False])
def test_gemm(eng, attrs, bias):
    a = f32(3, 2) if attrs.get("transA") else f32(2, 3)
    w = f32(4, 3) if attrs.get("transB") else f32(3, 4)
    inits = {"w": w, "c": f32(4)} if bias else {"w": w}
    check(eng, "Gemm", {"a": a}, attrs, inits=inits)


@pytest.mark.parametrize("equation", ["ij,jk->ik", "bij,bjk->bik", "ij->ji", "bhqd,bhkd->bhqk"])
def test_einsum(eng, equation):
    shapes = {"ij,jk->ik": [(2, 3), (3, 4)], "bij,bjk->bik": [(2, 2, 3), (2, 3, 2)], "ij->ji": [(2, 3)],
              "bhqd,bhkd->bhqk": [(1, 2, 3, 4), (1, 2, 5, 4)]}[equation]
    check(eng, "Einsum", {f"x{k}": f32(*s) for k, s in enumerate(shapes)}, {"equation": equation}, opset=12 + 1)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2",
                                "ReduceSumSquare", "ReduceLogSumExp"])
@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("axes, keepdims", [([1], 1), ([0, -1], 0), (None, 1)])
def test_reduce(eng, op, opset, axes, keepdims):
    x = f32(2, 3, 2, low=0.5, high=1.5)
    attrs: dict[str, Any] = {"keepdims": keepdims}
    as_input = op == "ReduceSum" or opset >= 18
    if axes is None:
        check(eng, op, {"x": x}, attrs, opset=opset)
    elif as_input:
        check(eng, op, {"x": x}, attrs, inits={"axes": np.asarray(axes, np.int64)}, opset=opset)
    else:
        check(eng, op, {"x": x}, {**attrs, "axes": axes}, opset=opset)


# -- shapes -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [[3, -1], [0, 6], [-1], [2, 0, 1, 2]])
def test_reshape(eng, shape):
    check(eng, "Reshape", {"x": f32(2, 3, 3)[:, :, :2].copy()}, inits={"s": np.asarray(shape, np.int64)})


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_flatten(eng, axis):
    check(eng, "Flatten", {"x": f32(2, 3, 4)}, {"axis": axis})


@pytest.mark.parametrize("perm", [None, [1, 0, 2], [2, 0, 1]])
def test_transpose(eng, perm):
    check(eng, "Transpose", {"x": f32(2, 3, 4)}, {} if perm is None else {"perm": perm})


@pytest.mark.parametrize("opset", [11 + 2, 21])
def test_squeeze_unsqueeze(eng, opset):
    check(eng, "Squeeze", {"x": f32(1, 3, 1, 2)}, inits={"axes": np.asarray([0, -2], np.int64)}, opset=opset)
    check(eng, "Squeeze", {"x": f32(1, 3, 1, 2)}, opset=opset)
    check(eng, "Unsqueeze", {"x": f32(3, 2)}, inits={"axes": np.asarray([0, 3, -1], np.int64)}, opset=opset)


def test_concat(eng):
    check(eng, "Concat", {"a": f32(2, 3), "b": f32(2, 1), "c": f32(2, 2)}, {"axis": -1})


@pytest.mark.parametrize("case", ["equal13", "sizes13", "num_outputs18", "uneven18"])
def test_split(eng, case):
    x = f32(2, 7)
    if case == "equal13":
        check(eng, "Split", {"x": f32(2, 6)}, {"axis": 1}, outputs=3, opset=13)
    elif case == "sizes13":
        check(eng, "Split", {"x": x}, {"axis": 1}, inits={"split": np.asarray([2, 4, 1], np.int64)}, outputs=3, opset=13)
    elif case == "num_outputs18":
        check(eng, "Split", {"x": f32(2, 6)}, {"axis": -1, "num_outputs": 2}, outputs=2, opset=18)
    else:
        check(eng, "Split", {"x": x}, {"axis": 1, "num_outputs": 3}, outputs=3, opset=18)


@pytest.mark.parametrize("starts, ends, axes, steps", [
    ([1], [3], [1], None), ([0, -1], [2, -4], [0, 2], [1, -1]), ([2], [2**63 - 1], [-1], [1]),
    ([-1], [-(2**63)], [1], [-2]), ([0, 0], [1, 100], None, None),
])
def test_slice(eng, starts, ends, axes, steps):
    inits = {"starts": np.asarray(starts, np.int64), "ends": np.asarray(ends, np.int64)}
    if axes is not None:
        inits["axes"] = np.asarray(axes, np.int64)
    if steps is not None:
        inits["steps"] = np.asarray(steps, np.int64)
    check(eng, "Slice", {"x": f32(3, 4, 5)}, inits=inits)


@pytest.mark.parametrize("indices, axis", [(np.asarray([0, 2, -1], np.int64), 0), (np.asarray(1, np.int64), 1),
                                           (np.asarray([[0, 1], [3, 3]], np.int64), -1)])
def test_gather(eng, indices, axis):
    check(eng, "Gather", {"x": f32(3, 4)}, {"axis": axis}, inits={"i": indices})


def test_gather_with_input_indices(eng):
    check(eng, "Gather", {"x": f32(5, 2), "i": np.asarray([[4, 0], [1, 1]], np.int64)})


@pytest.mark.parametrize("shape", [[2, 3, 4], [3, 1], [1, 1, 1], [4]])
def test_expand(eng, shape):
    check(eng, "Expand", {"x": f32(3, 1)}, inits={"s": np.asarray(shape, np.int64)})


def test_tile_and_pad(eng):
    check(eng, "Tile", {"x": f32(2, 3)}, inits={"r": np.asarray([2, 1], np.int64)})
    check(eng, "Pad", {"x": f32(2, 3)}, inits={"p": np.asarray([1, 0, 0, 2], np.int64), "v": np.asarray(0.5, F)},
          opset=13)
    check(eng, "Pad", {"x": f32(2, 3)}, inits={"p": np.asarray([1, 2], np.int64), "v": np.asarray(0.0, F),
                                               "axes": np.asarray([-1], np.int64)}, opset=18)


def test_constant_shape_and_constant_of_shape_fold(eng):
    net, _ = check(eng, "Shape", {"x": f32(2, 3, 4)}, {"start": 1}, opset=15)
    assert not net.nodes  # folded: the output is a constant
    check(eng, "ConstantOfShape", {}, {"value": numpy_helper.from_array(np.asarray([2.5], F))},
          inits={"s": np.asarray([2, 3], np.int64)})


# -- neural-network ops ------------------------------------------------------------------------------------


CONVS = [
    {}, {"pads": [1, 1, 1, 1]}, {"strides": [2, 1], "pads": [0, 1, 2, 0]}, {"dilations": [2, 2]},
    {"group": 2}, {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, {"auto_pad": "SAME_LOWER", "strides": [2, 2]},
    {"auto_pad": "VALID"},
]


@pytest.mark.parametrize("attrs", CONVS)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d(eng, attrs, bias):
    group = attrs.get("group", 1)
    inits = {"w": f32(4, 4 // group, 3, 2)}
    if bias:
        inits["b"] = f32(4)
    check(eng, "Conv", {"x": f32(2, 4, 7, 6)}, attrs, inits=inits, tol=1e-4)


@pytest.mark.parametrize("attrs", [{"pads": [2, 1]}, {"strides": [2], "dilations": [2]}, {"group": 2}])
def test_conv1d(eng, attrs):
    group = attrs.get("group", 1)
    check(eng, "Conv", {"x": f64(1, 2, 7)}, attrs, inits={"w": f64(4, 2 // group, 3), "b": f64(4)}, tol=1e-10,
          fd=True)


@pytest.mark.parametrize("attrs", [
    {}, {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
    {"dilations": [2, 1], "pads": [0, 1, 1, 0]}, {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
])
def test_conv_transpose(eng, attrs):
    check(eng, "ConvTranspose", {"x": f32(1, 4, 4, 3)}, attrs, inits={"w": f32(4, 3, 3, 2), "b": f32(3)}, tol=1e-4)


@pytest.mark.parametrize("attrs, pads", [
    ({"group": 2, "strides": [2, 1]}, (0, 0, 0, 0)),
    # total padding 2*3 + 3 - 8 = 1 and 2*2 + 2 - 5 = 1; without auto_pad the larger half goes first
    ({"strides": [2, 2], "output_shape": [8, 5]}, (1, 0, 1, 0)),
    ({"strides": [2, 2], "output_shape": [8, 5], "auto_pad": "SAME_UPPER"}, (0, 1, 0, 1)),
])
def test_conv_transpose_groups_and_output_shape(eng, attrs, pads):
    # The reference evaluator refuses groups and output_shape: the definition (a scatter) instead.
    from test_ops_forward import conv_transpose_reference

    group = attrs.get("group", 1)
    x, w = f64(1, 4, 4, 3), f64(4, 2 if group == 1 else 1, 3, 2)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], **attrs)
    expected = conv_transpose_reference(x, w, tuple(attrs["strides"]), pads, (1, 1), group, (0, 0))
    graph = helper.make_graph([node], "ct", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, list(expected.shape))],
                              [numpy_helper.from_array(w, "w")])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
    _, result = run(eng, data, {"x": x})
    np.testing.assert_allclose(result.value[0], expected, rtol=1e-10, atol=1e-10)


def test_conv_transpose_gradients(eng):
    check(eng, "ConvTranspose", {"x": f64(1, 2, 3, 3), "w": f64(2, 2, 2, 2)}, {"strides": [2, 2], "pads": [1, 0, 0, 1]},
          tol=1e-10, fd=True)


POOLS = [
    {"kernel_shape": [2, 2]}, {"kernel_shape": [2, 2], "strides": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER", "strides": [2, 2]},
]


@pytest.mark.parametrize("attrs", POOLS)
def test_max_pool(eng, attrs):
    check(eng, "MaxPool", {"x": f64(1, 2, 6, 5)}, attrs, tol=1e-12, fd=True)


@pytest.mark.parametrize("attrs", POOLS)
@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool(eng, attrs, count_include_pad):
    check(eng, "AveragePool", {"x": f64(1, 2, 6, 5)}, {**attrs, "count_include_pad": count_include_pad},
          opset=19, tol=1e-12, fd=True)


def test_pool_1d(eng):
    check(eng, "MaxPool", {"x": f32(1, 2, 7)}, {"kernel_shape": [3], "strides": [2], "pads": [1, 1]})
    check(eng, "AveragePool", {"x": f32(1, 2, 7)}, {"kernel_shape": [2], "strides": [2]})


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pool(eng, op):
    check(eng, op, {"x": f32(2, 3, 4, 5)})


def test_batch_normalization(eng):
    for opset in (14, 15):
        check(eng, "BatchNormalization", {"x": f32(2, 3, 4, 4)}, {"epsilon": 1e-3}, opset=opset,
              inits={"s": f32(3), "b": f32(3), "m": f32(3), "v": f32(3, low=0.5, high=1.5)})
    # opset 13: the reference evaluator's BatchNormalization-9 leaves epsilon out; the formula instead
    x, (s, b, m, v) = f32(2, 3, 4, 4), (f32(3), f32(3), f32(3), f32(3, low=0.5, high=1.5))
    data, _ = build("BatchNormalization", {"x": x}, {"epsilon": 1e-3}, opset=13, inits=dict(s=s, b=b, m=m, v=v))
    _, result = run(eng, data, {"x": x})
    c = (slice(None), None, None)
    np.testing.assert_allclose(result.value[0], (x - m[c]) / np.sqrt(v[c] + 1e-3) * s[c] + b[c], rtol=1e-5, atol=1e-6)
    check(eng, "BatchNormalization", {"x": f32(4, 3)}, inits={"s": f32(3), "b": f32(3), "m": f32(3),
                                                               "v": f32(3, low=0.5, high=1.5)})


@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("bias", [True, False])
def test_layer_normalization(eng, axis, bias):
    shape = (3, 4) if axis == -1 else (2, 3, 4)
    inits = {"s": f64(*shape[-(1 if axis == -1 else 2):])}
    if bias:
        inits["b"] = f64(*inits["s"].shape)
    check(eng, "LayerNormalization", {"x": f64(2, 3, 4)}, {"axis": axis, "epsilon": 1e-4}, inits=inits,
          tol=1e-10, fd=True)


def test_instance_normalization(eng):
    check(eng, "InstanceNormalization", {"x": f64(2, 3, 3, 2), "s": f64(3), "b": f64(3)}, {"epsilon": 1e-3},
          tol=1e-10, fd=True)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_group_normalization(eng, groups):
    # epsilon is a float32 attr: 1e-6 apart from float64's
    check(eng, "GroupNormalization", {"x": f64(2, 4, 3, 2), "s": f64(4), "b": f64(4)},
          {"num_groups": groups, "epsilon": 1e-3}, opset=21, tol=1e-6, fd=True)


# -- recurrent layers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("initial", [False, True])
def test_lstm(eng, direction, initial):
    d, h, i, seq, batch = (2 if direction == "bidirectional" else 1), 3, 2, 3, 2
    inputs = {"x": f64(seq, batch, i)}
    inits = {"w": f64(d, 4 * h, i), "r": f64(d, 4 * h, h), "b": f64(d, 8 * h)}
    order = ["x", "w", "r", "b"]
    if initial:
        inputs.update(h0=f64(d, batch, h), c0=f64(d, batch, h))
        order += ["", "h0", "c0"]
    check(eng, "LSTM", inputs, {"hidden_size": h, "direction": direction}, inits=inits, order=order, outputs=3,
          tol=1e-10, fd=True, opset=14)


@pytest.mark.parametrize("linear_before_reset", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_gru(eng, linear_before_reset, direction):
    d, h, i, seq, batch = (2 if direction == "bidirectional" else 1), 3, 2, 3, 2
    inputs = {"x": f64(seq, batch, i), "h0": f64(d, batch, h)}
    inits = {"w": f64(d, 3 * h, i), "r": f64(d, 3 * h, h), "b": f64(d, 6 * h)}
    check(eng, "GRU", inputs, {"hidden_size": h, "direction": direction, "linear_before_reset": linear_before_reset},
          inits=inits, order=["x", "w", "r", "b", "", "h0"], outputs=2, tol=1e-10, fd=True, opset=14)


def test_explicit_default_activations_are_accepted_and_others_refused(eng):
    h, i = 3, 2
    inits = {"w": f32(2, 3 * h, i), "r": f32(2, 3 * h, h)}
    attrs = {"hidden_size": h, "direction": "bidirectional", "activations": ["Sigmoid", "Tanh"] * 2}
    check(eng, "GRU", {"x": f32(2, 1, i)}, attrs, inits=inits, outputs=2, opset=14)
    data, _ = build("GRU", {"x": f32(2, 1, i)}, {**attrs, "activations": ["Sigmoid", "Relu"] * 2}, inits=inits,
                    outputs=2, opset=14)
    with pytest.raises(engine.onnx.UnsupportedOnnxOpError, match="activations"):
        engine.onnx.import_model(data)


def test_lstm_without_bias_and_with_batch_first_layout(eng):
    h, i = 3, 2
    check(eng, "LSTM", {"x": f32(2, 4, i)}, {"hidden_size": h, "layout": 1}, opset=14,
          inits={"w": f32(1, 4 * h, i), "r": f32(1, 4 * h, h)}, outputs=3)


def test_supported_ops_cover_the_issue_list():
    wanted = """Gemm MatMul Add Sub Mul Div Pow Neg Sqrt Exp Log Erf Tanh Sigmoid Relu LeakyRelu Gelu Softmax
    LogSoftmax Conv ConvTranspose BatchNormalization LayerNormalization InstanceNormalization MaxPool AveragePool
    GlobalAveragePool Flatten Reshape Transpose Squeeze Unsqueeze Concat Split Slice Gather Expand Where Cast
    Constant ConstantOfShape Shape Identity Dropout ReduceMean ReduceSum ReduceMax Einsum CastLike LSTM GRU
    Elu Selu Celu HardSigmoid HardSwish Mish PRelu Trilu""".split()
    missing = [op for op in wanted if op not in engine.onnx.SUPPORTED_OPS]
    assert not missing, missing
