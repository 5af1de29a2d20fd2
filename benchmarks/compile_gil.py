"""A warm jitted call's latency while another thread compiles (issue 12, point 2): the worker's
compile thread with and without ``service.worker.main._yield_to_the_warm_path`` (GIL switch
interval 0.5 ms, the compile thread at nice 19), in one process, no HTTP.

Each run is a fresh process: the main thread calls a warm tiny jitted function every 5 ms while a
thread traces, lowers and compiles the gradient of an ``--nodes``-node ``Tanh`` chain. Runs
alternate (default first, then the worker's setting), ``--rounds`` times; one JSON line a run.

    .venv/bin/python benchmarks/compile_gil.py --nodes 1000 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(mode: str, nodes: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from service.worker.main import _yield_to_the_warm_path  # noqa: PLC0415

    warm = jax.jit(lambda x: jnp.sum(jnp.sin(x) * 2))
    x = np.ones(4, np.float32)
    warm(x).block_until_ready()

    def chain(v):
        for _ in range(nodes):
            v = jnp.tanh(v)
        return jnp.sum(v)

    done, compile_s = threading.Event(), []

    def compile_() -> None:
        if mode == "worker":
            _yield_to_the_warm_path()
        t0 = time.perf_counter()
        jax.jit(jax.grad(chain)).lower(x).compile()
        compile_s.append(time.perf_counter() - t0)
        done.set()

    thread = threading.Thread(target=compile_)
    thread.start()
    ms = []
    while not done.is_set():
        t0 = time.perf_counter()
        warm(x).block_until_ready()
        ms.append((time.perf_counter() - t0) * 1e3)
        time.sleep(0.005)
    thread.join()
    lat = np.array(ms)
    return {"mode": mode, "nodes": nodes, "compile_s": round(compile_s[0], 1), "warm_calls": len(lat),
            "p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "max_ms": round(float(lat.max()), 1), "load_average": round(os.getloadavg()[0], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mode", choices=["default", "worker"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run(args.mode, args.nodes)))
        return 0
    for _ in range(args.rounds):
        for mode in ("default", "worker"):
            out = subprocess.run([sys.executable, __file__, "--nodes", str(args.nodes), "--mode", mode],
                                 capture_output=True, text=True, check=True).stdout
            print(out.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
