"""The parsed ``/grad`` call: one typed object from the request body's JSON.

:func:`parse_call` checks the fields that are not tensors (unknown fields, the flags and
weights through the engine's :func:`engine.request.parse_flags`, ``output_encoding``,
``timeout_ms``); :func:`decode_tensors` decodes the tensors (inputs, parameters, sens) through
the engine's ``decode_*`` functions and the body's binary framing. Which network it is for is
the handler's business (registry or inline); whether it fits that network, the validator's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import ArgumentError
from engine.request import decode_inputs, decode_parameters, decode_sens, parse_flags

from ..http.body import Body
from ..http.encode import ENCODINGS

#: every field a /grad request may have
FIELDS = frozenset({
    "network", "network_id", "inputs", "parameters", "get_all", "get_by_list", "sens_param", "weights",
    "sens", "return_value", "output_encoding", "timeout_ms",
})


@dataclass(slots=True)
class GradCall:
    """A /grad call's arguments, type-checked (tensors once :func:`decode_tensors` ran)."""

    get_all: bool
    get_by_list: bool
    sens_param: bool
    return_value: bool
    weights: list[str] | None
    output_encoding: str
    timeout_ms: float
    inputs: Any = None  # a list of arrays, or an object of named arrays
    parameters: dict[str, Any] | None = None
    sens: Any = None


def parse_call(doc: Mapping[str, Any], default_timeout_ms: float) -> GradCall:
    """The call's flags and options (tensors are decoded later)."""
    for key in doc:
        if key not in FIELDS:
            raise ArgumentError(f"unknown field '{key}': a /grad request has {', '.join(sorted(FIELDS))}", key)
    flags = parse_flags(doc)
    encoding = doc.get("output_encoding", "json")
    if encoding not in ENCODINGS:
        raise ArgumentError(
            f"'output_encoding' must be one of {', '.join(map(repr, ENCODINGS))}, got {encoding!r}",
            "output_encoding",
        )
    timeout = doc.get("timeout_ms", default_timeout_ms)
    if timeout is None:
        timeout = default_timeout_ms
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0 or math.isinf(timeout):
        raise ArgumentError(f"'timeout_ms' must be a positive number of milliseconds, got {timeout!r}",
                            "timeout_ms")
    return GradCall(output_encoding=encoding, timeout_ms=float(timeout), **flags)


def decode_tensors(call: GradCall, body: Body) -> GradCall:
    """``call`` with its inputs, parameters and sens decoded from ``body``."""
    doc, tensor = body.doc, body.tensor
    call.sens = decode_sens(doc.get("sens"), tensor=tensor)
    call.inputs = decode_inputs(doc.get("inputs", []), tensor=tensor)
    call.parameters = decode_parameters(doc.get("parameters"), tensor=tensor)
    return call
