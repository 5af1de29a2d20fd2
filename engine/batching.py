"""Dynamic batching in the engine: many calls of one transform as one vmapped program.

Calls that share a network, a (canonical) spec and the shapes and dtypes of their inputs and
per-call vectors (:attr:`Call.key`) are stacked along a new leading axis and computed by
``jax.vmap`` of the transform's own built function (:func:`batched`: one wrapper for every
transform of :data:`engine.transforms.TRANSFORMS`). The network's parameters are shared by the
batch (``in_axes=None``): placed on the device once, never copied per call.

A batch of ``n`` calls runs in the program of its *bucket* (:func:`bucket`: the next power of
two, at most the largest size), its rows past ``n`` padded with copies of the first call and
their results dropped, so that a network and spec compile at most ``len(buckets(max))``
batched programs. They live in the engine's one LRU of compiled programs, beside the unbatched
ones (:meth:`engine.Engine.run_batch`).

Each row is computed as that call alone would be: vmap turns per-example operations into their
batched forms (a matrix-vector product into a matrix product), and nothing mixes rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from .transforms import Fn, Spec


def buckets(max_size: int) -> tuple[int, ...]:
    """The batch sizes programs are compiled for: 1, 2, 4, ... below ``max_size``, then ``max_size``."""
    if max_size < 1:
        raise ValueError("the largest batch size must be at least 1")
    sizes, b = [], 1
    while b < max_size:
        sizes.append(b)
        b *= 2
    sizes.append(max_size)
    return tuple(sizes)


def bucket(n: int, max_size: int) -> int:
    """The smallest bucket of ``buckets(max_size)`` that holds ``n`` calls (``n <= max_size``)."""
    if not 1 <= n <= max_size:
        raise ValueError(f"a batch of {n} does not fit the largest batch size {max_size}")
    b = 1
    while b < n:
        b *= 2
    return min(b, max_size)


def batched(fn: Fn, has_extra: bool) -> Fn:
    """``fn(inputs, params, extra)`` of one call, as a function of stacked inputs (and stacked
    per-call vectors) and the one set of parameters they share."""
    return jax.vmap(fn, in_axes=(0, None, 0 if has_extra else None))


@dataclass(frozen=True, eq=False)
class Call:
    """One call bound and checked (:meth:`engine.Engine.prepare`): what a batch stacks."""

    spec: Spec  # canonical: calls that mean the same share one key
    xs: tuple[np.ndarray, ...]
    extra: tuple[np.ndarray, ...] | None  # the bound per-call vectors, None if the spec has none
    key: tuple[Any, ...]  # (network id, spec, inputs' signature, vectors' signature)


def stack(arrays: Sequence[np.ndarray], size: int) -> np.ndarray:
    """``arrays`` (one shape and dtype) on a new leading axis of ``size`` rows, the rows past
    ``len(arrays)`` copies of the first: real values, so padding computes nothing odd (a zero
    row could be a log of 0 or a division by 0, slow on some hardware)."""
    first = arrays[0]
    out = np.empty((size, *first.shape), first.dtype)
    for i, a in enumerate(arrays):
        out[i] = a
    if size > len(arrays):
        out[len(arrays):] = first
    return out


def stack_calls(calls: Sequence[Call], size: int) -> tuple[list[np.ndarray], tuple[np.ndarray, ...] | None]:
    """The inputs and the per-call vectors of ``calls`` (one key), stacked to ``size`` rows."""
    first = calls[0]
    xs = [stack([c.xs[i] for c in calls], size) for i in range(len(first.xs))]
    if first.extra is None:
        return xs, None
    return xs, tuple(stack([c.extra[k] for c in calls], size) for k in range(len(first.extra)))  # type: ignore[index]


def stacked_shapes(call: Call, size: int) -> tuple[list[Any], tuple[Any, ...] | None]:
    """What :func:`stack_calls` gives for ``size`` rows of ``call``'s key, as shapes and dtypes
    (``jax.ShapeDtypeStruct``): enough to compile the batched program, with nothing allocated."""
    def shape(a: np.ndarray) -> Any:
        return jax.ShapeDtypeStruct((size, *a.shape), a.dtype)

    xs = [shape(x) for x in call.xs]
    return xs, None if call.extra is None else tuple(shape(e) for e in call.extra)


def rows(leaves: Sequence[np.ndarray], n: int) -> list[list[np.ndarray]]:
    """The first ``n`` rows of a batched program's flat outputs, per call (views, no copy)."""
    return [[leaf[i] for leaf in leaves] for i in range(n)]
