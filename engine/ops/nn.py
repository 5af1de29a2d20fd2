"""Neural-network primitives: activations over an axis, losses, bias, convolution, pooling, norms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .catalog import Attr, op

DATA_FORMAT = Attr("data_format", "str", "NCHW", choices=("NCHW", "NHWC"))


@op("Softmax", attrs=(Attr("axis", "int_or_ints", -1),))
def softmax(x, *, axis):
    """exp(x) / sum(exp(x)) along ``axis``."""
    return jax.nn.softmax(x, axis=axis)


@op("LogSoftmax", attrs=(Attr("axis", "int", -1),))
def log_softmax(x, *, axis):
    """log(softmax(x)) along ``axis``, computed stably."""
    return jax.nn.log_softmax(x, axis=axis)


@op("BiasAdd", inputs=("input_x", "bias"), attrs=(DATA_FORMAT,))
def bias_add(x, bias, *, data_format):
    """Add a 1-D bias along the channel axis (axis 1 for NCHW, the last for NHWC)."""
    if data_format == "NHWC" or x.ndim < 2:
        return x + bias
    return x + bias.reshape((1, -1) + (1,) * (x.ndim - 2))


# MindSpore's bprop (grad_nn_ops.cc) is dlogits = backprop * dloss[..., None], with backprop =
# softmax(logits) - labels the op's own second output, WHATEVER THE LABELS SUM TO (the loss's
# derivative is softmax * sum(labels) - labels); labels get zero and the second output's cotangent
# is ignored. As a custom_jvp (linear in the tangents, so JAX's transpose is that bprop, and
# forward mode and second order follow the same rule): the loss's tangent is
# sum(backprop * t_logits), backprop's tangent is zero.
@jax.custom_jvp
def _softmax_ce(logits, labels):
    loss = -jnp.sum(labels * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    return loss, jax.nn.softmax(logits, axis=-1) - labels


@_softmax_ce.defjvp
def _softmax_ce_jvp(primals, tangents):
    (logits, labels), (t_logits, _t_labels) = primals, tangents
    loss, backprop = _softmax_ce(logits, labels)
    # The coefficient is recomputed from plain ops (not taken from the custom output, whose
    # tangent is zero) so that differentiating this rule gives softmax's true second derivative.
    coef = jax.nn.softmax(logits, axis=-1) - labels
    return (loss, backprop), (jnp.sum(coef * t_logits, axis=-1), jnp.zeros_like(backprop))


@op("SoftmaxCrossEntropyWithLogits", inputs=("logits", "labels"), outputs=2)
def softmax_cross_entropy_with_logits(logits, labels):
    """(loss per row, softmax - labels); gradient MindSpore's (softmax - labels) * dloss whatever the
    labels sum to; labels and the second output pass no gradient."""
    return _softmax_ce(logits, labels)


def _sparse_ce_dlogits(logits, labels):
    """d(mean loss)/d(logits): (softmax(logits) - onehot(labels)) / batch."""
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return (jax.nn.softmax(logits, axis=-1) - onehot) / logits.shape[0]


# With is_grad=True the primitive's output is d(loss)/d(logits), and MindSpore's bprop for it
# (mindspore/ops/_grad_experimental/grad_nn_ops.py, 2.10) is
#     grad = out[0]; return grad, zeros_like(labels)
# `out[0]` indexes a tensor, not a tuple: it is the FIRST ROW of the op's output, shape [C], and
# the sensitivity is ignored. MindSpore hands that [C] to whatever produced the logits, which
# broadcasts it, so every row of the logits gets row 0 of the output (as a direct input it
# returns the [C] row itself). The engine gives that row broadcast to the logits' shape (API.md:
# a gradient has its input's shape), whatever the cotangent; labels get none.
@jax.custom_vjp
def _sparse_ce_is_grad(logits, labels):
    return _sparse_ce_dlogits(logits, labels)


def _sparse_ce_is_grad_fwd(logits, labels):
    out = _sparse_ce_dlogits(logits, labels)
    return out, out


def _sparse_ce_is_grad_bwd(out, g):
    first = out[0] if out.shape[0] else jnp.zeros(out.shape[1:], out.dtype)
    return jnp.broadcast_to(first, out.shape).astype(g.dtype), None


_sparse_ce_is_grad.defvjp(_sparse_ce_is_grad_fwd, _sparse_ce_is_grad_bwd)


@op(
    "SparseSoftmaxCrossEntropyWithLogits",
    inputs=("logits", "labels"),
    attrs=(Attr("is_grad", "bool", False, doc="true returns the gradient of the mean loss w.r.t. logits "
                                               "instead of the loss; its own gradient is then MindSpore's "
                                               "(the output's first row, for every row; sens ignored)"),),
)
def sparse_softmax_cross_entropy_with_logits(logits, labels, *, is_grad):
    """Mean cross-entropy of logits [N, C] against integer class labels [N] (is_grad=false), or
    its gradient w.r.t. logits (is_grad=true)."""
    if is_grad:
        return _sparse_ce_is_grad(logits, labels)
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits, axis=-1), axis=-1))


@op("L2Loss")
def l2_loss(x):
    """sum(x ** 2) / 2."""
    return jnp.sum(x * x) / 2


# -- convolution, pooling and normalization ------------------------------------------------------

from .shapes import Checked, at_least  # noqa: E402  (shared attr checks; this section was appended)

PAD_MODES = ("valid", "same", "VALID", "SAME")


def _lengths(*allowed: int):
    """A check: an int, or a list of one of the ``allowed`` lengths, all >= 1."""

    def check(value):
        if isinstance(value, tuple) and len(value) not in allowed:
            return f"must be an integer or a list of {' or '.join(map(str, allowed))} integers"
        return at_least(1)(value)

    return check


def _pad_check(value):
    if isinstance(value, tuple) and len(value) != 4:
        return "must be an integer or a list of 4 integers [top, bottom, left, right]"
    return at_least(0)(value)


def _hw(value, name: str, data_format: str) -> tuple[int, int]:
    """MindSpore's int / [h, w] / 4-int (N, C, H, W in data_format order) spatial spelling."""
    if isinstance(value, int):
        return value, value
    if len(value) == 1:
        return value[0], value[0]
    if len(value) == 2:
        return tuple(value)
    n, c = (0, 1) if data_format == "NCHW" else (0, 3)
    if value[n] != 1 or value[c] != 1:
        raise ValueError(f"{name} {list(value)}: the batch and channel entries of a 4-int {name} must be 1")
    return (value[2], value[3]) if data_format == "NCHW" else (value[1], value[2])


def _spatial(x, data_format: str, what: str) -> tuple[int, int]:
    if x.ndim != 4:
        raise ValueError(f"{what} must be 4-D ({data_format}), got rank {x.ndim}")
    return (x.shape[2], x.shape[3]) if data_format == "NCHW" else (x.shape[1], x.shape[2])


@op(
    "Conv2D",
    inputs=("x", "weight"),
    attrs=(
        Checked("out_channel", "int", check=at_least(1)),
        Checked("kernel_size", "int_or_ints", doc="an int or [height, width]", check=_lengths(1, 2)),
        Attr("mode", "int", 1, choices=(1,), doc="unused by MindSpore; must be 1"),
        Attr("pad_mode", "str", "valid", choices=("valid", "same", "pad", "VALID", "SAME", "PAD")),
        Checked("pad", "int_or_ints", 0, doc="with pad_mode \"pad\": an int or [top, bottom, left, right]",
                check=_pad_check),
        Checked("stride", "int_or_ints", 1, check=_lengths(1, 2, 4)),
        Checked("dilation", "int_or_ints", 1, check=_lengths(1, 2, 4)),
        Checked("group", "int", 1, check=at_least(1)),
        DATA_FORMAT,
    ),
)
def conv2d(x, weight, *, out_channel, kernel_size, mode, pad_mode, pad, stride, dilation, group, data_format):
    """2-D cross-correlation; weight is (out_channel, C_in / group, kh, kw) (NHWC: (out, kh, kw, in / group))."""
    pad_mode = pad_mode.lower()
    _spatial(x, data_format, "x")
    _spatial(weight, data_format, "weight")
    kh, kw = _hw(kernel_size, "kernel_size", data_format)
    c_in = x.shape[1] if data_format == "NCHW" else x.shape[3]
    want = (out_channel, c_in // group, kh, kw) if data_format == "NCHW" else (out_channel, kh, kw, c_in // group)
    if c_in % group or out_channel % group:
        raise ValueError(f"group={group} must divide the input channels ({c_in}) and out_channel ({out_channel})")
    if tuple(weight.shape) != want:
        raise ValueError(f"weight must have shape {list(want)} for these attrs and x, got {list(weight.shape)}")
    if pad_mode != "pad" and pad not in (0, (0, 0, 0, 0)):
        raise ValueError(f"pad must be 0 unless pad_mode is \"pad\" (pad_mode is \"{pad_mode}\")")
    if pad_mode == "pad":
        top, bottom, left, right = (pad,) * 4 if isinstance(pad, int) else pad
        padding = [(top, bottom), (left, right)]
    else:
        padding = pad_mode.upper()
    kernel_layout = "OIHW" if data_format == "NCHW" else "OHWI"
    return lax.conv_general_dilated(
        x,
        weight,
        window_strides=_hw(stride, "stride", data_format),
        padding=padding,
        rhs_dilation=_hw(dilation, "dilation", data_format),
        dimension_numbers=(data_format, kernel_layout, data_format),
        feature_group_count=group,
    )


POOL_ATTRS = (
    Checked("kernel_size", "int_or_ints", 1, doc="an int or [height, width]", check=_lengths(1, 2, 4)),
    Checked("strides", "int_or_ints", 1, doc="an int or [height, width]", check=_lengths(1, 2, 4)),
    Attr("pad_mode", "str", "valid", choices=PAD_MODES),
    DATA_FORMAT,
)


def _window(x, kernel_size, strides, data_format):
    _spatial(x, data_format, "x")
    kh, kw = _hw(kernel_size, "kernel_size", data_format)
    sh, sw = _hw(strides, "strides", data_format)
    if data_format == "NCHW":
        return (1, 1, kh, kw), (1, 1, sh, sw)
    return (1, kh, kw, 1), (1, sh, sw, 1)


@op("MaxPool", attrs=POOL_ATTRS)
def max_pool(x, *, kernel_size, strides, pad_mode, data_format):
    """Maximum over each window; the gradient goes to the first maximum of a window, as in MindSpore."""
    window, step = _window(x, kernel_size, strides, data_format)
    # A Python-scalar identity keeps this JAX's differentiable reduce_window_max (and x's dtype).
    lowest = -float("inf") if jnp.issubdtype(x.dtype, jnp.inexact) else int(jnp.iinfo(x.dtype).min)
    return lax.reduce_window(x, lowest, lax.max, window, step, pad_mode.upper())


@op("AvgPool", attrs=POOL_ATTRS)
def avg_pool(x, *, kernel_size, strides, pad_mode, data_format):
    """Mean over each window; with pad_mode "same" the padding is not counted, as in MindSpore/TF."""
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        raise ValueError(f"AvgPool needs a floating-point x, got {x.dtype}")
    window, step = _window(x, kernel_size, strides, data_format)
    padding = pad_mode.upper()
    total = lax.reduce_window(x, 0.0, lax.add, window, step, padding)
    if padding == "VALID":
        return total / (window[1] * window[2] * window[3])
    ones = jnp.ones((1,) + x.shape[1:], x.dtype)
    count = lax.reduce_window(ones, 0.0, lax.add, window, step, padding)
    return total / count


@op(
    "LayerNorm",
    inputs=("input_x", "gamma", "beta"),
    attrs=(
        Attr("begin_norm_axis", "int", 1),
        Attr("begin_params_axis", "int", 1),
        Checked("epsilon", "float", 1e-7, check=lambda v: None if v > 0 else "must be > 0"),
    ),
    outputs=3,
)
def layer_norm(x, gamma, beta, *, begin_norm_axis, begin_params_axis, epsilon):
    """(y, mean, variance) over the axes from begin_norm_axis on; mean/variance keep dims, get no gradient."""
    norm = begin_norm_axis % x.ndim if -x.ndim <= begin_norm_axis < x.ndim else None
    params = begin_params_axis % x.ndim if -x.ndim <= begin_params_axis < x.ndim else None
    if norm is None or params is None:
        raise ValueError(f"begin_norm_axis and begin_params_axis must be in [-{x.ndim}, {x.ndim}) for rank {x.ndim}")
    want = tuple(x.shape[params:])
    if tuple(gamma.shape) != want or tuple(beta.shape) != want:
        raise ValueError(f"gamma and beta must have shape {list(want)} (input_x.shape[begin_params_axis:])")
    axes = tuple(range(norm, x.ndim))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    centered = x - mean
    variance = jnp.mean(centered * centered, axis=axes, keepdims=True)
    y = centered * lax.rsqrt(variance + epsilon) * gamma + beta
    # MindSpore's LayerNorm bprop reads dout[0] only: mean and variance carry no gradient.
    return y, lax.stop_gradient(mean), lax.stop_gradient(variance)


@op(
    "BatchNorm",
    inputs=("input_x", "scale", "bias", "mean", "variance"),
    attrs=(
        Checked(
            "is_training", "bool", False, doc="only false (inference statistics) is supported",
            check=lambda v: "must be false: only inference statistics (the given mean and variance) are supported"
            if v else None,
        ),
        Checked("epsilon", "float", 1e-5, check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]"),
        Checked("momentum", "float", 0.1, check=lambda v: None if 0 <= v <= 1 else "must be in [0, 1]"),
        DATA_FORMAT,
    ),
    outputs=5,
)
def batch_norm(x, scale, bias, mean, variance, *, is_training, epsilon, momentum, data_format):
    """Inference batch norm: (y, mean, variance, mean, variance); mean and variance get zero gradients."""
    if x.ndim < 2:
        raise ValueError(f"input_x must have a channel axis (rank >= 2), got rank {x.ndim}")
    axis = 1 if data_format == "NCHW" else x.ndim - 1
    channels = x.shape[axis]
    for name, t in (("scale", scale), ("bias", bias), ("mean", mean), ("variance", variance)):
        if tuple(t.shape) != (channels,):
            raise ValueError(f"{name} must have shape [{channels}] (the channels of input_x), got {list(t.shape)}")
    # MindSpore's BatchNorm bprop returns zeros for mean and variance and reads dout[0] only.
    mean, variance = lax.stop_gradient(mean), lax.stop_gradient(variance)
    shape = [1] * x.ndim
    shape[axis] = channels

    def per_channel(t):
        return t.reshape(shape)

    y = (x - per_channel(mean)) * per_channel(lax.rsqrt(variance + epsilon) * scale) + per_channel(bias)
    return y, mean, variance, mean, variance


def _output_padding_check(value):
    if isinstance(value, tuple) and len(value) not in (1, 2):
        return "must be an integer or a list of 1 or 2 integers"
    return at_least(0)(value)


@op(
    "Conv2DTranspose",
    inputs=("x", "weight"),
    attrs=(
        Checked("out_channel", "int", check=at_least(1)),
        Checked("kernel_size", "int_or_ints", doc="an int or [height, width]", check=_lengths(1, 2)),
        Attr("pad_mode", "str", "valid", choices=("valid", "pad", "VALID", "PAD")),
        Checked("pad", "int_or_ints", 0, doc="with pad_mode \"pad\": an int or [top, bottom, left, right], "
                "removed from the full output", check=_pad_check),
        Checked("stride", "int_or_ints", 1, check=_lengths(1, 2)),
        Checked("dilation", "int_or_ints", 1, check=_lengths(1, 2)),
        Checked("group", "int", 1, check=at_least(1)),
        Checked("output_padding", "int_or_ints", 0, doc="extra rows/columns at the bottom/right "
                "(PyTorch's and ONNX's output_padding)", check=_output_padding_check),
    ),
)
def conv2d_transpose(x, weight, *, out_channel, kernel_size, pad_mode, pad, stride, dilation, group, output_padding):
    """The transpose (gradient) of Conv2D, NCHW; weight is (C_in, out_channel / group, kh, kw), as in
    MindSpore and PyTorch. Output size (in - 1) * stride + dilation * (k - 1) + 1 - pads + output_padding."""
    _spatial(x, "NCHW", "x")
    _spatial(weight, "NCHW", "weight")
    kh, kw = _hw(kernel_size, "kernel_size", "NCHW")
    c_in = x.shape[1]
    if c_in % group or out_channel % group:
        raise ValueError(f"group={group} must divide the input channels ({c_in}) and out_channel ({out_channel})")
    want = (c_in, out_channel // group, kh, kw)
    if tuple(weight.shape) != want:
        raise ValueError(f"weight must have shape {list(want)} for these attrs and x, got {list(weight.shape)}")
    if pad_mode.lower() != "pad" and pad not in (0, (0, 0, 0, 0)):
        raise ValueError(f"pad must be 0 unless pad_mode is \"pad\" (pad_mode is \"{pad_mode}\")")
    top, bottom, left, right = (pad,) * 4 if isinstance(pad, int) else pad
    (sh, sw), (dh, dw) = _hw(stride, "stride", "NCHW"), _hw(dilation, "dilation", "NCHW")
    oph, opw = _hw(output_padding, "output_padding", "NCHW")
    # As a convolution: the input dilated by the stride, the kernel flipped and its in/out swapped
    # per group, padded by dilation * (k - 1) minus the pads on each side.
    g = group
    w = weight.reshape(g, c_in // g, out_channel // g, kh, kw).swapaxes(1, 2)
    w = w.reshape(out_channel, c_in // g, kh, kw)[:, :, ::-1, ::-1]
    padding = [(dh * (kh - 1) - top, dh * (kh - 1) - bottom + oph), (dw * (kw - 1) - left, dw * (kw - 1) - right + opw)]
    return lax.conv_general_dilated(
        x, w, window_strides=(1, 1), padding=padding, lhs_dilation=(sh, sw), rhs_dilation=(dh, dw),
        dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=g,
    )
