"""Per-call overhead of the engine: a warm ``Engine.grad`` against a hand-written ``jax.jit`` VJP.

Two workloads, each with the engine's compiled executable already cached (warm):
  * the seed tutorial's net, ``(x * z) @ y`` with ``get_all`` (pure overhead: the math is tiny);
  * the 784-512-512-10 ReLU MLP of ``tests/fixtures/mlp.json`` (669,706 parameters, batch 128,
    SoftmaxCrossEntropyWithLogits + ReduceMean) with ``get_by_list``.

The hand-written side writes the forward in ``jnp`` directly, jits the function that returns the
VJP's gradients, keeps the parameters on the device (as the engine does), is called with the same
NumPy inputs and ends the way the engine does (``np.asarray`` of each result on the CPU,
``jax.device_get`` elsewhere; see ``engine.engine.to_host``); so the ratio engine / hand-written is the
engine's own overhead. Calls alternate between the two sides (ABAB, order swapped every call) so
that load from other processes hits both alike. Gradients are checked equal before timing.

Usage: ``python benchmarks/bench_engine.py [--tutorial-reps 2000] [--mlp-reps 200] [--json]``.
Goal (from the issue): ratio <= 1.5 on the tutorial net, <= 1.2 on the MLP.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT / "tests" / "fixtures"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import engine  # noqa: E402

engine.configure_jax()  # x64, as the worker does

GOALS = {"tutorial": 1.5, "mlp": 1.2}


def to_host(tree: Any) -> Any:
    """What the engine does with its result (``engine.engine.to_host``), written out by hand."""
    on_cpu = jax.devices()[0].platform == "cpu"
    return [np.asarray(x) for x in tree] if on_cpu else jax.device_get(tree)


def load(name: str) -> dict[str, Any]:
    with open(FIXTURES / name) as f:
        return json.load(f)


# -- the two workloads: (engine call, hand-written call, gradient pairs to compare) ---------------


def tutorial_workload(eng: engine.Engine) -> tuple[Callable[[], Any], Callable[[], Any]]:
    case = next(c for c in load("tutorial.json")["cases"] if c["name"] == "grad-wrt-all-inputs")
    request = case["request"]
    net = engine.parse_network(request["network"])
    x, y = engine.decode_inputs(request["inputs"])
    z = jax.device_put(net.parameter("z").value)

    @jax.jit
    def hand(x, y, z):
        out, vjp = jax.vjp(lambda x, y: jnp.matmul(x * z, y), x, y)
        return vjp(jnp.ones_like(out))

    def run_engine():
        return eng.grad(net, [x, y], get_all=True).gradients

    def run_hand():
        return list(to_host(hand(x, y, z)))

    return run_engine, run_hand


def mlp_workload(eng: engine.Engine) -> tuple[Callable[[], Any], Callable[[], Any]]:
    request = load("mlp.json")
    net = engine.parse_network(request["network"])
    x, labels = engine.decode_inputs(request["inputs"])
    names = [p.name for p in net.parameters]
    assert net.trainable == tuple(names) and sum(p.value.size for p in net.parameters) == 669_706
    params = {p.name: jax.device_put(p.value) for p in net.parameters}

    def forward(p, x, labels):
        h = jax.nn.relu(x @ p["w1"] + p["b1"])
        h = jax.nn.relu(h @ p["w2"] + p["b2"])
        logits = h @ p["w3"] + p["b3"]
        return jnp.mean(-jnp.sum(labels * jax.nn.log_softmax(logits, axis=-1), axis=-1))

    @jax.jit
    def hand(p, x, labels):
        loss, vjp = jax.vjp(lambda p: forward(p, x, labels), p)
        (g,) = vjp(jnp.ones_like(loss))
        return [g[n] for n in names]

    def run_engine():
        return eng.grad(net, [x, labels], get_by_list=True).gradients

    def run_hand():
        return to_host(hand(params, x, labels))

    return run_engine, run_hand


# -- timing ----------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def measure(run_engine: Callable[[], Any], run_hand: Callable[[], Any], reps: int, warmup: int) -> dict[str, Any]:
    got, want = run_engine(), run_hand()
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    for _ in range(warmup):
        run_engine()
        run_hand()
    times: dict[str, list[float]] = {"engine": [], "hand": []}
    sides = [("engine", run_engine), ("hand", run_hand)]
    clock = time.perf_counter
    for i in range(reps):
        for name, fn in sides if i % 2 == 0 else sides[::-1]:
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    row: dict[str, Any] = {"reps": reps}
    for name, ts in times.items():
        us = [t * 1e6 for t in ts]
        row[name] = {"median_us": statistics.median(us), "p90_us": percentile(us, 90), "mean_us": statistics.fmean(us)}
    row["ratio_median"] = row["engine"]["median_us"] / row["hand"]["median_us"]
    row["ratio_p90"] = row["engine"]["p90_us"] / row["hand"]["p90_us"]
    return row


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| workload | reps | engine median (µs) | engine p90 (µs) | hand-written median (µs) | hand-written p90 (µs) "
        "| ratio (median) | ratio (p90) | goal |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, row in results["workloads"].items():
        e, h = row["engine"], row["hand"]
        ok = "met" if row["ratio_median"] <= GOALS[name] else "missed"
        lines.append(
            f"| {name} | {row['reps']} | {e['median_us']:.1f} | {e['p90_us']:.1f} | {h['median_us']:.1f} | "
            f"{h['p90_us']:.1f} | {row['ratio_median']:.2f}x | {row['ratio_p90']:.2f}x | ≤ {GOALS[name]}x ({ok}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tutorial-reps", type=int, default=2000)
    parser.add_argument("--mlp-reps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls per side before timing (MLP: a fifth)")
    parser.add_argument("--only", choices=sorted(GOALS), action="append", help="run only this workload (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args(argv)

    eng = engine.Engine()
    chosen = args.only or ["tutorial", "mlp"]
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "workloads": {},
    }
    if "tutorial" in chosen:
        results["workloads"]["tutorial"] = measure(*tutorial_workload(eng), args.tutorial_reps, args.warmup)
    if "mlp" in chosen:
        results["workloads"]["mlp"] = measure(*mlp_workload(eng), args.mlp_reps, max(1, args.warmup // 5))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"jax {results['jax']} on {results['device']} ({results['cpu']}, {results['cpus']} CPUs), {results['date']}")
        print()
        print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
