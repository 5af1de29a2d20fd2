"""One-node networks for the op tests (shared by test_ops_forward and test_ops_gradients)."""

from __future__ import annotations

from typing import Any

import engine
from engine import OPS


def network(op: str, num_inputs: int, attrs: dict[str, Any]) -> engine.Network:
    """A one-node network: inputs x0, x1, ...; node ``n``; every output of ``n`` is an output."""
    names = [f"x{i}" for i in range(num_inputs)]
    opdef = OPS[op]
    n = opdef.num_outputs(opdef.bind_attrs(attrs, "attrs"))
    return engine.parse_network(
        {
            "format": "gradnet/1",
            "name": f"one-{op}",
            "inputs": [{"name": name} for name in names],
            "parameters": [],
            "nodes": [{"name": "n", "op": op, "inputs": names, "attrs": attrs}],
            "outputs": ["n"] if n == 1 else [f"n:{k}" for k in range(n)],
        }
    )
