"""HTTP benchmark of the issue-14 goals in one run: gradserve in both process designs against a
trivial FastAPI echo endpoint and a transport-floor app, with wrk.

Everything runs side by side on one machine and is measured in rounds; within a round the two
designs alternate (the order flips every round), so a loaded machine weighs on both:

  * ``echo`` (``benchmarks/echo_app.py``) and ``floor`` (``benchmarks/transport_floor_app.py``: the
    MLP binary request in, 2.7 MB out, nothing else), each a bare uvicorn app;
  * gradserve ``--worker-mode process`` (the HTTP process hands every job to an engine process)
    and ``--worker-mode inprocess`` (the supervisor and one HTTP process with its engine inside),
    each ``--workers 1 --device DEVICE``;
  * requests: the tutorial net (``get_all``, by ``network_id``, JSON) at c=1 (p50) and c=16
    (req/s) against the echo given the same body; the MLP (669,706 parameters, by ``network_id``)
    at c=1 with binary inputs and answer, b64 both ways, and JSON both ways, against the warm
    in-process engine call (the same call the worker makes, NumPy in and out), measured in every
    round too.

The goals (issue 14.3): tutorial c=1 p50 <= 2x echo, c=16 >= 70% of echo's req/s, MLP binary <=
1.5x in-process, b64 <= 2x, JSON <= 4x. Each figure is the median of the rounds, with its range;
each ratio is the median of the per-round ratios.

Needs ``wrk`` (Debian package) on PATH. Usage: ``python benchmarks/bench_service.py [--rounds 5]
[--duration 3] [--modes process,inprocess] [--json out.json]``.
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


def stop(procs: list[subprocess.Popen]) -> None:
    """Stop the servers ``start`` started, the last first: SIGTERM, then SIGKILL for one not gone
    after 60 s."""
    for proc in reversed(procs):
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


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


def binary_body(header: dict, tensors: list[np.ndarray]) -> tuple[bytes, int]:
    import orjson

    head = orjson.dumps(header)
    return head + b"".join(np.ascontiguousarray(t).tobytes() for t in tensors), len(head)


MODES = ("process", "inprocess", "inprocess:2")


def parse_mode(spec: str) -> tuple[str, str, int]:
    """``mode[:workers]`` -> (label, worker mode, workers): ``inprocess:2`` runs two serving
    processes (one engine each) on the CPU, as a host with two devices would."""
    mode, _, workers = spec.partition(":")
    n = int(workers or 1)
    return (mode if n == 1 else f"{mode}-w{n}"), mode, n
GOALS = {  # ratio -> (comparison, goal), issue 14.3
    "tutorial_c1_p50_vs_echo": ("<=", 2.0),
    "tutorial_c16_rps_vs_echo": (">=", 0.7),
    "mlp_binary_vs_in_process": ("<=", 1.5),
    "mlp_b64_vs_in_process": ("<=", 2.0),
    "mlp_json_vs_in_process": ("<=", 4.0),
}


#: what no server code can beat, beside the goals: the floor app's p50 with gradserve's own answer
#: bytes, and with the writers' time (the fastest known JSON and base64 encoders) added, over the
#: in-process engine call; and the echo with two processes at c=16 over the echo with one
FLOORS = ("floor_mlp_binary_vs_in_process", "floor_mlp_b64_vs_in_process", "floor_mlp_json_vs_in_process",
          "engine_plus_floor_binary_vs_in_process", "engine_plus_floor_b64_vs_in_process",
          "engine_plus_floor_json_vs_in_process", "engine_plus_floor_plus_writer_b64_vs_in_process",
          "engine_plus_floor_plus_writer_json_vs_in_process", "echo2_c16_rps_vs_echo")


def engine_gradients(mlp: dict) -> list[np.ndarray]:
    """The MLP's gradients (by list: one per parameter), as the engine hands them to the writer."""
    import engine

    engine.configure_jax()  # as the worker does
    net = engine.parse_network(mlp["network"])
    return [np.asarray(g) for g in engine.Engine().grad(net, engine.decode_inputs(mlp["inputs"]),
                                                        get_by_list=True).fields["gradients"]]


class Writers:
    """The answer writers' floor: orjson (numpy in, the fastest JSON writer we know) and pybase64
    on the MLP's gradients, without any of gradserve's framing around them."""

    def __init__(self, gradients: list[np.ndarray]) -> None:
        self.gradients = gradients

    def write(self, encoding: str) -> int:
        import orjson
        import pybase64

        if encoding == "json":
            return len(orjson.dumps(self.gradients, option=orjson.OPT_SERIALIZE_NUMPY))
        return sum(len(pybase64.b64encode(np.ascontiguousarray(g).data)) for g in self.gradients)

    def p50_ms(self, encoding: str, repeats: int) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            self.write(encoding)
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


def load_average() -> float:
    return os.getloadavg()[0]


class InProcessMLP:
    """The warm in-process engine call on the MLP (what the service wraps), on the same kind of
    device as the servers' engines."""

    def __init__(self, device: str = "cpu") -> None:
        import jax

        import engine

        engine.configure_jax()  # as the worker does
        request = json.loads((FIXTURES / "mlp.json").read_text())
        self.net = engine.parse_network(request["network"])
        self.eng = engine.Engine(device=jax.devices(device)[0])
        self.inputs = engine.decode_inputs(request["inputs"])
        for _ in range(5):
            self.eng.grad(self.net, self.inputs, get_by_list=True)

    def p50_ms(self, repeats: int) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            self.eng.grad(self.net, self.inputs, get_by_list=True)
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


def in_process_mlp(repeats: int, device: str = "cpu") -> float:
    """Median ms of the warm in-process engine call on the MLP."""
    return InProcessMLP(device).p50_ms(repeats)


def mlp_bodies(mlp_id: str, mlp: dict) -> dict[str, tuple[bytes, dict[str, str]]]:
    """The MLP request by network_id in each encoding: binary (OIP framing), b64, json."""
    import engine

    x = engine.decode_tensor(mlp["inputs"][0])
    labels = engine.decode_tensor(mlp["inputs"][1])
    head = {"network_id": mlp_id, "get_by_list": True}
    header = {**head, "output_encoding": "binary",
              "inputs": [{"dtype": "float32", "shape": list(x.shape), "binary_data_size": x.nbytes},
                         {"dtype": "float32", "shape": list(labels.shape), "binary_data_size": labels.nbytes}]}
    body, head_len = binary_body(header, [x, labels])
    out = {"binary": (body, {"Content-Type": "application/octet-stream",
                             "Inference-Header-Content-Length": str(head_len)})}
    for enc in ("b64", "json"):
        doc = {**head, "output_encoding": enc, "inputs": [engine.encode_tensor(x, enc), engine.encode_tensor(labels, enc)]}
        import orjson

        out[enc] = (orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), {"Content-Type": "application/json"})
    return out


def _spread(values: list[float]) -> str:
    return f"{min(values):.3g}–{max(values):.3g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every measurement")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="gradserve worker modes to run, each mode[:workers] (comma-separated)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                        help="the servers' engines and the in-process engine run there (deploy/gpu-check.sh: gpu)")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        sys.exit("wrk is not on PATH: apt-get install wrk")
    specs = [parse_mode(m) for m in args.modes.split(",") if m]
    modes = [label for label, _, _ in specs]

    tutorial = json.loads((FIXTURES / "tutorial.json").read_text())["cases"][1]["request"]  # get_all
    mlp = json.loads((FIXTURES / "mlp.json").read_text())
    uvicorn_flags = ["--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"]
    procs: list[subprocess.Popen] = []
    rounds: list[dict[str, dict]] = []
    loads = [load_average()]
    json_headers = {"Content-Type": "application/json"}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ports = {"echo": free_port(), "echo2": free_port(), "floor": free_port()}
            procs.append(start([sys.executable, "-m", "uvicorn", "benchmarks.echo_app:app", "--port",
                                str(ports["echo"]), *uvicorn_flags], f"http://127.0.0.1:{ports['echo']}/docs"))
            # the echo with two processes: the baseline of a gradserve with two serving processes
            procs.append(start([sys.executable, "-m", "uvicorn", "benchmarks.echo_app:app", "--port",
                                str(ports["echo2"]), "--workers", "2", *uvicorn_flags],
                               f"http://127.0.0.1:{ports['echo2']}/docs"))
            bodies: dict[str, dict] = {}
            for mode, worker_mode, workers in specs:
                ports[mode] = free_port()
                procs.append(start(
                    [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(ports[mode]),
                     "--workers", str(workers), "--device", args.device, "--worker-mode", worker_mode,
                     "--registry-path", f"{tmp}/{mode}.sqlite3"],
                    f"http://127.0.0.1:{ports[mode]}/health/ready", env={"GRADSERVE_LOG_LEVEL": "warning"}))
                base = f"http://127.0.0.1:{ports[mode]}"
                tut_id = httpx.post(f"{base}/networks", json=tutorial["network"]).json()["network_id"]
                mlp_id = httpx.post(f"{base}/networks", json=mlp["network"], timeout=60).json()["network_id"]
                tut_body = json.dumps({k: v for k, v in tutorial.items() if k != "network"}
                                      | {"network_id": tut_id}).encode()
                bodies[mode] = {"tutorial": (tut_body, json_headers), **{f"mlp_{k}": v for k, v in
                                                                         mlp_bodies(mlp_id, mlp).items()}}
                for body, headers in bodies[mode].values():  # warm: compiled, and answered 200
                    for _ in range(3 * workers):  # every serving process compiles its own
                        httpx.post(f"{base}/grad", content=body, headers=headers, timeout=120).raise_for_status()
            # Warm at c=16 too: the batched programs (batch sizes 2, 4, 8, 16) compile in the background
            # on their first batches, in every serving process, and must not be compiling in round 1.
            for mode in modes:
                tut_body, tut_headers = bodies[mode]["tutorial"]
                for _ in range(2):
                    wrk(f"http://127.0.0.1:{ports[mode]}/grad", tut_body, 16, 3, tut_headers)
                    time.sleep(3)
            echo_body = bodies[modes[0]]["tutorial"][0]  # the same bytes through the echo endpoint
            # The floor app answers gradserve's own answers, byte for byte, and the writers' floor:
            # the fastest known JSON and base64 writers on the MLP's gradients, in this process.
            floor_dir = Path(tmp, "floor")
            floor_dir.mkdir()
            for enc in ("binary", "b64", "json"):
                body, headers = bodies[modes[0]][f"mlp_{enc}"]
                answer = httpx.post(f"http://127.0.0.1:{ports[modes[0]]}/grad", content=body, headers=headers,
                                    timeout=120)
                (floor_dir / enc).write_bytes(answer.raise_for_status().content)
            procs.append(start([sys.executable, "-m", "uvicorn", "benchmarks.transport_floor_app:app", "--port",
                                str(ports["floor"]), *uvicorn_flags, "--loop", "uvloop", "--http", "httptools"],
                               f"http://127.0.0.1:{ports['floor']}/", env={"GRADSERVE_FLOOR_DIR": str(floor_dir)}))
            writers = Writers(engine_gradients(mlp))
            engine_mlp = InProcessMLP(args.device)
            for r in range(args.rounds):
                order = modes if r % 2 == 0 else modes[::-1]
                got: dict[str, dict] = {"load_average": {"value": load_average()}}

                def grad(mode: str, name: str, conns: int, key: str, got: dict[str, dict] = got) -> None:
                    body, headers = bodies[mode][name]
                    got[f"{mode}_{key}"] = wrk(f"http://127.0.0.1:{ports[mode]}/grad", body, conns,
                                               args.duration, headers)

                for conns in (1, 16):
                    got[f"echo_c{conns}"] = wrk(f"http://127.0.0.1:{ports['echo']}/echo", echo_body, conns,
                                                args.duration, json_headers)
                    for mode in order:
                        grad(mode, "tutorial", conns, f"tutorial_c{conns}")
                got["echo2_c16"] = wrk(f"http://127.0.0.1:{ports['echo2']}/echo", echo_body, 16, args.duration,
                                       json_headers)
                for enc in ("binary", "b64", "json"):
                    floor_body, floor_headers = bodies[modes[0]][f"mlp_{enc}"]
                    got[f"floor_mlp_{enc}_c1"] = wrk(f"http://127.0.0.1:{ports['floor']}/{enc}", floor_body, 1,
                                                     args.duration, floor_headers)
                got["writer_mlp_json"] = {"p50_ms": writers.p50_ms("json", 11)}
                got["writer_mlp_b64"] = {"p50_ms": writers.p50_ms("b64", 11)}
                got["mlp_in_process"] = {"p50_ms": engine_mlp.p50_ms(100)}
                for enc in ("binary", "b64", "json"):
                    for mode in order:
                        grad(mode, f"mlp_{enc}", 1, f"mlp_{enc}_c1")
                got["mlp_in_process_after"] = {"p50_ms": engine_mlp.p50_ms(100)}
                for mode in order:  # the server's own decode time of the b64 body (timing_ms.decode, goal 0.5 ms)
                    body, headers = bodies[mode]["mlp_b64"]
                    with httpx.Client(timeout=60) as c:
                        decode = [c.post(f"http://127.0.0.1:{ports[mode]}/grad", content=body, headers=headers)
                                  .json()["timing_ms"]["decode"] for _ in range(11)]
                    got[f"{mode}_mlp_b64_server_decode"] = {"p50_ms": statistics.median(decode)}
                rounds.append(got)
                loads.append(load_average())
                print(f"round {r + 1}/{args.rounds} done (load average {loads[-1]:.2f})", file=sys.stderr)
        finally:
            stop(procs)

    ratios: dict[str, dict[str, list[float]]] = {mode: {name: [] for name in GOALS} for mode in modes}
    floors: dict[str, list[float]] = {name: [] for name in FLOORS}
    for got in rounds:
        engine_ms = statistics.mean([got["mlp_in_process"]["p50_ms"], got["mlp_in_process_after"]["p50_ms"]])
        for enc in ("binary", "b64", "json"):
            floors[f"floor_mlp_{enc}_vs_in_process"].append(got[f"floor_mlp_{enc}_c1"]["p50_ms"] / engine_ms)
            floors[f"engine_plus_floor_{enc}_vs_in_process"].append(1 + got[f"floor_mlp_{enc}_c1"]["p50_ms"] / engine_ms)
        for enc in ("b64", "json"):
            floors[f"engine_plus_floor_plus_writer_{enc}_vs_in_process"].append(
                1 + (got[f"floor_mlp_{enc}_c1"]["p50_ms"] + got[f"writer_mlp_{enc}"]["p50_ms"]) / engine_ms)
        floors["echo2_c16_rps_vs_echo"].append(got["echo2_c16"]["rps"] / got["echo_c16"]["rps"])
        for mode in modes:
            ratio = ratios[mode]
            ratio["tutorial_c1_p50_vs_echo"].append(got[f"{mode}_tutorial_c1"]["p50_ms"] / got["echo_c1"]["p50_ms"])
            ratio["tutorial_c16_rps_vs_echo"].append(got[f"{mode}_tutorial_c16"]["rps"] / got["echo_c16"]["rps"])
            for enc in ("binary", "b64", "json"):
                ratio[f"mlp_{enc}_vs_in_process"].append(got[f"{mode}_mlp_{enc}_c1"]["p50_ms"] / engine_ms)

    names = [k for k in rounds[0] if k != "load_average"]
    print(f"{args.rounds} rounds of {args.duration} s per wrk run; load average {_spread(loads)} "
          f"(start {loads[0]:.2f}, end {loads[-1]:.2f})\n")
    print("| measurement | p50 ms (median) | p50 range | req/s (median) | req/s range | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        p50 = [g[name]["p50_ms"] for g in rounds]
        rps = [g[name]["rps"] for g in rounds if "rps" in g[name]]
        bad = sum(g[name].get("non_2xx", 0) for g in rounds)
        print(f"| {name} | {statistics.median(p50):.3f} | {_spread(p50)} | "
              + (f"{statistics.median(rps):.0f} | {_spread(rps)} | {bad} |" if rps else "| | |"))
    print()
    print("| ratio | goal | " + " | ".join(f"{m} (median) | {m} range | {m} met" for m in modes) + " |")
    print("|---|---|" + "---:|---:|---|" * len(modes))
    for name, (op, goal) in GOALS.items():
        cells = []
        for mode in modes:
            values = ratios[mode][name]
            median = statistics.median(values)
            met = median <= goal if op == "<=" else median >= goal
            cells.append(f"{median:.2f} | {_spread(values)} | {'yes' if met else 'NO'}")
        print(f"| {name} | {op} {goal} | " + " | ".join(cells) + " |")
    print()
    print("| floor (no gradserve code: what the machine's HTTP and writers cost) | median | range |")
    print("|---|---:|---:|")
    for name, values in floors.items():
        print(f"| {name} | {statistics.median(values):.2f} | {_spread(values)} |")
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "rounds": rounds, "load_average": loads,
                                         "ratios": ratios, "floors": floors, "duration_s": args.duration},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
