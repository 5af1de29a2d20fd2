"""Issue 17's figures: warm replicas (point 5) and the Ray Serve ingress (point 6).

``warm``: what the first ``/grad`` on a known network costs a server that starts after another
computed it, against a cold start. Per round, the MLP and the tutorial are registered (by a
server of their own), then five fresh ``gradserve serve`` processes start one after the other on
the same registry file and directories, each asked the MLP (get_by_list) and the tutorial by
``network_id`` once, first thing:

- **cold**: an empty XLA cache (``--compile-cache-dir``), no executable store: the compile;
- **xla**: that XLA cache warm: tracing and lowering again;
- **cold_store**: an empty executable store (``--executable-store DIR``): the compile, and the
  program written to the store;
- **store**: that store warm: the worker preloaded the programs (and ran each once) before it
  took requests;
- **load**: that store warm, no preloading (``--warm-programs 0``): the first call loads its
  program from the store instead of compiling it.

Reported: the worker's ``timing_ms`` compile and compute of that first answer, its wall time seen
by the client (and the server's decode and queue times), ``(compile + compute) / cold compile``
(the issue's goal is <= 10%), and the wall time of the same call made again right after (warm).

``ingress``: a Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head node for the
ingress, the proxy and the controller, and one worker node of one CPU per engine replica, as
tests/cluster starts it), the application of ``service.cluster`` on it with a fixed number of
replicas (1, 2, 3), against ``gradserve serve --workers 1`` on the same machine; last, Ray
Serve's own floor on the same cluster (an echo deployment: the proxy and one replica that
answers fixed bytes), and one replica with Serve's access log off (``access_log: false``). The requests:
the tutorial by ``network_id`` (JSON), wrk with one thread, concurrency 1 (p50) and 16 (req/s);
the replicas share one SQLite registry file. ``serve`` and the 1-replica cluster alternate
within each round.

Usage: ``python benchmarks/bench_cluster.py [warm|ingress|all] [--rounds 3] [--duration 5] [--json out.json]``
(``ingress`` needs the cluster extra and ``wrk``). The load average is printed with each part:
this is a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_service import free_port, wait_ready, wrk  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"


def _tutorial() -> dict[str, Any]:
    return json.loads((FIXTURES / "tutorial.json").read_text())["cases"][0]["request"]


def _mlp() -> dict[str, Any]:
    return json.loads((FIXTURES / "mlp.json").read_text())


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def start_serve(port: int, registry: Path, *flags: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADSERVE_")}
    env["GRADSERVE_LOG_LEVEL"] = "warning"
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--device", "cpu", "--registry-path", str(registry), *flags],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(f"http://127.0.0.1:{port}/health/ready", 180, proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- warm replicas ---------------------------------------------------------------------------------


def register(registry: Path) -> dict[str, dict[str, Any]]:
    """The two networks registered (by a server of its own, stopped after): the bodies by id."""
    port = free_port()
    proc = start_serve(port, registry)
    bodies = {}
    try:
        for name, request in (("mlp", _mlp()), ("tutorial", _tutorial())):
            r = httpx.post(f"http://127.0.0.1:{port}/networks", json=request["network"], timeout=120)
            r.raise_for_status()
            bodies[name] = {k: v for k, v in request.items() if k != "network"} | {"network_id": r.json()["network_id"]}
    finally:
        stop(proc)
    return bodies


def first_calls(flags: list[str], registry: Path, bodies: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """A fresh server's first /grad on each network: worker timing and client wall time (ms)."""
    port = free_port()
    proc = start_serve(port, registry, *flags)
    out = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
            for name, body in bodies.items():
                t0 = time.perf_counter()
                r = c.post("/grad", json=body)
                wall = (time.perf_counter() - t0) * 1e3
                r.raise_for_status()
                timing = r.json()["timing_ms"]
                out[name] = {"compile_ms": timing["compile"], "compute_ms": timing["compute"], "wall_ms": wall,
                             "decode_ms": timing["decode"], "queue_ms": timing["queue"]}
            for name, body in bodies.items():  # the same call, warm
                t0 = time.perf_counter()
                c.post("/grad", json=body).raise_for_status()
                out[name]["again_wall_ms"] = (time.perf_counter() - t0) * 1e3
    finally:
        stop(proc)
    return out


def bench_warm(rounds: int) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for k in range(rounds):
        with tempfile.TemporaryDirectory(prefix="gradserve-warm-") as tmp:
            tmp_path = Path(tmp)
            xla, store = tmp_path / "xla", tmp_path / "executables"
            registry = tmp_path / "registry.sqlite3"
            bodies = register(registry)
            row = {
                "cold": first_calls(["--compile-cache-dir", str(xla)], registry, bodies),
                "xla": first_calls(["--compile-cache-dir", str(xla)], registry, bodies),
                "cold_store": first_calls(["--executable-store", str(store)], registry, bodies),  # compiles, writes
                "store": first_calls(["--executable-store", str(store)], registry, bodies),
                "load": first_calls(["--executable-store", str(store), "--warm-programs", "0"], registry, bodies),
            }
        runs.append(row)
        print(f"warm round {k + 1}/{rounds}: " + json.dumps(row), flush=True)
    summary: dict[str, Any] = {}
    for net in ("mlp", "tutorial"):
        cold = statistics.median(r["cold"][net]["compile_ms"] for r in runs)
        entry: dict[str, Any] = {"cold_compile_ms": cold}
        for mode in ("cold", "xla", "cold_store", "store", "load"):
            first = statistics.median(r[mode][net]["compile_ms"] + r[mode][net]["compute_ms"] for r in runs)
            entry[mode] = {"first_ms": first, "vs_cold_compile": first / cold}
            for key in ("wall_ms", "again_wall_ms", "decode_ms", "queue_ms"):
                entry[mode][key] = statistics.median(r[mode][net][key] for r in runs)
        summary[net] = entry
    return {"runs": runs, "summary": summary, "load": _load()}


# -- the ingress -----------------------------------------------------------------------------------


def _by_id(base: str) -> bytes:
    tutorial = _tutorial()
    r = httpx.post(f"{base}/networks", json=tutorial["network"], timeout=60)
    r.raise_for_status()
    body = json.dumps({"network_id": r.json()["network_id"], "inputs": tutorial["inputs"]}).encode()
    for _ in range(3):  # compiled everywhere it may land
        httpx.post(f"{base}/grad", content=body, headers={"Content-Type": "application/json"},
                   timeout=60).raise_for_status()
    return body


def _measure(base: str, body: bytes, duration: int) -> dict[str, float]:
    headers = {"Content-Type": "application/json"}
    c1 = wrk(f"{base}/grad", body, 1, duration, headers)
    c16 = wrk(f"{base}/grad", body, 16, duration, headers)
    return {"c1_p50_ms": c1["p50_ms"], "c1_rps": c1["rps"], "c16_p50_ms": c16["p50_ms"], "c16_rps": c16["rps"],
            "non_2xx": c1["non_2xx"] + c16["non_2xx"]}


def _deploy(replicas: int, registry: Path, port: int, access_log: bool = True) -> None:
    from ray import serve  # noqa: PLC0415

    from service.cluster import build_app  # noqa: PLC0415

    app = build_app({"min_replicas": replicas, "max_replicas": replicas, "initial_replicas": replicas,
                     "max_ongoing_requests": 16, "max_queued_requests": 256,
                     "ingress_resources": {"ingress": 0.01}, "access_log": access_log,
                     "settings": {"registry_path": str(registry), "log_level": "warning"}})
    serve.run(app, name="gradserve", route_prefix="/", blocking=False)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = serve.status().applications.get("gradserve")
        running = status.deployments["engine"].replica_states.get("RUNNING", 0) if status else 0
        if status is not None and status.status == "RUNNING" and running == replicas:
            try:
                if httpx.get(f"{base}/health/ready", timeout=10).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    raise RuntimeError(f"{replicas} replicas did not come up: {serve.status()}")


def _deploy_echo(port: int) -> None:
    """Ray Serve's own floor on this cluster: one FastAPI ingress deployment that answers every
    POST with fixed bytes (no engine hop, no gradserve)."""
    from ray import serve  # noqa: PLC0415
    from starlette.responses import Response  # noqa: PLC0415

    @serve.deployment(name="echo", ray_actor_options={"num_cpus": 0, "resources": {"ingress": 0.01}},
                      max_ongoing_requests=1000)
    class Echo:
        async def __call__(self, request: Any) -> Any:  # Serve's plain HTTP path: a Starlette request
            await request.body()
            return Response(b'{"gradients":[]}', media_type="application/json")

    serve.run(Echo.bind(), name="gradserve", route_prefix="/", blocking=False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.post(f"http://127.0.0.1:{port}/grad", content=b"{}", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the echo deployment did not answer")


def _ingress_rounds(rounds: int, duration: int, replica_counts: list[int]) -> dict[str, Any]:
    """Every measurement of the ingress benchmark on the connected cluster: the raw runs."""
    from ray import serve  # noqa: PLC0415

    tmp = Path(tempfile.mkdtemp(prefix="gradserve-bench-cluster-"))
    registry = tmp / "registry.sqlite3"  # one file: the replicas and the servers share this machine
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    cluster_base = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {"serve": [], "replicas": {str(n): [] for n in replica_counts}}
    # serve vs the one-replica cluster, alternating within each round
    _deploy(1, registry, port)
    body = _by_id(cluster_base)
    for k in range(rounds):
        order = ["serve", "cluster"] if k % 2 == 0 else ["cluster", "serve"]
        for side in order:
            if side == "serve":
                sport = free_port()
                proc = start_serve(sport, registry)
                try:
                    base = f"http://127.0.0.1:{sport}"
                    _by_id(base)
                    out["serve"].append(_measure(base, body, duration))
                finally:
                    stop(proc)
            else:
                out["replicas"]["1"].append(_measure(cluster_base, body, duration))
        print(f"ingress round {k + 1}/{rounds}: serve {out['serve'][-1]}, 1 replica {out['replicas']['1'][-1]}",
              flush=True)
    for n in replica_counts:
        if n == 1:
            continue
        _deploy(n, registry, port)
        _by_id(cluster_base)
        for _ in range(rounds):
            out["replicas"][str(n)].append(_measure(cluster_base, body, duration))
        print(f"{n} replicas: {out['replicas'][str(n)]}", flush=True)
    _deploy(1, registry, port, access_log=False)
    _by_id(cluster_base)
    out["no_access_log"] = [_measure(cluster_base, body, duration) for _ in range(rounds)]
    print(f"1 replica, no access log: {out['no_access_log']}", flush=True)
    _deploy_echo(port)
    out["echo"] = [_measure(cluster_base, body, duration) for _ in range(rounds)]
    print(f"Serve echo: {out['echo']}", flush=True)
    return out


def bench_ingress(rounds: int, duration: int, replica_counts: list[int]) -> dict[str, Any]:
    from tests.support.ray_cluster import local_cluster  # noqa: PLC0415 - the cluster extra

    load_before = _load()
    with local_cluster(worker_nodes=max(replica_counts)):
        out = _ingress_rounds(rounds, duration, replica_counts)
    med = {k: statistics.median(r[k] for r in out["serve"]) for k in out["serve"][0]}
    summary: dict[str, Any] = {"serve": med, "replicas": {},
                               "serve_echo": {k: statistics.median(r[k] for r in out["echo"]) for k in out["echo"][0]},
                               "no_access_log": {k: statistics.median(r[k] for r in out["no_access_log"])
                                                 for k in out["no_access_log"][0]}}
    for n, runs in out["replicas"].items():
        summary["replicas"][n] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    one = summary["replicas"]["1"]
    summary["ingress_vs_serve"] = {"c1_p50_ratio": one["c1_p50_ms"] / med["c1_p50_ms"],
                                   "c16_rps_ratio": one["c16_rps"] / med["c16_rps"],
                                   "c1_p50_added_ms": one["c1_p50_ms"] - med["c1_p50_ms"]}
    return {"runs": out, "summary": summary, "load_before": load_before, "load_after": _load()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", nargs="?", choices=["warm", "ingress", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--replicas", default="1,2,3", help="replica counts of the cluster (1 is always measured)")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"cpus": os.cpu_count()}
    if args.part in ("warm", "all"):
        result["warm"] = bench_warm(args.rounds)
        print(json.dumps(result["warm"]["summary"], indent=1), f"\nload average {result['warm']['load']}", flush=True)
    if args.part in ("ingress", "all"):
        counts = sorted({1, *(int(n) for n in args.replicas.split(","))})
        result["ingress"] = bench_ingress(args.rounds, args.duration, counts)
        print(json.dumps(result["ingress"]["summary"], indent=1),
              f"\nload average before {result['ingress']['load_before']}, after {result['ingress']['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
