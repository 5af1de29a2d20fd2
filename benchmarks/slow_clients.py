"""Latency of a normal ``/grad`` while slow clients hold connections (issue 12, point 1).

Starts ``gradserve serve`` (one CPU worker, default settings unless given), opens ``--slow-headers``
connections that send half a request head and then one byte a second, and ``--slow-bodies``
connections that send a whole head and then trickle the body one byte a second, and meanwhile
sends ``--requests`` tutorial ``/grad`` requests one after the other on one keep-alive connection.
Prints the statuses and the latency percentiles as JSON; docs/reliability.md quotes them.

    .venv/bin/python benchmarks/slow_clients.py --requests 2000
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import FIXTURES  # noqa: E402
from tests.support.servers import start_server  # noqa: E402


def _trickle(sockets: list[socket.socket], stop: threading.Event, counts: Counter) -> None:
    """One byte a second on each socket; a socket the server closed (or answered) is counted."""
    alive = list(sockets)
    while alive and not stop.wait(1.0):
        for s in list(alive):
            try:
                s.setblocking(False)
                try:
                    if s.recv(4096) is not None:
                        counts["answered or closed by the server"] += 1
                        alive.remove(s)
                        continue
                except BlockingIOError:
                    pass
                s.send(b"a")
            except OSError:
                counts["answered or closed by the server"] += 1
                alive.remove(s)
    counts["still open at the end"] += len(alive)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slow-headers", type=int, default=200)
    parser.add_argument("--slow-bodies", type=int, default=64)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a server setting, e.g. body_timeout_s=30")
    args = parser.parse_args()
    settings = dict(s.split("=", 1) for s in args.setting)
    request = json.loads((FIXTURES / "tutorial.json").read_text())["cases"][0]["request"]
    body = json.dumps(request).encode()
    server = start_server(Path(tempfile.mkdtemp()), **settings)
    try:
        import httpx  # noqa: PLC0415

        parts = urlsplit(server.url)
        addr = (parts.hostname, parts.port)
        with httpx.Client(base_url=server.url) as c:
            assert c.post("/grad", json=request).status_code == 200  # compiled
            slow: list[socket.socket] = []
            for _ in range(args.slow_headers):
                s = socket.create_connection(addr)
                s.sendall(b"POST /grad HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                slow.append(s)
            for _ in range(args.slow_bodies):
                s = socket.create_connection(addr)
                s.sendall(b"POST /grad HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(body) + body[:1])
                slow.append(s)
            stop, counts = threading.Event(), Counter()
            trickler = threading.Thread(target=_trickle, args=(slow, stop, counts), daemon=True)
            trickler.start()
            time.sleep(0.5)
            statuses: Counter = Counter()
            latencies = []
            t_start = time.monotonic()
            for _ in range(args.requests):
                t0 = time.perf_counter()
                r = c.post("/grad", content=body, headers={"Content-Type": "application/json"})
                latencies.append((time.perf_counter() - t0) * 1e3)
                statuses[r.status_code] += 1
            took = time.monotonic() - t_start
            stop.set()
            trickler.join(5)
            for s in slow:
                s.close()
        ms = np.array(latencies)
        print(json.dumps({
            "slow_headers": args.slow_headers, "slow_bodies": args.slow_bodies, "settings": settings,
            "requests": args.requests, "seconds": round(took, 1), "statuses": dict(statuses),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "max_ms": round(float(ms.max()), 2), "slow_connections": dict(counts),
        }, indent=2))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
