"""Every transform of a network, in one table: GradOperation, ``mindspore.grad``, jvp, vjp,
jacobian (reverse and forward) and hvp.

A transform is a hashable, frozen *spec* (what the request asked, from its JSON alone: no
network needed to build it), and three functions in :data:`TRANSFORMS`:

- ``check(avals, net, spec, xs, extra) -> extra``: what the engine and the server's validator
  raise for a call that does not fit the network (positions, weights, per-call vectors), with the
  call's vectors bound and checked against the inputs' and outputs' shapes (``avals``: the
  outputs' abstract values);
- ``build(net, spec, dtypes, max_elements) -> fn(inputs, params, extra)``: the JAX function to
  ``jax.jit`` (one compiled program per network, spec and signature);
- ``layout(net, spec, outs) -> fields``: the answer's fields, nested as MindSpore 2.10 nests
  them (tuples as lists), from what ``fn`` returned (arrays, on the host).

Transforms are built from each other: jacobian is jax's jacrev/jacfwd, batched vectors are the
vmap of one jvp/vjp over a single linearization (the cotangents of a one-element output, a
loss, are one reverse pass scaled K times), hvp is the jvp of the gradient, per-example
gradients are the vmap of a gradient transform. Non-float inputs, frozen weights and
non-float outputs carry nothing: their gradients are zeros of their own dtype, filled inside
the compiled function.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, dataclass, replace
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .dtypes import dtype_name, is_float
from .errors import ArgumentError, DTypeError, SensError, ShapeError, TooLargeError
from .grad import make_forward
from .network import Network

Fn = Callable[[Sequence[Any], Mapping[str, Any], Any], Any]


# -- the specs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GradOperation:
    """``ops.GradOperation(get_all, get_by_list, sens_param)(net, weights)``."""

    kind: ClassVar[str] = "grad_operation"
    extra_field: ClassVar[str | None] = "sens"
    get_all: bool = False
    get_by_list: bool = False
    sens_param: bool = False
    weights: tuple[str, ...] | None = None
    return_value: bool = False
    per_example_axes: tuple[int | None, ...] | None = None


@dataclass(frozen=True, slots=True)
class Grad:
    """``mindspore.grad`` / ``mindspore.value_and_grad(fn, grad_position, weights, has_aux, return_ids)``."""

    kind: ClassVar[str] = "grad"
    extra_field: ClassVar[str | None] = "sens"
    positions: tuple[int, ...] | None = (0,)
    bare: bool = True  # an int (or a one-element list) position: a tensor, not a list of one
    weights: tuple[str, ...] | None = None
    has_aux: bool = False
    return_ids: bool = False
    sens_param: bool = False
    return_value: bool = False
    per_example_axes: tuple[int | None, ...] | None = None


@dataclass(frozen=True, slots=True)
class Jvp:
    """``mindspore.ops.jvp(fn, inputs, v, has_aux)``."""

    kind: ClassVar[str] = "jvp"
    extra_field: ClassVar[str | None] = "tangents"
    has_aux: bool = False
    batched: bool = False


@dataclass(frozen=True, slots=True)
class Vjp:
    """``mindspore.ops.vjp(fn, *inputs, weights, has_aux)`` and then ``vjp_fn(v)``."""

    kind: ClassVar[str] = "vjp"
    extra_field: ClassVar[str | None] = "cotangents"
    weights: tuple[str, ...] | None = None
    has_aux: bool = False
    batched: bool = False


@dataclass(frozen=True, slots=True)
class Jacobian:
    """``mindspore.jacrev`` / ``mindspore.jacfwd(fn, grad_position)``."""

    kind: ClassVar[str] = "jacobian"
    extra_field: ClassVar[str | None] = None
    positions: tuple[int, ...] = (0,)
    bare: bool = True
    mode: str = "reverse"


@dataclass(frozen=True, slots=True)
class Hvp:
    """The Hessian of the first (scalar) output times vectors, forward over reverse."""

    kind: ClassVar[str] = "hvp"
    extra_field: ClassVar[str | None] = "vectors"
    positions: tuple[int, ...] = (0,)
    bare: bool = True  # an int position takes and answers one tensor
    batched: bool = False


Spec = GradOperation | Grad | Jvp | Vjp | Jacobian | Hvp
SPECS: dict[str, type] = {s.kind: s for s in (GradOperation, Grad, Jvp, Vjp, Jacobian, Hvp)}


@functools.lru_cache(maxsize=4096)
def to_wire(spec: Spec) -> tuple[Any, ...]:
    """The spec as plain data (kind, fields...): a job carries it without a class reference.
    Remembered per spec: ``astuple`` walks the fields (microseconds) and a server sends few specs."""
    return (spec.kind, *astuple(spec))


def from_wire(wire: Sequence[Any]) -> Spec:
    return SPECS[wire[0]](*wire[1:])


# -- what the transforms share -----------------------------------------------------------------


def _resolve_weights(net: Network, weights: Sequence[str] | None, field: str = "weights") -> tuple[str, ...]:
    for k, w in enumerate(weights or ()):
        if not isinstance(w, str) or net.parameter(w) is None:
            raise ArgumentError(
                f"'{w}' is not a parameter of this network; its parameters are {[p.name for p in net.parameters]}",
                f"{field}[{k}]",
            )
    return tuple(weights or ())


def _check_positions(net: Network, positions: Sequence[int], field: str = "grad_position") -> None:
    n = len(net.inputs)
    for k, p in enumerate(positions):
        if not 0 <= p < n:
            at = field if len(positions) == 1 else f"{field}[{k}]"
            raise ArgumentError(
                f"grad_position {p} is out of range: this network has {n} input(s) "
                f"({', '.join(net.input_names)}), positions 0 to {n - 1}", at)


class _Diff(NamedTuple):
    """Which of the wanted inputs and weights are differentiated (float, trainable)."""

    positions: tuple[int, ...]
    weights: tuple[str, ...]
    diff_x: tuple[int, ...]
    diff_w: tuple[str, ...]


def _diff(net: Network, positions: Sequence[int], weights: Sequence[str], dtypes: Sequence[Any]) -> _Diff:
    trainable = {p.name for p in net.parameters if p.requires_grad}
    diff_x = tuple(i for i in positions if is_float(np.dtype(dtypes[i])))
    diff_w = tuple(w for w in weights if w in trainable and is_float(net.parameter(w).value.dtype))
    return _Diff(tuple(positions), tuple(weights), diff_x, diff_w)


def _closure(forward: Callable[..., tuple[Any, ...]], d: _Diff, inputs: Sequence[Any], params: Mapping[str, Any],
             outputs: slice = slice(None)) -> Callable[..., tuple[Any, ...]]:
    """``f(x_diff, w_diff) -> outputs``: the forward as a function of what is differentiated."""

    def f(x_diff: tuple[Any, ...], w_diff: tuple[Any, ...]) -> tuple[Any, ...]:
        xs = list(inputs)
        for i, x in zip(d.diff_x, x_diff):
            xs[i] = x
        ps = dict(params)
        ps.update(zip(d.diff_w, w_diff))
        return forward(xs, ps)[outputs]

    return f


def _fill(d: _Diff, inputs: Sequence[Any], params: Mapping[str, Any], g_x: Sequence[Any], g_w: Sequence[Any],
          lead: tuple[int, ...] = ()) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Gradients for every wanted position and weight: zeros (of their dtype) where nothing flows."""
    by_x, by_w = dict(zip(d.diff_x, g_x)), dict(zip(d.diff_w, g_w))
    gx = tuple(by_x[i] if i in by_x else jnp.zeros(lead + inputs[i].shape, inputs[i].dtype) for i in d.positions)
    gw = tuple(by_w[w] if w in by_w else jnp.zeros(lead + params[w].shape, params[w].dtype) for w in d.weights)
    return gx, gw


def _inexact(x: Any) -> bool:
    return jnp.issubdtype(x.dtype, jnp.inexact)


def _ones_cotangent(out: Any) -> Any:
    if _inexact(out):
        return jnp.ones(out.shape, out.dtype)
    return np.zeros(out.shape, jax.dtypes.float0)  # an int/bool output carries no gradient


def _cotangents(outputs: Sequence[Any], sens: Sequence[Any] | None) -> tuple[Any, ...]:
    if sens is None:
        return tuple(_ones_cotangent(o) for o in outputs)
    return tuple(s if _inexact(o) else _ones_cotangent(o) for o, s in zip(outputs, sens))


def _one_or_list(values: Sequence[Any]) -> Any:
    """A tensor for one output, a list for several (as a Cell returns them)."""
    return values[0] if len(values) == 1 else list(values)


def _vmapped(fn: Fn, axes: tuple[int | None, ...] | None) -> Fn:
    """Per-example: ``fn`` of each example on its own, stacked on a new leading axis."""
    if axes is None:
        return fn
    return jax.vmap(fn, in_axes=(list(axes), None, None))


# -- bound vectors ----------------------------------------------------------------------------


def _bind_vectors(items: Any, wants: Sequence[Any], field: str, what: str, bare: bool, batched: bool) -> tuple[Any, ...]:
    """Per-call vectors (sens, tangents, cotangents, hvp vectors) checked against ``wants``
    (abstract values): count, then each one's dtype and shape (with a leading K when batched,
    the same K for all)."""
    if items is None:
        raise ArgumentError(f"'{field}' is required: {what}", field)
    many = isinstance(items, (list, tuple))
    if many and bare and len(wants) == 1 and field == "vectors":
        raise ArgumentError(f"'{field}' must be one tensor for an int grad_position, got a list", field)
    values = list(items) if many else [items]
    if not many and not bare:
        raise ArgumentError(f"'{field}' must be a list: {what}", field)
    if len(values) != len(wants):
        raise ArgumentError(
            f"'{field}' must hold {what}: expected {len(wants)}, got {len(values) if many else 'a single tensor'}",
            field)
    bound = []
    k_seen: tuple[int, str] | None = None
    for k, (v, want) in enumerate(zip(values, wants)):
        v = np.asarray(v)
        at = f"{field}[{k}]" if many else field
        shape = tuple(want.shape)
        if batched:
            if v.ndim < 1:
                raise ShapeError(f"with batched: true every entry of '{field}' has a leading axis K, got a scalar", at)
            if k_seen is not None and v.shape[0] != k_seen[0]:
                raise ShapeError(f"batched vectors must share K: {k_seen[1]} has K = {k_seen[0]}, {at} has K = {v.shape[0]}", at)
            k_seen = k_seen or (v.shape[0], at)
            shape = (v.shape[0], *shape)
        if v.dtype != np.dtype(want.dtype):
            raise DTypeError(f"{at} must be {dtype_name(np.dtype(want.dtype))}, the dtype of {_target(field, k)}, got "
                             f"{dtype_name(v.dtype)}", at)
        if v.shape != shape:
            lead = "[K] + " if batched else ""
            raise ShapeError(f"{at} must have shape {lead}{list(want.shape)} (that of {_target(field, k)}), got "
                             f"{list(v.shape)}", at)
        bound.append(v)
    return tuple(bound)


def _target(field: str, k: int) -> str:
    return {"tangents": f"input {k}", "vectors": f"position {k}'s input"}.get(field, f"output {k}")


def _check_axes(net: Network, axes: tuple[int | None, ...] | None, xs: Sequence[Any], sens_param: bool) -> None:
    if axes is None:
        return
    field = "per_example_axes"
    if len(axes) != len(xs):
        raise ArgumentError(f"'{field}' must give one entry (an axis or null) per input: the network has "
                            f"{len(xs)} input(s), got {len(axes)}", field)
    if sens_param:
        raise ArgumentError(f"'{field}' cannot be used with sens_param: each example's cotangent is ones", field)
    size = None
    for k, (a, x) in enumerate(zip(axes, xs)):
        if a is None:
            continue
        if not -x.ndim <= a < x.ndim:
            raise ArgumentError(f"per_example_axes[{k}] = {a} is not an axis of input {k} "
                                f"('{net.input_names[k]}', shape {list(x.shape)})", f"{field}[{k}]")
        n = x.shape[a]
        if size is not None and n != size[0]:
            raise ShapeError(f"per_example_axes[{k}]: input {k} has {n} examples on axis {a}, input {size[1]} has "
                             f"{size[0]}", f"{field}[{k}]")
        size = size or (n, k)
    if size is None:
        raise ArgumentError(f"'{field}' maps no input: give at least one axis", field)


def _sens(avals: Sequence[Any], sens_param: bool, sens: Any) -> tuple[Any, ...] | None:
    if not sens_param:
        if sens is not None:
            raise SensError("'sens' is given but sens_param is false: set sens_param to true", "sens")
        return None
    if sens is None:
        raise SensError(f"sens_param is set: 'sens' must give one tensor per output ({len(avals)})", "sens")
    many = isinstance(sens, (list, tuple))
    items = list(sens) if many else [sens]
    if len(items) != len(avals):
        raise SensError(f"'sens' must hold one tensor per output: the network has {len(avals)} output(s), got "
                        f"{len(items) if many else 'a single tensor'}", "sens")
    bound = []
    for k, (s, aval) in enumerate(zip(items, avals)):
        s = np.asarray(s)
        at = f"sens[{k}]" if many else "sens"
        if s.shape != tuple(aval.shape):
            raise SensError(f"sens for output {k} must have the output's shape {list(aval.shape)}, got {list(s.shape)}", at)
        if s.dtype != aval.dtype:
            raise SensError(f"sens for output {k} must have the output's dtype {dtype_name(aval.dtype)}, got "
                            f"{dtype_name(s.dtype)}", at)
        bound.append(s)
    return tuple(bound)


# -- GradOperation -----------------------------------------------------------------------------


def _gradop_plan(net: Network, spec: GradOperation) -> tuple[tuple[int, ...], tuple[str, ...]]:
    positions = tuple(range(len(net.inputs))) if spec.get_all else () if spec.get_by_list else (0,)
    weights = spec.weights if spec.weights is not None else (net.trainable if spec.get_by_list else ())
    return positions, weights


def _gradop_check(avals, net, spec: GradOperation, xs, extra):
    if spec.weights is not None and not spec.get_by_list:
        raise ArgumentError("'weights' is only used with get_by_list: set get_by_list to true", "weights")
    _resolve_weights(net, spec.weights)
    if not (spec.get_all or spec.get_by_list) and not net.inputs:
        raise ArgumentError("GradOperation without flags differentiates w.r.t. the first input, and this network has none",
                            "inputs")
    _check_axes(net, spec.per_example_axes, xs, spec.sens_param)
    return _sens(avals, spec.sens_param, extra)


def _gradient_fn(net: Network, d: _Diff, max_elements: int | None, want_value: bool, aux: bool = False) -> Fn:
    """``fn(inputs, params, sens) -> (outputs, input_grads, weight_grads)``; with ``aux`` only the
    first output is differentiated."""
    forward = make_forward(net, max_elements)

    def fn(inputs, params, sens):
        primals = (tuple(inputs[i] for i in d.diff_x), tuple(params[w] for w in d.diff_w))
        if aux:
            def f(*p):
                outs = _closure(forward, d, inputs, params)(*p)
                return outs[:1], outs[1:]
            outputs, vjp, rest = jax.vjp(f, *primals, has_aux=True)
            all_outputs = outputs + rest
        else:
            outputs, vjp = jax.vjp(_closure(forward, d, inputs, params), *primals)
            all_outputs = outputs
        g_x, g_w = vjp(_cotangents(outputs, sens))
        gx, gw = _fill(d, inputs, params, g_x, g_w)
        return (all_outputs if want_value else ()), gx, gw

    return fn


def _gradop_build(net, spec: GradOperation, dtypes, max_elements):
    d = _diff(net, *_gradop_plan(net, spec), dtypes)
    return _vmapped(_gradient_fn(net, d, max_elements, spec.return_value), spec.per_example_axes)


def _gradop_layout(net, spec: GradOperation, outs):
    values, g_x, g_w = outs
    weights = (spec.weights if spec.weights is not None else net.trainable) if spec.get_by_list else ()
    if spec.get_all and spec.get_by_list:
        gradients, names = [list(g_x), list(g_w)], [list(net.input_names), list(weights)]
    elif spec.get_all:
        gradients, names = list(g_x), list(net.input_names)
    elif spec.get_by_list:
        gradients, names = list(g_w), list(weights)
    else:  # GradOperation(): the first input's gradient alone
        gradients, names = g_x[0], net.input_names[0]
    fields = {"gradients": gradients, "gradient_names": names}
    if spec.return_value:
        fields["value"] = list(values)
    return fields


# -- mindspore.grad / value_and_grad -----------------------------------------------------------


def _grad_check(avals, net, spec: Grad, xs, extra):
    if spec.positions is None and spec.weights is None:
        raise ArgumentError("grad_position is null and no 'weights' are given: there is nothing to differentiate",
                            "grad_position")
    _check_positions(net, spec.positions or ())
    _resolve_weights(net, spec.weights)
    if spec.has_aux and len(avals) < 2:
        raise ArgumentError("has_aux needs a network with two or more outputs (the first is differentiated, the "
                            "others are aux)", "has_aux")
    _check_axes(net, spec.per_example_axes, xs, spec.sens_param)
    return _sens(avals[:1] if spec.has_aux else avals, spec.sens_param, extra)


def _grad_build(net, spec: Grad, dtypes, max_elements):
    d = _diff(net, spec.positions or (), spec.weights or (), dtypes)
    fn = _gradient_fn(net, d, max_elements, spec.return_value or spec.has_aux, aux=spec.has_aux)
    return _vmapped(fn, spec.per_example_axes)


def _grad_layout(net, spec: Grad, outs):
    values, g_x, g_w = outs
    positions = spec.positions or ()

    def part(grads, ids, bare):
        items = [[i, g] for i, g in zip(ids, grads)] if spec.return_ids else list(grads)
        names = [net.input_names[i] for i in ids] if ids and isinstance(ids[0], int) else list(ids)
        return (items[0], names[0]) if bare else (items, names)

    x_part = part(g_x, positions, spec.bare) if spec.positions is not None else None
    w_part = part(g_w, spec.weights, False) if spec.weights is not None else None
    if x_part is not None and w_part is not None:
        gradients, names = [x_part[0], w_part[0]], [x_part[1], w_part[1]]
    else:
        gradients, names = x_part or w_part
    fields = {"gradients": gradients, "gradient_names": names}
    if spec.has_aux:
        fields["aux"] = list(values[1:])
    if spec.return_value:
        fields["value"] = _one_or_list(values)
    return fields


# -- jvp ---------------------------------------------------------------------------------------


def _jvp_check(avals, net, spec: Jvp, xs, extra):
    if spec.has_aux and len(avals) < 2:
        raise ArgumentError("has_aux needs a network with two or more outputs", "has_aux")
    return _bind_vectors(extra, xs, "tangents", "one tensor per input", False, spec.batched)


def _jvp_build(net, spec: Jvp, dtypes, max_elements):
    forward = make_forward(net, max_elements)
    d = _diff(net, range(len(dtypes)), (), dtypes)

    def fn(inputs, params, tangents):
        f = _closure(forward, d, inputs, params)
        outputs = forward(list(inputs), dict(params))
        float_out = [k for k, o in enumerate(outputs) if _inexact(o)]
        primal = tuple(inputs[i] for i in d.diff_x)
        t = tuple(tangents[i] for i in d.diff_x)

        def g(*x):
            outs = f(x, ())
            return tuple(outs[k] for k in float_out)

        _, lin = jax.linearize(g, *primal)
        tangent_out = jax.vmap(lin)(*t) if spec.batched else lin(*t)
        lead = (tangents[0].shape[0],) if spec.batched and tangents else ()
        by_k = dict(zip(float_out, tangent_out))
        jvp = tuple(by_k[k] if k in by_k else jnp.zeros(lead + o.shape, o.dtype) for k, o in enumerate(outputs))
        return outputs, jvp

    return fn


def _aux_fields(fields: dict[str, Any], values: Sequence[Any], main: str, tangents: Sequence[Any] | None,
                has_aux: bool) -> dict[str, Any]:
    if has_aux:
        fields["value"] = values[0]
        if tangents is not None:
            fields[main] = tangents[0]
        fields["aux"] = _one_or_list(values[1:])
    else:
        fields["value"] = _one_or_list(values)
        if tangents is not None:
            fields[main] = _one_or_list(tangents)
    return fields


def _jvp_layout(net, spec: Jvp, outs):
    values, jvp = outs
    return _aux_fields({}, values, "jvp", jvp, spec.has_aux)


# -- vjp ---------------------------------------------------------------------------------------


def _vjp_check(avals, net, spec: Vjp, xs, extra):
    _resolve_weights(net, spec.weights)
    if spec.has_aux and len(avals) < 2:
        raise ArgumentError("has_aux needs a network with two or more outputs", "has_aux")
    wants = avals[:1] if spec.has_aux else avals
    return _bind_vectors(extra, wants, "cotangents", "one tensor per output (a tensor for a one-output network)",
                         True, spec.batched)


def _vjp_build(net, spec: Vjp, dtypes, max_elements):
    forward = make_forward(net, max_elements)
    d = _diff(net, range(len(dtypes)), spec.weights or (), dtypes)
    n_diff = 1 if spec.has_aux else None

    def fn(inputs, params, cotangents):
        outputs = forward(list(inputs), dict(params))
        diffed = outputs[:n_diff] if n_diff else outputs
        float_out = [k for k, o in enumerate(diffed) if _inexact(o)]
        f = _closure(forward, d, inputs, params)
        primals = (tuple(inputs[i] for i in d.diff_x), tuple(params[w] for w in d.diff_w))

        def g(x, w):
            outs = f(x, w)
            return tuple(outs[k] for k in float_out)

        lead = (cotangents[0].shape[0],) if spec.batched else ()
        cts = tuple(cotangents[k] for k in float_out)
        if cts:
            _, vjp = jax.vjp(g, *primals)
            if spec.batched and lead == (1,):  # one vector: one vjp, given the leading axis
                g_x, g_w = jax.tree.map(lambda t: t[None], vjp(tuple(c[0] for c in cts)))
            elif spec.batched and _scalable(g, primals, cts):
                # One float output of one element (a loss): the vjp is linear in its cotangent, so
                # vjp(c_k) = c_k * vjp(1): one reverse pass for all K, where the vmap of the vjp
                # runs K (XLA does not factor the scalar out; bench_transforms.py: 64 cotangents
                # on the MLP cost 64 reverse passes).
                (c,) = cts
                g_x, g_w = jax.tree.map(lambda t: _scaled(c, t), vjp((jnp.ones(c.shape[1:], c.dtype),)))
            else:
                g_x, g_w = jax.vmap(vjp)(cts) if spec.batched else vjp(cts)
        else:  # no float output: nothing flows back
            d_none = d._replace(diff_x=(), diff_w=())
            return (outputs, *_fill(d_none, inputs, params, (), (), lead))
        gx, gw = _fill(d, inputs, params, g_x, g_w, lead)
        return outputs, gx, gw

    return fn


def _scalable(g: Callable[..., Any], primals: Sequence[Any], cts: Sequence[Any]) -> bool:
    """Whether K cotangents of ``g`` may be one reverse pass scaled K times: ``g`` has one float
    output of one element, and no rule on the way is a ``jax.custom_vjp`` (MindSpore's own
    backward, which need not be linear in its cotangent: SparseSoftmaxCrossEntropyWithLogits
    with is_grad ignores it). ``custom_jvp`` rules are linear in the tangents, hence transposable."""
    if len(cts) != 1 or int(np.prod(cts[0].shape[1:])) != 1:
        return False
    return not _has_custom_vjp(jax.make_jaxpr(g)(*primals).jaxpr)


def _has_custom_vjp(jaxpr: Any) -> bool:
    for eqn in jaxpr.eqns:
        if eqn.primitive.name.startswith("custom_vjp"):
            return True
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds its Jaxpr
                if hasattr(inner, "eqns") and _has_custom_vjp(inner):
                    return True
    return False


def _scaled(c: Any, t: Any) -> Any:
    """``t`` times each of the K one-element cotangents ``c``: shape [K, *t.shape], ``t``'s dtype."""
    return c.reshape((c.shape[0],) + (1,) * t.ndim).astype(t.dtype) * t


def _vjp_layout(net, spec: Vjp, outs):
    values, g_x, g_w = outs
    fields = {"value": values[0] if spec.has_aux else _one_or_list(values),
              "gradients": [list(g_x), list(g_w)] if spec.weights is not None else list(g_x)}
    if spec.has_aux:
        fields["aux"] = _one_or_list(values[1:])
    return fields


# -- jacobian ----------------------------------------------------------------------------------


def _jacobian_check(avals, net, spec: Jacobian, xs, extra):
    if spec.mode not in ("reverse", "forward"):
        raise ArgumentError(f"'mode' must be \"reverse\" or \"forward\", got {spec.mode!r}", "mode")
    _check_positions(net, spec.positions)
    return None


def _jacobian_build(net, spec: Jacobian, dtypes, max_elements):
    forward = make_forward(net, max_elements)
    d = _diff(net, spec.positions, (), dtypes)
    jac = jax.jacrev if spec.mode == "reverse" else jax.jacfwd

    def fn(inputs, params, _extra):
        outputs = forward(list(inputs), dict(params))
        for k, o in enumerate(outputs):  # at trace time: before XLA would allocate it
            for i in spec.positions:
                size = o.size * inputs[i].size
                if max_elements is not None and size > max_elements:
                    raise TooLargeError(
                        f"the Jacobian of output {k} w.r.t. input {i} would have {size} elements "
                        f"({list(o.shape)} + {list(inputs[i].shape)}), over the limit of {max_elements}",
                        "grad_position")
        f = _closure(forward, d, inputs, params)
        primal = tuple(inputs[i] for i in d.diff_x)
        float_out = [k for k, o in enumerate(outputs) if _inexact(o)]

        def g(*x):
            outs = f(x, ())
            return tuple(outs[k] for k in float_out)

        rows = jac(g, argnums=tuple(range(len(primal))))(*primal) if primal and float_out else ()
        by_k = dict(zip(float_out, rows))
        table = []
        for k, o in enumerate(outputs):
            row = dict(zip(d.diff_x, by_k[k])) if k in by_k else {}
            table.append(tuple(row[i] if i in row else jnp.zeros(o.shape + inputs[i].shape, o.dtype)
                               for i in spec.positions))
        return outputs, tuple(table)

    return fn


def _jacobian_layout(net, spec: Jacobian, outs):
    values, table = outs
    rows = [row[0] if spec.bare else list(row) for row in table]
    return {"jacobian": _one_or_list(rows), "value": _one_or_list(values)}


# -- hvp ---------------------------------------------------------------------------------------


def _hvp_check(avals, net, spec: Hvp, xs, extra):
    _check_positions(net, spec.positions)
    first = avals[0]
    if tuple(first.shape) != () or not jnp.issubdtype(first.dtype, jnp.inexact):
        raise ShapeError(f"/hvp differentiates the network's first output twice: it must be a float scalar, got "
                         f"{dtype_name(np.dtype(first.dtype))}{list(first.shape)}", f"{net.path}outputs")
    wants = [xs[i] for i in spec.positions]
    return _bind_vectors(extra, wants, "vectors", "one tensor per position", spec.bare, spec.batched)


def _hvp_build(net, spec: Hvp, dtypes, max_elements):
    forward = make_forward(net, max_elements)
    d = _diff(net, spec.positions, (), dtypes)
    where = {i: k for k, i in enumerate(spec.positions)}

    def fn(inputs, params, vectors):
        f = _closure(forward, d, inputs, params)
        primal = tuple(inputs[i] for i in d.diff_x)
        v = tuple(vectors[where[i]] for i in d.diff_x)

        def grad(*x):
            return jax.grad(lambda *y: f(y, ())[0], argnums=tuple(range(len(x))))(*x)

        if primal:
            _, lin = jax.linearize(grad, *primal)
            h = jax.vmap(lin)(*v) if spec.batched else lin(*v)
        else:
            h = ()
        lead = (vectors[0].shape[0],) if spec.batched else ()
        gx, _ = _fill(d, inputs, params, h, (), lead)
        return (gx,)

    return fn


def _hvp_layout(net, spec: Hvp, outs):
    (h,) = outs
    return {"hvp": h[0] if spec.bare else list(h)}


# -- the table ---------------------------------------------------------------------------------


class Transform(NamedTuple):
    check: Callable[..., Any]
    build: Callable[..., Fn]
    layout: Callable[..., dict[str, Any]]
    # the spec with its defaults resolved against the network (after check): calls that mean the
    # same share one compiled program
    canonical: Callable[[Network, Any], Any] = lambda net, spec: spec


def _gradop_canonical(net: Network, spec: GradOperation) -> GradOperation:
    if spec.get_by_list and spec.weights is None:
        return replace(spec, weights=net.trainable)
    return spec


TRANSFORMS: dict[type, Transform] = {
    GradOperation: Transform(_gradop_check, _gradop_build, _gradop_layout, _gradop_canonical),
    Grad: Transform(_grad_check, _grad_build, _grad_layout),
    Jvp: Transform(_jvp_check, _jvp_build, _jvp_layout),
    Vjp: Transform(_vjp_check, _vjp_build, _vjp_layout),
    Jacobian: Transform(_jacobian_check, _jacobian_build, _jacobian_layout),
    Hvp: Transform(_hvp_check, _hvp_build, _hvp_layout),
}
