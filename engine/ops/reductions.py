"""Linear algebra and reductions: MatMul, BatchMatMul, Reduce*, LogSumExp, CumSum."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .catalog import Attr, op

TRANSPOSE = (Attr("transpose_a", "bool", False), Attr("transpose_b", "bool", False))
REDUCE = (
    Attr("axis", "int_or_ints", (), doc="an axis or a list of axes; [] reduces over all of them"),
    Attr("keep_dims", "bool", False),
)


def _axes(x: jax.Array, axis: int | tuple[int, ...]) -> tuple[int, ...] | None:
    """MindSpore's axis convention: an int, a list, or [] meaning every axis."""
    if isinstance(axis, int):
        return (axis,)
    return tuple(axis) if axis else None


@op("MatMul", inputs=("x", "y"), attrs=TRANSPOSE)
def matmul(x, y, *, transpose_a, transpose_b):
    """2-D matrix product, optionally transposing either operand."""
    return jnp.matmul(x.T if transpose_a else x, y.T if transpose_b else y)


@op("BatchMatMul", inputs=("x", "y"), attrs=TRANSPOSE)
def batch_matmul(x, y, *, transpose_a, transpose_b):
    """Batched matrix product over the last two axes."""
    return jnp.matmul(jnp.swapaxes(x, -1, -2) if transpose_a else x, jnp.swapaxes(y, -1, -2) if transpose_b else y)


@op("ReduceSum", attrs=REDUCE)
def reduce_sum(x, *, axis, keep_dims):
    """Sum over ``axis``."""
    return jnp.sum(x, axis=_axes(x, axis), keepdims=keep_dims)


@op("ReduceMean", attrs=REDUCE)
def reduce_mean(x, *, axis, keep_dims):
    """Mean over ``axis``."""
    return jnp.mean(x, axis=_axes(x, axis), keepdims=keep_dims)


@op("ReduceMax", attrs=REDUCE)
def reduce_max(x, *, axis, keep_dims):
    """Maximum over ``axis``; the gradient is shared equally between tied maxima."""
    return jnp.max(x, axis=_axes(x, axis), keepdims=keep_dims)


@op("ReduceMin", attrs=REDUCE)
def reduce_min(x, *, axis, keep_dims):
    """Minimum over ``axis``; the gradient is shared equally between tied minima."""
    return jnp.min(x, axis=_axes(x, axis), keepdims=keep_dims)


@op("ReduceProd", attrs=REDUCE)
def reduce_prod(x, *, axis, keep_dims):
    """Product over ``axis``."""
    return jnp.prod(x, axis=_axes(x, axis), keepdims=keep_dims)


@op("LogSumExp", attrs=REDUCE)
def log_sum_exp(x, *, axis, keep_dims):
    """log(sum(exp(x))) over ``axis``, computed stably."""
    return jax.nn.logsumexp(x, axis=_axes(x, axis), keepdims=keep_dims)


@op(
    "CumSum",
    attrs=(Attr("axis", "int", 0), Attr("exclusive", "bool", False), Attr("reverse", "bool", False)),
)
def cum_sum(x, *, axis, exclusive, reverse):
    """Cumulative sum along ``axis``; ``exclusive`` leaves out the current element."""
    if reverse:
        x = jnp.flip(x, axis)
    out = jnp.cumsum(x, axis=axis)
    if exclusive:
        out = out - x
    return jnp.flip(out, axis) if reverse else out


@op("Einsum", inputs=("*x",), attrs=(Attr("equation", "str", doc="subscripts, e.g. \"bij,bjk->bik\""),))
def einsum(*xs, equation):
    """Einstein summation over the inputs, as ``equation`` spells it (numpy.einsum's notation)."""
    if equation.count("->") > 1 or any(not (c.isalpha() or c in ",->. ") for c in equation):
        raise ValueError(f"equation {equation!r} is not einsum notation (letters, ',', '->', '...')")
    return jnp.einsum(equation.replace(" ", ""), *xs)
