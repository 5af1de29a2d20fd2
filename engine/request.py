"""Run a whole ``/grad``-shaped request dict through an engine (tests, tools, the worker)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .engine import Engine, GradResult
from .errors import ArgumentError
from .network import Network, parse_network
from .tensors import decode_tensor

_default_engine: Engine | None = None


def default_engine() -> Engine:
    global _default_engine
    if _default_engine is None:
        _default_engine = Engine()
    return _default_engine


def decode_inputs(raw: Any, max_elements: int | None = None) -> list[Any] | dict[str, Any]:
    """``inputs`` as a list of tensors or an object of named tensors."""
    if isinstance(raw, list):
        return [decode_tensor(t, f"inputs[{i}]", max_elements=max_elements) for i, t in enumerate(raw)]
    if isinstance(raw, Mapping):
        return {k: decode_tensor(t, f"inputs.{k}", max_elements=max_elements) for k, t in raw.items()}
    raise ArgumentError("'inputs' must be a list of tensors or an object of named tensors", "inputs")


def decode_sens(raw: Any, max_elements: int | None = None) -> Any:
    if raw is None:
        return None
    if isinstance(raw, list):
        return [decode_tensor(t, f"sens[{i}]", max_elements=max_elements) for i, t in enumerate(raw)]
    return decode_tensor(raw, "sens", max_elements=max_elements)


def decode_parameters(raw: Any, max_elements: int | None = None) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ArgumentError("'parameters' must be an object of named tensors", "parameters")
    return {k: decode_tensor(t, f"parameters.{k}", max_elements=max_elements) for k, t in raw.items()}


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
    for flag in ("get_all", "get_by_list", "sens_param", "return_value"):
        if not isinstance(request.get(flag, False), bool):
            raise ArgumentError(f"'{flag}' must be true or false", flag)
    weights = request.get("weights")
    if weights is not None and not isinstance(weights, list):
        raise ArgumentError("'weights' must be a list of parameter names", "weights")
    return engine.grad(
        net,
        decode_inputs(request.get("inputs", []), engine.max_elements),
        parameters=decode_parameters(request.get("parameters"), engine.max_elements),
        get_all=request.get("get_all", False),
        get_by_list=request.get("get_by_list", False),
        sens_param=request.get("sens_param", False),
        weights=weights,
        sens=decode_sens(request.get("sens"), engine.max_elements),
        return_value=request.get("return_value", False) if return_value is None else return_value,
    )
