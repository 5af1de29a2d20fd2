"""Make the ONNX import fixtures: small PyTorch models, exported to ONNX, with torch.autograd's gradients.

Runs in a separate environment with PyTorch (never a dependency of gradserve)::

    python3.11 -m venv /work/torchvenv
    /work/torchvenv/bin/pip install torch==2.13.0 onnx onnxscript
    /work/torchvenv/bin/python tools/onnx_oracle.py            # every model, every exporter
    /work/torchvenv/bin/python tools/onnx_oracle.py mlp cnn    # some of them

For each model and each way users export (``dynamo``: ``torch.onnx.export``'s default, the dynamo
exporter with its optimizer; ``dynamo_noopt``: ``optimize=False``; ``torchscript``:
``dynamo=False, opset_version=17``) it writes ``tests/fixtures/onnx/<model>.<exporter>.onnx`` and
``<model>.<exporter>.npz``, which holds, under the ONNX graph's own names:

- ``input/<name>``: the inputs; ``value/<k>``: torch's outputs; ``sens/<k>``: a random cotangent
  per output;
- ``grad/ones/<name>`` and ``grad/sens/<name>``: torch.autograd's gradients of the outputs (with a
  cotangent of ones, and with ``sens``) for every input and every floating initializer that
  holds a torch parameter or buffer;
- ``fused``: initializers that are a Conv's weight or bias with a BatchNorm folded in (the dynamo
  optimizer and the TorchScript exporter fold them): their gradients follow from torch's by the
  chain rule (see ``FUSED``);
- ``unmapped``: the floating initializers that hold no torch tensor (constants the exporter made).

An exporter may store a parameter reordered (TorchScript's LSTM gates) or transposed. Every
floating parameter and buffer gets distinct random values before export, so each element of an
initializer is found by value among the torch tensors' elements; its gradient is the gradient of
that element. A buffer (BatchNorm's running statistics) gets zeros: torch defines no gradient
for it (``native_batch_norm`` refuses a running mean that requires grad).
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

torch.set_num_threads(1)
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "onnx"
EXPORTERS = ("dynamo", "dynamo_noopt", "torchscript")


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        h = nn.functional.gelu(self.fc2(h)) + nn.functional.leaky_relu(h, 0.1)
        return torch.log_softmax(torch.tanh(self.fc3(h)) * 2.0, dim=-1)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=1, padding=(1, 0), groups=2)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 2 * 1, 3)

    def forward(self, x):
        h = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        h = nn.functional.avg_pool2d(torch.sigmoid(self.bn2(self.conv2(h))), 2)
        return self.fc(torch.flatten(h, 1))


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock, with the strided 1x1 downsample."""

    def __init__(self, cin=3, cout=4, stride=2):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.downsample(x))


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)

    def forward(self, x):
        return self.layer(x)


class LSTMModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 5, batch_first=True)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.fc(y[:, -1])


class GRUModel(nn.Module):
    """Two outputs: the sequence and the last hidden states (a tuple, so sens is a list)."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 5, batch_first=True, bidirectional=True)

    def forward(self, x):
        y, h = self.gru(x)
        return y, h * 2


class Embedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.fc = nn.Linear(6, 2)

    def forward(self, ids):
        return self.fc(self.emb(ids).mean(dim=1))


class Stem(nn.Module):
    """A ResNet stem: 7x7/2 conv, BatchNorm, 3x3/2 max pool with padding, then a ceil-mode
    average pool that leaves the padding out, and the global average pool."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 7, 2, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        h = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 3, 2, 1)
        h = nn.functional.avg_pool2d(h, 3, 2, 1, ceil_mode=True, count_include_pad=False)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1)


class Decoder(nn.Module):
    """ConvTranspose2d (stride, padding, output_padding), InstanceNorm2d, LeakyReLU, nearest
    upsampling, a dilated Conv1d."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)
        self.norm = nn.InstanceNorm2d(4, affine=True)
        self.conv = nn.Conv1d(4, 2, 3, padding=2, dilation=2)

    def forward(self, x):
        u = self.up(x)
        # + u / 2: the instance norm alone would make the up-convolution's bias gradient zero
        h = nn.functional.leaky_relu(self.norm(u), 0.2) + u / 2
        h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
        return self.conv(torch.flatten(h, 2))


class Activations(nn.Module):
    """GroupNorm and the activations PyTorch models use beyond ReLU: SiLU, ELU, SELU, CELU,
    Hardswish, Hardsigmoid, PReLU, Mish, Softplus, ReLU6, and an upper-triangular mask."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.norm = nn.GroupNorm(2, 4)
        self.prelu = nn.PReLU(4)

    def forward(self, x):
        h = nn.functional.silu(self.norm(self.conv(x)))
        h = nn.functional.elu(h, 0.7) + nn.functional.selu(h) + nn.functional.celu(h, 1.3)
        h = nn.functional.hardswish(h) + nn.functional.hardsigmoid(h) + self.prelu(h)
        h = nn.functional.mish(h) + nn.functional.softplus(h) + nn.functional.relu6(h * 4)
        return torch.triu(h, diagonal=1)


def _inputs(name: str, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    name = name.removesuffix("_dynamic")
    shapes = {"mlp": (3, 6), "stem": (2, 3, 16, 16), "decoder": (2, 3, 3, 3), "cnn": (2, 2, 8, 8), "resblock": (2, 3, 6, 6), "transformer": (2, 5, 8),
              "lstm": (2, 5, 4), "gru": (2, 3, 4), "activations": (2, 2, 4, 4)}
    if name == "embedding":
        return (torch.tensor([[1, 3, 3, 7, 0], [9, 2, 5, 5, 1]], dtype=torch.int64),)
    return (torch.randn(*shapes[name], generator=g),)


MODELS = {"mlp": MLP, "mlp_dynamic": MLP, "cnn_dynamic": CNN, "transformer_dynamic": Encoder,
          "lstm_dynamic": LSTMModel, "stem": Stem, "decoder": Decoder, "cnn": CNN, "resblock": BasicBlock, "transformer": Encoder, "lstm": LSTMModel,
          "gru": GRUModel, "embedding": Embedding, "activations": Activations}


#: (conv, batchnorm) pairs that an exporter may fuse into one Conv (W * s, (b - mean) * s + beta,
#: s = gamma / sqrt(var + eps)); the fused initializers' gradients follow from torch's by the chain
#: rule: dL/dW' = (dL/dW) / s per output channel, dL/db' = dL/dbeta.
FUSED = {"cnn": [("conv1", "bn1"), ("conv2", "bn2")], "cnn_dynamic": [("conv1", "bn1"), ("conv2", "bn2")],
         "resblock": [("conv1", "bn1"), ("conv2", "bn2"), ("downsample.0", "downsample.1")],
         "stem": [("conv", "bn")]}
#: models exported with a free batch dimension (``dynamic_shapes`` / ``dynamic_axes``)
DYNAMIC = {"mlp_dynamic", "cnn_dynamic", "transformer_dynamic", "lstm_dynamic"}


def fused_candidates(name: str, model: nn.Module, grads) -> list[tuple[str, np.ndarray, dict[str, np.ndarray]]]:
    """(what, fused value, {kind: gradient}) for each conv weight and bias a fusion would make."""
    out = []
    mods = dict(model.named_modules())
    for conv_name, bn_name in FUSED.get(name, []):
        conv, bn = mods[conv_name], mods[bn_name]
        w = conv.weight.detach().numpy().astype(np.float64)
        s = (bn.weight.detach().numpy() / np.sqrt(bn.running_var.numpy().astype(np.float64) + bn.eps))
        b = conv.bias.detach().numpy() if conv.bias is not None else np.zeros(w.shape[0])
        fused_b = (b - bn.running_mean.numpy()) * s + bn.bias.detach().numpy()
        shape = (-1,) + (1,) * (w.ndim - 1)
        gw = {k: grads[f"{conv_name}.weight"][k] / s.reshape(shape) for k in ("ones", "sens")}
        gb = {k: grads[f"{bn_name}.bias"][k] for k in ("ones", "sens")}
        out.append((f"{conv_name}.weight fused with {bn_name}", w * s.reshape(shape), gw))
        out.append((f"{conv_name}.bias fused with {bn_name}", fused_b, gb))
    return out


def build(name: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    model = MODELS[name]()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # distinct values everywhere, so initializers can be matched by value
        for t in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
            values = torch.randn(t.shape, generator=g) * 0.5
            if t.dim() == 1 and t.shape[0] and "running_var" in _name_of(model, t):
                values = values.abs() + 0.5
            t.copy_(values)
    model.eval()
    return model, _inputs(name, g)


def _name_of(model: nn.Module, t: torch.Tensor) -> str:
    for n, b in model.named_buffers():
        if b is t:
            return n
    return ""


def export(model: nn.Module, args: tuple, how: str, dynamic: bool = False) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how == "torchscript":
            buf = io.BytesIO()
            names = [f"x{i}" if i else "x" for i in range(len(args))]
            axes = {n: {0: "batch"} for n in names + ["y"]} if dynamic else None
            torch.onnx.export(model, args, buf, dynamo=False, opset_version=17,
                              input_names=names, output_names=["y"], dynamic_axes=axes)
            return buf.getvalue()
        shapes = tuple({0: torch.export.Dim("batch")} for _ in args) if dynamic else None
        program = torch.onnx.export(model, args, dynamo=True, optimize=(how == "dynamo"), dynamic_shapes=shapes)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            program.save(str(path), external_data=False)
            return path.read_bytes()


def torch_gradients(model, args, sens):
    """{torch name: (grad with ones, grad with sens)} for float inputs ("input/k") and tensors."""
    leaves = {}
    inputs = []
    for k, a in enumerate(args):
        a = a.clone()
        if a.is_floating_point():
            a.requires_grad_(True)
            leaves[f"input/{k}"] = a
        inputs.append(a)
    for n, p in model.named_parameters():
        leaves[n] = p
    out = {}
    for n, b in model.named_buffers():  # BatchNorm's running statistics: torch has no gradient for
        if b.is_floating_point():        # them (native_batch_norm refuses requires_grad), so zeros
            out[n] = {"ones": np.zeros(b.shape, np.float32), "sens": np.zeros(b.shape, np.float32)}
    for kind in ("ones", "sens"):
        y = model(*inputs)
        ys = y if isinstance(y, tuple) else (y,)
        cts = [torch.ones_like(v) for v in ys] if kind == "ones" else [torch.from_numpy(s) for s in sens]
        grads = torch.autograd.grad(ys, list(leaves.values()), cts, allow_unused=True)
        for (n, leaf), g in zip(leaves.items(), grads):
            out.setdefault(n, {})[kind] = (torch.zeros_like(leaf) if g is None else g).detach().numpy().copy()
    return out, [v.detach().numpy() for v in ys]


def locate(init: np.ndarray, pool: np.ndarray, where: dict[bytes, int | None]) -> np.ndarray | None:
    """The index in ``pool`` of each element of ``init`` (None if one is missing or ambiguous)."""
    idx = np.empty(init.size, np.int64)
    for k, v in enumerate(init.reshape(-1).astype(np.float32)):
        pos = where.get(v.tobytes())
        if pos is None:
            return None
        idx[k] = pos
    return idx


def make(name: str, how: str) -> None:
    model, args = build(name)
    data = export(model, args, how, dynamic=name in DYNAMIC)
    proto = onnx.load_model_from_string(data)
    with torch.no_grad():
        ys = model(*args)
    ys = ys if isinstance(ys, tuple) else (ys,)
    rng = np.random.default_rng(2)
    sens = [rng.normal(size=tuple(v.shape)).astype(np.float32) for v in ys]
    grads, values = torch_gradients(model, args, sens)

    # every float torch tensor, flattened into one pool; a value that occurs twice is ambiguous
    tensors = {n: t.detach().numpy() for n, t in list(model.named_parameters()) + list(model.named_buffers())
               if t.is_floating_point()}
    names = list(tensors)
    pool = np.concatenate([tensors[n].reshape(-1).astype(np.float32) for n in names])
    pool_ones = np.concatenate([grads[n]["ones"].reshape(-1) for n in names])
    pool_sens = np.concatenate([grads[n]["sens"].reshape(-1) for n in names])
    where: dict[bytes, int | None] = {}
    for k, v in enumerate(pool):
        key = v.tobytes()
        where[key] = None if key in where else k

    init_names = {t.name for t in proto.graph.initializer}
    graph_inputs = [i.name for i in proto.graph.input if i.name not in init_names]
    assert len(graph_inputs) == len(args), (graph_inputs, len(args))
    npz: dict[str, np.ndarray] = {}
    for k, (gname, a) in enumerate(zip(graph_inputs, args)):
        npz[f"input/{gname}"] = a.numpy()
        if f"input/{k}" in grads:
            npz[f"grad/ones/{gname}"] = grads[f"input/{k}"]["ones"]
            npz[f"grad/sens/{gname}"] = grads[f"input/{k}"]["sens"]
    for k, (v, s) in enumerate(zip(values, sens)):
        npz[f"value/{k}"], npz[f"sens/{k}"] = v, s
    unmapped, used, fused = [], set(), {}
    candidates = fused_candidates(name, model, grads)
    for t in proto.graph.initializer:
        arr = onnx.numpy_helper.to_array(t)
        if arr.dtype.kind != "f":
            continue
        idx = locate(arr, pool, where) if arr.size else None
        if idx is None or used & set(idx.tolist()):
            match = [c for c in candidates if c[1].shape == arr.shape and np.allclose(arr, c[1], rtol=1e-5, atol=1e-6)]
            if len(match) == 1:
                what, _, g = match[0]
                fused[t.name] = what
                npz[f"grad/ones/{t.name}"] = g["ones"].astype(np.float32)
                npz[f"grad/sens/{t.name}"] = g["sens"].astype(np.float32)
            else:
                unmapped.append(t.name)
            continue
        used.update(idx.tolist())
        npz[f"grad/ones/{t.name}"] = pool_ones[idx].reshape(arr.shape)
        npz[f"grad/sens/{t.name}"] = pool_sens[idx].reshape(arr.shape)
    npz["unmapped"] = np.asarray(json.dumps(unmapped))
    npz["fused"] = np.asarray(json.dumps(fused))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.{how}.onnx").write_bytes(data)
    np.savez_compressed(OUT / f"{name}.{how}.npz", **npz)
    ops = sorted({n.op_type for n in proto.graph.node})
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    print(f"{name}.{how}: opset {opset}, {len(data)} bytes, {len(proto.graph.node)} nodes, ops {ops}, "
          f"fused {sorted(fused)}, unmapped {unmapped}")


def main(argv: list[str]) -> None:
    names = [a for a in argv if a in MODELS] or list(MODELS)
    hows = [a for a in argv if a in EXPORTERS] or list(EXPORTERS)
    for name in names:
        for how in hows:
            try:
                make(name, how)
            except Exception as exc:  # one exporter failing must not stop the others
                print(f"{name}.{how}: FAILED {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")


if __name__ == "__main__":
    main(sys.argv[1:])
