"""The network's forward as a JAX function; the transforms of it are :mod:`engine.transforms`.

"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import GradnetError, ShapeError, TooLargeError
from .network import Const, Network, Ref
from .tensors import MAX_RANK


def _resolve(env: Mapping[str, Any], ref: Ref) -> Any:
    value = env[ref.name]
    return value if ref.index is None else value[ref.index]


def _arguments(env: Mapping[str, Any], refs: Sequence[Ref | Const]) -> list[Any]:
    """A node's arguments; a scalar constant takes the dtype of the node's first tensor operand
    (as MindSpore's Python scalars do in ``construct``), an array constant is itself."""
    args = [r.value if isinstance(r, Const) else _resolve(env, r) for r in refs]
    scalars = [k for k, r in enumerate(refs) if isinstance(r, Const) and r.scalar]
    if scalars:
        tensor = next((a for a, r in zip(args, refs) if not (isinstance(r, Const) and r.scalar)), None)
        for k in scalars:
            if tensor is not None:
                dtype = tensor.dtype
            else:  # constants only: MindSpore's default dtypes
                dtype = np.float32 if isinstance(args[k], float) else np.int64
            args[k] = np.asarray(args[k], dtype)
    return args


def _describe(values: Sequence[Any]) -> str:
    return ", ".join(f"{np.dtype(v.dtype).name}{list(v.shape)}" for v in values)


def make_forward(net: Network, max_elements: int | None = None) -> Callable[..., tuple[Any, ...]]:
    """The network's ``construct``: ``forward(inputs, params) -> outputs`` (a tuple).

    Runs under tracing (``jax.eval_shape`` and ``jax.jit``), so a shape error is raised here at
    trace time and names the node, its op and the shapes it got; so is an intermediate whose
    size is over ``max_elements`` (before XLA would try to allocate it).
    """

    def forward(inputs: Sequence[Any], params: Mapping[str, Any]) -> tuple[Any, ...]:
        env: dict[str, Any] = dict(params)
        env.update((spec.name, x) for spec, x in zip(net.inputs, inputs))
        for node in net.nodes:
            args = _arguments(env, node.inputs)
            try:
                out = node.op.impl(*args, **node.attrs)
            except GradnetError:
                raise
            except Exception as exc:  # JAX reports shape/dtype problems as TypeError/ValueError
                raise ShapeError(
                    f"node '{node.name}' ({node.op.name}) cannot take inputs "
                    f"{', '.join(map(str, node.inputs))} of {_describe(args)}: {str(exc).splitlines()[0]}",
                    net.node_path(node),
                ) from None
            for o in out if isinstance(out, tuple) else (out,):
                if o.ndim > MAX_RANK:  # XLA would build it, but no array of it could be made (500)
                    raise ShapeError(f"node '{node.name}' ({node.op.name}) would produce {o.ndim} dimensions, "
                                     f"more than the {MAX_RANK} an array can have", net.node_path(node))
            if max_elements is not None:
                for o in out if isinstance(out, tuple) else (out,):
                    if o.size > max_elements:
                        raise TooLargeError(
                            f"node '{node.name}' ({node.op.name}) would produce {np.dtype(o.dtype).name}"
                            f"{list(o.shape)}, {o.size} elements, over the limit of {max_elements}",
                            net.node_path(node),
                        )
            env[node.name] = out
        return tuple(_resolve(env, r) for r in net.outputs)

    return forward
