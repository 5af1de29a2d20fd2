"""The MindSpore side of the ONNX fixtures: LeNet5 exported by ``mindspore.export(file_format="ONNX")``
with MindSpore's own ``ops.GradOperation`` gradients.

Runs in the MindSpore virtualenv (never a dependency of gradserve)::

    /work/msvenv/bin/pip install mindspore==2.10.0 "numpy<2"
    /work/msvenv/bin/python tools/onnx_mindspore_oracle.py

Writes ``tests/fixtures/onnx/lenet5.mindspore.onnx`` and ``.npz`` in the layout of
``tools/onnx_oracle.py`` (``input/x``, ``value/0``, ``sens/0``, ``grad/ones/<name>``,
``grad/sens/<name>``, ``unmapped``, ``fused``), so ``tests/engine/test_onnx_oracle.py`` checks it
with the PyTorch ones. The gradients are ``GradOperation(get_all=True, get_by_list=True)`` of the
network with ``net.trainable_params()``, without and with ``sens_param``; MindSpore's ONNX export
keeps the parameter names, so each initializer is the parameter of its name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import nn, ops

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "onnx"


class LeNet5(nn.Cell):
    """MindSpore's model-zoo LeNet5 (1x32x32 in, 10 classes out)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, pad_mode="valid")
        self.conv2 = nn.Conv2d(6, 16, 5, pad_mode="valid")
        self.fc1 = nn.Dense(16 * 5 * 5, 120)
        self.fc2 = nn.Dense(120, 84)
        self.fc3 = nn.Dense(84, 10)
        self.relu = nn.ReLU()
        self.max_pool2d = nn.MaxPool2d(kernel_size=2, stride=2)
        self.flatten = nn.Flatten()

    def construct(self, x):
        x = self.max_pool2d(self.relu(self.conv1(x)))
        x = self.max_pool2d(self.relu(self.conv2(x)))
        x = self.flatten(x)
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


def main() -> None:
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(0)
    net = LeNet5()
    rng = np.random.default_rng(0)
    for p in net.trainable_params():  # the Dense biases start at zero: give every parameter values
        p.set_data(ms.Tensor((rng.normal(size=p.shape) * 0.2).astype(np.float32)))
    x = rng.normal(size=(2, 1, 32, 32)).astype(np.float32)
    sens = rng.normal(size=(2, 10)).astype(np.float32)
    weights = ms.ParameterTuple(net.trainable_params())
    value = net(ms.Tensor(x)).asnumpy()
    (gx,), gw = ops.GradOperation(get_all=True, get_by_list=True)(net, weights)(ms.Tensor(x))
    (sx,), sw = ops.GradOperation(get_all=True, get_by_list=True, sens_param=True)(net, weights)(
        ms.Tensor(x), ms.Tensor(sens))
    with tempfile.TemporaryDirectory() as tmp:
        ms.export(net, ms.Tensor(x), file_name=os.path.join(tmp, "lenet5"), file_format="ONNX")
        data = Path(tmp, "lenet5.onnx").read_bytes()
    npz = {"input/x": x, "value/0": value, "sens/0": sens, "grad/ones/x": gx.asnumpy(), "grad/sens/x": sx.asnumpy(),
           "unmapped": np.asarray("[]"), "fused": np.asarray("{}")}
    for p, g, s in zip(weights, gw, sw):
        npz[f"grad/ones/{p.name}"], npz[f"grad/sens/{p.name}"] = g.asnumpy(), s.asnumpy()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "lenet5.mindspore.onnx").write_bytes(data)
    np.savez_compressed(OUT / "lenet5.mindspore.npz", **npz)
    print(f"lenet5.mindspore: {len(data)} bytes, parameters {[p.name for p in weights]}")


if __name__ == "__main__":
    main()
