"""The app's own part of a ``POST /grad``: the real gradserve ASGI app (its lifespan, pool and
engine) driven directly, with no HTTP server, socket or load generator in between.

What it measures is what gradserve's code costs per request beyond uvicorn's, in one process, so
that a change to the hot path can be compared on a loaded machine by alternating two checkouts
(``git worktree add /tmp/base <rev>`` and running this file from each tree, whose package it
imports). ``--profile`` adds cProfile's table (which roughly doubles every Python-level cost).

Usage: ``python benchmarks/bench_asgi.py [--request tutorial|binary|b64|json] [--calls 5000]
[--worker-mode inprocess|process] [--profile] [--top 35]``
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path.cwd()  # the checkout whose package is measured (run from its root)
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


class DirectClient:
    """ASGI calls straight into ``app``: a request's whole body in one message, as uvicorn hands
    a small body over; the answer's messages collected."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def call(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> list[dict]:
        sent: list[dict] = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            if messages:
                return messages.pop()
            await asyncio.sleep(3600)  # the client stays: no disconnect
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        raw = [(b"host", b"bench"), (b"content-length", str(len(body)).encode())]
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": raw, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}}
        await self.app(scope, receive, send)
        return sent

    async def lifespan(self) -> None:
        started = asyncio.Event()
        queue: asyncio.Queue[dict] = asyncio.Queue()
        await queue.put({"type": "lifespan.startup"})

        async def send(message: dict) -> None:
            if message["type"] == "lifespan.startup.failed":
                raise SystemExit(f"the app did not start: {message}")
            if message["type"] == "lifespan.startup.complete":
                started.set()

        self._lifespan = asyncio.ensure_future(self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                                        queue.get, send))
        await started.wait()
        for _ in range(600):  # the workers start
            if (await self.call("GET", "/health/ready"))[0]["status"] == 200:
                return
            await asyncio.sleep(0.1)
        raise SystemExit("the app was not ready after 60 s")


def request(client: DirectClient, kind: str) -> Any:
    """The body and headers of the measured request, its network registered first."""
    fixtures = ROOT / "tests" / "fixtures"

    async def build() -> tuple[bytes, dict[str, str]]:
        if kind == "tutorial":
            tutorial = json.loads((fixtures / "tutorial.json").read_text())["cases"][1]["request"]  # get_all
            sent = await client.call("POST", "/networks", json.dumps(tutorial["network"]).encode(),
                                     {"content-type": "application/json"})
            doc = {k: v for k, v in tutorial.items() if k != "network"}
            doc["network_id"] = json.loads(sent[1]["body"])["network_id"]
            return json.dumps(doc).encode(), {"content-type": "application/json"}
        from bench_service import mlp_bodies  # noqa: PLC0415 - the bodies bench_service sends

        mlp = json.loads((fixtures / "mlp.json").read_text())
        sent = await client.call("POST", "/networks", json.dumps(mlp["network"]).encode(),
                                 {"content-type": "application/json"})
        return mlp_bodies(json.loads(sent[1]["body"])["network_id"], mlp)[kind]

    return build()


async def main(args: argparse.Namespace) -> int:
    from service.http.app import create_app  # noqa: PLC0415
    from service.settings import Settings  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(device="cpu", workers=1, worker_mode=args.worker_mode,
                            registry_path=Path(tmp, "registry.sqlite3"))
        client = DirectClient(create_app(settings))
        await client.lifespan()
        body, headers = await request(client, args.request)
        for _ in range(max(20, args.calls // 10)):  # compiled, warm, and answered 200
            sent = await client.call("POST", "/grad", body, headers)
        if sent[0]["status"] != 200:
            raise SystemExit(f"/grad answered {sent[0]['status']}: {sent[1:]}")
        profile = cProfile.Profile() if args.profile else None
        wall, cpu = time.perf_counter(), time.process_time()
        if profile is not None:
            profile.enable()
        for _ in range(args.calls):
            await client.call("POST", "/grad", body, headers)
        if profile is not None:
            profile.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{ROOT.name} {args.worker_mode} {args.request}: {wall / args.calls * 1e6:.1f} µs wall, "
              f"{cpu / args.calls * 1e6:.1f} µs CPU of this process per /grad ({args.calls} calls, "
              f"load average {os.getloadavg()[0]:.2f})", flush=True)
        if profile is not None:
            pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
        os._exit(0)  # the pool's workers and threads go with the process


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--request", choices=["tutorial", "binary", "b64", "json"], default="tutorial")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--worker-mode", choices=["inprocess", "process"], default="inprocess")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=35)
    import uvloop  # the server's loop (service/cli.py)

    sys.exit(uvloop.run(main(parser.parse_args())))
