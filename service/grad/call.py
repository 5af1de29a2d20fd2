"""The parsed call of a transform route (``/grad``, ``/jvp``, ``/vjp``, ``/jacobian``,
``/hvp``): one typed object from the request body's JSON.

:func:`parse_call` checks the fields that are not tensors (unknown fields, and the transform's
spec through the engine's :func:`engine.request.parse_spec`, ``output_encoding``,
``timeout_ms``); :func:`decode_tensors` decodes the tensors (inputs, parameters, and the call's
vectors: sens, tangents, cotangents or hvp vectors) through the engine's ``decode_*`` functions
and the body's binary framing. Which network it is for is the handler's business (registry or
inline); whether it fits that network, the validator's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import ArgumentError
from engine.request import decode_inputs, decode_parameters, decode_vectors, parse_spec
from engine.transforms import Spec

from ..http.body import Body
from ..http.bulk import release as release_bulk
from ..http.encode import ENCODINGS


@dataclass(slots=True)
class GradCall:
    """A transform call's arguments, type-checked (tensors once :func:`decode_tensors` ran)."""

    spec: Spec
    output_encoding: str
    timeout_ms: float
    inputs: Any = None  # a list of arrays, or an object of named arrays
    parameters: dict[str, Any] | None = None
    extra: Any = None  # the call's vectors (the spec's extra_field): None, an array or a list


def parse_call(doc: Mapping[str, Any], default_timeout_ms: float, transform: str = "grad") -> GradCall:
    """The call's spec and options (tensors are decoded later)."""
    spec = parse_spec(transform, doc)
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
    return GradCall(spec, encoding, float(timeout))


def decode_tensors(call: GradCall, body: Body) -> GradCall:
    """``call`` with its inputs, parameters and vectors decoded from ``body``."""
    doc, tensor = body.doc, body.tensor
    field = call.spec.extra_field
    if field is not None:
        call.extra = decode_vectors(doc.get(field), field, tensor=tensor)
    call.inputs = decode_inputs(doc.get("inputs", []), tensor=tensor)
    call.parameters = decode_parameters(doc.get("parameters"), tensor=tensor)
    release_bulk(doc)  # a large JSON body's bulk numbers are in the arrays now (issue 12.4)
    return call
