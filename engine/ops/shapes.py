"""Shape and indexing primitives: Reshape, Transpose, slicing, joining, splitting, Gather, OneHot.

Attrs that MindSpore takes as call arguments (``Reshape``'s shape, ``Slice``'s begin and size, ...)
are attrs here, under MindSpore's names. Gradients are JAX's: MindSpore's bprops for these ops
(StridedSliceGrad, GatherV2's unsorted segment sum, ConcatOffset slices, ...) compute the same
values. A shape that does not fit the attrs raises ``ValueError``, which the engine reports as a
shape error naming the node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
from jax import lax

from ..errors import AttrError
from .catalog import Attr, op


@dataclass(frozen=True)
class Checked(Attr):
    """An :class:`Attr` with one more rule, checked when the network is parsed.

    ``check`` gets the canonical value and returns ``None``, or what is wrong ("must be ...").
    """

    check: Callable[[Any], str | None] | None = None

    def coerce(self, value: Any, path: str) -> Any:
        out = super().coerce(value, path)
        problem = self.check(out) if self.check is not None else None
        if problem:
            raise AttrError(f"attr '{self.name}' {problem}, got {value!r}", path)
        return out


def at_least(low: int) -> Callable[[Any], str | None]:
    """A check: an int, or every int of a list, is ``>= low``."""

    def check(value: Any) -> str | None:
        values = value if isinstance(value, tuple) else (value,)
        return None if all(v >= low for v in values) else f"must be >= {low}"

    return check


def _axis(axis: int, ndim: int, what: str = "axis") -> int:
    """Normalize an axis in [-ndim, ndim)."""
    if not -ndim <= axis < ndim:
        raise ValueError(f"{what} {axis} is out of range for a tensor of rank {ndim} (expected [-{ndim}, {ndim}))")
    return axis % ndim


@op("Reshape", attrs=(Attr("shape", "ints", doc="the new shape; one entry may be -1 (inferred)"),))
def reshape(x, *, shape):
    """x with a new shape of the same size; -1 infers one dimension."""
    if sum(d == -1 for d in shape) > 1 or any(d < -1 for d in shape):
        raise ValueError(f"shape {list(shape)} may hold at most one -1 and no other negative entry")
    known = 1
    for d in shape:
        known *= d if d != -1 else 1
    if (-1 in shape and (known == 0 or x.size % known)) or (-1 not in shape and known != x.size):
        raise ValueError(f"cannot reshape a tensor of shape {list(x.shape)} ({x.size} elements) to {list(shape)}")
    return jnp.reshape(x, shape)


@op("Transpose", attrs=(Attr("input_perm", "ints", doc="a permutation of the axes"),))
def transpose(x, *, input_perm):
    """Permute the axes: output axis i is input axis input_perm[i]."""
    if sorted(p + x.ndim if p < 0 else p for p in input_perm) != list(range(x.ndim)):
        raise ValueError(f"input_perm {list(input_perm)} is not a permutation of the {x.ndim} axes")
    return jnp.transpose(x, input_perm)


@op("ExpandDims", attrs=(Attr("axis", "int", doc="where the new axis goes, in [-rank-1, rank]"),))
def expand_dims(x, *, axis):
    """Insert an axis of size 1 at ``axis``."""
    return jnp.expand_dims(x, _axis(axis, x.ndim + 1))


@op(
    "Squeeze",
    attrs=(Attr("axis", "int_or_ints", (), doc="axes of size 1 to remove; [] removes every size-1 axis"),),
)
def squeeze(x, *, axis):
    """Remove axes of size 1 (all of them when ``axis`` is [])."""
    axes = (axis,) if isinstance(axis, int) else axis
    if not axes:
        return jnp.squeeze(x, axis=tuple(i for i, d in enumerate(x.shape) if d == 1))
    axes = tuple(_axis(a, x.ndim) for a in axes)
    wrong = [a for a in axes if x.shape[a] != 1]
    if wrong:
        raise ValueError(f"cannot squeeze axis {wrong[0]} of size {x.shape[wrong[0]]} (only size-1 axes)")
    return jnp.squeeze(x, axis=axes)


@op("Tile", attrs=(Checked("multiples", "ints", doc="repetitions per axis", check=at_least(0)),))
def tile(x, *, multiples):
    """Repeat x ``multiples[i]`` times along axis i (x gets leading 1s when multiples is longer)."""
    return jnp.tile(x, multiples)


@op("BroadcastTo", attrs=(Attr("shape", "ints", doc="the target shape; -1 keeps that dimension of x"),))
def broadcast_to(x, *, shape):
    """Broadcast x to ``shape`` (-1 keeps the matching dimension of x)."""
    lead = len(shape) - x.ndim
    if lead < 0:
        raise ValueError(f"cannot broadcast a tensor of rank {x.ndim} to the shorter shape {list(shape)}")
    target = []
    for i, d in enumerate(shape):
        if d == -1:
            if i < lead:
                raise ValueError(f"shape {list(shape)}: -1 at position {i} has no matching dimension of x")
            d = x.shape[i - lead]
        elif d < 0:
            raise ValueError(f"shape {list(shape)} may only hold sizes and -1")
        target.append(d)
    return jnp.broadcast_to(x, tuple(target))


@op("Concat", inputs=("*x",), attrs=(Attr("axis", "int", 0),))
def concat(*xs, axis):
    """Join the inputs along an existing axis."""
    return jnp.concatenate(xs, axis=_axis(axis, xs[0].ndim))


@op("Stack", inputs=("*x",), attrs=(Attr("axis", "int", 0),))
def stack(*xs, axis):
    """Join inputs of one shape along a new axis."""
    return jnp.stack(xs, axis=_axis(axis, xs[0].ndim + 1))


@op(
    "Split",
    attrs=(
        Attr("axis", "int", 0),
        Checked("output_num", "int", 1, doc="the number of equal parts (the op's outputs)", check=at_least(1)),
    ),
    outputs=lambda attrs: attrs["output_num"],
)
def split(x, *, axis, output_num):
    """Split x into ``output_num`` equal parts along ``axis``."""
    axis = _axis(axis, x.ndim)
    if x.shape[axis] % output_num:
        raise ValueError(
            f"axis {axis} has size {x.shape[axis]}, which does not split into output_num={output_num} equal parts"
        )
    parts = tuple(jnp.split(x, output_num, axis=axis))
    return parts if output_num > 1 else parts[0]  # the engine holds a one-output node's value bare


@op(
    "Slice",
    attrs=(
        Checked("begin", "ints", doc="the start index per axis", check=at_least(0)),
        Checked("size", "ints", doc="the length per axis; -1 takes the rest of the axis", check=at_least(-1)),
    ),
)
def slice_(x, *, begin, size):
    """The block of ``size`` elements starting at ``begin`` (size -1: to the end of the axis)."""
    if len(begin) != x.ndim or len(size) != x.ndim:
        raise ValueError(f"begin and size need one entry per axis ({x.ndim}), got {len(begin)} and {len(size)}")
    index = []
    for axis, (b, s, d) in enumerate(zip(begin, size, x.shape)):
        end = d if s == -1 else b + s
        if b > d or end > d:
            raise ValueError(f"axis {axis}: begin {b} and size {s} run past its size {d}")
        index.append(slice(b, end))
    return x[tuple(index)]


MASKS = ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")


def strided_slice_index(shape: tuple[int, ...], begin, end, strides, masks: dict[str, int]) -> tuple[Any, ...]:
    """Translate StridedSlice's spec (TensorFlow's semantics, which MindSpore follows) to a NumPy index.

    Spec entry i is: an ellipsis (``ellipsis_mask`` bit i; it wins over the other bits), a new
    axis of size 1 (``new_axis_mask``), one index (``shrink_axis_mask``: ``begin[i]``, the axis is
    removed), or ``begin[i]:end[i]:strides[i]`` with ``begin_mask``/``end_mask`` bit i replacing
    begin/end by the full extent in the stride's direction. Axes after the spec are kept whole.
    Out-of-range begin/end are clamped as TensorFlow does, which is what a Python slice does.
    """
    if not len(begin) == len(end) == len(strides):
        raise ValueError(f"begin, end and strides need the same length, got {len(begin)}, {len(end)}, {len(strides)}")
    bits = {name: [bool(masks[name] >> i & 1) for i in range(len(begin))] for name in MASKS}
    if sum(bits["ellipsis_mask"]) > 1:
        raise ValueError("ellipsis_mask may have at most one bit set")
    kinds = [
        "ellipsis" if bits["ellipsis_mask"][i] else "new" if bits["new_axis_mask"][i] else "dim"
        for i in range(len(begin))
    ]
    if kinds.count("dim") > len(shape):
        raise ValueError(f"the spec indexes {kinds.count('dim')} axes, but the input has rank {len(shape)}")
    index: list[Any] = []
    axis = 0
    for i, kind in enumerate(kinds):
        if kind == "ellipsis":
            covered = len(shape) - axis - kinds[i + 1:].count("dim")
            index.append(Ellipsis)
            axis += covered
            continue
        if kind == "new":
            index.append(None)
            continue
        dim, b, e, s = shape[axis], begin[i], end[i], strides[i]
        if s == 0:
            raise ValueError(f"strides[{i}] is 0")
        if bits["shrink_axis_mask"][i]:
            k = b + dim if b < 0 else b
            if not 0 <= k < dim:
                raise ValueError(f"shrink_axis_mask: begin[{i}]={b} is out of range for axis {axis} of size {dim}")
            index.append(k)
        else:
            index.append(slice(None if bits["begin_mask"][i] else b, None if bits["end_mask"][i] else e, s))
        axis += 1
    return tuple(index)


@op(
    "StridedSlice",
    attrs=(
        Attr("begin", "ints"),
        Attr("end", "ints"),
        Attr("strides", "ints"),
        *(Checked(name, "int", 0, check=at_least(0)) for name in MASKS),
    ),
)
def strided_slice(x, *, begin, end, strides, begin_mask, end_mask, ellipsis_mask, new_axis_mask, shrink_axis_mask):
    """x[begin:end:strides] with TensorFlow's begin/end/ellipsis/new-axis/shrink-axis masks."""
    masks = dict(zip(MASKS, (begin_mask, end_mask, ellipsis_mask, new_axis_mask, shrink_axis_mask)))
    return x[strided_slice_index(tuple(x.shape), begin, end, strides, masks)]


@op("Gather", inputs=("params", "indices"), attrs=(Attr("axis", "int", 0),))
def gather(params, indices, *, axis):
    """Slices of params at integer ``indices`` along ``axis``; an index outside [0, n) gives zeros."""
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise ValueError(f"indices must be an integer tensor, got {indices.dtype}")
    axis = _axis(axis, params.ndim)
    n = params.shape[axis]
    if jnp.issubdtype(indices.dtype, jnp.signedinteger):
        indices = jnp.where(indices < 0, n, indices)  # MindSpore has no negative indices: out of range
    return jnp.take(params, indices, axis=axis, mode="fill", fill_value=0)


@op(
    "OneHot",
    inputs=("indices",),
    attrs=(
        Checked("depth", "int", doc="the number of classes", check=at_least(0)),
        Attr("on_value", "number", 1.0),
        Attr("off_value", "number", 0.0),
        Checked("axis", "int", -1, doc="where the new axis goes; -1 appends it", check=at_least(-1)),
    ),
)
def one_hot(indices, *, depth, on_value, off_value, axis):
    """float32 one-hot encoding: on_value where index == position along ``axis``, else off_value."""
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise ValueError(f"indices must be an integer tensor, got {indices.dtype}")
    if axis > indices.ndim:
        raise ValueError(f"axis {axis} is out of range for indices of rank {indices.ndim} (expected [-1, {indices.ndim}])")
    axis = indices.ndim if axis == -1 else axis
    classes = jnp.arange(depth).reshape((-1,) + (1,) * (indices.ndim - axis))
    hit = jnp.expand_dims(indices, axis) == classes
    return jnp.where(hit, jnp.float32(on_value), jnp.float32(off_value))


def _pairs_check(value):
    return None if len(value) % 2 == 0 else "must hold an even number of integers ((before, after) per axis)"


@op(
    "Pad",
    attrs=(
        Checked("paddings", "ints", doc="(before, after) for each axis from the first, flattened: "
                "[b0, a0, b1, a1, ...]; MindSpore's ((b0, a0), (b1, a1), ...); a negative entry crops",
                check=_pairs_check),
        Attr("value", "float", 0.0, doc="the value the padding holds (MindSpore's Pad pads zeros)"),
    ),
)
def pad(x, *, paddings, value):
    """x with ``value`` added before and after each axis (fewer pairs than axes pad the first axes)."""
    if len(paddings) // 2 > x.ndim:
        raise ValueError(f"paddings has {len(paddings) // 2} (before, after) pairs for a tensor of rank {x.ndim}")
    pairs = [(paddings[2 * i], paddings[2 * i + 1], 0) for i in range(len(paddings) // 2)]
    pairs += [(0, 0, 0)] * (x.ndim - len(pairs))
    for axis, (lo, hi, _) in enumerate(pairs):
        if x.shape[axis] + lo + hi < 0:
            raise ValueError(f"paddings ({lo}, {hi}) crop more than the {x.shape[axis]} elements of axis {axis}")
    return lax.pad(x, jnp.asarray(value, x.dtype), pairs)
