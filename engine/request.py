"""A ``/grad``-shaped request dict: its arguments type-checked and decoded, in one place.

:func:`parse_flags` and the ``decode_*`` functions are the only code that checks the *types* of
a call's arguments (flags are booleans, weights a list of names, inputs a list or object of
tensors); the service's parsed call (:mod:`service.grad.call`) and :func:`run_request` (tests,
tools) both use them. Whether the arguments fit the network is :meth:`Engine.check`'s business.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from .engine import Engine, GradResult
from .errors import ArgumentError
from .network import Network, parse_network
from .tensors import decode_tensor
from .transforms import Grad, GradOperation, Hvp, Jacobian, Jvp, Spec, Vjp

#: the GradOperation flags of a call, and ``return_value``
FLAGS = ("get_all", "get_by_list", "sens_param", "return_value")

#: decodes one wire tensor found at a path (the service's knows the binary framing)
TensorDecoder = Callable[[Any, str], Any]

_default_engine: Engine | None = None


def default_engine() -> Engine:
    global _default_engine
    if _default_engine is None:
        _default_engine = Engine()
    return _default_engine


def parse_flags(request: Mapping[str, Any]) -> dict[str, Any]:
    """The flags (``False`` when left out) and ``weights`` (``None``) of a request, type-checked."""
    flags: dict[str, Any] = {}
    for flag in FLAGS:
        value = request.get(flag, False)
        if not isinstance(value, bool):
            raise ArgumentError(f"'{flag}' must be true or false, got {value!r}", flag)
        flags[flag] = value
    weights = request.get("weights")
    if weights is not None and not (isinstance(weights, list) and all(isinstance(w, str) for w in weights)):
        raise ArgumentError("'weights' must be a list of parameter names", "weights")
    flags["weights"] = weights
    return flags


#: the fields every transform's request has (what to run on, and how to answer)
COMMON_FIELDS = frozenset({"network", "network_id", "inputs", "parameters", "output_encoding", "timeout_ms"})


def _bool(doc: Mapping[str, Any], key: str) -> bool:
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise ArgumentError(f"'{key}' must be true or false, got {value!r}", key)
    return value


def _names(doc: Mapping[str, Any], key: str = "weights") -> tuple[str, ...] | None:
    weights = doc.get(key)
    if weights is None:
        return None
    if not (isinstance(weights, list) and all(isinstance(w, str) for w in weights)):
        raise ArgumentError(f"'{key}' must be a list of parameter names, got {weights!r}", key)
    return tuple(weights)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positions(doc: Mapping[str, Any], nullable: bool) -> tuple[tuple[int, ...] | None, bool]:
    """``grad_position`` (default 0): the positions and whether the answer is bare (an int, or a
    one-element list, as MindSpore 2.10 answers it)."""
    raw = doc.get("grad_position", 0)
    if raw is None and nullable:
        return None, False
    if _int(raw):
        return (raw,), True
    if isinstance(raw, list) and raw and all(_int(p) for p in raw):
        if len(set(raw)) != len(raw):
            raise ArgumentError(f"'grad_position' names a position twice: {raw}", "grad_position")
        return tuple(raw), len(raw) == 1
    what = "an int, a non-empty list of ints" + (" or null" if nullable else "")
    raise ArgumentError(f"'grad_position' must be {what}, got {raw!r}", "grad_position")


def _axes(doc: Mapping[str, Any]) -> tuple[int | None, ...] | None:
    raw = doc.get("per_example_axes")
    if raw is None:
        return None
    if not (isinstance(raw, list) and all(a is None or _int(a) for a in raw)):
        raise ArgumentError(f"'per_example_axes' must be a list with one axis (an int) or null per input, got {raw!r}",
                            "per_example_axes")
    return tuple(raw)


def _grad(doc: Mapping[str, Any]) -> Spec:
    if "grad_position" in doc:  # the mindspore.grad / value_and_grad form
        for key in ("get_all", "get_by_list"):
            if key in doc:
                raise ArgumentError(
                    f"'{key}' is GradOperation's and 'grad_position' is mindspore.grad's: a request takes one "
                    "form (GradOperation: get_all, get_by_list; mindspore.grad: grad_position, weights, has_aux, "
                    "return_ids)", key)
        positions, bare = _positions(doc, nullable=True)
        return Grad(positions, bare, _names(doc), _bool(doc, "has_aux"), _bool(doc, "return_ids"),
                    _bool(doc, "sens_param"), _bool(doc, "return_value"), _axes(doc))
    for key in ("has_aux", "return_ids"):
        if key in doc:
            raise ArgumentError(f"'{key}' belongs to the mindspore.grad form: give 'grad_position' too "
                                "(GradOperation's form has get_all, get_by_list)", key)
    flags = parse_flags(doc)
    weights = flags["weights"]
    return _grad_operation(flags["get_all"], flags["get_by_list"], flags["sens_param"],
                           None if weights is None else tuple(weights), flags["return_value"], _axes(doc))


@functools.lru_cache(maxsize=4096)
def _grad_operation(*fields: Any) -> Spec:
    """GradOperation's spec, built once per set of flags (a frozen dataclass costs a microsecond,
    on the hot path of every /grad)."""
    return GradOperation(*fields)


def _jacobian(doc: Mapping[str, Any]) -> Spec:
    positions, bare = _positions(doc, nullable=False)
    mode = doc.get("mode", "reverse")
    if mode not in ("reverse", "forward"):
        raise ArgumentError(f"'mode' must be \"reverse\" or \"forward\", got {mode!r}", "mode")
    return Jacobian(positions, bare, mode)  # type: ignore[arg-type]


def _hvp(doc: Mapping[str, Any]) -> Spec:
    positions, bare = _positions(doc, nullable=False)
    return Hvp(positions, bare, _bool(doc, "batched"))  # type: ignore[arg-type]


#: each transform's request: its own fields (besides :data:`COMMON_FIELDS`) and its spec's parser
REQUESTS: dict[str, tuple[frozenset[str], Callable[[Mapping[str, Any]], Spec]]] = {
    "grad": (frozenset({"get_all", "get_by_list", "sens_param", "weights", "sens", "return_value", "grad_position",
                        "has_aux", "return_ids", "per_example_axes"}), _grad),
    "jvp": (frozenset({"tangents", "has_aux", "batched"}),
            lambda doc: Jvp(_bool(doc, "has_aux"), _bool(doc, "batched"))),
    "vjp": (frozenset({"cotangents", "weights", "has_aux", "batched"}),
            lambda doc: Vjp(_names(doc), _bool(doc, "has_aux"), _bool(doc, "batched"))),
    "jacobian": (frozenset({"grad_position", "mode"}), _jacobian),
    "hvp": (frozenset({"grad_position", "vectors", "batched"}), _hvp),
}


def parse_spec(transform: str, doc: Mapping[str, Any]) -> Spec:
    """The spec of a request to ``transform`` (a key of :data:`REQUESTS`), unknown fields refused."""
    own, parse = REQUESTS[transform]
    for key in doc:
        if key not in own and key not in COMMON_FIELDS:
            fields = ", ".join(sorted(own | COMMON_FIELDS))
            raise ArgumentError(f"unknown field '{key}': a /{transform} request has {fields}", key)
    return parse(doc)


def decode_vectors(raw: Any, field: str, max_elements: int | None = None, *,
                   tensor: TensorDecoder | None = None) -> Any:
    """A call's vectors (``sens``, ``tangents``, ``cotangents``, ``vectors``): None, one tensor,
    or a list of tensors."""
    if raw is None:
        return None
    one = _decoder(max_elements, tensor)
    if isinstance(raw, list):
        return [one(t, f"{field}[{i}]") for i, t in enumerate(raw)]
    return one(raw, field)


def _decoder(max_elements: int | None, tensor: TensorDecoder | None) -> TensorDecoder:
    if tensor is not None:
        return tensor
    return lambda obj, path: decode_tensor(obj, path, max_elements=max_elements)


def decode_inputs(raw: Any, max_elements: int | None = None, *,
                  tensor: TensorDecoder | None = None) -> list[Any] | dict[str, Any]:
    """``inputs`` as a list of tensors or an object of named tensors."""
    one = _decoder(max_elements, tensor)
    if isinstance(raw, list):
        return [one(t, f"inputs[{i}]") for i, t in enumerate(raw)]
    if isinstance(raw, Mapping):
        return {k: one(t, f"inputs.{k}") for k, t in raw.items()}
    raise ArgumentError("'inputs' must be a list of tensors or an object of named tensors", "inputs")


def decode_sens(raw: Any, max_elements: int | None = None, *, tensor: TensorDecoder | None = None) -> Any:
    """``sens``: None, one tensor, or a list of tensors (one per output)."""
    if raw is None:
        return None
    one = _decoder(max_elements, tensor)
    if isinstance(raw, list):
        return [one(t, f"sens[{i}]") for i, t in enumerate(raw)]
    return one(raw, "sens")


def decode_parameters(raw: Any, max_elements: int | None = None, *,
                      tensor: TensorDecoder | None = None) -> dict[str, Any] | None:
    """``parameters`` (per-call values) as named tensors; None when there are none."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ArgumentError("'parameters' must be an object of named tensors", "parameters")
    if not raw:
        return None
    one = _decoder(max_elements, tensor)
    return {k: one(t, f"parameters.{k}") for k, t in raw.items()}


def run_request(
    request: Mapping[str, Any],
    *,
    engine: Engine | None = None,
    network: Network | None = None,
    return_value: bool | None = None,
    transform: str = "grad",
) -> GradResult:
    """Decode a request (network, tensors, options) to ``transform`` and compute its answer."""
    engine = engine or default_engine()
    net = network or parse_network(request.get("network"), max_elements=engine.max_elements, path="network.")
    doc = dict(request)
    if return_value is not None:
        doc["return_value"] = return_value
    spec = parse_spec(transform, {k: v for k, v in doc.items() if k != "network"})
    field = spec.extra_field
    return engine.run(
        net, spec,
        decode_inputs(request.get("inputs", []), engine.max_elements),
        parameters=decode_parameters(request.get("parameters"), engine.max_elements),
        extra=decode_vectors(request.get(field), field, engine.max_elements) if field else None,
    )
