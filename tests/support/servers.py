"""Real servers: ``python -m service.cli serve`` in a subprocess on a free port, over HTTP. A pytest
plugin (registered by tests/conftest.py), so its fixtures serve every test directory:

- ``server_factory`` (session): ``server_factory(wait_ready=True, **settings)`` starts a server
  with its own settings (``registry_path`` defaults to a fresh temporary file); every server still
  running at the end of the session is stopped.
- ``live_server`` (session): the shared server. API keys ``KEY_A``, ``KEY_B`` and ``KEY_FUZZ``
  are configured and the limits are lowered (``LIMITS``) so the 413 cases are cheap.

``start_server`` starts one outside the fixtures (the caller stops it). Starting a server costs
about two seconds (the worker imports JAX): start few.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ROOT

KEY_A, KEY_B = "test-key-a", "test-key-b"
KEY_FUZZ = "test-key-fuzz"  # the schema fuzzer's own namespace: what it registers or deletes is its own
#: the shared server's limits (small, so that the 413 tests send little)
LIMITS = {"max_body_bytes": 4_000_000, "max_tensor_elements": 200_000, "max_nodes": 500}
START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    registry_path: Path
    log_path: Path
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=kwargs.pop("timeout", 60.0), **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _children(self) -> list[tuple[int, bytes]]:
        """The server process's direct children and their command lines (read from /proc)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.pid:
                found.append((int(entry.name), cmdline))
        return sorted(found)

    def worker_pids(self) -> list[int]:
        """The engine worker processes of the process design (``worker_mode=process``): the
        server's multiprocessing children. None in the in-process design (see :meth:`engine_pids`)."""
        return [pid for pid, cmd in self._children() if b"multiprocessing" in cmd and b"resource_tracker" not in cmd]

    def serving_pids(self) -> list[int]:
        """The processes that answer HTTP: in the in-process design the supervisor's children
        (``gradserve serve`` each, with its engine inside); in the process design the server itself."""
        return [pid for pid, cmd in self._children() if b"service.cli" in cmd] or [self.pid]

    def serving_pid(self) -> int:
        """The one process that answers HTTP (a server with one device): what a memory check measures."""
        pids = self.serving_pids()
        assert len(pids) == 1, f"{len(pids)} serving processes: {pids}"
        return pids[0]

    def engine_pids(self) -> list[int]:
        """The processes whose engine computes: the worker processes (process design), or the
        serving children, each with its engine on a thread (in-process design)."""
        return self.worker_pids() or [pid for pid in self.serving_pids() if pid != self.pid]

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        self._wait_for_200("ready", timeout, interval=0.1)

    def wait_live(self, timeout: float = START_TIMEOUT_S) -> None:
        self._wait_for_200("live", timeout, interval=0.02)

    def _wait_for_200(self, state: str, timeout: float, interval: float) -> None:
        """Poll ``/health/<state>`` until it answers 200; fail if the server exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/health/{state}", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(interval)
        raise RuntimeError(f"the server is not {state} after {timeout:.0f} s:\n{self.log()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Signal the server and wait for it to exit; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def start_server(directory: Path, *, wait_ready: bool = True, env: dict[str, str] | None = None,
                 **settings: Any) -> LiveServer:
    """Start ``gradserve serve`` with ``settings`` as flags (``registry_path`` defaults to a file in
    ``directory``)."""
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    settings.setdefault("registry_path", directory / "registry.sqlite3")
    settings.setdefault("device", "cpu")
    settings.setdefault("workers", 1)
    # GRADSERVE_TEST_WORKER_MODE=process runs the suite's servers in the other process design than
    # the default (inprocess, issue 14.4), except those a test pins to one
    if os.environ.get("GRADSERVE_TEST_WORKER_MODE"):
        settings.setdefault("worker_mode", os.environ["GRADSERVE_TEST_WORKER_MODE"])
    args = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    for name, value in settings.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    log_path = directory / f"server-{port}.log"
    proc_env = {k: v for k, v in os.environ.items() if not k.startswith("GRADSERVE_")}
    proc_env.update(env or {})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=proc_env)
    server = LiveServer(f"http://127.0.0.1:{port}", process, Path(settings["registry_path"]), log_path, settings)
    try:
        server.wait_ready() if wait_ready else server.wait_live()
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    return server


@dataclass
class Refused:
    returncode: int
    output: str


def start_refused(directory: Path, timeout: float = START_TIMEOUT_S, **settings: Any) -> Refused:
    """Run ``gradserve serve`` with ``settings`` where it must refuse to start: its exit status and
    output (a server that starts instead is killed, and the test fails)."""
    settings.setdefault("device", "cpu")
    settings.setdefault("workers", 1)
    args = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(free_port())]
    for name, value in settings.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADSERVE_")}
    try:
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the server started instead of refusing:\n{exc.stdout}\n{exc.stderr}") from None
    return Refused(done.returncode, (done.stdout or "") + (done.stderr or ""))


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def factory(wait_ready: bool = True, directory: Path | None = None, **settings: Any) -> LiveServer:
        server = start_server(directory or tmp_path_factory.mktemp("server"), wait_ready=wait_ready, **settings)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def live_server(server_factory: Callable[..., LiveServer]) -> LiveServer:
    return server_factory(api_keys=f"{KEY_A},{KEY_B},{KEY_FUZZ}", **LIMITS)
