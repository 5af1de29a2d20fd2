"""``gradserve loadtest URL``: a concurrency sweep against a running service.

For each combination of scenario × encoding × mode, and each concurrency level: scrape
``/metrics``, run the load generator for ``--duration`` seconds (a live progress bar), scrape again.
Then a table per level with the client's figures (requests/s, p50/p90/p99/max latency, errors by
status code) next to the server's own breakdown of the same requests (mean queue, decode, compile,
compute, encode ms and compile-cache hits, from the histogram deltas), as Triton's perf_analyzer
splits client and server time. ``--json``, ``--markdown`` and ``--plot`` keep the figures.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from . import backends, report, server
from .scenarios import (
    DEFAULT_MLP_FILE,
    ENCODINGS,
    Scenario,
    build_scenario,
    prepare,
    registration_body,
)

MODES = ("inline", "network-id")


def _csv(kind, choices: tuple[str, ...] | None = None):
    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        try:
            out = [kind(t) for t in items]
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if choices:
            bad = [t for t in out if t not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"{', '.join(map(str, bad))}: not one of {', '.join(choices)}")
        return out

    return parse


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise ValueError(f"{text}: must be >= 1")
    return v


def _header(text: str) -> tuple[str, str]:
    if ":" not in text:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 'Name: value'")
    k, v = text.split(":", 1)
    return k.strip(), v.strip()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gradserve loadtest",
        description="Concurrency sweep against a running gradserve with an existing load generator "
        "(Locust, or hey); client latency next to the server's own time breakdown from /metrics.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("url", nargs="?", help="base URL of the service, e.g. http://127.0.0.1:8000")
    p.add_argument("--scenario", type=_csv(str), default="tutorial",
                   help="comma-separated: tutorial (seed tutorial net, get_all), mlp (784-512-512-10 "
                   "MLP, get_by_list) or the path of a JSON /grad body")
    p.add_argument("--request", action="append", default=None, metavar="FILE",
                   help="a JSON /grad body to send (repeatable); replaces the default scenario")
    p.add_argument("--mlp-file", default=DEFAULT_MLP_FILE,
                   help="the mlp scenario's request file (relative to the working directory, else to the "
                   "gradserve checkout); a missing file is an error")
    p.add_argument("--encoding", type=_csv(str, ENCODINGS), default="json",
                   help="comma-separated: json, b64, binary (Open Inference Protocol binary extension)")
    p.add_argument("--network-id", action="store_true",
                   help="register the network once (POST /networks) and send only inputs + network_id")
    p.add_argument("--mode", type=_csv(str, MODES), default=None,
                   help="comma-separated: inline, network-id (to compare both; overrides --network-id)")
    p.add_argument("--concurrency", type=_csv(_positive_int), default="1,4,16,64",
                   help="comma-separated concurrency levels (users / workers)")
    p.add_argument("--duration", type=_positive_int, default=10, help="seconds per level")
    p.add_argument("--rate", type=float, default=None,
                   help="fixed total rate in requests/s (open loop bounded by the concurrency: "
                   "Locust constant_throughput(rate/N) per user, hey -q rate/N per worker); "
                   "default: closed loop")
    p.add_argument("--backend", choices=backends.BACKENDS, default="locust",
                   help="load generator (hey needs the hey binary)")
    p.add_argument("--warmup", type=int, default=1,
                   help="requests sent before each combination's sweep (compiles the network); 0: none")
    p.add_argument("--header", type=_header, action="append", default=None, metavar="'NAME: VALUE'",
                   help="extra header on every request (e.g. an API key), repeatable")
    p.add_argument("--api-key", metavar="KEY",
                   help="send 'Authorization: Bearer KEY' (a service started with --api-keys)")
    p.add_argument("--settle", type=float, default=0.5,
                   help="seconds to wait after a level before scraping /metrics again")
    p.add_argument("--stop-timeout", type=float, default=30.0,
                   help="seconds Locust lets in-flight requests finish at the end of a level")
    p.add_argument("--ready-timeout", type=float, default=60.0,
                   help="seconds to wait for GET /health/ready")
    p.add_argument("--json", dest="json_out", metavar="FILE", help="write every figure as JSON")
    p.add_argument("--markdown", dest="md_out", metavar="FILE", help="write the table as Markdown")
    p.add_argument("--plot", dest="plot_out", metavar="FILE",
                   help="PNG of throughput and p50/p99 latency against concurrency")
    p.add_argument("--workdir", metavar="DIR",
                   help="keep the load generator's files (bodies, logs, per-request samples) here")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")
    p.add_argument("--from-json", metavar="FILE",
                   help="no load: print the tables and write --markdown/--plot from an earlier --json")
    return p


def _combinations(args: argparse.Namespace) -> tuple[list[Scenario], list[str]]:
    args.request = args.request or []
    specs = list(args.request) if args.request else list(args.scenario)
    if args.request and args.scenario != ["tutorial"]:
        specs = list(args.scenario) + list(args.request)
    scenarios = [build_scenario(s, args.mlp_file) for s in specs]
    modes = args.mode or (["network-id"] if args.network_id else ["inline"])
    return scenarios, modes


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return None


def _level_progress(progress: Progress, task, duration: int):
    def update(elapsed: float, requests: int, errors: int) -> None:
        if requests < 0:
            info = ""
        else:
            rate = requests / elapsed if elapsed > 0 else 0.0
            info = f"{requests} req  {rate:,.1f} req/s  {errors} err"
        progress.update(task, completed=min(elapsed, duration), info=info)

    return update


def run_sweep(args: argparse.Namespace, doc: dict[str, Any], err_console: Console) -> dict[str, Any]:
    """Run every level, appending each finished one to ``doc["levels"]`` (so that an interrupted
    sweep still reports what it measured)."""
    url = args.url.rstrip("/")
    headers = dict(args.header or [])
    if args.api_key:
        headers.setdefault("Authorization", f"Bearer {args.api_key}")
    scenarios, modes = _combinations(args)
    started = _dt.datetime.now(_dt.UTC)
    config = {
        "url": url,
        "backend": args.backend,
        "scenarios": [s.name for s in scenarios],
        "encodings": list(args.encoding),
        "modes": modes,
        "concurrency": list(args.concurrency),
        "duration": args.duration,
        "rate": args.rate,
        "warmup": args.warmup,
        "command_line": "gradserve loadtest " + shlex.join(args.argv),
    }
    doc.update({
        "tool": "gradserve loadtest",
        "started_at": started.isoformat(timespec="seconds"),
        "config": config,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "loadavg_at_start": _loadavg()},
        "scenarios": {s.name: {"source": s.source} for s in scenarios},
        "levels": [],
    })
    server.wait_ready(url, args.ready_timeout, headers)
    workroot = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gradserve-loadtest-"))
    total_levels = len(scenarios) * len(args.encoding) * len(modes) * len(args.concurrency)
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
        TextColumn("{task.completed:>4.0f}/{task.total:.0f} s"), TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"), console=err_console, disable=args.no_progress,
    )
    n = 0
    try:
        with progress:
            for sc in scenarios:
                for mode in modes:
                    network_id = None
                    if (mode == "network-id" or sc.protocol != "grad") and "network" in sc.request:
                        network_id = server.register_network(url, registration_body(sc.request), headers)
                    for enc in args.encoding:
                        prepared = prepare(sc.request, enc, network_id, sc.protocol)
                        doc["scenarios"][sc.name].setdefault("body_bytes", {})[f"{enc}/{mode}"] = len(prepared.body)
                        for _ in range(max(0, args.warmup)):
                            for attempt in range(10):  # a busy server may say 503: retry
                                status, body = server.send(url, prepared, headers)
                                if status != 503:
                                    break
                                time.sleep(0.2 * (attempt + 1))
                            if status != 200:
                                raise RuntimeError(
                                    f"warm-up {sc.name}/{enc}/{mode}: HTTP {status}: "
                                    f"{body[:400].decode('utf-8', 'replace')}")
                        for conc in args.concurrency:
                            n += 1
                            desc = f"[{n}/{total_levels}] {sc.name}/{enc}/{mode} c={conc}"
                            task = progress.add_task(desc, total=args.duration, info="starting")
                            workdir = workroot / f"{n:02d}-{sc.name}-{enc}-{mode}-c{conc}"
                            before = server.scrape(url, headers)
                            samples = backends.run(
                                args.backend, url, prepared, conc, args.duration, args.rate, workdir,
                                progress=_level_progress(progress, task, args.duration),
                                extra_headers=headers,
                                **({"stop_timeout": args.stop_timeout} if args.backend == "locust" else {}),
                            )
                            time.sleep(max(0.0, args.settle))
                            after = server.scrape(url, headers)
                            client = report.client_figures(samples)
                            level = {
                                "scenario": sc.name, "encoding": enc, "mode": mode,
                                "concurrency": conc, "duration_s": args.duration, "rate": args.rate,
                                "backend": samples.backend, "network_id": network_id,
                                "body_bytes": len(prepared.body),
                                "client": client,
                                "server": report.server_figures(
                                    server.delta(before, after, prepared.meta.get("route", server.GRAD_ROUTE)),
                                    client["requests"]),
                                "command": samples.command,
                                # 1-minute load average after the level (client + server + the rest)
                                "loadavg_1m": _loadavg()[0] if _loadavg() else None,
                                "workdir": str(workdir) if args.workdir else None,
                            }
                            doc["levels"].append(level)
                            progress.update(
                                task, completed=args.duration,
                                info=f"{client['requests']} req  {client['rps']:,.1f} req/s  "
                                f"{client['error_count']} err")
    finally:
        doc["finished_at"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        doc.setdefault("machine", {})["loadavg_at_end"] = _loadavg()
        if not args.workdir:
            import shutil

            shutil.rmtree(workroot, ignore_errors=True)
    return doc


def write_outputs(args: argparse.Namespace, doc: dict[str, Any], console: Console) -> None:
    levels = doc["levels"]
    if not levels:
        return
    report.print_tables(levels, console)
    if args.json_out:
        report.write_json(args.json_out, doc)
        console.print(f"JSON: {args.json_out}")
    if args.md_out:
        Path(args.md_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md_out).write_text(report.markdown(levels, doc["config"], doc.get("machine")))
        console.print(f"Markdown: {args.md_out}")
    if args.plot_out:
        from .plot import plot, title_of

        plot(levels, args.plot_out, title_of(doc))
        console.print(f"Plot: {args.plot_out}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    if args.from_json:
        import json

        console = Console(width=None if sys.stdout.isatty() else 200)
        doc = json.loads(Path(args.from_json).read_text())
        args.json_out = None if args.json_out == args.from_json else args.json_out
        write_outputs(args, doc, console)
        return 0
    if not args.url:
        parser.error("the URL of the service is required (or --from-json FILE)")
    if args.backend == "hey" and backends.hey_path() is None:
        parser.error("--backend hey: the hey binary is not installed (Debian: apt-get install hey)")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be > 0")
    console = Console(width=None if sys.stdout.isatty() else 200)
    err_console = Console(stderr=True)
    doc: dict[str, Any] = {"levels": []}
    code = 0
    try:
        run_sweep(args, doc, err_console)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted: reporting the levels that finished[/]")
        code = 130
    except (RuntimeError, OSError, ValueError) as e:
        err_console.print(f"[red]gradserve loadtest: {e}[/]")
        code = 2
    write_outputs(args, doc, console)
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
