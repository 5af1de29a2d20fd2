#!/usr/bin/env python3
"""HTTP checks against a running gradserve container, for deploy/container-test.sh.

Standard library only: it runs on the host that drives podman, before (or without) any
virtual environment. Each subcommand checks one thing, prints one line, and exits 0 when the
check passed and 1 (with the reason on stderr) when it did not:

  ready URL [--timeout S]          GET /health/ready until 200; prints the seconds it took
  tutorial URL [--network-id ID]   POST /grad, the seed tutorial: the gradient MindSpore gives
  malformed URL                    bad bodies get their 4xx JSON error; the service stays healthy
  register URL                     POST /networks the tutorial network; prints its network_id
  network URL ID                   GET /networks/ID answers 200 with that id
  wait-busy URL [--timeout S]      /metrics: worker 0 holds a job (queued or running)
  slow URL                         POST /grad, a network that takes seconds to compile: 200
  draining URL                     a new POST /grad gets 503 "draining" with Retry-After

The tutorial network and its expected gradient are written out here (not read from a fixture
file), so the script needs nothing but the repository's deploy/ folder.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import urllib.error
import urllib.request
from typing import Any

TUTORIAL_NETWORK: dict[str, Any] = {
    "format": "gradnet/1",
    "name": "tutorial-net",
    "inputs": [{"name": "x"}, {"name": "y"}],
    "parameters": [
        {"name": "z", "value": {"dtype": "float32", "shape": [1], "data": [1.0]}, "requires_grad": True}
    ],
    "nodes": [
        {"name": "xz", "op": "Mul", "inputs": ["x", "z"]},
        {"name": "out", "op": "MatMul", "inputs": ["xz", "y"]},
    ],
    "outputs": ["out"],
}
TUTORIAL_INPUTS = [
    {"dtype": "float32", "shape": [2, 3], "data": [0.8, 0.6, 0.2, 1.8, 1.3, 1.1]},
    {"dtype": "float32", "shape": [3, 3], "data": [0.11, 3.3, 1.1, 1.1, 0.2, 1.4, 1.1, 2.2, 0.3]},
]
# d(out)/dx with z = 1 is the row sums of y, repeated for both rows of x; MindSpore prints
# [[4.5099998 2.7 3.6000001] [4.5099998 2.7 3.6000001]] (the tutorial's first result).
TUTORIAL_GRADIENT = [4.51, 2.7, 3.6, 4.51, 2.7, 3.6]


class CheckFailed(Exception):
    pass


def request(method: str, url: str, body: bytes | None = None, *, timeout: float = 30.0,
            content_type: str = "application/json") -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body); an HTTP error status is an answer, not an exception."""
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def post_json(url: str, doc: Any, *, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    return request("POST", url, json.dumps(doc).encode(), timeout=timeout)


def parse(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise CheckFailed(f"{what}: the answer is not JSON ({exc}): {body[:300]!r}") from None


def flat(data: Any) -> list[float]:
    if isinstance(data, list):
        return [v for item in data for v in flat(item)]
    return [float(data)]


def check_tutorial_answer(status: int, body: bytes, what: str) -> dict[str, Any]:
    if status != 200:
        raise CheckFailed(f"{what}: status {status}: {body[:500]!r}")
    doc = parse(body, what)
    grad = doc.get("gradients")
    if not isinstance(grad, dict) or grad.get("shape") != [2, 3] or grad.get("dtype") != "float32":
        raise CheckFailed(f"{what}: unexpected gradients field: {json.dumps(grad)[:300]}")
    got = flat(grad["data"])
    if len(got) != 6 or not all(math.isclose(g, e, rel_tol=1e-5) for g, e in zip(got, TUTORIAL_GRADIENT)):
        raise CheckFailed(f"{what}: gradients {got}, expected {TUTORIAL_GRADIENT}")
    return doc


def check_error(status: int, body: bytes, want_status: int, what: str) -> str:
    """The error shape of API.md §5: {"error": {"code", "message", ...}} with the expected status."""
    if status != want_status:
        raise CheckFailed(f"{what}: status {status}, expected {want_status}: {body[:300]!r}")
    doc = parse(body, what)
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict) or not err.get("code") or not err.get("message"):
        raise CheckFailed(f"{what}: not a JSON error {{'error': {{code, message}}}}: {body[:300]!r}")
    return str(err["code"])


def cmd_ready(args: argparse.Namespace) -> str:
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status, _, body = request("GET", args.url + "/health/ready", timeout=2)
            if status == 200:
                return f"200 after {time.monotonic() - t0:.1f} s"
            last = f"status {status}: {body[:200]!r}"
        except OSError as exc:  # refused while the server starts
            last = repr(exc)
        time.sleep(0.1)
    raise CheckFailed(f"/health/ready not 200 after {args.timeout:.0f} s (last: {last})")


def cmd_tutorial(args: argparse.Namespace) -> str:
    if args.network_id:
        body = {"network_id": args.network_id, "inputs": TUTORIAL_INPUTS}
        what = f"POST /grad network_id={args.network_id}"
    else:
        body = {"network": TUTORIAL_NETWORK, "inputs": TUTORIAL_INPUTS}
        what = "POST /grad (tutorial, inline)"
    status, _, raw = post_json(args.url + "/grad", body, timeout=60)
    doc = check_tutorial_answer(status, raw, what)
    return f"200, gradients {flat(doc['gradients']['data'])[:3]}..."


def cmd_malformed(args: argparse.Namespace) -> str:
    seen = []
    status, _, raw = request("POST", args.url + "/grad", b'{"network": {"format": ', timeout=30)
    seen.append(f"truncated JSON -> 400 {check_error(status, raw, 400, 'truncated JSON body')}")
    bad_op = json.loads(json.dumps(TUTORIAL_NETWORK))
    bad_op["nodes"][1]["op"] = "NoSuchOp"
    status, _, raw = post_json(args.url + "/grad", {"network": bad_op, "inputs": TUTORIAL_INPUTS})
    seen.append(f"unknown op -> 422 {check_error(status, raw, 422, 'unknown op')}")
    # still healthy: ready, and the tutorial still right
    status, _, raw = request("GET", args.url + "/health/ready", timeout=10)
    if status != 200:
        raise CheckFailed(f"/health/ready after the bad bodies: {status} {raw[:200]!r}")
    status, _, raw = post_json(args.url + "/grad", {"network": TUTORIAL_NETWORK, "inputs": TUTORIAL_INPUTS})
    check_tutorial_answer(status, raw, "POST /grad after the bad bodies")
    return "; ".join(seen) + "; then ready 200 and the tutorial 200"


def cmd_register(args: argparse.Namespace) -> str:
    status, _, raw = post_json(args.url + "/networks", TUTORIAL_NETWORK)
    if status not in (200, 201):
        raise CheckFailed(f"POST /networks: status {status}: {raw[:300]!r}")
    net_id = parse(raw, "POST /networks").get("network_id", "")
    if not str(net_id).startswith("sha256:"):
        raise CheckFailed(f"POST /networks: no network_id in {raw[:300]!r}")
    return str(net_id)


def cmd_network(args: argparse.Namespace) -> str:
    status, _, raw = request("GET", f"{args.url}/networks/{args.id}", timeout=30)
    if status != 200:
        raise CheckFailed(f"GET /networks/{args.id}: status {status}: {raw[:300]!r}")
    doc = parse(raw, "GET /networks/{id}")
    if doc.get("network_id", args.id) != args.id:
        raise CheckFailed(f"GET /networks/{args.id} answered another id: {raw[:300]!r}")
    return "200"


def queue_depth(url: str) -> float:
    _, _, raw = request("GET", url + "/metrics", timeout=5)
    for line in raw.decode().splitlines():
        if line.startswith('gradserve_worker_queue_depth{worker="0"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def cmd_wait_busy(args: argparse.Namespace) -> str:
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if queue_depth(args.url) >= 1:
            return "worker 0 holds a job"
        time.sleep(0.02)
    raise CheckFailed(f"worker 0 had no job within {args.timeout:.0f} s")


def slow_network(n: int) -> dict[str, Any]:
    """A chain of n element-wise nodes: its gradient takes seconds to compile on a CPU. The caller
    varies n: a parameter's value is no part of the compiled program, so only a different graph
    misses the compile caches (in memory and the persistent one in /data/xla-cache)."""
    ops = ("Sin", "Tanh", "Cos", "Sigmoid")
    nodes, prev = [], "x"
    for i in range(n):
        op_inputs = [prev, "w"] if i % 5 == 4 else [prev]
        nodes.append({"name": f"n{i}", "op": "Mul" if i % 5 == 4 else ops[i % 4], "inputs": op_inputs})
        prev = f"n{i}"
    return {
        "format": "gradnet/1",
        "name": f"slow-chain-{n}",
        "inputs": [{"name": "x"}],
        "parameters": [{"name": "w", "value": {"dtype": "float32", "shape": [1], "data": [1.0]}}],
        "nodes": nodes,
        "outputs": [prev],
    }


def cmd_slow(args: argparse.Namespace) -> str:
    body = {"network": slow_network(args.nodes + time.time_ns() % 97),
            "inputs": [{"dtype": "float32", "shape": [4, 4], "data": [0.5] * 16}],
            "timeout_ms": 110_000}  # the server's default deadline (30 s) is too short on a busy machine
    t0 = time.monotonic()
    status, _, raw = post_json(args.url + "/grad", body, timeout=120)
    took = time.monotonic() - t0
    if status != 200:
        raise CheckFailed(f"slow POST /grad: status {status} after {took:.1f} s: {raw[:300]!r}")
    doc = parse(raw, "slow POST /grad")
    if doc.get("gradients", {}).get("shape") != [4, 4]:
        raise CheckFailed(f"slow POST /grad: unexpected gradients: {raw[:300]!r}")
    return f"200 after {took:.1f} s (compile {doc.get('timing_ms', {}).get('compile')} ms)"


def cmd_draining(args: argparse.Namespace) -> str:
    status, headers, raw = post_json(args.url + "/grad", {"network": TUTORIAL_NETWORK, "inputs": TUTORIAL_INPUTS})
    code = check_error(status, raw, 503, "POST /grad while draining")
    if code != "draining" or int(headers.get("retry-after", "0")) < 1:
        raise CheckFailed(f"POST /grad while draining: code {code!r}, Retry-After {headers.get('retry-after')!r}")
    return "503 draining, Retry-After " + headers["retry-after"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in [("ready", cmd_ready), ("tutorial", cmd_tutorial), ("malformed", cmd_malformed),
                     ("register", cmd_register), ("network", cmd_network), ("wait-busy", cmd_wait_busy),
                     ("slow", cmd_slow), ("draining", cmd_draining)]:
        p = sub.add_parser(name)
        p.add_argument("url")
        p.set_defaults(fn=fn)
        if name in ("ready", "wait-busy"):
            p.add_argument("--timeout", type=float, default=120.0 if name == "ready" else 30.0)
        if name == "tutorial":
            p.add_argument("--network-id")
        if name == "network":
            p.add_argument("id")
        if name == "slow":
            p.add_argument("--nodes", type=int, default=400)
    args = parser.parse_args(argv)
    args.url = args.url.rstrip("/")
    try:
        print(args.fn(args), flush=True)
    except (CheckFailed, OSError) as exc:
        print(f"FAILED {args.command}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
