"""The seed tutorial's network written with ``gradserve_client.Graph`` (as a MindSpore Cell reads:
inputs, a Parameter, ops by primitive name), registered, and its gradients asked for.

Usage: .venv/bin/python examples/graph_builder.py [BASE_URL]   (GRADSERVE_API_KEY for a keyed server)
"""

import os
import sys

import numpy as np

from gradserve_client import GradClient, Graph

g = Graph("tutorial-net")
x, y = g.inputs("x", "y")
z = g.parameter("z", np.array([1.0], np.float32))
g.output(g.MatMul(g.Mul(x, z, name="xz"), y, name="out"))
network = g.build()

base = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("GRADSERVE_URL", "http://127.0.0.1:8000")
with GradClient(base, api_key=os.environ.get("GRADSERVE_API_KEY")) as gs:
    network_id = gs.register(network)["network_id"]
    result = gs.grad(network_id, [np.array([[0.8, 0.6, 0.2], [1.8, 1.3, 1.1]], np.float32),
                                  np.array([[0.11, 3.3, 1.1], [1.1, 0.2, 1.4], [1.1, 2.2, 0.3]], np.float32)])
print("nodes:", network["nodes"])
print("network_id:", network_id)
print("dx:", result.gradients.tolist())
