"""The pool's bookkeeping of its workers: slots, the worker in each, the jobs each holds.

A :class:`Slot` is a place for a worker that lives as long as the pool (its restarts, its
recent time per job, its last error); a :class:`WorkerHandle` is one incarnation of it: the
jobs it holds (:class:`Pending`), the networks it has parsed, whether it answered its handshake.
How messages reach the worker is a subclass's business: a real process
(:class:`service.pool.launcher.ProcessWorker`) or, in the unit tests, an in-process fake
(``tests/support/fake_worker.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

from ..ipc.messages import GradJob, JobResult

#: ``on_message(worker, msg)`` and ``on_exit(worker, exitcode)``, called on the event loop
OnMessage = Callable[["WorkerHandle", Any], None]
OnExit = Callable[["WorkerHandle", "int | None"], None]


@dataclasses.dataclass
class Pending:
    """A job a worker holds: its caller's future, and what it takes to send it again."""

    future: asyncio.Future[JobResult]
    job: GradJob
    network_doc: Callable[[], dict[str, Any]]
    submitted: float
    region: int | None = None  # its inputs' region of the jobs arena, freed when the worker answers


@dataclasses.dataclass
class Slot:
    index: int
    device: str  # "cpu" or "gpu:<n>"
    env: dict[str, str]
    proc: WorkerHandle | None = None
    restarts: int = 0
    failures: int = 0  # consecutive deaths before a handshake (back-off)
    ever_ready: bool = False
    cache_stats: dict[str, float] = dataclasses.field(default_factory=dict)
    service_s: float = 1.0  # moving average of a job's time in the worker, for Retry-After
    last_error: str | None = None

    def row(self) -> dict[str, Any]:
        """index, pid, device, jax_device, alive, ready, queued, running, restarts, networks (how
        many it holds), cache (its engine's compile-cache stats: hits, misses, evictions,
        compile_seconds, size, from its latest reply) and last_error."""
        proc = self.proc
        running = 1 if proc is not None and proc.running in proc.pending else 0
        return {
            "index": self.index,
            "pid": proc.pid if proc else None,
            "device": self.device,
            "jax_device": proc.info.get("device") if proc else None,
            "alive": bool(proc and proc.alive),
            "ready": bool(proc and proc.alive and proc.ready),
            # queued: the jobs it will compute (abandoned ones it will skip are left out)
            "queued": (proc.load - running) if proc else 0,
            "running": running,
            "restarts": self.restarts,
            "networks": len(proc.networks) if proc else 0,
            "cache": dict(self.cache_stats),
            "last_error": self.last_error,
        }


class WorkerHandle:
    """One incarnation of a worker slot, as the pool sees it. Subclasses carry the messages:
    :meth:`send` (returns the jobs-arena region to :meth:`free` once the worker has answered, or
    None), :meth:`kill` and :meth:`close`; they call ``on_message`` for each message from the
    worker and ``on_exit`` once when it is gone."""

    def __init__(self, slot: Slot, pid: int) -> None:
        self.slot = slot
        self.pid = pid
        self.pending: dict[int, Pending] = {}
        self.networks: set[str] = set()
        self.info: dict[str, Any] = {}
        self.ready = False  # answered its handshake
        self.alive = True
        self.stopping = False
        self.exitcode: int | None = None
        self.exited = asyncio.Event()
        self.ping_sent: float | None = None  # the heartbeat not answered yet (monotonic time sent)

    @property
    def running(self) -> int | None:
        """The job the worker computes now: it takes jobs in order, so the oldest one held."""
        return next(iter(self.pending), None)

    @property
    def load(self) -> int:
        """Jobs that occupy this worker: those someone waits for, and the one it computes.
        Abandoned jobs still in its queue (deadline passed, caller gone) are skipped there."""
        return sum(1 for job_id, p in self.pending.items() if not p.future.done() or job_id == self.running)

    def send(self, msg: Any) -> int | None:
        raise NotImplementedError

    def free(self, region: int | None) -> None:
        """The worker is done with the message that was given ``region``."""

    def kill(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Once the worker is gone: release what reaches it."""
