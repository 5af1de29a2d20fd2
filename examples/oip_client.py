"""The seed tutorial through the Open Inference Protocol v2, with Triton's own client
(``pip install 'tritonclient[http]'``): the network is registered once with gradserve's
``POST /networks``; from then on it is a model (the hex of its id) that ``tritonclient`` (and
``perf_analyzer``, KServe clients) can call. Gradients w.r.t. all inputs and the weights, tensors
in the binary extension both ways.

Usage: .venv/bin/python examples/oip_client.py [BASE_URL]   (GRADSERVE_API_KEY for a keyed server)
"""

from __future__ import annotations

import os
import sys

import httpx
import numpy as np
import tritonclient.http as triton

NETWORK = {  # the seed tutorial's network: out = MatMul(x * z, y)
    "format": "gradnet/1", "name": "tutorial-net",
    "inputs": [{"name": "x"}, {"name": "y"}],
    "parameters": [{"name": "z", "value": {"dtype": "float32", "shape": [1], "data": [1.0]}, "requires_grad": True}],
    "nodes": [{"name": "xz", "op": "Mul", "inputs": ["x", "z"]}, {"name": "out", "op": "MatMul", "inputs": ["xz", "y"]}],
    "outputs": ["out"],
}
base = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("GRADSERVE_URL", "http://127.0.0.1:8000")
key = os.environ.get("GRADSERVE_API_KEY")


def auth() -> dict[str, str]:
    # a fresh dict per call: tritonclient adds its Inference-Header-Content-Length to the one it gets
    return {"Authorization": f"Bearer {key}"} if key else {}


network_id = httpx.post(f"{base}/networks", json=NETWORK, headers=auth()).json()["network_id"]
model = network_id.removeprefix("sha256:")

x = np.array([[0.8, 0.6, 0.2], [1.8, 1.3, 1.1]], np.float32)
y = np.array([[0.11, 3.3, 1.1], [1.1, 0.2, 1.4], [1.1, 2.2, 0.3]], np.float32)
client = triton.InferenceServerClient(base.removeprefix("http://"))
print("ready:", client.is_model_ready(model, headers=auth()))
inputs = [triton.InferInput("x", [2, 3], "FP32"), triton.InferInput("y", [3, 3], "FP32")]
inputs[0].set_data_from_numpy(x)
inputs[1].set_data_from_numpy(y)
result = client.infer(model, inputs, headers=auth(), parameters={"get_all": True, "get_by_list": True})
for output in result.get_response()["outputs"]:
    print(output["name"], output["datatype"], output["shape"])
    print(result.as_numpy(output["name"]))
