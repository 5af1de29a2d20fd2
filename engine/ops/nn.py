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


@op("SoftmaxCrossEntropyWithLogits", inputs=("logits", "labels"), outputs=2)
def softmax_cross_entropy_with_logits(logits, labels):
    """(loss per row, its gradient softmax - labels); as in MindSpore, labels get no gradient."""
    labels = lax.stop_gradient(labels)
    loss = -jnp.sum(labels * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    backprop = lax.stop_gradient(jax.nn.softmax(logits, axis=-1) - labels)
    return loss, backprop


@op(
    "SparseSoftmaxCrossEntropyWithLogits",
    inputs=("logits", "labels"),
    attrs=(Attr("is_grad", "bool", False, doc="true returns the gradient instead of the loss"),),
)
def sparse_softmax_cross_entropy_with_logits(logits, labels, *, is_grad):
    """Mean cross-entropy of logits against integer class labels."""
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    if is_grad:
        return lax.stop_gradient((jax.nn.softmax(logits, axis=-1) - onehot) / logits.shape[0])
    return -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits, axis=-1), axis=-1))


@op("L2Loss")
def l2_loss(x):
    """sum(x ** 2) / 2."""
    return jnp.sum(x * x) / 2
