"""Export a small PyTorch model to ONNX the way users do (``torch.onnx.export``'s default, the
dynamo exporter), for ``POST /networks`` with ``Content-Type: application/onnx``.

Needs PyTorch (and onnxscript), which gradserve does not depend on::

    python -m pip install torch onnxscript
    python examples/onnx_export.py model.onnx
"""

import sys

import torch

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).eval()
x = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]])
# external_data=False: the weights inside the one file (gradserve refuses external data)
torch.onnx.export(model, (x,), sys.argv[1] if len(sys.argv) > 1 else "model.onnx", external_data=False)

# torch.autograd's answer, to compare with the service's
x.requires_grad_(True)
model(x).sum().backward()
print("torch dx:", [[round(v, 6) for v in row] for row in x.grad.tolist()])
print("torch d(0.weight):", [[round(v, 6) for v in row] for row in model[0].weight.grad.tolist()])
