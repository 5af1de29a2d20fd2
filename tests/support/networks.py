"""Small gradnet/1 networks that more than one test module computes (the same function in the
engine's tests and over HTTP)."""

from __future__ import annotations

from typing import Any

#: sum(sin(x * y) * x): a scalar output (for /hvp) of two inputs of any shape
SCALAR_SIN: dict[str, Any] = {
    "format": "gradnet/1", "name": "scalar", "inputs": [{"name": "x"}, {"name": "y"}],
    "nodes": [
        {"name": "xy", "op": "Mul", "inputs": ["x", "y"]},
        {"name": "s", "op": "Sin", "inputs": ["xy"]},
        {"name": "sx", "op": "Mul", "inputs": ["s", "x"]},
        {"name": "f", "op": "ReduceSum", "inputs": ["sx"], "attrs": {"axis": [], "keep_dims": False}},
    ],
    "outputs": ["f"],
}
