"""The seed tutorial through UM-Bridge, with UM-Bridge's own Python client (``pip install umbridge``):
the network is registered once with gradserve's ``POST /networks``, its inputs with declared shapes;
from then on it is a UM-Bridge model (the hex of its id) that any UM-Bridge client (Python, C++, R,
Julia, MATLAB, and the UQ tools built on them) can evaluate and differentiate. Vectors are the
network's inputs and outputs flattened row-major.

Usage: .venv/bin/python examples/umbridge_client.py [BASE_URL]   (GRADSERVE_API_KEY for a keyed server)
"""

from __future__ import annotations

import os
import sys

import httpx
import umbridge

NETWORK = {  # the seed tutorial's network, out = MatMul(x * z, y), with the inputs' shapes declared
    "format": "gradnet/1", "name": "tutorial-net-shaped",
    "inputs": [{"name": "x", "dtype": "float32", "shape": [2, 3]}, {"name": "y", "dtype": "float32", "shape": [3, 3]}],
    "parameters": [{"name": "z", "value": {"dtype": "float32", "shape": [1], "data": [1.0]}, "requires_grad": True}],
    "nodes": [{"name": "xz", "op": "Mul", "inputs": ["x", "z"]}, {"name": "out", "op": "MatMul", "inputs": ["xz", "y"]}],
    "outputs": ["out"],
}
base = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("GRADSERVE_URL", "http://127.0.0.1:8000")
key = os.environ.get("GRADSERVE_API_KEY")
headers = {"Authorization": f"Bearer {key}"} if key else {}
network_id = httpx.post(f"{base}/networks", json=NETWORK, headers=headers).json()["network_id"]
# UM-Bridge clients send no headers of their own: the API key goes in the URL, as the password
url = base.replace("://", f"://user:{key}@") if key else base

model = umbridge.HTTPModel(url, network_id.removeprefix("sha256:"))
x = [0.8, 0.6, 0.2, 1.8, 1.3, 1.1]  # float32[2, 3], row-major
y = [0.11, 3.3, 1.1, 1.1, 0.2, 1.4, 1.1, 2.2, 0.3]  # float32[3, 3]
print("sizes:", model.get_input_sizes(), model.get_output_sizes())
print("Evaluate:", model([x, y]))
print("Gradient:", model.gradient(0, 0, [x, y], [1.0] * 6))  # d(sum out)/dx, as POST /grad
print("ApplyJacobian:", model.apply_jacobian(0, 1, [x, y], [1.0, 0, 0, 0, 0, 0, 0, 0, 0]))
print("ApplyHessian:", model.apply_hessian(0, 0, 1, [x, y], [1.0] * 6, [1.0, 0, 0, 0, 0, 0, 0, 0, 0]))
