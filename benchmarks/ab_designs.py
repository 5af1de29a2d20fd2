"""CPU time per request of the two process designs (``--worker-mode process`` / ``inprocess``),
side by side: both servers up (``--workers 1 --device cpu``), sequential requests alternating
between them, the order flipping every round. CPU time (user + system of the server and all its
children, psutil) is what a request costs the machine; a loaded machine stretches it far less
than latency.

Usage: ``python benchmarks/ab_designs.py [--rounds 4]``; prints, per design and request (the
tutorial by network_id in JSON; the MLP by network_id with binary and b64 inputs and answers),
the CPU ms per request and the client-side p50 ms of every round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_service import FIXTURES, free_port, mlp_bodies, start  # noqa: E402

MODES = ("process", "inprocess")


def cpu_s(pid: int) -> float:
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        times = p.cpu_times()
        total += times.user + times.system
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    mlp = json.loads((FIXTURES / "mlp.json").read_text())
    tutorial = json.loads((FIXTURES / "tutorial.json").read_text())["cases"][1]["request"]
    servers = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for mode in MODES:
                port = free_port()
                proc = start([sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "1",
                              "--device", "cpu", "--worker-mode", mode, "--registry-path", f"{tmp}/{mode}.sqlite3"],
                             f"http://127.0.0.1:{port}/health/ready", env={"GRADSERVE_LOG_LEVEL": "warning"})
                base = f"http://127.0.0.1:{port}"
                servers[mode] = (proc, base, None)
                mlp_id = httpx.post(f"{base}/networks", json=mlp["network"], timeout=60).json()["network_id"]
                tut_id = httpx.post(f"{base}/networks", json=tutorial["network"], timeout=60).json()["network_id"]
                bodies = mlp_bodies(mlp_id, mlp)
                bodies["tutorial"] = (json.dumps({k: v for k, v in tutorial.items() if k != "network"}
                                                 | {"network_id": tut_id}).encode(), {"Content-Type": "application/json"})
                servers[mode] = (proc, base, bodies)
            results: dict[tuple[str, str], list[tuple[float, float]]] = {}
            for r in range(args.rounds):
                for mode in MODES if r % 2 == 0 else MODES[::-1]:
                    proc, base, bodies = servers[mode]
                    with httpx.Client(timeout=60) as c:
                        for name in ("tutorial", "binary", "b64"):
                            body, headers = bodies[name]
                            n = 200 if name == "tutorial" else 30
                            for _ in range(3):
                                c.post(f"{base}/grad", content=body, headers=headers).raise_for_status()
                            before, latencies = cpu_s(proc.pid), []
                            for _ in range(n):
                                t0 = time.perf_counter()
                                c.post(f"{base}/grad", content=body, headers=headers).raise_for_status()
                                latencies.append((time.perf_counter() - t0) * 1e3)
                            results.setdefault((mode, name), []).append(
                                ((cpu_s(proc.pid) - before) / n * 1e3, statistics.median(latencies)))
        finally:
            for proc, _, _ in servers.values():
                proc.terminate()
                proc.wait(60)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print("| design | request | CPU ms per request (rounds) | p50 ms (rounds) |")
    print("|---|---|---|---|")
    for (mode, name), values in sorted(results.items()):
        cpu = " / ".join(f"{a:.2f}" for a, _ in values)
        p50 = " / ".join(f"{b:.2f}" for _, b in values)
        print(f"| {mode} | {name} | {cpu} | {p50} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
