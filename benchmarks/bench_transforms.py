"""The functional transforms on the benchmark MLP (tests/fixtures/mlp.json: 784-512-512-10 ReLU,
SoftmaxCrossEntropyWithLogits + ReduceMean, batch 128), in the engine (warm: compiled already):

- /vjp with K batched cotangents (one call, one program) against K separate /vjp calls, K = 1, 8, 64;
- /hvp (w.r.t. x) against a hand-written ``jax.jit(jax.jvp(jax.grad(f)))`` of the same forward;
- per-example gradients of the weights over the batch of 128 (``per_example_axes``, one call)
  against 128 calls of one example each.

Each pair's answers are checked equal before timing; the two sides alternate. Engine-level: the
HTTP and queueing overhead a separate call also pays is not counted, so the batched side's
advantage through the service is larger than shown here.

    .venv/bin/python benchmarks/bench_transforms.py [--reps N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import engine  # noqa: E402
from engine.grad import make_forward  # noqa: E402
from engine.transforms import Grad, Hvp, Vjp  # noqa: E402

engine.configure_jax()


def timed(a: Callable[[], Any], b: Callable[[], Any], reps: int) -> tuple[float, float]:
    """Median ms of each side, alternating."""
    ts: dict[int, list[float]] = {0: [], 1: []}
    sides = [(0, a), (1, b)]
    for i in range(reps):
        for k, fn in sides if i % 2 == 0 else sides[::-1]:
            t0 = time.perf_counter()
            fn()
            ts[k].append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts[0]), statistics.median(ts[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args(argv)
    request = json.loads((ROOT / "tests" / "fixtures" / "mlp.json").read_text())
    net = engine.parse_network(request["network"])
    x, labels = engine.decode_inputs(request["inputs"])
    eng = engine.Engine(cache_size=256)
    rng = np.random.default_rng(0)
    rows = []

    # /vjp: K batched cotangents vs K calls (the loss is a float32 scalar: a cotangent per K)
    for k in (1, 8, 64):
        cts = rng.normal(size=(k,)).astype(np.float32)
        batched = lambda cts=cts: eng.run(net, Vjp(weights=net.trainable, batched=True), [x, labels], extra=cts)  # noqa: E731
        separate = lambda cts=cts: [eng.run(net, Vjp(weights=net.trainable), [x, labels], extra=c) for c in cts]  # noqa: E731
        got, want = batched().gradients, separate()
        for i in range(k):
            np.testing.assert_allclose(got[1][0][i], want[i].gradients[1][0], rtol=1e-5, atol=1e-7)
        b, s = timed(batched, separate, args.reps)
        rows.append((f"/vjp, K = {k}: batched vs {k} calls", b, s))

    # /hvp w.r.t. x vs hand-written jvp(grad) of the same forward
    v = rng.normal(size=x.shape).astype(np.float32)
    forward = make_forward(net)
    params = {p.name: jax.device_put(p.value) for p in net.parameters}

    @jax.jit
    def hand(x, labels, v):
        g = jax.grad(lambda x: forward([x, labels], params)[0])
        return jax.jvp(g, (x,), (v,))[1]

    ours = lambda: eng.run(net, Hvp(), [x, labels], extra=v).fields["hvp"]  # noqa: E731
    theirs = lambda: np.asarray(hand(x, labels, v))  # noqa: E731
    np.testing.assert_allclose(ours(), theirs(), rtol=1e-4, atol=1e-6)
    b, s = timed(ours, theirs, args.reps * 5)
    rows.append(("/hvp vs hand-written jax.jvp(jax.grad)", b, s))

    # per-example gradients of the weights over 128 examples vs 128 calls
    n = x.shape[0]
    per = Grad(positions=None, weights=net.trainable, per_example_axes=(0, 0))
    one = Grad(positions=None, weights=net.trainable)
    batched = lambda: eng.run(net, per, [x, labels])  # noqa: E731
    separate = lambda: [eng.run(net, one, [x[i:i + 1], labels[i:i + 1]]) for i in range(n)]  # noqa: E731
    got, want = batched().gradients, separate()
    for i in (0, n - 1):
        np.testing.assert_allclose(got[0][i], want[i].gradients[0], rtol=1e-4, atol=1e-6)
    b, s = timed(batched, separate, max(3, args.reps // 2))
    rows.append((f"per-example, batch {n}: one call vs {n} calls (examples of shape [1, 784])", b, s))

    print("| workload | one call (ms) | the other side (ms) | speed-up |")
    print("|---|---:|---:|---:|")
    for name, b, s in rows:
        print(f"| {name} | {b:.2f} | {s:.2f} | {s / b:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
