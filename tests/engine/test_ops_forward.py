"""Forward values of the catalog's ops against NumPy references, and float32 staying float32.

Every op runs as a one-node ``gradnet/1`` network through ``Engine.grad(..., return_value=True)``,
the path the service takes. The engine enables ``jax_enable_x64``; the last test proves that no op
lets float64 leak into a float32 computation.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from one_node import network

import engine
from engine import OPS, AttrError, ShapeError

SETTINGS = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def eng():
    return engine.Engine(cache_size=1024)


def run(eng, op, inputs, attrs=None):
    """The op's outputs (a list) for ``inputs``.

    ``get_by_list`` with a network that has no parameters differentiates nothing: the cheapest
    compile that still goes through ``Engine.grad``.
    """
    result = eng.grad(network(op, len(inputs), attrs or {}), list(inputs), get_by_list=True, return_value=True)
    return result.value


def one(eng, op, inputs, attrs=None):
    (value,) = run(eng, op, inputs, attrs)
    return value


def close(actual, expected, tol=1e-5):
    assert actual.shape == np.shape(expected), (actual.shape, np.shape(expected))
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64), rtol=tol, atol=tol)


RNG = np.random.default_rng(0)
X234 = RNG.normal(size=(2, 3, 4))


# -- StridedSlice --------------------------------------------------------------------------------


def tf_strided_slice(x, begin, end, strides, begin_mask=0, end_mask=0, ellipsis_mask=0, new_axis_mask=0,
                     shrink_axis_mask=0):
    """TensorFlow's ValidateStridedSliceOp, transcribed: sparse spec -> dense spec -> index lists.

    Independent of the engine's NumPy-slice translation: it canonicalizes begin/end by TF's rules
    and gathers explicit index lists. Raises ValueError where TensorFlow reports an error.
    """
    begin, end, strides = list(begin), list(end), list(strides)
    n = len(begin)
    if bin(ellipsis_mask & ((1 << n) - 1)).count("1") > 1:
        raise ValueError("multiple ellipses")
    if not ellipsis_mask & ((1 << n) - 1):  # an implicit ellipsis at the end
        ellipsis_mask |= 1 << n
        begin, end, strides = begin + [0], end + [0], strides + [1]
        n += 1
    seen, add_after = False, 0
    for i in range(n):
        if seen and new_axis_mask >> i & 1:
            add_after += 1
        if ellipsis_mask >> i & 1:
            seen = True
    ndim = x.ndim
    dense, final = [], []  # dense: (begin, end, stride, begin_masked, end_masked, shrink)
    for i in range(n):
        if ellipsis_mask >> i & 1:
            stop = min(ndim - (n - i) + 1 + add_after, ndim)
            while len(dense) < stop:
                final.append(len(dense))
                dense.append((0, 0, 1, True, True, False))
        elif new_axis_mask >> i & 1:
            final.append("new")
        else:
            if len(dense) == ndim:
                raise ValueError("index out of range using input dim")
            final.append(len(dense))
            dense.append((begin[i], end[i], strides[i], bool(begin_mask >> i & 1), bool(end_mask >> i & 1),
                          bool(shrink_axis_mask >> i & 1)))
    if len(dense) != ndim:
        raise ValueError("spec does not cover the input")
    out, shape = x, []
    for axis, (b, e, s, bm, em, shrink) in enumerate(dense):
        d = x.shape[axis]
        if s == 0:
            raise ValueError("stride 0")
        if shrink:
            k = d + b if b < 0 else b
            if not 0 <= k < d:
                raise ValueError("shrink index out of bounds")
            idx = [k]
        else:
            lo, hi = (0, d) if s > 0 else (-1, d - 1)

            def canonical(v, c, masked, lo=lo, hi=hi, s=s, d=d):
                if masked:
                    return (lo, hi)[c] if s > 0 else (hi, lo)[c]
                v = d + v if v < 0 else v
                return min(max(v, lo), hi)

            idx = list(range(canonical(b, 0, bm), canonical(e, 1, em), s))
        out = np.take(out, np.asarray(idx, dtype=np.int64), axis=axis)
    for entry in final:
        if entry == "new":
            shape.append(1)
        elif not dense[entry][5]:
            shape.append(len(range(*_span(dense[entry], x.shape[entry]))))
    return out.reshape(shape)


def _span(spec, d):
    b, e, s, bm, em, _ = spec
    lo, hi = (0, d) if s > 0 else (-1, d - 1)
    b = ((lo, hi)[0] if s > 0 else hi) if bm else min(max(d + b if b < 0 else b, lo), hi)
    e = ((lo, hi)[1] if s > 0 else lo) if em else min(max(d + e if e < 0 else e, lo), hi)
    return b, e, s


T = np.array([[[1, 1, 1], [2, 2, 2]], [[3, 3, 3], [4, 4, 4]], [[5, 5, 5], [6, 6, 6]]], np.float32)


@pytest.mark.parametrize(
    "attrs, expected",
    [
        # MindSpore's and TensorFlow's documented examples
        ({"begin": [1, 0, 2], "end": [3, 1, 3], "strides": [1, 1, 1]}, [[[3]], [[5]]]),
        ({"begin": [1, 0, 0], "end": [2, 1, 3], "strides": [1, 1, 1]}, [[[3, 3, 3]]]),
        ({"begin": [1, 0, 0], "end": [2, 2, 3], "strides": [1, 1, 1]}, [[[3, 3, 3], [4, 4, 4]]]),
        ({"begin": [1, -1, 0], "end": [2, -3, 3], "strides": [1, -1, 1]}, [[[4, 4, 4], [3, 3, 3]]]),
        # t[-1]: begin -1, end 0, shrink
        ({"begin": [-1], "end": [0], "strides": [1], "shrink_axis_mask": 1}, T[-1]),
        # t[::-1, :, ::2] with masks
        ({"begin": [7, 0, 0], "end": [7, 0, 0], "strides": [-1, 1, 2], "begin_mask": 7, "end_mask": 7},
         T[::-1, :, ::2]),
        # t[1:, ..., None, 2]
        ({"begin": [1, 0, 0, 2], "end": [0, 0, 0, 3], "strides": [1, 1, 1, 1], "end_mask": 1, "ellipsis_mask": 2,
          "new_axis_mask": 4, "shrink_axis_mask": 8}, T[1:, ..., None, 2]),
        # t[None, ..., -1]  (new axis first, shrink last)
        ({"begin": [0, 0, -1], "end": [0, 0, 0], "strides": [1, 1, 1], "ellipsis_mask": 2, "new_axis_mask": 1,
          "shrink_axis_mask": 4}, T[None, ..., -1]),
        # out-of-range begin/end are clamped; begin > end is empty
        ({"begin": [-10, 1], "end": [10, 100], "strides": [1, 1]}, T[-10:10, 1:100]),
        ({"begin": [2], "end": [1], "strides": [1]}, T[2:1]),
        # negative strides walking past the start
        ({"begin": [-1, -1, -1], "end": [-10, -10, -10], "strides": [-2, -1, -2]}, T[::-2, ::-1, ::-2]),
        # the new-axis bit wins over the shrink bit; ellipsis wins over new-axis
        ({"begin": [0, 1], "end": [0, 2], "strides": [1, 1], "new_axis_mask": 1, "shrink_axis_mask": 1},
         T[None, 1:2]),
        ({"begin": [0, 1], "end": [0, 2], "strides": [1, 1], "ellipsis_mask": 1, "new_axis_mask": 1},
         T[..., 1:2]),
    ],
)
def test_strided_slice_cases(eng, attrs, expected):
    expected = np.asarray(expected, np.float32)
    close(one(eng, "StridedSlice", [T], attrs), expected)
    close(tf_strided_slice(T, **attrs), expected)


@st.composite
def strided_specs(draw):
    shape = draw(st.sampled_from([(5,), (3, 4), (2, 3, 4)]))
    n = draw(st.integers(1, len(shape) + 1))
    ints = st.integers(-6, 6)
    spec = {
        "begin": draw(st.lists(ints, min_size=n, max_size=n)),
        "end": draw(st.lists(ints, min_size=n, max_size=n)),
        "strides": draw(st.lists(st.sampled_from([-3, -2, -1, 1, 2]), min_size=n, max_size=n)),
    }
    masks = st.integers(0, (1 << n) - 1)
    for name in ("begin_mask", "end_mask", "new_axis_mask", "shrink_axis_mask"):
        spec[name] = draw(masks)
    spec["ellipsis_mask"] = draw(st.sampled_from([0] + [1 << i for i in range(n)]))
    return shape, spec


@SETTINGS
@given(strided_specs())
def test_strided_slice_matches_tensorflow_rules(eng, shape_spec):
    shape, spec = shape_spec
    x = np.arange(math.prod(shape), dtype=np.float64).reshape(shape)
    try:
        expected = tf_strided_slice(x, **spec)
    except ValueError:
        with pytest.raises(ShapeError, match="StridedSlice"):
            one(eng, "StridedSlice", [x], spec)
        return
    close(one(eng, "StridedSlice", [x], spec), expected, tol=0)


def test_strided_slice_needs_equal_lengths_and_nonzero_strides(eng):
    with pytest.raises(ShapeError, match="same length"):
        one(eng, "StridedSlice", [T], {"begin": [0, 0], "end": [1], "strides": [1]})
    with pytest.raises(ShapeError, match="strides"):
        one(eng, "StridedSlice", [T], {"begin": [0], "end": [1], "strides": [0]})


# -- the other shape ops -----------------------------------------------------------------------


def test_split(eng):
    x = np.arange(24.0).reshape(4, 6)
    parts = run(eng, "Split", [x], {"axis": 1, "output_num": 3})
    assert len(parts) == 3
    for got, want in zip(parts, np.split(x, 3, axis=1)):
        close(got, want)
    (whole,) = run(eng, "Split", [x], {})  # output_num 1, axis 0
    close(whole, x)
    for got, want in zip(run(eng, "Split", [x], {"axis": -2, "output_num": 2}), np.split(x, 2, axis=0)):
        close(got, want)


def test_split_errors(eng):
    with pytest.raises(ShapeError, match=r"size 6.*output_num=4"):
        run(eng, "Split", [np.zeros((4, 6))], {"axis": 1, "output_num": 4})
    with pytest.raises(AttrError, match="output_num"):
        network("Split", 1, {"output_num": 0})
    # a Split node has output_num outputs, referenced as name:i
    assert len(network("Split", 1, {"output_num": 2}).outputs) == 2


@pytest.mark.parametrize(
    "begin, size, expected",
    [
        ([0, 1, 2], [2, 1, 2], X234[0:2, 1:2, 2:4]),
        ([1, 0, 1], [-1, -1, -1], X234[1:, :, 1:]),
        ([0, 2, 0], [1, -1, 3], X234[0:1, 2:, 0:3]),
        ([0, 3, 0], [2, 0, 4], X234[:, 3:3, :]),
    ],
)
def test_slice(eng, begin, size, expected):
    close(one(eng, "Slice", [X234], {"begin": begin, "size": size}), expected)


def test_slice_errors(eng):
    with pytest.raises(ShapeError, match="run past"):
        one(eng, "Slice", [X234], {"begin": [1, 0, 0], "size": [2, 1, 1]})
    with pytest.raises(ShapeError, match="one entry per axis"):
        one(eng, "Slice", [X234], {"begin": [0], "size": [1]})
    with pytest.raises(AttrError, match="size"):
        network("Slice", 1, {"begin": [0], "size": [-2]})


@pytest.mark.parametrize(
    "shape, axis, expected_shape",
    [((1, 3, 1, 2), [], (3, 2)), ((1, 3, 1, 2), [2], (1, 3, 2)), ((1, 3, 1, 2), [0, -2], (3, 2)),
     ((1, 3, 1, 2), 0, (3, 1, 2)), ((1, 1), [], ()), ((2, 3), [], (2, 3))],
)
def test_squeeze(eng, shape, axis, expected_shape):
    x = np.arange(math.prod(shape), dtype=np.float64).reshape(shape)
    attrs = {} if axis == [] else {"axis": axis}
    close(one(eng, "Squeeze", [x], attrs), x.reshape(expected_shape))


def test_squeeze_refuses_a_non_unit_axis(eng):
    with pytest.raises(ShapeError, match="size 3"):
        one(eng, "Squeeze", [np.zeros((1, 3))], {"axis": [1]})


@pytest.mark.parametrize(
    "shape, target, expected_shape",
    [((3, 1), [2, 3, 4], (2, 3, 4)), ((3, 1), [2, -1, 4], (2, 3, 4)), ((3, 1), [-1, -1], (3, 1)),
     ((1,), [2, -1], (2, 1)), ((), [2, 2], (2, 2))],
)
def test_broadcast_to(eng, shape, target, expected_shape):
    x = RNG.normal(size=shape)
    close(one(eng, "BroadcastTo", [x], {"shape": target}), np.broadcast_to(x, expected_shape))


def test_broadcast_to_errors(eng):
    with pytest.raises(ShapeError, match="no matching dimension"):
        one(eng, "BroadcastTo", [np.zeros(3)], {"shape": [-1, 3]})
    with pytest.raises(ShapeError, match="BroadcastTo"):
        one(eng, "BroadcastTo", [np.zeros(3)], {"shape": [2, 4]})


def test_reshape_transpose_expand_tile(eng):
    close(one(eng, "Reshape", [X234], {"shape": [4, -1]}), X234.reshape(4, 6))
    close(one(eng, "Reshape", [X234], {"shape": [24]}), X234.reshape(24))
    close(one(eng, "Reshape", [np.ones((1, 1))], {"shape": []}), np.ones(()))
    with pytest.raises(ShapeError, match="cannot reshape"):
        one(eng, "Reshape", [X234], {"shape": [5, -1]})
    with pytest.raises(ShapeError, match="at most one -1"):
        one(eng, "Reshape", [X234], {"shape": [-1, -1]})
    close(one(eng, "Transpose", [X234], {"input_perm": [2, 0, 1]}), X234.transpose(2, 0, 1))
    with pytest.raises(ShapeError, match="permutation"):
        one(eng, "Transpose", [X234], {"input_perm": [0, 0, 1]})
    for axis in (-4, -1, 0, 3):
        close(one(eng, "ExpandDims", [X234], {"axis": axis}), np.expand_dims(X234, axis))
    with pytest.raises(ShapeError, match="out of range"):
        one(eng, "ExpandDims", [X234], {"axis": 4})
    close(one(eng, "Tile", [X234], {"multiples": [1, 2, 1]}), np.tile(X234, (1, 2, 1)))
    close(one(eng, "Tile", [X234], {"multiples": [2, 1, 1, 3]}), np.tile(X234, (2, 1, 1, 3)))


def test_concat_and_stack(eng):
    a, b, c = RNG.normal(size=(2, 3)), RNG.normal(size=(2, 1)), RNG.normal(size=(2, 2))
    close(one(eng, "Concat", [a, b, c], {"axis": 1}), np.concatenate([a, b, c], axis=1))
    close(one(eng, "Concat", [a, a], {}), np.concatenate([a, a], axis=0))
    close(one(eng, "Concat", [a], {"axis": -1}), a)
    with pytest.raises(ShapeError, match="Concat"):
        one(eng, "Concat", [a, b], {"axis": 0})
    for axis in (0, 1, 2, -1):
        close(one(eng, "Stack", [a, a * 2, a * 3], {"axis": axis}), np.stack([a, a * 2, a * 3], axis=axis))
    with pytest.raises(ShapeError, match="Stack"):
        one(eng, "Stack", [a, b], {})


def test_gather(eng):
    params = RNG.normal(size=(4, 3))
    indices = np.array([[3, 0], [1, 1]], np.int32)
    close(one(eng, "Gather", [params, indices], {}), params[indices])
    cols = np.array([[2, 0], [1, 1]], np.int32)
    close(one(eng, "Gather", [params, cols], {"axis": 1}), params[:, cols])
    close(one(eng, "Gather", [params, np.array([2, 0], np.int64)], {"axis": -1}), params[:, [2, 0]])
    # MindSpore has no negative or out-of-range indices; they gather zeros here
    got = one(eng, "Gather", [params, np.array([-1, 4, 1], np.int32)], {})
    close(got, np.stack([np.zeros(3), np.zeros(3), params[1]]))
    with pytest.raises(ShapeError, match="integer"):
        one(eng, "Gather", [params, np.array([0.0, 1.0])], {})


@pytest.mark.parametrize("axis", [-1, 0, 1, 2])
def test_one_hot(eng, axis):
    indices = np.array([[0, 2, 5], [-1, 1, 3]], np.int32)  # 5 and -1 are out of range: all off
    attrs = {"depth": 4, "on_value": 2.5, "off_value": -1, "axis": axis}
    got = one(eng, "OneHot", [indices], attrs)
    expected = np.where(indices[..., None] == np.arange(4), 2.5, -1.0)
    expected = np.moveaxis(expected, -1, axis if axis != -1 else -1)
    assert got.dtype == np.float32
    close(got, expected)


def test_one_hot_defaults_and_errors(eng):
    got = one(eng, "OneHot", [np.array([1, 0], np.int64)], {"depth": 3})
    assert got.dtype == np.float32
    close(got, [[0, 1, 0], [1, 0, 0]])
    with pytest.raises(AttrError, match="depth"):
        network("OneHot", 1, {})
    with pytest.raises(ShapeError, match="out of range"):
        one(eng, "OneHot", [np.array([1, 0])], {"depth": 3, "axis": 2})


# -- convolution and pooling -----------------------------------------------------------------------


def _same_pads(size, kernel, stride, dilation=1):
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def conv2d_ref(x, w, stride=(1, 1), dilation=(1, 1), pads=((0, 0), (0, 0)), group=1):
    """NCHW x, OIHW w: direct cross-correlation."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]))
    eh, ew = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
    ho = (xp.shape[2] - eh) // stride[0] + 1
    wo = (xp.shape[3] - ew) // stride[1] + 1
    out = np.zeros((n, o, ho, wo))
    per_group = o // group
    for oc in range(o):
        g = oc // per_group
        xs = xp[:, g * cg:(g + 1) * cg]
        for i in range(ho):
            for j in range(wo):
                patch = xs[:, :, i * stride[0]:i * stride[0] + eh:dilation[0], j * stride[1]:j * stride[1] + ew:dilation[1]]
                out[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3))
    return out


@pytest.mark.parametrize(
    "x_shape, attrs",
    [
        ((1, 2, 5, 5), {"kernel_size": 3}),
        ((2, 2, 5, 6), {"kernel_size": [3, 2], "pad_mode": "same"}),
        ((1, 2, 6, 7), {"kernel_size": 3, "pad_mode": "same", "stride": 2}),
        ((1, 2, 7, 7), {"kernel_size": 2, "pad_mode": "same", "stride": [2, 3], "dilation": 2}),
        ((1, 2, 5, 5), {"kernel_size": 3, "pad_mode": "pad", "pad": 1}),
        ((1, 2, 5, 5), {"kernel_size": 3, "pad_mode": "pad", "pad": [0, 2, 1, 0], "stride": [1, 1, 2, 1]}),
        ((1, 2, 7, 7), {"kernel_size": 3, "dilation": [1, 1, 2, 2]}),
        ((1, 4, 5, 5), {"kernel_size": 3, "group": 2, "out_channel": 6, "pad_mode": "same"}),
        ((1, 4, 4, 4), {"kernel_size": 1, "group": 4, "out_channel": 4, "stride": 2}),
    ],
)
@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
def test_conv2d(eng, x_shape, attrs, data_format):
    attrs = {"out_channel": 3, **attrs, "data_format": data_format}
    group = attrs.get("group", 1)
    kh, kw = (attrs["kernel_size"],) * 2 if isinstance(attrs["kernel_size"], int) else attrs["kernel_size"]
    x = RNG.normal(size=x_shape)
    w = RNG.normal(size=(attrs["out_channel"], x_shape[1] // group, kh, kw))

    def pair(v):
        v = [v, v] if isinstance(v, int) else v
        return tuple(v[-2:])

    stride, dilation = pair(attrs.get("stride", 1)), pair(attrs.get("dilation", 1))
    mode = attrs.get("pad_mode", "valid")
    if mode == "same":
        pads = tuple(_same_pads(x_shape[2 + i], (kh, kw)[i], stride[i], dilation[i]) for i in range(2))
    elif mode == "pad":
        p = attrs["pad"]
        p = [p] * 4 if isinstance(p, int) else p
        pads = ((p[0], p[1]), (p[2], p[3]))
    else:
        pads = ((0, 0), (0, 0))
    expected = conv2d_ref(x, w, stride, dilation, pads, group)
    if data_format == "NHWC":
        for key in ("stride", "dilation"):  # 4-int spellings follow data_format
            if isinstance(attrs.get(key), list) and len(attrs[key]) == 4:
                attrs[key] = [1, attrs[key][2], attrs[key][3], 1]
        got = one(eng, "Conv2D", [x.transpose(0, 2, 3, 1), w.transpose(0, 2, 3, 1)], attrs).transpose(0, 3, 1, 2)
    else:
        got = one(eng, "Conv2D", [x, w], attrs)
    close(got, expected, tol=1e-9)


def test_conv2d_errors(eng):
    x, w = np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3))
    with pytest.raises(ShapeError, match=r"weight must have shape \[4, 2, 3, 3\]"):
        one(eng, "Conv2D", [x, w], {"out_channel": 4, "kernel_size": 3})
    with pytest.raises(ShapeError, match="pad must be 0"):
        one(eng, "Conv2D", [x, w], {"out_channel": 3, "kernel_size": 3, "pad": 1})
    with pytest.raises(ShapeError, match="group=2"):
        one(eng, "Conv2D", [np.zeros((1, 3, 5, 5)), w], {"out_channel": 3, "kernel_size": 3, "group": 2})
    with pytest.raises(ShapeError, match="4-D"):
        one(eng, "Conv2D", [np.zeros((2, 5, 5)), w], {"out_channel": 3, "kernel_size": 3})
    with pytest.raises(AttrError, match="pad_mode"):
        network("Conv2D", 2, {"out_channel": 3, "kernel_size": 3, "pad_mode": "reflect"})
    with pytest.raises(AttrError, match="kernel_size"):
        network("Conv2D", 2, {"out_channel": 3, "kernel_size": [3, 3, 3]})
    with pytest.raises(AttrError, match="stride"):
        network("Conv2D", 2, {"out_channel": 3, "kernel_size": 3, "stride": 0})
    with pytest.raises(AttrError, match="out_channel"):
        network("Conv2D", 2, {"kernel_size": 3})


def pool_ref(x, kernel, stride, mode, reduce):
    """NCHW pooling; padding (``same``) is NaN, so nanmax/nanmean skip it."""
    n, c, h, w = x.shape
    if mode == "same":
        pads = [_same_pads(h, kernel[0], stride[0]), _same_pads(w, kernel[1], stride[1])]
    else:
        pads = [(0, 0), (0, 0)]
    xp = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]), constant_values=np.nan)
    ho = (xp.shape[2] - kernel[0]) // stride[0] + 1
    wo = (xp.shape[3] - kernel[1]) // stride[1] + 1
    out = np.zeros((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * stride[0]:i * stride[0] + kernel[0], j * stride[1]:j * stride[1] + kernel[1]]
            out[:, :, i, j] = reduce(patch, axis=(2, 3))
    return out


@pytest.mark.parametrize("op, reduce", [("MaxPool", np.nanmax), ("AvgPool", np.nanmean)])
@pytest.mark.parametrize(
    "shape, attrs",
    [
        ((1, 2, 5, 5), {}),
        ((1, 2, 5, 5), {"kernel_size": 2, "strides": 2}),
        ((2, 1, 5, 6), {"kernel_size": 3, "strides": 2, "pad_mode": "same"}),
        ((1, 2, 4, 7), {"kernel_size": [2, 3], "strides": [1, 2], "pad_mode": "same"}),
        ((1, 1, 6, 6), {"kernel_size": [1, 1, 3, 3], "strides": [1, 1, 3, 2], "pad_mode": "valid"}),
        ((1, 1, 3, 3), {"kernel_size": 3, "strides": 1, "pad_mode": "SAME"}),
    ],
)
@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
def test_pools(eng, op, reduce, shape, attrs, data_format):
    x = RNG.normal(size=shape)
    k = attrs.get("kernel_size", 1)
    s = attrs.get("strides", 1)
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v[-2:])  # noqa: E731
    expected = pool_ref(x, pair(k), pair(s), attrs.get("pad_mode", "valid").lower(), reduce)
    if data_format == "NHWC":
        attrs = dict(attrs, data_format="NHWC")
        for key in ("kernel_size", "strides"):
            if isinstance(attrs.get(key), list) and len(attrs[key]) == 4:
                attrs[key] = [1, attrs[key][2], attrs[key][3], 1]
        got = one(eng, op, [x.transpose(0, 2, 3, 1)], attrs).transpose(0, 3, 1, 2)
    else:
        got = one(eng, op, [x], attrs)
    close(got, expected, tol=1e-12)


def test_pool_float32_same_counts_only_valid_elements(eng):
    x = np.ones((1, 1, 4, 4), np.float32)
    got = one(eng, "AvgPool", [x], {"kernel_size": 3, "strides": 1, "pad_mode": "same"})
    assert got.dtype == np.float32
    close(got, np.ones((1, 1, 4, 4)))  # a zero-padded mean would be 4/9 in the corners


# -- normalization ---------------------------------------------------------------------------------


@pytest.mark.parametrize("begin_norm_axis, begin_params_axis", [(1, 1), (-1, -1), (2, 2), (1, 2), (0, 0), (2, 1)])
def test_layer_norm(eng, begin_norm_axis, begin_params_axis):
    x = RNG.normal(size=(2, 3, 4)) * 3 + 1
    gamma = RNG.normal(size=x.shape[begin_params_axis:])
    beta = RNG.normal(size=x.shape[begin_params_axis:])
    attrs = {"begin_norm_axis": begin_norm_axis, "begin_params_axis": begin_params_axis, "epsilon": 1e-5}
    y, mean, variance = run(eng, "LayerNorm", [x, gamma, beta], attrs)
    axes = tuple(range(begin_norm_axis % 3, 3))
    m = x.mean(axis=axes, keepdims=True)
    v = x.var(axis=axes, keepdims=True)
    close(y, (x - m) / np.sqrt(v + 1e-5) * gamma + beta, tol=1e-10)
    close(mean, m, tol=1e-12)  # keep_dims: the first begin_norm_axis dims of x, then 1s
    close(variance, v, tol=1e-12)


def test_layer_norm_defaults_float32(eng):
    x = RNG.normal(size=(2, 5)).astype(np.float32)
    y, mean, variance = run(eng, "LayerNorm", [x, np.ones(5, np.float32), np.zeros(5, np.float32)])
    assert {y.dtype, mean.dtype, variance.dtype} == {np.dtype(np.float32)}
    assert mean.shape == variance.shape == (2, 1)
    xd = x.astype(np.float64)
    close(y, (xd - xd.mean(1, keepdims=True)) / np.sqrt(xd.var(1, keepdims=True) + 1e-7), tol=1e-4)
    with pytest.raises(ShapeError, match="gamma and beta"):
        run(eng, "LayerNorm", [x, np.ones(4, np.float32), np.zeros(4, np.float32)])


@pytest.mark.parametrize("shape, data_format", [((4, 3), "NCHW"), ((2, 3, 4, 5), "NCHW"), ((2, 4, 5, 3), "NHWC")])
def test_batch_norm_inference(eng, shape, data_format):
    x = RNG.normal(size=shape)
    scale, bias, mean = RNG.normal(size=3), RNG.normal(size=3), RNG.normal(size=3)
    variance = RNG.uniform(0.5, 2.0, size=3)
    attrs = {"epsilon": 1e-3, "data_format": data_format}
    outs = run(eng, "BatchNorm", [x, scale, bias, mean, variance], attrs)
    assert len(outs) == 5
    b = (slice(None),) + (None,) * (len(shape) - 2) if data_format == "NCHW" else (Ellipsis,)

    def per_channel(t):
        return t[b] if data_format == "NCHW" else t

    expected = (x - per_channel(mean)) / np.sqrt(per_channel(variance) + 1e-3) * per_channel(scale) + per_channel(bias)
    close(outs[0], expected, tol=1e-10)
    for got, want in zip(outs[1:], (mean, variance, mean, variance)):
        close(got, want, tol=0)


def test_batch_norm_refuses_training_mode():
    with pytest.raises(AttrError, match="only inference statistics") as info:
        network("BatchNorm", 5, {"is_training": True})
    assert info.value.path == "attrs.is_training"


def test_batch_norm_channel_mismatch(eng):
    c = np.ones(4)
    with pytest.raises(ShapeError, match=r"scale must have shape \[3\]"):
        run(eng, "BatchNorm", [np.zeros((2, 3)), c, c, c, c])


# -- ops owned elsewhere whose forward is easy to get subtly wrong ---------------------------------


@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_cum_sum(eng, exclusive, reverse, axis):
    x = RNG.normal(size=(3, 4))
    y = np.flip(x, axis) if reverse else x
    out = np.cumsum(y, axis=axis)
    if exclusive:
        out = out - y
    expected = np.flip(out, axis) if reverse else out
    close(one(eng, "CumSum", [x], {"axis": axis, "exclusive": exclusive, "reverse": reverse}), expected, tol=1e-12)


def test_gelu_is_the_tanh_approximation(eng):
    x = np.linspace(-4, 4, 33)
    expected = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    close(one(eng, "GeLU", [x]), expected, tol=1e-12)


def test_leaky_relu(eng):
    x = np.linspace(-3, 3, 13)
    close(one(eng, "LeakyReLU", [x], {"alpha": 0.1}), np.where(x > 0, x, 0.1 * x), tol=1e-12)
    close(one(eng, "LeakyReLU", [x]), np.where(x > 0, x, 0.2 * x), tol=1e-12)  # MindSpore's default


@pytest.mark.parametrize("equation, shapes", [
    ("ij,jk->ik", [(2, 3), (3, 4)]), ("bij,bjk->bik", [(2, 2, 3), (2, 3, 2)]), ("ij->ji", [(2, 3)]),
    ("i,i->", [(4,), (4,)]), ("...ij,j->...i", [(2, 2, 3), (3,)]), ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
])
def test_einsum(eng, equation, shapes):
    xs = [RNG.normal(size=s) for s in shapes]
    close(one(eng, "Einsum", xs, {"equation": equation}), np.einsum(equation, *xs), tol=1e-12)


def test_einsum_refuses_what_is_not_einsum(eng):
    with pytest.raises(ShapeError, match="einsum"):
        one(eng, "Einsum", [np.ones((2, 2))], {"equation": "ij->j; import os"})


@pytest.mark.parametrize("paddings, value", [([1, 2], 0.0), ([0, 1, 2, 0], -5.0), ([1, 1, -1, 2], 3.0), ([], 0.0)])
def test_pad(eng, paddings, value):
    x = RNG.normal(size=(3, 4))
    pairs = [(paddings[2 * i], paddings[2 * i + 1]) for i in range(len(paddings) // 2)]
    pairs += [(0, 0)] * (2 - len(pairs))
    expected = x
    for axis, (lo, hi) in enumerate(pairs):  # np.pad has no cropping: crop negative entries by slicing
        idx = [slice(None)] * 2
        idx[axis] = slice(max(0, -lo), x.shape[axis] - max(0, -hi))
        expected = expected[tuple(idx)]
    expected = np.pad(expected, [(max(0, lo), max(0, hi)) for lo, hi in pairs], constant_values=value)
    close(one(eng, "Pad", [x], {"paddings": paddings, "value": value}), expected, tol=0)


def test_pad_errors(eng):
    with pytest.raises(AttrError, match="even"):
        one(eng, "Pad", [np.ones((2, 2))], {"paddings": [1, 2, 3]})
    with pytest.raises(ShapeError, match="pairs"):
        one(eng, "Pad", [np.ones(2)], {"paddings": [1, 1, 1, 1]})


def conv_transpose_reference(x, w, stride, pad, dilation, group, output_padding):
    """Scatter each input element times the kernel into the output (the definition), then crop."""
    n, c_in, h, wd = x.shape
    _, c_out_g, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    top, bottom, left, right = pad
    full_h = (h - 1) * sh + dh * (kh - 1) + 1 + output_padding[0]
    full_w = (wd - 1) * sw + dw * (kw - 1) + 1 + output_padding[1]
    out = np.zeros((n, c_out_g * group, full_h, full_w))
    per = c_in // group
    for b in range(n):
        for ci in range(c_in):
            g = ci // per
            for i in range(h):
                for j in range(wd):
                    for co in range(c_out_g):
                        for p in range(kh):
                            for q in range(kw):
                                out[b, g * c_out_g + co, i * sh + p * dh, j * sw + q * dw] += x[b, ci, i, j] * w[ci, co, p, q]
    return out[:, :, top:full_h - bottom, left:full_w - right]


@pytest.mark.parametrize("stride, pad, dilation, group, output_padding", [
    ((1, 1), (0, 0, 0, 0), (1, 1), 1, (0, 0)), ((2, 2), (1, 1, 1, 1), (1, 1), 1, (1, 1)),
    ((2, 1), (0, 1, 1, 0), (2, 1), 2, (1, 0)), ((3, 2), (2, 0, 0, 1), (1, 2), 2, (0, 1)),
])
def test_conv2d_transpose(eng, stride, pad, dilation, group, output_padding):
    x = RNG.normal(size=(2, 4, 3, 4))
    w = RNG.normal(size=(4, 3, 2, 3))
    attrs = {"out_channel": 3 * group, "kernel_size": [2, 3], "stride": list(stride), "dilation": list(dilation),
             "group": group, "output_padding": list(output_padding),
             "pad_mode": "pad" if any(pad) else "valid", "pad": list(pad) if any(pad) else 0}
    expected = conv_transpose_reference(x, w, stride, pad, dilation, group, output_padding)
    close(one(eng, "Conv2DTranspose", [x, w], attrs), expected, tol=1e-10)


def test_conv2d_transpose_checks_the_weight(eng):
    with pytest.raises(ShapeError, match="weight must have shape"):
        one(eng, "Conv2DTranspose", [np.ones((1, 2, 3, 3)), np.ones((2, 2, 3, 3))], {"out_channel": 3, "kernel_size": 3})


@pytest.mark.parametrize("source", ["float32", "float64", "int32", "float16"])
@pytest.mark.parametrize("target", ["float16", "bfloat16", "float32", "float64"])
def test_cast_to_every_float_dtype(eng, source, target):
    x = (np.arange(-6, 6) * 0.75).reshape(3, 4)
    x = x.astype(np.int32) if source == "int32" else x.astype(source)
    result = eng.grad(network("Cast", 1, {"dtype": target}), [x], get_all=True, return_value=True)
    (value,) = result.value
    want = np.dtype(ml_dtypes.bfloat16) if target == "bfloat16" else np.dtype(target)
    assert value.dtype == want
    close(value.astype(np.float64), x.astype(want).astype(np.float64), tol=0)
    assert result.gradients[0].dtype == x.dtype  # the gradient is cast back to the input's dtype


def test_cast_accepts_the_oip_spelling(eng):
    assert one(eng, "Cast", [np.ones(2, np.float32)], {"dtype": "FP64"}).dtype == np.float64


# -- float32 stays float32, for every op -------------------------------------------------------------


def _f32(*shape, low=0.5, high=1.5):
    return RNG.uniform(low, high, size=shape).astype(np.float32)


C3 = (3,)
EXAMPLES = {
    # op: (inputs, attrs); ops with inputs ("x",) or ("x", "y") and no required attr default to (2, 3) floats
    "Cast": ([_f32(2, 3)], {"dtype": "float32"}),
    "Select": ([np.array([[True, False, True], [False, True, False]]), _f32(2, 3), _f32(2, 3)], {}),
    "MatMul": ([_f32(2, 3), _f32(3, 4)], {}),
    "BatchMatMul": ([_f32(2, 2, 3), _f32(2, 2, 3)], {"transpose_b": True}),
    "BiasAdd": ([_f32(2, 3, 2, 2), _f32(3)], {}),
    "SoftmaxCrossEntropyWithLogits": ([_f32(2, 3), np.full((2, 3), 1 / 3, np.float32)], {}),
    "SparseSoftmaxCrossEntropyWithLogits": ([_f32(2, 3), np.array([0, 2], np.int32)], {}),
    "Reshape": ([_f32(2, 3)], {"shape": [3, -1]}),
    "Transpose": ([_f32(2, 3)], {"input_perm": [1, 0]}),
    "ExpandDims": ([_f32(2, 3)], {"axis": 1}),
    "Squeeze": ([_f32(2, 1, 3)], {}),
    "Tile": ([_f32(2, 3)], {"multiples": [2, 1]}),
    "BroadcastTo": ([_f32(3)], {"shape": [2, -1]}),
    "Concat": ([_f32(2, 3), _f32(1, 3)], {}),
    "Stack": ([_f32(2, 3), _f32(2, 3)], {"axis": 1}),
    "Split": ([_f32(2, 4)], {"axis": 1, "output_num": 2}),
    "Slice": ([_f32(2, 3)], {"begin": [0, 1], "size": [-1, 2]}),
    "StridedSlice": ([_f32(2, 3)], {"begin": [0, -1], "end": [2, 0], "strides": [1, -1], "new_axis_mask": 0}),
    "Gather": ([_f32(4, 3), np.array([1, 3], np.int32)], {}),
    "OneHot": ([np.array([0, 2], np.int32)], {"depth": 3}),
    "Conv2D": ([_f32(1, 2, 5, 5), _f32(3, 2, 3, 3)], {"out_channel": 3, "kernel_size": 3, "pad_mode": "same"}),
    "MaxPool": ([_f32(1, 2, 4, 4)], {"kernel_size": 2, "strides": 2}),
    "AvgPool": ([_f32(1, 2, 5, 5)], {"kernel_size": 3, "strides": 2, "pad_mode": "same"}),
    "LayerNorm": ([_f32(2, 3), _f32(3), _f32(3)], {}),
    "BatchNorm": ([_f32(2, 3, 2, 2), _f32(*C3), _f32(*C3), _f32(*C3), _f32(*C3)], {}),
    "Einsum": ([_f32(2, 3), _f32(3, 2)], {"equation": "ij,jk->ik"}),
    "Pad": ([_f32(2, 3)], {"paddings": [1, 0, 0, 2], "value": 1.5}),
    "Conv2DTranspose": ([_f32(1, 2, 3, 3), _f32(2, 2, 2, 2)], {"out_channel": 2, "kernel_size": 2, "stride": 2}),
}


def example(op):
    if op in EXAMPLES:
        return EXAMPLES[op]
    opdef = OPS[op]
    if opdef.inputs in (("x",), ("x", "y")) and not any(a.required for a in opdef.attrs):
        return [_f32(2, 3) for _ in opdef.inputs], {}
    pytest.fail(f"{op} needs an entry in EXAMPLES (inputs and attrs for a float32 run)")


@pytest.mark.parametrize("op", sorted(OPS))
def test_float32_stays_float32(eng, op):
    inputs, attrs = example(op)
    result = eng.grad(network(op, len(inputs), attrs), inputs, get_all=True, return_value=True)
    for k, value in enumerate(result.value):
        if np.issubdtype(value.dtype, np.inexact):
            assert value.dtype == np.float32, f"{op} output {k} is {value.dtype} for float32 inputs"
    for k, (x, g) in enumerate(zip(inputs, result.gradients)):
        assert g.dtype == x.dtype, f"{op}: the gradient of input {k} is {g.dtype}, its input is {x.dtype}"
        assert g.shape == x.shape
