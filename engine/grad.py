"""GradOperation semantics: build the JAX function that a (network, flags, weights) call needs.

``GradOperation(get_all, get_by_list, sens_param)`` differentiates the network's forward with
respect to the first input (no flags), every input (``get_all``), the weights (``get_by_list``)
or both, with a cotangent of ones on every output unless ``sens_param`` supplies one per output.
Only what the flags ask for is differentiated; integer and bool inputs, frozen weights and
inputs the outputs don't use get zeros of their own dtype, outside the differentiated function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .dtypes import is_float
from .errors import GradnetError, ShapeError, TooLargeError
from .network import Network, Ref
from .tensors import MAX_RANK


@dataclass(frozen=True)
class GradSpec:
    """What to differentiate: the GradOperation flags, resolved against one network."""

    get_all: bool
    get_by_list: bool
    sens_param: bool
    weights: tuple[str, ...]  # resolved weight names, in the order the gradients come back
    return_value: bool

    def input_indices(self, num_inputs: int) -> tuple[int, ...]:
        if self.get_all:
            return tuple(range(num_inputs))
        if self.get_by_list:
            return ()
        return (0,)


def _resolve(env: Mapping[str, Any], ref: Ref) -> Any:
    value = env[ref.name]
    return value if ref.index is None else value[ref.index]


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
            args = [_resolve(env, r) for r in node.inputs]
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


def _cotangent(out: Any) -> Any:
    if jnp.issubdtype(out.dtype, jnp.inexact):
        return jnp.ones(out.shape, out.dtype)
    return np.zeros(out.shape, jax.dtypes.float0)  # an int/bool output carries no gradient


def make_grad_fn(net: Network, spec: GradSpec, input_dtypes: Sequence[np.dtype], max_elements: int | None = None):
    """``fn(inputs, params, sens) -> (outputs, input_grads, weight_grads)``, ready to ``jax.jit``.

    ``input_grads`` holds one entry per index of :meth:`GradSpec.input_indices`; entries that
    are not differentiable are filled with zeros here, inside the compiled function.
    """
    forward = make_forward(net, max_elements)
    wanted = spec.input_indices(len(net.inputs))
    diff_inputs = tuple(i for i in wanted if is_float(np.dtype(input_dtypes[i])))
    trainable = {p.name for p in net.parameters if p.requires_grad}
    diff_weights = tuple(w for w in spec.weights if trainable.__contains__(w) and is_float(net.parameter(w).value.dtype))

    def fn(inputs: Sequence[Any], params: Mapping[str, Any], sens: Sequence[Any] | None):
        def f(x_diff: tuple[Any, ...], w_diff: tuple[Any, ...]) -> tuple[Any, ...]:
            xs = list(inputs)
            for i, x in zip(diff_inputs, x_diff):
                xs[i] = x
            ps = dict(params)
            ps.update(zip(diff_weights, w_diff))
            return forward(xs, ps)

        primals = (tuple(inputs[i] for i in diff_inputs), tuple(params[w] for w in diff_weights))
        outputs, vjp = jax.vjp(f, *primals)
        if sens is None:
            cts = tuple(_cotangent(o) for o in outputs)
        else:
            cts = tuple(s if jnp.issubdtype(o.dtype, jnp.inexact) else _cotangent(o) for o, s in zip(outputs, sens))
        g_x, g_w = vjp(cts)
        by_input = dict(zip(diff_inputs, g_x))
        by_weight = dict(zip(diff_weights, g_w))
        input_grads = tuple(by_input[i] if i in by_input else jnp.zeros_like(inputs[i]) for i in wanted)
        weight_grads = tuple(by_weight[w] if w in by_weight else jnp.zeros_like(params[w]) for w in spec.weights)
        return (outputs if spec.return_value else ()), input_grads, weight_grads

    return fn
