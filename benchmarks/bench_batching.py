"""Dynamic batching (issue 14.1 / 14.3): per-example MLP requests with batching against the same
server without it, in one run.

Two servers side by side, ``--workers 1 --device cpu`` each: the defaults (batching on:
``--max-batch-size 64 --batch-delay-us 0``) and ``--max-batch-size 1`` (off). The request is
the issue's: one example of the MLP fixture (x ``[1, 784]``, its one-hot label ``[1, 10]``), by
``network_id``, GradOperation() (the gradient with respect to the input), b64 in and out. Each
round runs wrk at ``-c 64`` on one server, then the other (the order flips every round), and at
``-c 1`` too (a lone request must not be slower with batching on). Before the rounds the batching
server gets a warm-up at ``-c 64``, so that its batched programs (one per bucket: 2, 4, ... 64)
are compiled (they compile in the background; until then the jobs run alone).

The goal (issue 14.3): with batching, c=64 req/s >= 1.5x the same run's req/s with
``GRADSERVE_MAX_BATCH_SIZE=1``. The ratio is the median of the per-round ratios. The mean batch
size of each round comes from the server's ``gradserve_batch_size`` histogram.

``--delay-us N`` adds a third server, batching with ``--batch-delay-us N``, to the same rounds.

Needs ``wrk`` on PATH. Usage: ``python benchmarks/bench_batching.py [--rounds 5] [--duration 5]
[--worker-mode process] [--delay-us 0] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.bench_service import free_port, load_average, start, stop, wrk  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
SIDES = {"batching": {}, "off": {"--max-batch-size": "1"}}


def b64(a: np.ndarray) -> dict:
    return {"dtype": "float32", "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode()}


def batch_histogram(url: str) -> tuple[float, float]:
    """(requests computed, sum of their batch sizes) from the server's gradserve_batch_size."""
    count = total = 0.0
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("gradserve_batch_size_count "):
            count = float(line.split()[1])
        elif line.startswith("gradserve_batch_size_sum "):
            total = float(line.split()[1])
    return count, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (each: c=64 and c=1 on both servers)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--worker-mode", default="process", help="the servers' --worker-mode")
    parser.add_argument("--delay-us", type=int, default=0,
                        help="also a third server, batching with this --batch-delay-us (0: none)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        sys.exit("wrk is not on PATH: apt-get install wrk")
    sides = dict(SIDES)
    if args.delay_us:
        sides["delay"] = {"--batch-delay-us": str(args.delay_us)}

    mlp = json.loads((FIXTURES / "mlp.json").read_text())["network"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 784)).astype(np.float32)
    label = np.eye(10, dtype=np.float32)[[3]]
    headers = {"Content-Type": "application/json"}
    procs: list[subprocess.Popen] = []
    urls: dict[str, str] = {}
    bodies: dict[str, bytes] = {}
    rounds: list[dict] = []
    loads = [load_average()]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for side, flags in sides.items():
                port = free_port()
                urls[side] = f"http://127.0.0.1:{port}"
                extra = [a for kv in flags.items() for a in kv]
                procs.append(start(
                    [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                     "--workers", "1", "--device", "cpu", "--worker-mode", args.worker_mode,
                     "--registry-path", f"{tmp}/{side}.sqlite3", *extra],
                    urls[side] + "/health/ready", env={"GRADSERVE_LOG_LEVEL": "warning"}))
                mlp_id = httpx.post(urls[side] + "/networks", json=mlp, timeout=60).json()["network_id"]
                bodies[side] = json.dumps({"network_id": mlp_id, "inputs": [b64(x), b64(label)],
                                           "output_encoding": "b64"}).encode()
                for _ in range(3):  # compiled, and answered 200
                    httpx.post(urls[side] + "/grad", content=bodies[side], headers=headers,
                               timeout=120).raise_for_status()
            # the batching server's batched programs, one per bucket, compiled in the background
            for _ in range(3):
                for side in sides:
                    if side != "off":
                        wrk(urls[side] + "/grad", bodies[side], args.connections, 3, headers)
                time.sleep(3)
            for r in range(args.rounds):
                order = list(sides) if r % 2 == 0 else list(sides)[::-1]
                got: dict = {"load_average": load_average()}
                for conns in (args.connections, 1):
                    for side in order:
                        before = batch_histogram(urls[side])
                        run = wrk(urls[side] + "/grad", bodies[side], conns, args.duration, headers)
                        after = batch_histogram(urls[side])
                        n = after[0] - before[0]
                        run["mean_batch"] = (after[1] - before[1]) / n if n else 0.0
                        got[f"{side}_c{conns}"] = run
                rounds.append(got)
                loads.append(load_average())
                print(f"round {r + 1}/{args.rounds} done (load average {loads[-1]:.2f})", file=sys.stderr)
        finally:
            stop(procs)

    c = args.connections
    ratios = [g[f"batching_c{c}"]["rps"] / g[f"off_c{c}"]["rps"] for g in rounds]
    p50_ratios = [g["batching_c1"]["p50_ms"] / g["off_c1"]["p50_ms"] for g in rounds]
    delay_ratios = [g[f"delay_c{c}"]["rps"] / g[f"off_c{c}"]["rps"] for g in rounds] if args.delay_us else []
    print(f"{args.rounds} rounds of {args.duration} s per wrk run, --worker-mode {args.worker_mode}; "
          f"load average {min(loads):.2f}–{max(loads):.2f} (start {loads[0]:.2f}, end {loads[-1]:.2f})\n")
    print("| run | req/s (median) | req/s range | p50 ms (median) | p99 ms (median) | mean batch | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in [k for k in rounds[0] if k != "load_average"]:
        rps = [g[name]["rps"] for g in rounds]
        print(f"| {name} | {statistics.median(rps):.0f} | {min(rps):.0f}–{max(rps):.0f} | "
              f"{statistics.median(g[name]['p50_ms'] for g in rounds):.2f} | "
              f"{statistics.median(g[name]['p99_ms'] for g in rounds):.2f} | "
              f"{statistics.median(g[name]['mean_batch'] for g in rounds):.1f} | "
              f"{sum(g[name]['non_2xx'] for g in rounds)} |")
    median = statistics.median(ratios)
    print(f"\nc={c} req/s, batching / off: median {median:.2f} (rounds {min(ratios):.2f}–{max(ratios):.2f}); "
          f"goal >= 1.5: {'met' if median >= 1.5 else 'NOT met'}")
    print(f"c=1 p50, batching / off: median {statistics.median(p50_ratios):.2f} "
          f"(rounds {min(p50_ratios):.2f}–{max(p50_ratios):.2f})")
    if delay_ratios:
        print(f"c={c} req/s, --batch-delay-us {args.delay_us} / off: median {statistics.median(delay_ratios):.2f} "
              f"(rounds {min(delay_ratios):.2f}–{max(delay_ratios):.2f})")
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "load_average": loads, "ratios": ratios,
                                         "c1_p50_ratios": p50_ratios, "delay_ratios": delay_ratios,
                                         "delay_us": args.delay_us, "duration_s": args.duration,
                                         "worker_mode": args.worker_mode}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
