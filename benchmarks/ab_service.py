"""A/B of two gradserve checkouts over HTTP: both servers up side by side, wrk alternating.

On a busy machine two benchmark runs minutes apart see different machines; here every round
measures A and B within seconds of each other (the order flips every round), so the noise falls
on both. Besides wrk's p50 it reports the CPU time per request of the server process and of its
worker (``psutil``, user + system): a busy machine stretches latencies, much less CPU time. Each side runs from its own checkout (``python -m service.cli serve`` with the
checkout as working directory and ``PYTHONPATH``), ``--workers 1 --device cpu``; the requests are
``bench_service.py``'s: the tutorial net (``get_all``, by ``network_id``, JSON) at concurrency 1,
and the MLP fixture by ``network_id`` with binary inputs, answered ``json`` and ``binary``.

Usage: ``python benchmarks/ab_service.py A_DIR B_DIR [--rounds 5] [--duration 3] [--json out.json]``
(needs ``wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_service import FIXTURES, binary_body, free_port, wait_ready, wrk  # noqa: E402
from engine.tensors import decode_tensor  # noqa: E402


def serve(checkout: Path, port: int, registry: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(checkout), "GRADSERVE_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--device", "cpu", "--registry-path", registry],
        cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_ready(f"http://127.0.0.1:{port}/health/ready")
    return proc


def cpu_s(proc: psutil.Process) -> tuple[float, float]:
    """CPU seconds (user + system) of the server process and of its workers, so far."""
    own = proc.cpu_times()
    workers = sum(c.cpu_times().user + c.cpu_times().system for c in proc.children(recursive=True))
    return own.user + own.system, workers


def bodies(base: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    """The benchmark's requests against the server at ``base`` (its networks registered)."""
    tutorial = json.loads((FIXTURES / "tutorial.json").read_text())["cases"][1]["request"]
    mlp = json.loads((FIXTURES / "mlp.json").read_text())
    tut_id = httpx.post(f"{base}/networks", json=tutorial["network"]).json()["network_id"]
    mlp_id = httpx.post(f"{base}/networks", json=mlp["network"], timeout=60).json()["network_id"]
    out = {"tutorial_c1": (json.dumps({k: v for k, v in tutorial.items() if k != "network"}
                                      | {"network_id": tut_id}).encode(), {"Content-Type": "application/json"})}
    x, labels = (decode_tensor(t) for t in mlp["inputs"])
    for enc in ("json", "binary"):
        header = {"network_id": mlp_id, "get_by_list": True, "output_encoding": enc,
                  "inputs": [{"dtype": "float32", "shape": list(a.shape), "binary_data_size": a.nbytes}
                             for a in (x, labels)]}
        body, head_len = binary_body(header, [x, labels])
        out[f"mlp_{enc}_c1"] = (body, {"Content-Type": "application/octet-stream",
                                       "Inference-Header-Content-Length": str(head_len)})
    for body, headers in out.values():  # warm: compiled, and every answer a 200
        httpx.post(f"{base}/grad", content=body, headers=headers, timeout=60).raise_for_status()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="checkout A (e.g. the code before a change)")
    parser.add_argument("b", type=Path, help="checkout B (e.g. the code after it)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args(argv)
    sides = {"A": args.a.resolve(), "B": args.b.resolve()}
    runs: dict[str, dict[str, list[float]]] = {s: {} for s in sides}
    cpu: dict[str, dict[str, list[tuple[float, float]]]] = {s: {} for s in sides}
    with tempfile.TemporaryDirectory() as tmp:
        ports = {s: free_port() for s in sides}
        procs = {s: serve(d, ports[s], f"{tmp}/{s}.sqlite3") for s, d in sides.items()}
        try:
            reqs = {s: bodies(f"http://127.0.0.1:{ports[s]}") for s in sides}
            for r in range(args.rounds):
                order = ["A", "B"] if r % 2 == 0 else ["B", "A"]
                for name in reqs["A"]:
                    for s in order:
                        body, headers = reqs[s][name]
                        watched = psutil.Process(procs[s].pid)
                        before = cpu_s(watched)
                        got = wrk(f"http://127.0.0.1:{ports[s]}/grad", body, 1, args.duration, headers)
                        after = cpu_s(watched)
                        assert got["non_2xx"] == 0, (s, name, got)
                        runs[s].setdefault(name, []).append(got["p50_ms"])
                        n = got["rps"] * args.duration  # wrk's requests/s over its run
                        cpu[s].setdefault(name, []).append(((after[0] - before[0]) / n * 1e6,
                                                            (after[1] - before[1]) / n * 1e6))
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait(timeout=60)
    print(f"medians of {args.rounds} alternating rounds (each round's figures in --json); CPU in µs per request")
    print("| request | A p50 ms | B p50 ms | B / A | A server CPU | B server CPU | A worker CPU | B worker CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in runs["A"]:
        a, b = statistics.median(runs["A"][name]), statistics.median(runs["B"][name])
        (sa, wa), (sb, wb) = ((statistics.median(c[0] for c in cpu[s][name]),
                               statistics.median(c[1] for c in cpu[s][name])) for s in ("A", "B"))
        print(f"| {name} | {a:.3f} | {b:.3f} | {b / a:.2f} | {sa:.0f} | {sb:.0f} | {wa:.0f} | {wb:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"a": str(sides["A"]), "b": str(sides["B"]), "p50_ms": runs,
                                         "cpu_us_per_request": cpu}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
