"""HTTP benchmark of gradserve against a trivial FastAPI echo endpoint, with wrk.

Measured in one run on one machine, each as a ratio:
  * the tutorial net (network_id mode, get_all): p50 latency at concurrency 1 vs the echo
    endpoint's p50, and requests/s at concurrency 16 vs the echo endpoint's;
  * the MLP (get_by_list, 669,706 parameters, network_id mode): end-to-end p50 with
    ``binary`` and ``json`` output encoding vs the warm in-process engine call.

Needs ``wrk`` (Debian package) on PATH. Usage: ``python benchmarks/bench_service.py [--duration 10] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[2:4]} exited with status {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def start(cmd: list[str], ready_url: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(ready_url, proc=proc)
    except BaseException:  # not left running when it never became ready
        proc.kill()
        proc.wait()
        raise
    return proc


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, body: bytes, connections: int, duration: int, headers: dict[str, str]) -> dict[str, float]:
    """Run wrk with a POST body; return p50/p90/p99 latency (ms) and requests/s."""
    with tempfile.TemporaryDirectory() as tmp:
        body_path = Path(tmp, "body")
        body_path.write_bytes(body)
        script = Path(tmp, "post.lua")
        lines = ['wrk.method = "POST"', f'local f = io.open("{body_path}", "rb")', "wrk.body = f:read(\"*a\")", "f:close()"]
        lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
        script.write_text("\n".join(lines) + "\n")
        # One wrk thread for every run, echo and gradserve alike: on a 2-core machine a second
        # load-generator thread takes CPU from the server under test.
        threads = 1
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
            capture_output=True, text=True, check=True,
        ).stdout
    pct = {m.group(1): float(m.group(2)) * _UNITS[m.group(3)]
           for m in re.finditer(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"p50_ms": pct["50"], "p90_ms": pct["90"], "p99_ms": pct["99"], "rps": rps,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def in_process_mlp(repeats: int, device: str = "cpu") -> float:
    """Median ms of the warm in-process engine call on the MLP (what the service wraps), on the
    same kind of device as the server's workers."""
    import jax

    import engine

    engine.configure_jax()  # as the worker does
    request = json.loads((FIXTURES / "mlp.json").read_text())
    net = engine.parse_network(request["network"])
    eng = engine.Engine(device=jax.devices(device)[0])
    inputs = engine.decode_inputs(request["inputs"])
    for _ in range(5):
        eng.grad(net, inputs, get_by_list=True)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        eng.grad(net, inputs, get_by_list=True)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def binary_body(header: dict, tensors: list[np.ndarray]) -> tuple[bytes, int]:
    import orjson

    head = orjson.dumps(header)
    return head + b"".join(np.ascontiguousarray(t).tobytes() for t in tensors), len(head)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                        help="the server's workers and the in-process engine run there (deploy/gpu-check.sh: gpu)")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        sys.exit("wrk is not on PATH: apt-get install wrk")

    import engine

    results: dict[str, dict] = {}
    echo_port, grad_port = free_port(), free_port()
    tutorial = json.loads((FIXTURES / "tutorial.json").read_text())["cases"][1]["request"]  # get_all
    mlp = json.loads((FIXTURES / "mlp.json").read_text())
    uvicorn_flags = ["--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"]
    echo = start([sys.executable, "-m", "uvicorn", "benchmarks.echo_app:app", "--port", str(echo_port), *uvicorn_flags],
                 f"http://127.0.0.1:{echo_port}/docs")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            server = start(
                [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(grad_port),
                 "--workers", "1", "--device", args.device, "--registry-path", f"{tmp}/registry.sqlite3"],
                f"http://127.0.0.1:{grad_port}/health/ready",
                env={"GRADSERVE_LOG_LEVEL": "warning"},
            )
        except BaseException:
            echo.terminate()
            echo.wait(timeout=30)
            raise
        try:
            base = f"http://127.0.0.1:{grad_port}"
            tut_id = httpx.post(f"{base}/networks", json=tutorial["network"]).json()["network_id"]
            mlp_id = httpx.post(f"{base}/networks", json=mlp["network"], timeout=60).json()["network_id"]
            tut_body = json.dumps({k: v for k, v in tutorial.items() if k != "network"} | {"network_id": tut_id}).encode()
            echo_body = tut_body  # the same bytes through the echo endpoint
            for body in (tut_body,):
                httpx.post(f"{base}/grad", content=body, headers={"content-type": "application/json"}).raise_for_status()
            json_headers = {"Content-Type": "application/json"}
            for conns in (1, 16):
                results[f"echo_c{conns}"] = wrk(f"http://127.0.0.1:{echo_port}/echo", echo_body, conns, args.duration, json_headers)
                results[f"tutorial_c{conns}"] = wrk(f"{base}/grad", tut_body, conns, args.duration, json_headers)

            x = engine.decode_tensor(mlp["inputs"][0])
            labels = engine.decode_tensor(mlp["inputs"][1])
            for enc in ("binary", "json"):
                header = {"network_id": mlp_id, "get_by_list": True, "output_encoding": enc,
                          "inputs": [{"dtype": "float32", "shape": list(x.shape), "binary_data_size": x.nbytes},
                                     {"dtype": "float32", "shape": list(labels.shape), "binary_data_size": labels.nbytes}]}
                body, head_len = binary_body(header, [x, labels])
                headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(head_len)}
                check = httpx.post(f"{base}/grad", content=body, headers=headers, timeout=60)
                check.raise_for_status()
                results[f"mlp_{enc}_c1"] = wrk(f"{base}/grad", body, 1, args.duration, headers)
        finally:
            server.terminate()
            server.wait(timeout=60)
            echo.terminate()
            echo.wait(timeout=30)

    results["mlp_in_process_ms"] = {"p50_ms": in_process_mlp(200, args.device)}
    ratios = {
        "tutorial_p50_vs_echo_c1": results["tutorial_c1"]["p50_ms"] / results["echo_c1"]["p50_ms"],
        "tutorial_rps_vs_echo_c16": results["tutorial_c16"]["rps"] / results["echo_c16"]["rps"],
        "mlp_binary_vs_in_process": results["mlp_binary_c1"]["p50_ms"] / results["mlp_in_process_ms"]["p50_ms"],
        "mlp_json_vs_in_process": results["mlp_json_c1"]["p50_ms"] / results["mlp_in_process_ms"]["p50_ms"],
    }
    print("| measurement | p50 ms | p90 ms | p99 ms | req/s | non-2xx |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['p50_ms']:.3f} | {r.get('p90_ms', float('nan')):.3f} | {r.get('p99_ms', float('nan')):.3f} "
              f"| {r.get('rps', float('nan')):.0f} | {r.get('non_2xx', '')} |")
    print()
    goals = {"tutorial_p50_vs_echo_c1": ("<=", 2.0), "tutorial_rps_vs_echo_c16": (">=", 0.5),
             "mlp_binary_vs_in_process": ("<=", 1.5), "mlp_json_vs_in_process": ("<=", 5.0)}
    print("| ratio | value | goal | met |")
    print("|---|---|---|---|")
    for name, value in ratios.items():
        op, goal = goals[name]
        met = value <= goal if op == "<=" else value >= goal
        print(f"| {name} | {value:.2f} | {op} {goal} | {'yes' if met else 'NO'} |")
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "results": results, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
