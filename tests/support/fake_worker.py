"""An in-process fake worker for :class:`service.pool.WorkerPool`, in the spirit of httpx's
``MockTransport``: ``WorkerPool(settings, launcher=FakeLauncher(...))`` runs no process and no
socket, yet every message crosses the real framing (:mod:`service.ipc.framing`) and is built
and read by :mod:`service.ipc.messages`, so the pool's scheduling, admission, deadlines, crash
handling and drain, and the HTTP handlers above it, are tested in milliseconds.

A fake worker answers each job with ``compute(job)`` (default: the real engine, in process, so
the gradients are the real ones); ``manual=True`` holds the jobs until the test calls
:meth:`FakeWorker.finish`. ``kill()`` makes it exit as a crashed process would.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import engine
from engine.transforms import from_wire
from service.ipc import messages as m
from service.ipc.framing import decode_frame, encode_msg
from service.pool.slots import OnExit, OnMessage, Slot, WorkerHandle

_PIDS = itertools.count(900_000)

#: a fake worker's answer to a job: a result, or an exception to report
Compute = Callable[[m.GradJob], m.JobResult]


def _through_the_frame(msg: Any) -> Any:
    parts, _ = encode_msg(msg)
    frame = bytearray(b"".join(bytes(memoryview(p).cast("B")) for p in parts))
    return decode_frame(frame[8:])


class EngineCompute:
    """The real engine, in this process: what a worker would answer."""

    def __init__(self) -> None:
        self.engine = engine.Engine()
        self.networks: dict[str, engine.Network] = {}

    def __call__(self, job: m.GradJob) -> m.JobResult:
        net = self.networks.get(job.network_id)
        if net is None or job.network_doc is not None:
            net = self.networks[job.network_id] = engine.parse_network(job.network_doc, path=job.network_path)
        result = self.engine.run(net, from_wire(job.spec), job.inputs, parameters=job.parameters, extra=job.extra)
        return m.JobResult(result.fields, {**result.timing_ms, "queue": 0.0}, result.cache_hit, self.engine.stats)


class FakeWorker(WorkerHandle):
    """One fake worker process: the messages it was sent (``received``), the jobs it holds."""

    def __init__(self, slot: Slot, loop: asyncio.AbstractEventLoop, on_message: OnMessage, on_exit: OnExit,
                 launcher: FakeLauncher) -> None:
        super().__init__(slot, next(_PIDS))
        self.loop = loop
        self.launcher = launcher
        self.received: list[Any] = []
        self.queue: deque[tuple[int, m.GradJob]] = deque()
        self.cancelled: set[int] = set()
        self.known: set[str] = set()
        self.gone = False
        self._on_message = on_message
        self._on_exit = on_exit
        if launcher.start:
            loop.call_soon(self._reply, m.hello({"pid": self.pid, "device": "fake:0", "cache_stats": {}}))

    def _reply(self, msg: Any) -> None:
        if not self.gone:
            self._on_message(self, _through_the_frame(msg))

    def send(self, msg: Any) -> int | None:
        if self.gone:
            return None
        msg = _through_the_frame(msg)
        if msg[0] == m.PING:  # the pool's heartbeat: answered as a worker's loop answers it
            self.loop.call_soon(self._reply, m.pong(m.payload(msg)))
            return None
        self.received.append(msg)
        kind = msg[0]
        if kind == m.JOB:
            job_id, job, _ = m.read_job(msg)
            self.queue.append((job_id, job))
            if not self.launcher.manual:
                self.loop.call_soon(self.finish)
        elif kind == m.CANCEL:
            self.cancelled.add(m.payload(msg))
        elif kind == m.FORGET:
            self.known.discard(m.payload(msg))
        elif kind == m.STOP:
            self.loop.call_soon(self._exit, 0)
        return None

    def finish(self) -> None:
        """Answer the oldest job held (as a worker does, in order)."""
        if self.gone or not self.queue:
            return
        job_id, job = self.queue.popleft()
        if job_id in self.cancelled or (job.deadline and time.monotonic() > job.deadline):
            self._reply(m.expired(job_id, {}))
            return
        if job.network_doc is None and job.network_id not in self.known:
            self._reply(m.unknown_network(job_id))
            return
        self.known.add(job.network_id)
        try:
            result = self.launcher.compute(job)
        except engine.GradnetError as exc:
            self._reply(m.error(job_id, type(exc).__name__, exc.message, exc.path, {}, []))
        except Exception as exc:
            self._reply(m.error(job_id, m.INTERNAL, f"the engine failed: {type(exc).__name__}: {exc}", None, {}, []))
        else:
            self._reply(m.result(job_id, result, []))

    def kill(self) -> None:
        self.loop.call_soon(self._exit, -9)

    def _exit(self, exitcode: int) -> None:
        if not self.gone:
            self.gone = True
            self._on_exit(self, exitcode)


class FakeLauncher:
    """Starts :class:`FakeWorker`\\ s; ``workers`` lists every one started (restarts included).
    ``start=False``: the workers never answer their handshake."""

    def __init__(self, compute: Compute | None = None, *, manual: bool = False, start: bool = True) -> None:
        self.compute: Compute = compute or EngineCompute()
        self.manual = manual
        self.start = start
        self.workers: list[FakeWorker] = []

    def launch(self, slot: Slot, loop: asyncio.AbstractEventLoop, on_message: OnMessage,
               on_exit: OnExit) -> FakeWorker:
        worker = FakeWorker(slot, loop, on_message, on_exit, self)
        self.workers.append(worker)
        return worker
