"""Load generators. gradserve does not send the load itself: each level of a sweep runs an
existing tool as a subprocess and reads back one record per request (latency, status code).

- ``locust`` (default, a pip dependency): ``python -m locust -f gradserve_loadtest/locustfile.py
  --headless -u N -r N --stop-timeout S`` with ``FastHttpUser`` users, stopped ``D`` seconds after
  the test starts (by the locustfile: Locust's ``-t`` clock starts before the test does); closed loop
  (``wait_time = constant(0)``) or ``constant_throughput(rate / N)`` per user. Every request's
  latency is Locust's own measurement, taken from its ``request`` event (not its rounded
  percentile histogram).
- ``hey`` (when the ``hey`` binary is on PATH, e.g. Debian's ``/usr/bin/hey``): ``hey -z Ds -c N
  -m POST -D body -o csv`` (``-q rate/N`` per worker for a fixed rate); its CSV has one row per
  answered request with the latency and status code. Transport errors (refused, reset) are not
  in hey's CSV, so they are not counted with this backend.

Requests in flight when the duration ends are completed and counted (Locust: ``--stop-timeout``;
hey waits for its workers), so the tool's count matches the server's own counter.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .scenarios import BINARY_HEADER, REPO_ROOT, PreparedRequest

BACKENDS = ("locust", "hey")
ProgressFn = Callable[[float, int, int], None]  # (elapsed seconds, requests, errors)


@dataclass
class Samples:
    """What one level produced, per request."""

    latency_ms: np.ndarray
    status: np.ndarray  # HTTP status; 0 = transport error
    elapsed_s: float  # wall time the load ran
    command: list[str]
    backend: str
    log_tail: str = ""
    extra: dict = field(default_factory=dict)


class BackendError(RuntimeError):
    pass


def hey_path() -> str | None:
    return shutil.which("hey") or ("/usr/bin/hey" if os.access("/usr/bin/hey", os.X_OK) else None)


def available() -> list[str]:
    return ["locust"] + (["hey"] if hey_path() else [])


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def run_locust(url: str, prepared: PreparedRequest, concurrency: int, duration: int,
               rate: float | None, workdir: Path, progress: ProgressFn | None = None,
               extra_headers: dict[str, str] | None = None, stop_timeout: float = 30.0) -> Samples:
    workdir.mkdir(parents=True, exist_ok=True)
    body_file = workdir / "body.bin"
    body_file.write_bytes(prepared.body)
    samples_file = workdir / "samples.json"
    progress_file = workdir / "progress.json"
    spec = {
        "body_file": str(body_file),
        "headers": {**prepared.headers, **(extra_headers or {})},
        "path": prepared.path,
        "rate_per_user": (rate / concurrency) if rate else None,
        "samples": str(samples_file),
        "progress": str(progress_file),
        "duration": duration,
    }
    spec_file = workdir / "spec.json"
    spec_file.write_text(json.dumps(spec))
    locustfile = Path(__file__).with_name("locustfile.py")
    cmd = [
        sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
        # The locustfile stops the run `duration` s after it starts; -t is only a safety net.
        "-u", str(concurrency), "-r", str(concurrency), "-t", f"{duration + int(stop_timeout) + 30}s",
        "--stop-timeout", f"{stop_timeout:g}", "--host", url.rstrip("/"),
        "--csv", str(workdir / "locust"), "--only-summary", "--exit-code-on-error", "0",
        "--loglevel", "WARNING",
    ]
    env = dict(os.environ)
    env["GRADSERVE_LOADTEST_SPEC"] = str(spec_file)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    log = workdir / "locust.log"
    limit = duration + stop_timeout + 120.0  # start-up (imports) and shutdown included
    with open(log, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=str(workdir))

        def tick(_elapsed: float) -> None:
            if progress is None:
                return
            try:
                p = json.loads(progress_file.read_text())
                started = p.get("t_start") or p.get("now")
                progress(max(0.0, p["now"] - started), int(p["requests"]), int(p["errors"]))
            except (OSError, ValueError, KeyError, TypeError):
                pass

        _supervise(proc, limit, tick, lambda: f"locust did not finish within {limit:.0f} s:\n{_tail(log)}")
    if not samples_file.exists():
        raise BackendError(f"locust exited with {proc.returncode} and wrote no samples:\n{_tail(log)}")
    data = json.loads(samples_file.read_text())
    t_start, t_stop = data.get("t_start"), data.get("t_stop")
    elapsed = (t_stop - t_start) if (t_start and t_stop) else float(duration)
    return Samples(
        latency_ms=np.asarray(data["latency_ms"], float),
        status=np.asarray(data["status"], int),
        elapsed_s=elapsed,
        command=cmd,
        backend="locust",
        log_tail=_tail(log, 2000),
    )


def _supervise(proc: subprocess.Popen, limit_s: float, tick: Callable[[float], None],
               failure: Callable[[], str]) -> float:
    """Wait for a load generator, calling ``tick(elapsed)`` every 0.2 s; kill it past ``limit_s``
    (BackendError with ``failure()``) or when anything interrupts the wait. The seconds it ran."""
    t0 = time.monotonic()
    try:
        while proc.poll() is None:
            elapsed = time.monotonic() - t0
            if elapsed > limit_s:
                proc.kill()
                proc.wait()
                raise BackendError(failure())
            tick(elapsed)
            time.sleep(0.2)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    return time.monotonic() - t0


def run_hey(url: str, prepared: PreparedRequest, concurrency: int, duration: int,
            rate: float | None, workdir: Path, progress: ProgressFn | None = None,
            extra_headers: dict[str, str] | None = None, timeout_s: int = 60) -> Samples:
    hey = hey_path()
    if hey is None:
        raise BackendError("the hey backend needs the 'hey' binary (Debian: apt-get install hey)")
    workdir.mkdir(parents=True, exist_ok=True)
    body_file = workdir / "body.bin"
    body_file.write_bytes(prepared.body)
    headers = {**prepared.headers, **(extra_headers or {})}
    content_type = headers.pop("Content-Type", "application/json")
    cmd = [hey, "-z", f"{duration}s", "-c", str(concurrency), "-m", prepared.method,
           "-T", content_type, "-D", str(body_file), "-t", str(timeout_s), "-o", "csv"]
    if rate:
        cmd += ["-q", f"{rate / concurrency:.6g}"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(url.rstrip("/") + prepared.path)
    out_file = workdir / "hey.csv"
    err_file = workdir / "hey.err"
    with open(out_file, "wb") as out, open(err_file, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)

        def tick(elapsed: float) -> None:
            if progress is not None:
                progress(min(elapsed, float(duration)), -1, -1)  # hey reports nothing until the end

        wall = _supervise(proc, duration + timeout_s + 60, tick, lambda: f"hey did not finish:\n{_tail(err_file)}")
    if proc.returncode != 0:
        raise BackendError(f"hey exited with {proc.returncode}:\n{_tail(err_file)}")
    lat, status, end = parse_hey_csv(out_file.read_text())
    elapsed = float(end.max()) if end.size else float(duration)
    return Samples(lat, status, elapsed if elapsed > 0 else wall, cmd, "hey", _tail(err_file, 2000))


def parse_hey_csv(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hey's ``-o csv``: response-time (s), …, status-code, offset (s since start)."""
    lat, status, end = [], [], []
    for row in csv.DictReader(io.StringIO(text)):
        try:
            rt = float(row["response-time"])
            lat.append(rt * 1000.0)
            status.append(int(row["status-code"]))
            end.append(float(row["offset"]) + rt)
        except (KeyError, TypeError, ValueError):
            continue
    return np.asarray(lat, float), np.asarray(status, int), np.asarray(end, float)


def run(backend: str, *args, **kwargs) -> Samples:
    if backend == "locust":
        return run_locust(*args, **kwargs)
    if backend == "hey":
        return run_hey(*args, **kwargs)
    raise ValueError(f"unknown backend {backend!r}: one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "BINARY_HEADER", "BackendError", "Samples", "available", "run"]
