"""The seed tutorial from Python, with gradserve's client (``gradserve_client.GradClient``).

NumPy arrays in, NumPy arrays out; the client needs only NumPy and httpx, not JAX. Registers the
network once, then asks for the gradients w.r.t. all inputs and the weights
(GradOperation(get_all=True, get_by_list=True)), tensors in the binary framing both ways.

Usage: .venv/bin/python examples/python_client.py [BASE_URL]   (GRADSERVE_API_KEY for a keyed server)
"""

from __future__ import annotations

import os
import sys

import numpy as np

from gradserve_client import GradClient

NETWORK = {
    "format": "gradnet/1",
    "name": "tutorial-net",
    "inputs": [{"name": "x"}, {"name": "y"}],
    "parameters": [{"name": "z", "value": np.array([1.0], np.float32), "requires_grad": True}],
    "nodes": [
        {"name": "xz", "op": "Mul", "inputs": ["x", "z"]},
        {"name": "out", "op": "MatMul", "inputs": ["xz", "y"]},
    ],
    "outputs": ["out"],
}
x = np.array([[0.8, 0.6, 0.2], [1.8, 1.3, 1.1]], np.float32)
y = np.array([[0.11, 3.3, 1.1], [1.1, 0.2, 1.4], [1.1, 2.2, 0.3]], np.float32)

base = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("GRADSERVE_URL", "http://127.0.0.1:8000")
with GradClient(base, api_key=os.environ.get("GRADSERVE_API_KEY")) as gs:
    network_id = gs.register(NETWORK)["network_id"]
    result = gs.grad(network_id, [x, y], get_all=True, get_by_list=True, encoding="binary")

(dx, dy), (dz,) = result.gradients
print("gradient_names:", result.gradient_names)
for name, grad in (("x", dx), ("y", dy), ("z", dz)):
    print(f"d{name}: {grad.dtype} {list(grad.shape)}\n{grad}")
