"""Writes tests/fixtures/mlp.json: a 784-512-512-10 ReLU MLP /grad request, from a fixed seed.

    python tools/make_mlp_fixture.py            # (re)writes tests/fixtures/mlp.json
    python tools/make_mlp_fixture.py --check    # exit 1 if the file is not what this writes

The request is ``{"network", "inputs": [x, labels], "get_by_list": true}``: the gradients of the
mean softmax cross-entropy with respect to the six parameters (669,706 floats). Every tensor is
float32 in base64 (``"b64"``). Weights are He-normal (standard normal times sqrt(2 / fan_in)),
biases zero, ``x`` [128, 784] standard normal, ``labels`` [128, 10] one-hot of uniform classes.

Numpy only, so it runs with the project's .venv or any Python with numpy. The output is committed:
the tests, benchmarks, load tester and examples read the file and never run this script, and
numpy does not promise the same random stream across its versions. ``tests/load`` checks that this
script still writes exactly the committed file.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

import numpy as np

SEED = 20240611
SIZES = (784, 512, 512, 10)
BATCH = 128
OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "mlp.json"


def _b64(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a, dtype="<f4")
    return {"dtype": "float32", "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode()}


def mlp_request(seed: int = SEED) -> dict:
    rng = np.random.default_rng(seed)
    params, nodes, prev = [], [], "x"
    layers = list(zip(SIZES[:-1], SIZES[1:]))
    for i, (fan_in, fan_out) in enumerate(layers, start=1):
        w = rng.standard_normal((fan_in, fan_out), dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        params += [{"name": f"w{i}", "value": _b64(w)}, {"name": f"b{i}", "value": _b64(np.zeros(fan_out))}]
        nodes += [{"name": f"mm{i}", "op": "MatMul", "inputs": [prev, f"w{i}"]},
                  {"name": f"z{i}", "op": "BiasAdd", "inputs": [f"mm{i}", f"b{i}"]}]
        prev = f"z{i}"
        if i < len(layers):
            nodes.append({"name": f"a{i}", "op": "ReLU", "inputs": [prev]})
            prev = f"a{i}"
    nodes += [{"name": "ce", "op": "SoftmaxCrossEntropyWithLogits", "inputs": [prev, "labels"]},
              {"name": "loss", "op": "ReduceMean", "inputs": ["ce:0"], "attrs": {"keep_dims": False, "axis": []}}]
    x = rng.standard_normal((BATCH, SIZES[0]), dtype=np.float32)
    labels = np.eye(SIZES[-1], dtype=np.float32)[rng.integers(0, SIZES[-1], BATCH)]
    network = {"format": "gradnet/1", "name": "mlp-784-512-512-10", "inputs": [{"name": "x"}, {"name": "labels"}],
               "parameters": params, "nodes": nodes, "outputs": ["loss"]}
    return {"network": network, "inputs": [_b64(x), _b64(labels)], "get_by_list": True}


def render(seed: int = SEED) -> str:
    return json.dumps(mlp_request(seed)) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed file, write nothing")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        same = args.out.is_file() and args.out.read_text() == text
        print(f"{args.out}: {'up to date' if same else 'differs from what tools/make_mlp_fixture.py writes'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(text):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
