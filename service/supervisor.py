"""The supervisor of ``worker_mode=inprocess`` (issue 14.4): one HTTP process per device, each
with its engine inside, sharing one listening socket; one that dies is started again.

``gradserve serve --worker-mode inprocess`` runs this instead of uvicorn: it binds the port once
and starts one child ``gradserve serve`` per device of the plan (:mod:`service.pool.probe`: one
per GPU, or ``--workers`` on the CPU) with the socket inherited (the model of uvicorn's own
``--workers`` supervisor and of gunicorn: one accept queue, so a connection waits in the backlog
while a child restarts instead of being refused, which ``SO_REUSEPORT`` listeners would do for
the connections queued on a dead one). Each child runs one engine on its device
(:mod:`service.pool.inprocess`) and answers every route itself: a crash takes down that process
and exactly the requests it held.

Signals: SIGTERM or SIGINT is passed on to every child, which drains (``--drain-timeout-s``) and
exits; the supervisor closes its own copy of the listening socket, so that new connections are
refused once the children have closed theirs; a second signal is passed on too (the children stop
without waiting). Children run in their own process group (a Ctrl-C reaches them once, through
here) and get SIGTERM if the supervisor dies.
A child that dies is restarted at once, with back-off when it dies again soon after starting;
when every start of a slot fails before serving three times in a row (a bad registry file, say),
the supervisor stops and exits 3, as a single server would.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType
from typing import Any

from .pool import probe, scheduling
from .settings import Settings

log = logging.getLogger("gradserve.supervisor")

#: in a child: the inherited listening socket's descriptor, and its slot (index)
LISTEN_FD_ENV = "GRADSERVE_LISTEN_FD"
SLOT_ENV = "GRADSERVE_SLOT"
#: a child that served this long before it exited counts as started (its restart is not backed off)
STARTED_AFTER_S = 15.0
#: consecutive failed starts of one slot after which the supervisor gives up
MAX_FAILED_STARTS = 3


def device_plan(settings: Settings) -> probe.Plan:
    """One ``(label, environment)`` per child: the pool's own plan (one per GPU JAX sees, or
    ``--workers`` on the CPU). Raises RuntimeError when ``device="gpu"`` and there is none."""
    device = settings.device
    if device == "cpu" or (device == "auto" and not probe.may_have_gpu()):
        return probe.cpu_plan(settings)
    gpus, why = asyncio.run(probe.probe(120.0))
    if gpus:
        return probe.gpu_plan(settings, gpus)
    if device == "gpu":
        raise RuntimeError(f"device 'gpu' was requested but JAX sees no GPU ({why})")
    log.info("no GPU for JAX (%s): running on the CPU", why)
    return probe.cpu_plan(settings)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the supervisor dies (Linux ``PR_SET_PDEATHSIG``)."""
    try:
        import ctypes  # noqa: PLC0415

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Child:
    """One slot's current process."""

    def __init__(self, index: int, label: str, env: dict[str, str]) -> None:
        self.index = index
        self.label = label
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.failures = 0  # consecutive starts that died before STARTED_AFTER_S
        self.restart_at: float | None = None
        self.restarts = 0


class Supervisor:
    """Binds the port, runs the children, restarts the dead ones (see the module docstring)."""

    poll_s = 0.1

    def __init__(self, settings: Settings, argv: list[str]) -> None:
        self.settings = settings
        self.argv = argv  # the serve flags, passed on to every child
        self.children: list[Child] = []
        self.stopping = False
        self.signals = 0
        self.sock: socket.socket | None = None

    def _bind(self) -> socket.socket:
        s = self.settings
        family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
        sock = socket.create_server((s.host, s.port), family=family, backlog=min(s.max_connections, 4096))
        sock.set_inheritable(True)
        return sock

    def _spawn(self, child: Child) -> None:
        assert self.sock is not None
        env = {**os.environ, **child.env, LISTEN_FD_ENV: str(self.sock.fileno()), SLOT_ENV: str(child.index)}
        child.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", *self.argv],
            # Its own process group (a Ctrl-C reaches it once, through here) but the same session:
            # with the kernel's autogroup scheduling a new session would be a CPU group of its own,
            # scheduled apart from the clients and processes it works with.
            env=env, pass_fds=(self.sock.fileno(),), process_group=0, preexec_fn=_die_with_parent,
        )
        child.started = time.monotonic()
        child.restart_at = None
        log.info("child %d started (pid %d, %s)", child.index, child.proc.pid, child.label)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.stopping = True
        self.signals += 1
        # The first signal drains every child; a second makes them stop without waiting.
        forward = signal.SIGTERM if self.signals == 1 else sig
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                try:
                    child.proc.send_signal(forward)
                except ProcessLookupError:
                    pass

    def run(self) -> int:
        try:
            plan = device_plan(self.settings)
        except RuntimeError as exc:
            print(f"gradserve serve: {exc}; install jax[cuda12] and check the driver, or use --device cpu / auto",
                  file=sys.stderr)
            return 3
        try:
            self.sock = self._bind()
        except OSError as exc:
            print(f"gradserve serve: cannot listen on {self.settings.host}:{self.settings.port}: {exc}",
                  file=sys.stderr)
            return 3
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.children = [Child(i, label, env) for i, (label, env) in enumerate(plan)]
        log.info("gradserve supervisor (pid %d): %d HTTP process(es) with their engine inside on %s:%d",
                 os.getpid(), len(self.children), self.settings.host, self.settings.port)
        for child in self.children:
            self._spawn(child)
        status = 0
        try:
            while True:
                now = time.monotonic()
                alive = 0
                for child in self.children:
                    proc = child.proc
                    if proc is not None and proc.poll() is None:
                        alive += 1
                        continue
                    if self.stopping:
                        continue
                    if proc is not None:  # it just died
                        code = proc.returncode
                        child.proc = None
                        child.restarts += 1
                        served = now - child.started >= STARTED_AFTER_S
                        child.failures = 0 if served else child.failures + 1
                        if child.failures >= MAX_FAILED_STARTS and child.restarts == child.failures:
                            log.error("child %d failed to start %d times (last exit %s): stopping",
                                      child.index, child.failures, code)
                            status = 3
                            self._on_signal(signal.SIGTERM, None)
                            continue
                        delay = scheduling.restart_delay(max(0, child.failures - 1))
                        log.error("child %d (pid %d) exited (%s): restarting it%s", child.index, proc.pid,
                                  _describe(code), f" in {delay:.1f} s" if delay else "")
                        child.restart_at = now + delay
                    if child.restart_at is not None and now >= child.restart_at:
                        self._spawn(child)
                        alive += 1
                if self.stopping and self.sock.fileno() != -1:
                    # Our copy of the listener must not outlive the children's: once the last one
                    # has drained and closed its copy, a new connection is refused (as by a single
                    # server), instead of waiting unanswered in the backlog until we exit.
                    self.sock.close()
                if self.stopping and not alive:
                    break
                time.sleep(self.poll_s)
        finally:
            for child in self.children:
                if child.proc is not None and child.proc.poll() is None:
                    child.proc.kill()
                    child.proc.wait()
            self.sock.close()
        return status


def _describe(code: int | None) -> str:
    if code is None:
        return "status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def inherited_socket() -> socket.socket | None:
    """In a child: the listening socket the supervisor passed (None: not a child)."""
    fd = os.environ.get(LISTEN_FD_ENV)
    if not fd:
        return None
    return socket.socket(fileno=int(fd))


def is_child() -> bool:
    return bool(os.environ.get(LISTEN_FD_ENV))


__all__: list[Any] = ["Supervisor", "device_plan", "inherited_socket", "is_child"]
