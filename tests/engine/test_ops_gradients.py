"""Finite-difference checks of every differentiable op's gradient, in float64.

Each op runs as a one-node ``gradnet/1`` network through ``Engine.grad(get_all, sens_param)``
with a random cotangent per output; the gradient of every float input is compared with central
differences of ``L(x) = sum_k <sens_k, out_k(x)>``. Hypothesis draws shapes, attrs and a seed
for the values. Values keep clear of the points where an op is not differentiable (ties, kinks,
poles), so the difference quotients are accurate to ~1e-9.

MindSpore's gradient is not always the mathematical one, and the checks say so per op:

- ``zero``: MindSpore's gradient is exactly zero (Floor, Sign, StopGradient, ZerosLike, ...).
- ``frozen``: inputs MindSpore's bprop gives zeros (BatchNorm's mean and variance, the labels of
  SoftmaxCrossEntropyWithLogits): their gradients must be exactly zero.
- ``live``: the outputs whose cotangent MindSpore's bprop reads (LayerNorm reads only dout[0]);
  the difference quotient leaves the others out, so their cotangent must not change the gradient.

Every op in the catalog is either checked here or listed in ``NOT_DIFFERENTIABLE`` (verified
too): a new op without a check fails ``test_every_differentiable_op_is_checked``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from one_node import network

import engine
from engine import OPS, ShapeError

SETTINGS = settings(max_examples=10, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def eng():
    return engine.Engine(cache_size=2048)


@dataclass
class Case:
    inputs: list[np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)
    zero: bool = False  # MindSpore's gradient is exactly zero
    frozen: tuple[int, ...] = ()  # inputs whose gradient MindSpore defines as zero
    live: tuple[int, ...] | None = None  # outputs whose cotangent reaches the inputs (None: all)
    h: float = 1e-6
    tol: float = 1e-6


# -- values that keep clear of non-differentiable points ------------------------------------------


def normal(rng, shape):
    return rng.normal(size=shape)


def away(rng, shape, low=0.3, high=2.0):
    """|x| in [low, high], either sign: clear of 0 (Abs, ReLU, Reciprocal, divisors)."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, high, size=shape)


def positive(rng, shape, low=0.5, high=2.0):
    return rng.uniform(low, high, size=shape)


def distinct(rng, shape):
    """Values at least 0.2 apart (no ties for max/min/pooling)."""
    n = math.prod(shape)
    return ((rng.permutation(n) - n / 2) * 0.25 + rng.uniform(0, 0.05, n)).reshape(shape)


Draw = Callable[[st.SearchStrategy], Any]
UNARY_SHAPES = [(3,), (2, 3)]
BINARY_SHAPES = [((2, 3), (2, 3)), ((2, 3), (3,)), ((2, 1), (1, 3)), ((), (2, 2))]


def unary(values=normal, **extra):
    def build(draw: Draw, rng) -> Case:
        return Case([values(rng, draw(st.sampled_from(UNARY_SHAPES)))], **extra)

    return build


def binary(x_values=normal, y_values=normal):
    def build(draw: Draw, rng) -> Case:
        sx, sy = draw(st.sampled_from(BINARY_SHAPES))
        return Case([x_values(rng, sx), y_values(rng, sy)])

    return build


def no_tie(draw: Draw, rng) -> Case:
    """Maximum/Minimum: |x| in [1.5, 3] and |y| <= 1, so x and y are never within 0.5; either may win."""
    sx, sy = draw(st.sampled_from(BINARY_SHAPES))
    return Case([away(rng, sx, 1.5, 3.0), rng.uniform(-1.0, 1.0, size=sy)])


def relu6_values(rng, shape):
    centers = rng.choice([-1.5, -0.6, 0.6, 3.0, 5.4, 6.6, 7.5], size=shape)
    return centers + rng.uniform(-0.25, 0.25, size=shape)


def reduce_case(values=normal):
    def build(draw: Draw, rng) -> Case:
        axis = draw(st.sampled_from([[], 0, 1, -1, [0, 1], [1]]))
        keep_dims = draw(st.booleans())
        return Case([values(rng, (2, 3))], {"axis": axis, "keep_dims": keep_dims})

    return build


def cast_case(draw: Draw, rng) -> Case:
    # multiples of 1/8 and a step of 1/8 are exact in every float dtype: the quotient is exact
    dtype = draw(st.sampled_from(["float64", "float32", "float16", "bfloat16"]))
    x = rng.integers(-16, 17, size=draw(st.sampled_from(UNARY_SHAPES))) / 8
    return Case([x], {"dtype": dtype}, h=0.125, tol=1e-9)


def select_case(draw: Draw, rng) -> Case:
    shape = draw(st.sampled_from(UNARY_SHAPES))
    return Case([rng.random(shape) < 0.5, normal(rng, shape), normal(rng, shape)])


def softmax_case(draw: Draw, rng) -> Case:
    return Case([normal(rng, (2, 3))], {"axis": draw(st.sampled_from([-1, 0, [0, 1]]))})


def log_softmax_case(draw: Draw, rng) -> Case:
    return Case([normal(rng, (2, 3))], {"axis": draw(st.sampled_from([-1, 0]))})


def bias_add_case(draw: Draw, rng) -> Case:
    shape, data_format = draw(st.sampled_from([((2, 3), "NCHW"), ((2, 3, 2, 2), "NCHW"), ((2, 2, 2, 3), "NHWC")]))
    return Case([normal(rng, shape), normal(rng, (3,))], {"data_format": data_format})


def softmax_ce_case(draw: Draw, rng) -> Case:
    labels = rng.dirichlet(np.ones(4), size=3)
    # MindSpore: the labels get zeros, and only the loss's cotangent is used (the gradient output is a constant)
    return Case([normal(rng, (3, 4)), labels], frozen=(1,), live=(0,))


def sparse_softmax_ce_case(draw: Draw, rng) -> Case:
    return Case([normal(rng, (3, 4)), rng.integers(0, 4, size=3).astype(np.int32)], {"is_grad": False})


def matmul_case(draw: Draw, rng) -> Case:
    ta, tb = draw(st.booleans()), draw(st.booleans())
    x, y = normal(rng, (2, 3)), normal(rng, (3, 4))
    return Case([x.T.copy() if ta else x, y.T.copy() if tb else y], {"transpose_a": ta, "transpose_b": tb})


def batch_matmul_case(draw: Draw, rng) -> Case:
    ta, tb = draw(st.booleans()), draw(st.booleans())
    x, y = normal(rng, (2, 2, 3)), normal(rng, (2, 3, 2))
    x = np.swapaxes(x, -1, -2).copy() if ta else x
    y = np.swapaxes(y, -1, -2).copy() if tb else y
    return Case([x, y], {"transpose_a": ta, "transpose_b": tb})


def cum_sum_case(draw: Draw, rng) -> Case:
    attrs = {"axis": draw(st.sampled_from([0, 1, -1])), "exclusive": draw(st.booleans()), "reverse": draw(st.booleans())}
    return Case([normal(rng, (2, 3))], attrs)


# -- shape ops -----------------------------------------------------------------------------------


def reshape_case(draw: Draw, rng) -> Case:
    return Case([normal(rng, (2, 3, 2))], {"shape": draw(st.sampled_from([[3, -1], [-1], [2, 6], [12, 1]]))})


def transpose_case(draw: Draw, rng) -> Case:
    return Case([normal(rng, (2, 3, 2))], {"input_perm": list(draw(st.permutations([0, 1, 2])))})


def expand_dims_case(draw: Draw, rng) -> Case:
    return Case([normal(rng, (2, 3))], {"axis": draw(st.integers(-3, 2))})


def squeeze_case(draw: Draw, rng) -> Case:
    return Case([normal(rng, (1, 3, 1, 2))], {"axis": draw(st.sampled_from([[], [0], [2], [0, 2], -2]))})


def tile_case(draw: Draw, rng) -> Case:
    return Case([normal(rng, (2, 3))], {"multiples": draw(st.sampled_from([[2, 1], [1, 2], [2, 1, 2]]))})


def broadcast_to_case(draw: Draw, rng) -> Case:
    return Case([normal(rng, (3, 1))], {"shape": draw(st.sampled_from([[2, 3, 4], [2, -1, 4], [3, 2], [-1, -1]]))})


def concat_case(draw: Draw, rng) -> Case:
    axis = draw(st.sampled_from([0, 1, -1]))
    sizes = draw(st.lists(st.sampled_from([1, 2]), min_size=1, max_size=3))
    shapes = [(k, 3) if axis == 0 else (2, k) for k in sizes]
    return Case([normal(rng, s) for s in shapes], {"axis": axis})


def stack_case(draw: Draw, rng) -> Case:
    n = draw(st.integers(1, 3))
    return Case([normal(rng, (2, 3)) for _ in range(n)], {"axis": draw(st.sampled_from([0, 1, 2, -1]))})


def split_case(draw: Draw, rng) -> Case:
    axis = draw(st.sampled_from([0, 1, -1]))
    num = draw(st.sampled_from([1, 2, 4] if axis == 0 else [1, 2, 3, 6]))
    return Case([normal(rng, (4, 6))], {"axis": axis, "output_num": num})


def slice_case(draw: Draw, rng) -> Case:
    begin, size = [], []
    for d in (3, 4):
        b = draw(st.integers(0, d - 1))
        begin.append(b)
        size.append(draw(st.sampled_from([-1, d - b, 1])))
    return Case([normal(rng, (3, 4))], {"begin": begin, "size": size})


def strided_slice_case(draw: Draw, rng) -> Case:
    shape = (3, 4, 2)
    n = draw(st.integers(1, 3))
    ints = st.integers(-5, 5)
    spec: dict[str, Any] = {
        "begin": draw(st.lists(ints, min_size=n, max_size=n)),
        "end": draw(st.lists(ints, min_size=n, max_size=n)),
        "strides": draw(st.lists(st.sampled_from([-2, -1, 1, 2]), min_size=n, max_size=n)),
    }
    for name in ("begin_mask", "end_mask", "new_axis_mask", "shrink_axis_mask"):
        spec[name] = draw(st.integers(0, (1 << n) - 1))
    spec["ellipsis_mask"] = draw(st.sampled_from([0] + [1 << i for i in range(n)]))
    return Case([normal(rng, shape)], spec)


def gather_case(draw: Draw, rng) -> Case:
    axis = draw(st.sampled_from([0, 1, -1]))
    n = (4, 3)[axis]
    idx_shape = draw(st.sampled_from([(2,), (2, 2), (5,)]))  # (5,) repeats an index: the gradient accumulates
    return Case([normal(rng, (4, 3)), rng.integers(0, n, size=idx_shape).astype(np.int32)], {"axis": axis})


# -- nn ------------------------------------------------------------------------------------------


def conv2d_case(draw: Draw, rng) -> Case:
    batch = draw(st.sampled_from([1, 2]))
    group = draw(st.sampled_from([1, 2]))
    out_channel = group * draw(st.sampled_from([1, 2]))
    kernel = draw(st.sampled_from([1, 2, 3, [2, 3]]))
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    attrs: dict[str, Any] = {"out_channel": out_channel, "kernel_size": kernel, "group": group}
    attrs["pad_mode"] = draw(st.sampled_from(["valid", "same", "pad"]))
    if attrs["pad_mode"] == "pad":
        attrs["pad"] = draw(st.sampled_from([1, [0, 1, 1, 0]]))
    attrs["stride"] = draw(st.sampled_from([1, 2, [1, 2]]))
    attrs["dilation"] = draw(st.sampled_from([1, 2]))
    nhwc = draw(st.booleans())
    x, w = normal(rng, (batch, 2, 5, 5)), normal(rng, (out_channel, 2 // group, kh, kw))
    if nhwc:
        attrs["data_format"] = "NHWC"
        x, w = x.transpose(0, 2, 3, 1).copy(), w.transpose(0, 2, 3, 1).copy()
    return Case([x, w], attrs)


def pool_case(values):
    def build(draw: Draw, rng) -> Case:
        attrs = {
            "kernel_size": draw(st.sampled_from([1, 2, 3, [2, 3]])),
            "strides": draw(st.sampled_from([1, 2, [1, 2]])),
            "pad_mode": draw(st.sampled_from(["valid", "same"])),
        }
        x = values(rng, (1, 2, 5, 5))
        if draw(st.booleans()):
            attrs["data_format"] = "NHWC"
            x = x.transpose(0, 2, 3, 1).copy()
        return Case([x], attrs)

    return build


def layer_norm_case(draw: Draw, rng) -> Case:
    norm = draw(st.sampled_from([0, 1, 2, -1]))
    params = draw(st.sampled_from([0, 1, 2, -1]))
    x = normal(rng, (2, 3, 2)) * 2 + 0.5
    gamma, beta = normal(rng, x.shape[params:]), normal(rng, x.shape[params:])
    attrs = {"begin_norm_axis": norm, "begin_params_axis": params}
    return Case([x, gamma, beta], attrs, live=(0,))  # MindSpore's bprop reads dout[0] only


def batch_norm_case(draw: Draw, rng) -> Case:
    shape, data_format = draw(st.sampled_from([((4, 3), "NCHW"), ((2, 3, 2, 2), "NCHW"), ((2, 2, 2, 3), "NHWC")]))
    c = 3
    inputs = [normal(rng, shape), normal(rng, c), normal(rng, c), normal(rng, c), positive(rng, c)]
    attrs = {"data_format": data_format, "epsilon": draw(st.sampled_from([1e-5, 1e-3]))}
    # MindSpore: zeros for mean and variance; dout[1:] (the statistics passed through) are ignored
    return Case(inputs, attrs, frozen=(3, 4), live=(0,))


def einsum_case(draw: Draw, rng) -> Case:
    equation, shapes = draw(st.sampled_from([
        ("ij,jk->ik", [(2, 3), (3, 2)]), ("bij,bjk->bik", [(2, 2, 3), (2, 3, 2)]), ("ij->ji", [(2, 3)]),
        ("i,i->", [(3,), (3,)]), ("...ij,j->...i", [(2, 2, 3), (3,)]), ("ii->i", [(3, 3)]),
    ]))
    return Case([normal(rng, s) for s in shapes], {"equation": equation})


def pad_case(draw: Draw, rng) -> Case:
    paddings = draw(st.sampled_from([[1, 2], [0, 1, 2, 0], [1, 1, -1, 1], [-1, 0]]))
    return Case([normal(rng, (3, 4))], {"paddings": paddings, "value": draw(st.sampled_from([0.0, -2.5]))})


def conv2d_transpose_case(draw: Draw, rng) -> Case:
    group = draw(st.sampled_from([1, 2]))
    kh, kw = draw(st.sampled_from([(1, 1), (2, 2), (2, 3)]))
    attrs: dict[str, Any] = {"out_channel": 2 * group, "kernel_size": [kh, kw], "group": group}
    attrs["stride"] = draw(st.sampled_from([1, 2, [2, 1]]))
    attrs["dilation"] = draw(st.sampled_from([1, 2]))
    if draw(st.booleans()):
        attrs["pad_mode"], attrs["pad"] = "pad", draw(st.sampled_from([1, [0, 1, 1, 0]]))
    attrs["output_padding"] = draw(st.sampled_from([0, [1, 0]]))
    return Case([normal(rng, (1, 2, 3, 3)), normal(rng, (2, 2, kh, kw))], attrs)


CASES: dict[str, Callable[[Draw, Any], Case]] = {
    # elementwise arithmetic
    "Add": binary(),
    "Sub": binary(),
    "Mul": binary(),
    "Div": binary(normal, away),
    "RealDiv": binary(normal, away),
    "Pow": binary(positive, normal),
    "SquaredDifference": binary(),
    "Maximum": no_tie,
    "Minimum": no_tie,
    # elementwise unary
    "Neg": unary(),
    "Abs": unary(away),
    "Exp": unary(),
    "Log": unary(positive),
    "Log1p": unary(lambda rng, s: rng.uniform(-0.5, 2.0, size=s)),
    "Sqrt": unary(positive),
    "Rsqrt": unary(positive),
    "Square": unary(),
    "Reciprocal": unary(away),
    "Sin": unary(),
    "Cos": unary(),
    "Tanh": unary(),
    "Sigmoid": unary(),
    "ReLU": unary(away),
    "ReLU6": unary(relu6_values),
    "LeakyReLU": unary(away),
    "GeLU": unary(),
    "Softplus": unary(),
    "Erf": unary(),
    "Cast": cast_case,
    "Select": select_case,
    # zero gradients, exactly
    "Sign": unary(away, zero=True),
    "Floor": unary(zero=True),
    "StopGradient": unary(zero=True),
    "ZerosLike": unary(zero=True),
    "OnesLike": unary(zero=True),
    # nn
    "Softmax": softmax_case,
    "LogSoftmax": log_softmax_case,
    "BiasAdd": bias_add_case,
    "SoftmaxCrossEntropyWithLogits": softmax_ce_case,
    "SparseSoftmaxCrossEntropyWithLogits": sparse_softmax_ce_case,
    "L2Loss": unary(),
    "Conv2D": conv2d_case,
    "MaxPool": pool_case(distinct),
    "AvgPool": pool_case(normal),
    "LayerNorm": layer_norm_case,
    "BatchNorm": batch_norm_case,
    "Conv2DTranspose": conv2d_transpose_case,
    # linear algebra and reductions
    "MatMul": matmul_case,
    "BatchMatMul": batch_matmul_case,
    "ReduceSum": reduce_case(),
    "ReduceMean": reduce_case(),
    "ReduceMax": reduce_case(distinct),
    "ReduceMin": reduce_case(distinct),
    "ReduceProd": reduce_case(away),
    "LogSumExp": reduce_case(),
    "CumSum": cum_sum_case,
    "Einsum": einsum_case,
    # shapes
    "Reshape": reshape_case,
    "Transpose": transpose_case,
    "ExpandDims": expand_dims_case,
    "Squeeze": squeeze_case,
    "Tile": tile_case,
    "BroadcastTo": broadcast_to_case,
    "Concat": concat_case,
    "Stack": stack_case,
    "Split": split_case,
    "Slice": slice_case,
    "StridedSlice": strided_slice_case,
    "Gather": gather_case,
    "Pad": pad_case,
}

#: ops with no float input -> float output path, and an example showing it
NOT_DIFFERENTIABLE: dict[str, tuple[list[np.ndarray], dict[str, Any]]] = {
    "Equal": ([np.ones((2, 3)), np.zeros((2, 3))], {}),
    "Greater": ([np.ones((2, 3)), np.zeros((2, 3))], {}),
    "GreaterEqual": ([np.ones((2, 3)), np.zeros((2, 3))], {}),
    "Less": ([np.ones((2, 3)), np.zeros((2, 3))], {}),
    "LessEqual": ([np.ones((2, 3)), np.zeros((2, 3))], {}),
    "OneHot": ([np.array([0, 2, 1], np.int32)], {"depth": 3}),
}


def test_every_differentiable_op_is_checked():
    assert not set(CASES) & set(NOT_DIFFERENTIABLE)
    assert set(CASES) | set(NOT_DIFFERENTIABLE) <= set(OPS), "a check names an op the catalog does not have"
    missing = set(OPS) - set(CASES) - set(NOT_DIFFERENTIABLE)
    assert not missing, f"ops without a gradient check (add them to CASES): {sorted(missing)}"


def _is_float(dtype) -> bool:
    return engine.dtypes.is_float(np.dtype(dtype))


@pytest.mark.parametrize("op", sorted(NOT_DIFFERENTIABLE))
def test_not_differentiable_ops_have_no_float_path(eng, op):
    inputs, attrs = NOT_DIFFERENTIABLE[op]
    result = eng.grad(network(op, len(inputs), attrs), inputs, get_all=True, return_value=True)
    float_in = any(_is_float(x.dtype) for x in inputs)
    float_out = any(_is_float(v.dtype) for v in result.value)
    assert not (float_in and float_out), f"{op} maps float inputs to float outputs: give it a gradient check"
    for x, g in zip(inputs, result.gradients):
        assert g.dtype == x.dtype and not np.any(g)


# -- the check -----------------------------------------------------------------------------------


def check_gradients(eng, op: str, case: Case, rng) -> None:
    net = network(op, len(case.inputs), case.attrs)
    xs = [np.asarray(x) for x in case.inputs]
    try:
        avals = eng.output_avals(net, xs)
    except ShapeError:
        assume(False)  # the drawn attrs do not fit the drawn shapes (e.g. an empty convolution)
    sens = [rng.normal(size=a.shape).astype(a.dtype) for a in avals]
    live = range(len(avals)) if case.live is None else case.live
    kwargs = dict(get_all=True, sens_param=True, sens=sens if len(sens) > 1 else sens[0], return_value=True)

    def loss(values) -> float:
        return sum(float(np.sum(sens[k].astype(np.float64) * np.asarray(values[k], np.float64))) for k in live)

    result = eng.grad(net, xs, **kwargs)
    assert len(result.gradients) == len(xs)
    for i, (x, g) in enumerate(zip(xs, result.gradients)):
        assert g.shape == x.shape and g.dtype == x.dtype, (i, g.shape, g.dtype)
        if case.zero or i in case.frozen or not _is_float(x.dtype):
            assert not np.any(g), f"{op}: input {i} must get an exactly zero gradient, got {g}"
            continue
        numeric = np.zeros(x.shape)
        for j in np.ndindex(x.shape):
            shifted = []
            for sign in (1, -1):
                xj = x.copy()
                xj[j] += sign * case.h
                args = xs[:i] + [xj] + xs[i + 1:]
                shifted.append(loss(eng.grad(net, args, **kwargs).value))
            numeric[j] = (shifted[0] - shifted[1]) / (2 * case.h)
        np.testing.assert_allclose(
            g, numeric, rtol=case.tol, atol=case.tol, err_msg=f"{op} input {i}, attrs {case.attrs}"
        )


@pytest.mark.parametrize("op", sorted(set(OPS) - set(NOT_DIFFERENTIABLE)))
@SETTINGS
@given(data=st.data())
def test_gradient_matches_finite_differences(eng, op, data):
    if op not in CASES:
        pytest.fail(f"{op} has no gradient check: add it to CASES")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    case = CASES[op](data.draw, rng)
    check_gradients(eng, op, case, rng)


# -- MindSpore's choices at ties, exactly ----------------------------------------------------------


def _grads(eng, op, inputs, attrs=None):
    return eng.grad(network(op, len(inputs), attrs or {}), inputs, get_all=True).gradients


def test_max_pool_tie_goes_to_the_first_maximum(eng):
    x = np.array([[[[1.0, 3.0, 3.0], [3.0, 0.0, 2.0], [3.0, 3.0, 3.0]]]])
    (g,) = _grads(eng, "MaxPool", [x], {"kernel_size": 2, "strides": 1})
    # each 2x2 window sends its gradient to its first maximum in row order (MaxPoolGrad's argmax):
    # windows at (0,0) and (0,1) -> x[0,1]; (1,0) -> x[1,0]; (1,1) -> x[2,1]
    expected = np.zeros_like(x)
    expected[0, 0, 0, 1], expected[0, 0, 1, 0], expected[0, 0, 2, 1] = 2, 1, 1
    np.testing.assert_array_equal(g, expected)


def test_batch_norm_statistics_get_zero_gradients(eng):
    x = np.random.default_rng(1).normal(size=(4, 3))
    ones = np.ones(3)
    grads = _grads(eng, "BatchNorm", [x, ones, ones, ones * 0.5, ones * 2])
    assert not np.any(grads[3]) and not np.any(grads[4])
    np.testing.assert_allclose(grads[0], np.ones_like(x) / np.sqrt(2 + 1e-5))  # dout[1:] ignored


def test_sparse_softmax_ce_is_grad_backward_is_mindspores_first_row(eng):
    """With is_grad=True the op's output is d(mean loss)/d(logits); MindSpore 2.10's bprop returns
    ``out[0]`` (the output's first row) whatever the sensitivity, and labels get zeros. MindSpore
    returns that [C] row for a direct [N, C] input; the engine broadcasts it (API.md: a gradient
    has its input's shape), as MindSpore itself does when another op produced the logits."""
    logits = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]], np.float32)
    labels = np.array([0, 2], np.int32)
    net = network("SparseSoftmaxCrossEntropyWithLogits", 2, {"is_grad": True})
    # MindSpore 2.10 (CPU, PyNative), forward and GradOperation(get_all=True):
    out = np.array([[-0.45498472, 0.1223641, 0.33262065], [0.08764517, 0.01955627, -0.10720143]], np.float32)
    r = eng.grad(net, [logits, labels], get_all=True, return_value=True)
    np.testing.assert_allclose(r.value[0], out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.gradients[0], np.broadcast_to(out[0], out.shape), rtol=1e-5, atol=1e-6)
    assert r.gradients[1].dtype == np.int32 and not r.gradients[1].any()
    # the sensitivity is ignored
    sens = np.arange(6, dtype=np.float32).reshape(2, 3)
    g = eng.grad(net, [logits, labels], sens_param=True, sens=sens).gradients
    np.testing.assert_allclose(g, np.broadcast_to(out[0], out.shape), rtol=1e-5, atol=1e-6)
    # float16 keeps its dtype; an empty batch gets an empty gradient
    g16 = eng.grad(net, [logits.astype(np.float16), labels]).gradients
    assert g16.dtype == np.float16 and g16.shape == logits.shape
    g0 = eng.grad(net, [np.zeros((0, 3), np.float32), np.zeros((0,), np.int32)]).gradients
    assert g0.shape == (0, 3)
