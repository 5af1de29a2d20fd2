"""A ``/grad``-shaped request dict: its arguments type-checked and decoded, in one place.

:func:`parse_flags` and the ``decode_*`` functions are the only code that checks the *types* of
a call's arguments (flags are booleans, weights a list of names, inputs a list or object of
tensors); the service's parsed call (:mod:`service.grad.call`) and :func:`run_request` (tests,
tools) both use them. Whether the arguments fit the network is :meth:`Engine.check`'s business.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .engine import Engine, GradResult
from .errors import ArgumentError
from .network import Network, parse_network
from .tensors import decode_tensor

#: the GradOperation flags of a call, and ``return_value``
FLAGS = ("get_all", "get_by_list", "sens_param", "return_value")

#: the keyword arguments of :meth:`Engine.grad` and :meth:`Engine.check` besides network and inputs
CALL_ARGUMENTS = ("parameters", "get_all", "get_by_list", "sens_param", "weights", "sens", "return_value")

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


def call_arguments(call: Any) -> dict[str, Any]:
    """:data:`CALL_ARGUMENTS` read from ``call`` (any object with those attributes: a parsed call,
    a job), as keyword arguments of :meth:`Engine.grad` or :meth:`Engine.check`."""
    return {name: getattr(call, name) for name in CALL_ARGUMENTS}


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
) -> GradResult:
    """Decode a request (network, tensors, flags) and compute its gradients."""
    engine = engine or default_engine()
    net = network or parse_network(request.get("network"), max_elements=engine.max_elements, path="network.")
    flags = parse_flags(request)
    if return_value is not None:
        flags["return_value"] = return_value
    return engine.grad(
        net,
        decode_inputs(request.get("inputs", []), engine.max_elements),
        parameters=decode_parameters(request.get("parameters"), engine.max_elements),
        sens=decode_sens(request.get("sens"), engine.max_elements),
        **flags,
    )
