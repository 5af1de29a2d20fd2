"""ONNX import and gradients through the service against torch.autograd in-process.

Measured in one run on one machine:

* **import**: ``engine.onnx.import_model`` in-process on every fixture of ``tests/fixtures/onnx``
  (median of ``--import-repeat``; parse, checker, shape inference, conversion) and, for the models
  of the gradient table, ``POST /networks`` with ``Content-Type: application/onnx`` on a fresh
  server (the first registration: import, network parse, registry write, HTTP);
* **gradient**: ``/grad`` by ``network_id`` with ``get_all`` and ``get_by_list`` (every input and
  every trainable initializer), binary encoding, warm (compiled), p50 over ``--repeat`` calls
  through :class:`gradserve_client.GradClient` (and, for scale, the same call on a warm in-process
  ``engine.Engine``), against the p50 of one forward and
  ``torch.autograd.grad`` of the same model in-process (``benchmarks/onnx_torch_side.py``, run by
  ``--torch-python``), as the ratio service / torch.

The service side runs with this project's environment; the torch side in a Python that has
PyTorch (default ``/work/torchvenv/bin/python``), never a dependency of gradserve. Usage::

    .venv/bin/python benchmarks/bench_onnx.py [--exporter dynamo] [--repeat 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
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
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
import engine.onnx  # noqa: E402
from gradserve_client import GradClient  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "onnx"
#: the torch models of tools/onnx_oracle.py that the gradient table compares
MODELS = ["mlp", "cnn", "resblock", "stem", "decoder", "transformer", "lstm", "gru", "embedding", "activations"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(directory: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADSERVE_")}
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu", "--workers", "1", "--registry-path", str(directory / "registry.sqlite3"),
                             "--log-level", "warning"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server is not ready after 120 s")


def time_imports(repeat: int) -> dict[str, float]:
    out = {}
    for path in sorted(FIXTURES.glob("*.onnx")):
        body = path.read_bytes()
        engine.onnx.import_model(body)  # first call: imports, JAX's shape evaluation warmed
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            engine.onnx.import_model(body)
            times.append((time.perf_counter() - t) * 1e3)
        out[path.name[: -len(".onnx")]] = statistics.median(times)
    return out


def time_service(url: str, exporter: str, models: list[str], repeat: int) -> dict[str, dict]:
    out = {}
    with GradClient(url, timeout=120) as gs, httpx.Client(base_url=url, timeout=120) as http:
        for name in models:
            case = f"{name}.{exporter}"
            body = (FIXTURES / f"{case}.onnx").read_bytes()
            t = time.perf_counter()
            r = http.post("/networks", content=body, headers={"Content-Type": "application/onnx"})
            register_ms = (time.perf_counter() - t) * 1e3
            r.raise_for_status()
            info = r.json()
            golden = np.load(FIXTURES / f"{case}.npz")
            inputs = [golden[f"input/{i['name']}"] for i in info["inputs"]]
            t = time.perf_counter()
            gs.grad(info["network_id"], inputs, get_all=True, get_by_list=True, encoding="binary")
            first_ms = (time.perf_counter() - t) * 1e3
            for _ in range(5):
                gs.grad(info["network_id"], inputs, get_all=True, get_by_list=True, encoding="binary")
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                gs.grad(info["network_id"], inputs, get_all=True, get_by_list=True, encoding="binary")
                times.append((time.perf_counter() - t) * 1e3)
            out[name] = {"bytes": len(body), "register_ms": register_ms, "first_grad_ms": first_ms,
                         "p50_ms": statistics.median(times), "min_ms": min(times),
                         "parameters": len(info["parameters"])}
    return out


def time_engine(exporter: str, models: list[str], repeat: int) -> dict[str, float]:
    """The same call on a warm in-process ``engine.Engine`` (no HTTP, no worker): the service's
    share of the ratio is the difference."""
    eng = engine.Engine(cache_size=64)
    out = {}
    for name in models:
        case = f"{name}.{exporter}"
        net = engine.parse_network(engine.onnx.import_model((FIXTURES / f"{case}.onnx").read_bytes()))
        golden = np.load(FIXTURES / f"{case}.npz")
        inputs = [golden[f"input/{spec.name}"] for spec in net.inputs]
        for _ in range(5):
            eng.grad(net, inputs, get_all=True, get_by_list=True)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            eng.grad(net, inputs, get_all=True, get_by_list=True)
            times.append((time.perf_counter() - t) * 1e3)
        out[name] = statistics.median(times)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exporter", default="dynamo", choices=["dynamo", "dynamo_noopt", "torchscript"])
    parser.add_argument("--repeat", type=int, default=50, help="timed /grad and torch calls per model")
    parser.add_argument("--import-repeat", type=int, default=5, help="timed imports per fixture")
    parser.add_argument("--torch-python", default="/work/torchvenv/bin/python")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)

    engine.configure_jax()
    load_before = os.getloadavg()
    imports = time_imports(args.import_repeat)
    nodes = {c: len(engine.onnx.import_model((FIXTURES / f"{c}.onnx").read_bytes())["nodes"]) for c in imports}
    torch_side = json.loads(subprocess.run(
        [args.torch_python, str(ROOT / "benchmarks" / "onnx_torch_side.py"), "--repeat", str(args.repeat),
         "--threads", str(args.torch_threads), *args.models],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    in_process = time_engine(args.exporter, args.models, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            service = time_service(url, args.exporter, args.models, args.repeat)
        finally:
            proc.terminate()
            proc.wait(60)

    load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} on {os.cpu_count()} CPUs")
    print(f"import (engine.onnx.import_model, median of {args.import_repeat}):")
    print(f"{'fixture':34} {'nodes':>6} {'ms':>8}")
    for case, ms in imports.items():
        print(f"{case:34} {nodes[case]:>6} {ms:8.1f}")
    print(f"\n/grad by network_id (get_all + get_by_list, binary, warm p50 of {args.repeat}) vs torch {torch_side['torch']} "
          f"autograd in-process ({torch_side['threads']} thread), exporter {args.exporter}:")
    print(f"{'model':12} {'nodes':>5} {'params':>6} {'register ms':>11} {'1st grad ms':>11} {'engine ms':>9} "
          f"{'service ms':>10} {'torch ms':>9} {'ratio':>7}")
    for name in args.models:
        s, t = service[name], torch_side[name]
        s["nodes"] = nodes[f"{name}.{args.exporter}"]
        s["torch_p50_ms"] = t["p50_ms"]
        s["engine_p50_ms"] = in_process[name]
        s["ratio"] = s["p50_ms"] / t["p50_ms"]
        print(f"{name:12} {s['nodes']:>5} {s['parameters']:>6} {s['register_ms']:11.1f} {s['first_grad_ms']:11.1f} "
              f"{s['engine_p50_ms']:9.2f} {s['p50_ms']:10.2f} {t['p50_ms']:9.3f} {s['ratio']:7.1f}")
    if args.json:
        args.json.write_text(json.dumps({"imports_ms": imports, "nodes": nodes, "service": service,
                                         "torch": torch_side, "exporter": args.exporter,
                                         "loadavg": [load_before, load_after]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
