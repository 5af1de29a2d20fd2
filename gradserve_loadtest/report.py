"""Figures of a level (client side from the load generator's per-request samples, server side
from the ``/metrics`` delta), and their forms: rich tables, Markdown, JSON."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from .backends import Samples
from .server import STAGES

PERCENTILES = (50, 90, 95, 99)


def latency_stats(lat: np.ndarray) -> dict[str, float | None]:
    if lat.size == 0:
        return {"min": None, "mean": None, **{f"p{q}": None for q in PERCENTILES}, "max": None}
    out: dict[str, float | None] = {"min": float(lat.min()), "mean": float(lat.mean())}
    for q in PERCENTILES:
        out[f"p{q}"] = float(np.percentile(lat, q))
    out["max"] = float(lat.max())
    return out


def client_figures(s: Samples) -> dict[str, Any]:
    """Client-side figures. Latency percentiles are over the successful (200) requests; an error
    is counted by status code (``0``: transport error, no HTTP answer), never folded in."""
    n = int(s.status.size)
    ok_mask = s.status == 200
    ok = int(ok_mask.sum())
    counts = Counter(s.status[~ok_mask].tolist())
    # HTTP codes in order, then transport errors (0)
    errors = {str(code): int(counts[code]) for code in sorted(counts, key=lambda c: (c == 0, c))}
    el = s.elapsed_s if s.elapsed_s > 0 else 1e-9
    return {
        "requests": n,
        "ok": ok,
        "errors": errors,
        "error_count": n - ok,
        "elapsed_s": s.elapsed_s,
        "rps": n / el if n else 0.0,
        "ok_rps": ok / el if ok else 0.0,
        "latency_ms": latency_stats(s.latency_ms[ok_mask]),
        "latency_all_ms": latency_stats(s.latency_ms),
    }


def server_figures(delta: dict[str, Any], tool_requests: int) -> dict[str, Any]:
    """Mean server time per request and stage, from the histogram deltas (``sum / count`` of each
    ``gradserve_<stage>_seconds``), and how the server's POST /grad count compares with ours."""
    out = dict(delta)
    stages = delta.get("stages", {})
    out["mean_ms"] = {st: (stages.get(st) or {}).get("mean_ms") for st in STAGES}
    # The compile histogram is observed on compile-cache misses only: its own mean is the time of
    # one compile. Per request, the compile time is amortised over the requests that ran.
    compile_, compute = stages.get("compile") or {}, stages.get("compute") or {}
    if compute.get("count"):
        out["mean_ms"]["compile"] = (compile_.get("sum_s") or 0.0) / compute["count"] * 1000.0
    out["compiles"] = compile_.get("count")
    out["mean_ms_per_compile"] = compile_.get("mean_ms")
    server_n = delta.get("requests_total")
    out["count_check"] = {
        "tool": tool_requests,
        "server": None if server_n is None else int(round(server_n)),
        "diff": None if server_n is None else int(round(server_n)) - tool_requests,
    }
    return out


def _ms(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "–"
    if v < 10 and digits < 2:
        return f"{v:.2f}"
    return f"{v:.{digits}f}"


def _errors(errors: dict[str, int]) -> str:
    if not errors:
        return "0"
    return ", ".join(f"{code}×{n}" if code != "0" else f"conn×{n}" for code, n in errors.items())


def _label(level: dict[str, Any]) -> list[str]:
    return [level["scenario"], level["encoding"], level["mode"], str(level["concurrency"])]


CLIENT_COLUMNS = ["scenario", "encoding", "mode", "conc.", "requests", "req/s", "p50 ms", "p90 ms",
                  "p99 ms", "max ms", "errors"]
SERVER_COLUMNS = ["scenario", "encoding", "mode", "conc.", "server /grad", "queue ms", "decode ms",
                  "compile ms", "compute ms", "encode ms", "cache hits", "cache misses"]


def client_row(level: dict[str, Any]) -> list[str]:
    c = level["client"]
    lat = c["latency_ms"]
    return _label(level) + [
        str(c["requests"]), f"{c['rps']:.1f}", _ms(lat["p50"]), _ms(lat["p90"]), _ms(lat["p99"]),
        _ms(lat["max"]), _errors(c["errors"]),
    ]


def server_row(level: dict[str, Any]) -> list[str]:
    s = level["server"]
    if not s.get("scrape_ok", False):
        return _label(level) + ["no /metrics"] + ["–"] * 7
    cc = s["count_check"]
    count = "–" if cc["server"] is None else str(cc["server"])
    means = [_ms(s["mean_ms"][st], 2) for st in STAGES]

    def num(v: float | None) -> str:
        return "–" if v is None else str(int(round(v)))

    return _label(level) + [count, *means, num(s.get("cache_hits")), num(s.get("cache_misses"))]


def tables(levels: list[dict[str, Any]]) -> tuple[Table, Table]:
    client = Table(title="Client (load generator): per level", title_justify="left")
    for i, col in enumerate(CLIENT_COLUMNS):
        client.add_column(col, justify="left" if i < 3 else "right", no_wrap=True)
    server = Table(title="Server (/metrics delta around each level): mean ms per request",
                   title_justify="left")
    for i, col in enumerate(SERVER_COLUMNS):
        server.add_column(col, justify="left" if i < 3 else "right", no_wrap=True)
    for level in levels:
        client.add_row(*client_row(level))
        server.add_row(*server_row(level))
    return client, server


def print_tables(levels: list[dict[str, Any]], console: Console) -> None:
    client, server = tables(levels)
    console.print(client)
    console.print(server)


def markdown(levels: list[dict[str, Any]], config: dict[str, Any] | None = None,
             machine: dict[str, Any] | None = None) -> str:
    """One Markdown table, a row per level: client figures, then the server's breakdown."""
    cols = ["scenario", "encoding", "mode", "concurrency", "requests", "req/s", "p50 ms", "p90 ms",
            "p99 ms", "max ms", "errors", "server queue ms", "decode ms", "compile ms", "compute ms",
            "encode ms", "cache hits"]
    lines = []
    machine = (machine or {})
    if config:
        lines.append(f"`{config.get('command_line', '')}`")
        lines.append("")
        lines.append(
            f"backend {config.get('backend')}, {config.get('duration')} s per level, "
            + ("closed loop" if not config.get("rate") else f"fixed rate {config['rate']} req/s")
            + "; latency percentiles over successful (200) requests; server columns are means per"
            " request from the /metrics delta around each level."
        )
        if machine.get("cpus"):
            load = ""
            if machine.get("loadavg_at_start") and machine.get("loadavg_at_end"):
                load = (f", 1-minute load average {machine['loadavg_at_start'][0]:g} at the start and "
                        f"{machine['loadavg_at_end'][0]:g} at the end")
            from urllib.parse import urlsplit

            local = urlsplit(config.get("url", "")).hostname in ("127.0.0.1", "localhost", "::1")
            where = "Client and server on one machine" if local else "Client machine"
            lines.append(f"{where}: {machine['cpus']} CPUs{load}.")
        lines.append("")
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" if i < 3 else "---:" for i in range(len(cols))) + "|")
    for level in levels:
        c = client_row(level)
        s = server_row(level)
        row = c[:11] + s[5:10] + [s[10]]
        lines.append("| " + " | ".join(x.replace("|", "/") for x in row) + " |")
    return "\n".join(lines) + "\n"


def write_json(path: str | Path, doc: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=2, allow_nan=False, default=_default) + "\n")


def _default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
