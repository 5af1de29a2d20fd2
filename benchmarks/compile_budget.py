"""Warm /grad latency while a large network compiles (issue 12, point 2's goal: while a
3,000-node network compiles, a warm network's /grad answers within 50 ms).

Starts ``gradserve serve`` (one CPU worker, ``compile_timeout_s`` 600), warms the tutorial
network, sends an ``--nodes``-node ``Tanh`` chain (cold: it compiles on the worker's compile
thread), and meanwhile sends the tutorial /grad every 20 ms on one keep-alive connection. Prints
the chain's time, and the warm requests' count, statuses and latency percentiles, as JSON.

    .venv/bin/python benchmarks/compile_budget.py --nodes 3000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "hardening"))

from hardening_helpers import tutorial_request  # noqa: E402

from tests.support.servers import start_server  # noqa: E402


def chain(nodes: int, name: str) -> dict:
    ops = [{"name": f"t{i}", "op": "Tanh", "inputs": [f"t{i - 1}" if i else "x"]} for i in range(nodes)]
    net = {"format": "gradnet/1", "name": name, "inputs": [{"name": "x"}], "nodes": ops, "outputs": [f"t{nodes - 1}"]}
    return {"network": net, "inputs": [{"dtype": "float32", "shape": [4], "data": [0.1, 0.2, 0.3, 0.4]}]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=3000)
    parser.add_argument("--interval-ms", type=float, default=20)
    parser.add_argument("--baseline-s", type=float, default=30)
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    import httpx  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    settings = {"timeout_ms": 900_000, "compile_timeout_s": 600}
    settings.update(dict(s.split("=", 1) for s in args.setting))
    server = start_server(Path(tempfile.mkdtemp()), **settings)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            assert c.post("/grad", json=tutorial_request()).status_code == 200

            def warm_calls(until: Callable[[], bool]) -> tuple[list[float], Counter]:
                latencies, statuses = [], Counter()
                while not until():
                    t0 = time.perf_counter()
                    statuses[c.post("/grad", json=tutorial_request()).status_code] += 1
                    latencies.append((time.perf_counter() - t0) * 1e3)
                    time.sleep(args.interval_ms / 1e3)
                return latencies, statuses

            end = time.monotonic() + args.baseline_s
            baseline = warm_calls(lambda: time.monotonic() > end)
            load_before = os.getloadavg()
            big: dict = {}

            def send_big() -> None:
                t0 = time.perf_counter()
                r = httpx.post(server.url + "/grad", json=chain(args.nodes, "big"), timeout=900)
                big.update(status=r.status_code, seconds=time.perf_counter() - t0,
                           timing_ms=r.json().get("timing_ms") if r.status_code == 200 else r.text[:300])

            thread = threading.Thread(target=send_big)
            thread.start()
            time.sleep(0.3)
            during = warm_calls(lambda: not thread.is_alive())
            thread.join()

        def summary(phase: tuple[list[float], Counter]) -> dict:
            ms = np.array(phase[0])
            return {"warm_requests": len(ms), "statuses": dict(phase[1]),
                    "p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
                    "max_ms": round(float(ms.max()), 1), "over_50_ms": int((ms > 50).sum())}

        print(json.dumps({
            "nodes": args.nodes, "big": {k: (round(v, 1) if isinstance(v, float) else v) for k, v in big.items()},
            "baseline": {**summary(baseline), "load_average": load_before},
            "during_compile": {**summary(during), "load_average": os.getloadavg()}}, indent=2))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
