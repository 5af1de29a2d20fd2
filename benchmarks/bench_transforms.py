"""The functional transforms on the benchmark MLP (tests/fixtures/mlp.json: 784-512-512-10 ReLU,
SoftmaxCrossEntropyWithLogits + ReduceMean, batch 128, one scalar output), in process and over HTTP.

In process (the engine, warm: compiled already), each transform against hand-written JAX of the
same computation (the 1.3x goal) and against K separate engine calls:

- /vjp with K = 1, 8, 64 batched cotangents, in two forms: w.r.t. the inputs only (``x`` and
  ``labels``; no ``weights``) and w.r.t. the inputs and all six weights (669,706 parameters);
  hand-written: ``jax.jit`` of ``jax.vmap`` of the ``jax.vjp`` function over the K cotangents,
  and, since the loss is a scalar, ``jax.jit`` of ``c_k * jax.grad(f)`` (one reverse pass scaled);
- /hvp w.r.t. ``x``; hand-written: ``jax.jit(jax.jvp(jax.grad(f)))``;
- per-example gradients of the six weights over the batch of 128 (``per_example_axes``);
  hand-written: ``jax.jit(jax.vmap(jax.grad(f, argnums=weights), in_axes=(0, 0, None)))``.

Over HTTP: a real ``gradserve serve`` (``python -m service.cli serve --workers 1 --device cpu``)
on a free port, the MLP registered once (``POST /networks``) and called by ``network_id`` with
``gradserve_client.GradClient`` (one keep-alive connection), inputs, vectors and answers in the
binary encoding (the OIP binary framing), the one call against K separate calls; /hvp over
HTTP against the same call in process.

Every pair's answers are checked equal before timing; the sides alternate (the order flips every
repetition); medians. The load average is printed at the start and the end (a shared machine).

    .venv/bin/python benchmarks/bench_transforms.py [--reps N] [--only inproc|http] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
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

KS = (1, 8, 64)


def timed(sides: list[Callable[[], Any]], reps: int, budget_s: float = 3.0) -> tuple[list[float], int]:
    """Median ms of each side, and the repetitions; each runs every side once, the order flipping. At least
    ``reps`` repetitions, more (up to 8x) while the row has taken under ``budget_s``: the cheap
    rows get the samples a loaded machine's noise needs."""
    ts: list[list[float]] = [[] for _ in sides]
    start = time.perf_counter()
    for i in range(reps * 8):
        if i >= reps and time.perf_counter() - start > budget_s:
            break
        order = list(range(len(sides)))
        for k in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            sides[k]()
            ts[k].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in ts], len(ts[0])


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def close(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


class Mlp:
    """The fixture, its engine and the hand-written JAX of each transform."""

    def __init__(self) -> None:
        request = json.loads((ROOT / "tests" / "fixtures" / "mlp.json").read_text())
        self.doc = request["network"]
        self.net = engine.parse_network(self.doc)
        self.x, self.labels = engine.decode_inputs(request["inputs"])
        self.eng = engine.Engine(cache_size=256)
        self.weights = tuple(self.net.trainable)
        forward = make_forward(self.net)
        params = {p.name: jax.device_put(p.value) for p in self.net.parameters}
        self.ws = tuple(params[w] for w in self.weights)
        names = self.weights

        def loss(x, labels, ws):
            return forward([x, labels], dict(params) | dict(zip(names, ws)))[0]

        # the weights are arguments, as in the engine's programs (a constant weight lets XLA
        # pack it at compile time: ~10% faster here, and not the same computation)
        def vjp_inputs(x, labels, ws, cts):
            _, vjp = jax.vjp(lambda x, labels: loss(x, labels, ws), x, labels)
            return jax.vmap(vjp)(cts)

        def vjp_all(x, labels, ws, cts):
            _, vjp = jax.vjp(loss, x, labels, ws)
            return jax.vmap(vjp)(cts)

        def hvp(x, labels, ws, v):
            return jax.jvp(jax.grad(lambda x: loss(x, labels, ws)), (x,), (v,))[1]

        def scaled(grads, cts):  # a scalar loss: vjp(c_k) = c_k * vjp(1), one reverse pass
            return jax.tree.map(lambda g: cts.reshape((-1,) + (1,) * g.ndim) * g, grads)

        def vjp_inputs_scaled(x, labels, ws, cts):
            return scaled(jax.grad(loss, argnums=(0, 1))(x, labels, ws), cts)

        def vjp_all_scaled(x, labels, ws, cts):
            return scaled(jax.grad(loss, argnums=(0, 1, 2))(x, labels, ws), cts)

        self.hand_vjp_inputs = jax.jit(vjp_inputs)
        self.hand_vjp_all = jax.jit(vjp_all)
        self.hand_vjp_inputs_scaled = jax.jit(vjp_inputs_scaled)
        self.hand_vjp_all_scaled = jax.jit(vjp_all_scaled)
        self.hand_hvp = jax.jit(hvp)
        self.hand_per_example = jax.jit(jax.vmap(jax.grad(loss, argnums=2), in_axes=(0, 0, None)))


def in_process(m: Mlp, reps: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    eng, net, x, labels = m.eng, m.net, m.x, m.labels
    xs = [x, labels]
    rows: list[dict[str, Any]] = []
    ready = jax.block_until_ready

    for form, weights in (("inputs", None), ("all weights", m.weights)):
        for k in KS:
            cts = rng.normal(size=(k,)).astype(np.float32)
            spec, one = Vjp(weights=weights, batched=True), Vjp(weights=weights)
            ours = lambda spec=spec, cts=cts: eng.run(net, spec, xs, extra=cts)  # noqa: E731
            calls = lambda one=one, cts=cts: [eng.run(net, one, xs, extra=c) for c in cts]  # noqa: E731
            if weights is None:
                hand = lambda cts=cts: ready(m.hand_vjp_inputs(x, labels, m.ws, cts))  # noqa: E731
                scaled = lambda cts=cts: ready(m.hand_vjp_inputs_scaled(x, labels, m.ws, cts))  # noqa: E731
            else:
                hand = lambda cts=cts: ready(m.hand_vjp_all(x, labels, m.ws, cts))  # noqa: E731
                scaled = lambda cts=cts: ready(m.hand_vjp_all_scaled(x, labels, m.ws, cts))  # noqa: E731
            got, theirs, theirs_scaled, sep = ours().gradients, hand(), scaled(), calls()
            g_x = got[0][0] if weights is not None else got[0]
            for want in (theirs, theirs_scaled):
                close(g_x, want[0])
                if weights is not None:
                    for a, b in zip(got[1], want[2]):
                        close(a, b)
            for i in (0, k - 1):
                one_x = sep[i].gradients[0][0] if weights is not None else sep[i].gradients[0]
                close(g_x[i], one_x)
            t, reps_done = timed([ours, hand, scaled, calls], reps)
            rows.append({"reps": reps_done, "workload": f"/vjp w.r.t. {form}, K = {k}", "k": k, "ours_ms": t[0], "hand_ms": t[1],
                         "hand_scaled_ms": t[2], "calls_ms": t[3]})
            print(f"  in process: {rows[-1]}", flush=True)

    v = rng.normal(size=x.shape).astype(np.float32)
    ours = lambda: eng.run(net, Hvp(), xs, extra=v)  # noqa: E731
    hand = lambda: ready(m.hand_hvp(x, labels, m.ws, v))  # noqa: E731
    close(ours().fields["hvp"], hand(), rtol=1e-4)
    t, reps_done = timed([ours, hand], reps * 3)
    rows.append({"reps": reps_done, "workload": "/hvp w.r.t. x", "k": 1, "ours_ms": t[0], "hand_ms": t[1], "calls_ms": None})
    print(f"  in process: {rows[-1]}", flush=True)

    n = x.shape[0]
    per = Grad(positions=None, weights=m.weights, per_example_axes=(0, 0))
    one = Grad(positions=None, weights=m.weights)
    ours = lambda: eng.run(net, per, xs)  # noqa: E731
    hand = lambda: ready(m.hand_per_example(x, labels, m.ws))  # noqa: E731
    calls = lambda: [eng.run(net, one, [x[i:i + 1], labels[i:i + 1]]) for i in range(n)]  # noqa: E731
    got, theirs, sep = ours().gradients, hand(), calls()
    for a, b in zip(got, theirs):
        close(a, b, rtol=1e-4)
    for i in (0, n - 1):
        close(got[0][i], sep[i].gradients[0], rtol=1e-4)
    t, reps_done = timed([ours, hand, calls], max(3, reps // 2))
    rows.append({"reps": reps_done, "workload": f"per-example gradients, batch {n}", "k": n, "ours_ms": t[0], "hand_ms": t[1],
                 "calls_ms": t[2]})
    print(f"  in process: {rows[-1]}", flush=True)
    return rows


def serve(registry: str) -> tuple[subprocess.Popen, str]:
    from benchmarks.bench_service import free_port, start

    port = free_port()
    env = {"GRADSERVE_LOG_LEVEL": "warning"}
    proc = start([sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                  "--workers", "1", "--device", "cpu", "--registry-path", registry],
                 f"http://127.0.0.1:{port}/health/ready", env)
    return proc, f"http://127.0.0.1:{port}"


def over_http(m: Mlp, reps: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    from gradserve_client import GradClient

    x, labels = m.x, m.labels
    xs = [x, labels]
    rows: list[dict[str, Any]] = []
    enc = "binary"
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = serve(str(Path(tmp, "registry.sqlite3")))
        try:
            with GradClient(base, timeout=600) as c:
                nid = c.register(m.doc, encoding=enc)["network_id"]
                for form, weights in (("inputs", None), ("all weights", m.weights)):
                    for k in KS:
                        cts = rng.normal(size=(k,)).astype(np.float32)
                        one = lambda cts=cts, w=weights: c.vjp(nid, xs, cts, weights=w, batched=True,  # noqa: E731
                                                               encoding=enc)
                        calls = lambda cts=cts, w=weights: [c.vjp(nid, xs, ct, weights=w, encoding=enc)  # noqa: E731
                                                            for ct in cts]
                        got, sep = one()["gradients"], calls()
                        g_x = got[0][0] if weights is not None else got[0]
                        for i in (0, k - 1):
                            s = sep[i]["gradients"]
                            close(g_x[i], s[0][0] if weights is not None else s[0])
                        local = m.eng.run(m.net, Vjp(weights=weights, batched=True), xs, extra=cts).gradients
                        close(g_x, local[0] if weights is None else local[0][0])
                        t, reps_done = timed([one, calls], reps)
                        rows.append({"reps": reps_done, "workload": f"/vjp w.r.t. {form}, K = {k}", "k": k, "one_ms": t[0],
                                     "calls_ms": t[1]})
                        print(f"  http: {rows[-1]}", flush=True)

                v = rng.normal(size=x.shape).astype(np.float32)
                hvp_http = lambda: c.hvp(nid, xs, v, encoding=enc)  # noqa: E731
                hvp_local = lambda: m.eng.run(m.net, Hvp(), xs, extra=v)  # noqa: E731
                close(hvp_http()["hvp"], hvp_local().fields["hvp"])
                t, reps_done = timed([hvp_http, hvp_local], reps * 3)
                rows.append({"reps": reps_done, "workload": "/hvp w.r.t. x", "k": 1, "one_ms": t[0], "calls_ms": None,
                             "in_process_ms": t[1]})
                print(f"  http: {rows[-1]}", flush=True)

                n = x.shape[0]
                one = lambda: c.grad(nid, xs, grad_position=None, weights=m.weights,  # noqa: E731
                                     per_example_axes=[0, 0], encoding=enc)
                calls = lambda: [c.grad(nid, [x[i:i + 1], labels[i:i + 1]], grad_position=None,  # noqa: E731
                                        weights=m.weights, encoding=enc) for i in range(n)]
                got, sep = one().gradients, calls()
                for i in (0, n - 1):
                    close(got[0][i], sep[i].gradients[0], rtol=1e-4)
                t, reps_done = timed([one, calls], max(3, reps // 2))
                rows.append({"reps": reps_done, "workload": f"per-example gradients, batch {n}", "k": n, "one_ms": t[0],
                             "calls_ms": t[1]})
                print(f"  http: {rows[-1]}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return rows


def report(inproc: list[dict[str, Any]], http: list[dict[str, Any]]) -> None:
    if inproc:
        print("\nIn process (ms; per vector = ms / K):\n")
        print("| workload | ours | hand-written JAX | ours / hand | hand-written, one pass scaled | ours / it "
              "| K separate calls | per vector: one call | per vector: K calls | K calls / one call | reps |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in inproc:
            k, c, sc = r["k"], r["calls_ms"], r.get("hand_scaled_ms")
            mid = f"{sc:.2f} | {r['ours_ms'] / sc:.2f}" if sc is not None else "– | –"
            tail = (f"{c:.2f} | {r['ours_ms'] / k:.3f} | {c / k:.3f} | {c / r['ours_ms']:.2f}x" if c is not None
                    else "– | – | – | –")
            print(f"| {r['workload']} | {r['ours_ms']:.2f} | {r['hand_ms']:.2f} | {r['ours_ms'] / r['hand_ms']:.2f} "
                  f"| {mid} | {tail} | {r['reps']} |")
    if http:
        print("\nOver HTTP (binary encoding, by network_id; ms; per vector = ms / K):\n")
        print("| workload | one call | K separate calls | per vector: one call | per vector: K calls "
              "| K calls / one call | reps |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in http:
            k, c = r["k"], r["calls_ms"]
            if c is None:
                print(f"| {r['workload']} | {r['one_ms']:.2f} | – (in process: {r['in_process_ms']:.2f}) | – | – | – "
                      f"| {r['reps']} |")
                continue
            print(f"| {r['workload']} | {r['one_ms']:.2f} | {c:.2f} | {r['one_ms'] / k:.3f} | {c / k:.3f} "
                  f"| {c / r['one_ms']:.2f}x | {r['reps']} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--only", choices=("inproc", "http"))
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{started}, load average {load()}", flush=True)
    m = Mlp()
    rng = np.random.default_rng(0)
    inproc = in_process(m, args.reps, rng) if args.only != "http" else []
    http = over_http(m, args.reps, rng) if args.only != "inproc" else []
    report(inproc, http)
    print(f"\nload average at the end: {load()}")
    if args.json:
        args.json.write_text(json.dumps({"started": started, "in_process": inproc, "http": http}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
