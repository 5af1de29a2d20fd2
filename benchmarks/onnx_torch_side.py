"""The torch side of ``benchmarks/bench_onnx.py``: torch.autograd in-process, run by a Python that
has PyTorch (never a dependency of gradserve)::

    /work/torchvenv/bin/python benchmarks/onnx_torch_side.py --repeat 50 --threads 1 mlp cnn

For each model of ``tools/onnx_oracle.py`` (the same module, seeds and inputs the ONNX fixtures
were exported from) it times one forward pass and ``torch.autograd.grad`` of every output (a
cotangent of ones) with respect to every floating input and every parameter: what ``/grad`` with
``get_all`` and ``get_by_list`` computes. Prints one JSON object: {model: {"p50_ms", "min_ms",
"repeat"}, "torch": version, "threads": n}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import onnx_oracle  # noqa: E402 - tools/ is not a package
import torch  # noqa: E402


def step(model, args):
    inputs = [a.detach().clone().requires_grad_(a.is_floating_point()) if a.is_floating_point() else a for a in args]
    leaves = [a for a in inputs if a.requires_grad] + list(model.parameters())
    y = model(*inputs)
    ys = y if isinstance(y, tuple) else (y,)
    return torch.autograd.grad(ys, leaves, [torch.ones_like(v) for v in ys], allow_unused=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)  # onnx_oracle sets 1 at import; this is the benchmark's choice
    out: dict = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    for name in args.models:
        model, inputs = onnx_oracle.build(name)
        for _ in range(5):  # warm up (allocator, kernels)
            step(model, inputs)
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            step(model, inputs)
            times.append((time.perf_counter() - t) * 1e3)
        out[name] = {"p50_ms": statistics.median(times), "min_ms": min(times), "repeat": args.repeat}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
