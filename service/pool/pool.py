"""The pool of engine workers behind ``POST /grad``: its lifecycle, jobs and replies.

N worker processes (default: one per GPU that JAX sees, else one on the CPU), each owning one
device, one :class:`engine.Engine` and its compile cache (:mod:`.probe` decides the plan).

- **Routing**: :func:`.scheduling.pick`: a job goes to a worker that already has its network
  unless that worker is more than :attr:`WorkerPool.affinity_slack` jobs busier than the least
  loaded one.
- **Transport**: a socket pair and two shared-memory arenas per worker (:mod:`.launcher`,
  :mod:`service.ipc`), or with ``worker_mode="inprocess"`` an engine thread of this process
  (:mod:`.inprocess`); the messages are :mod:`service.ipc.messages`'s either way.
- **Back-pressure**: at most ``settings.queue_size`` jobs queued or running per worker; beyond
  that :class:`QueueFullError` with ``retry_after``. A request takes its place with
  :meth:`WorkerPool.admit` before its body is read (requests still being read and validated
  count), so under overload the refusal comes at once and costs no parsing.
- **Deadlines**: the caller stops waiting at ``job.deadline`` (:class:`DeadlineExceededError`);
  the worker finishes or skips the job (a job whose deadline passed while it was queued is not
  computed) and the late result is dropped.
- **Crashes**: a worker that exits fails exactly the jobs it held (:class:`WorkerDiedError`) and
  is respawned (with back-off when it dies before its handshake). ``on_event("worker_restart")``
  tells the metrics.
- **Shutdown**: :meth:`WorkerPool.drain` refuses new jobs, waits for those in flight, then stops
  the workers. Workers ignore SIGINT/SIGTERM (a signal to the whole process group must not cut
  requests short); they exit when told to, or as soon as the server's end of the socket closes.

The pool knows no HTTP: its errors are :mod:`service.errors`' and the engine's. This module is
over 400 lines because it is one concern that reads best whole: the pool's state machine (jobs
in, replies and deaths out, on the event loop); its decisions are :mod:`.scheduling`'s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import engine.errors

from ..errors import (
    DeadlineExceededError,
    EngineFailedError,
    NotReadyError,
    QueueFullError,
    WorkerDiedError,
)
from ..ipc import messages as m
from ..ipc.messages import GradJob, JobResult
from ..settings import Settings
from . import probe, scheduling
from .launcher import ProcessLauncher, describe_exit
from .slots import OnExit, OnMessage, Pending, Slot, WorkerHandle

log = logging.getLogger("gradserve.workers")

EventHook = Callable[[str, dict[str, Any]], None]


class Launcher(Protocol):
    def launch(self, slot: Slot, loop: asyncio.AbstractEventLoop, on_message: OnMessage,
               on_exit: OnExit) -> WorkerHandle: ...


def default_launcher(settings: Settings) -> Launcher:
    """The transport ``settings.worker_mode`` names: worker processes (``process``), or engine
    threads in this process (``inprocess``, :mod:`.inprocess`)."""
    if getattr(settings, "worker_mode", "process") == "inprocess":
        from .inprocess import InProcessLauncher  # noqa: PLC0415

        return InProcessLauncher(settings)
    return ProcessLauncher(settings)


def _stopped(pid: int) -> bool:
    """The process is stopped (SIGSTOP, a debugger) or a zombie: /proc/<pid>/stat's state T, t or Z
    (False where there is no /proc, or the worker is not a process of this machine)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] in (b"T", b"t", b"Z")


class PoolStartError(RuntimeError):
    """The pool cannot start as configured (``device="gpu"`` and JAX sees no GPU)."""


class Admission:
    """A request's place in the queues between :meth:`WorkerPool.admit` and its job's submission."""

    __slots__ = ("pool",)

    def __init__(self, pool: WorkerPool) -> None:
        self.pool: WorkerPool | None = pool

    def release(self) -> None:
        """Give the place back (once; later calls do nothing)."""
        if self.pool is not None:
            self.pool._admitted -= 1
            self.pool = None


def remote_error(kind: str, message: str, path: str | None) -> Exception:
    """The error a worker reported, rebuilt in the server: the engine's own class (so it maps
    to the same answer as in the server), or :class:`EngineFailedError`."""
    cls = getattr(engine.errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, engine.errors.GradnetError):
        return cls(message, path)
    return EngineFailedError(message, path)


class WorkerPool:
    """Engine workers, used from the server's event loop.

    >>> pool = WorkerPool(settings, on_event=metrics.on_pool_event)
    >>> await pool.start()                       # returns at once; pool.ready comes later
    >>> result = await pool.submit(job, lambda: registry.get(job.network_id).to_json("b64"))
    >>> await pool.drain(settings.drain_timeout_s)

    ``on_event(kind, data)`` is called on the event loop with ``"worker_ready"``
    (``worker, pid, device, restarted``) and ``"worker_restart"`` (``worker, pid, exitcode,
    reason, lost_jobs, restarts``). ``launcher`` starts the workers (default: processes).
    """

    #: prefer a worker that has the network unless it holds this many more jobs than the least loaded
    affinity_slack = 2
    #: how long a stopped worker may take to exit before it is killed
    stop_timeout_s = 10.0
    #: how long the GPU probe may take
    probe_timeout_s = 120.0

    def __init__(self, settings: Settings, *, on_event: EventHook | None = None,
                 launcher: Launcher | None = None) -> None:
        self.settings = settings
        self._on_event = on_event
        self._launcher: Launcher = launcher or default_launcher(settings)
        self._slots: list[Slot] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)
        self._admitted = 0  # requests admitted (Admission) whose job is not submitted yet
        self._tasks: set[asyncio.Task[Any]] = set()
        self._accepting = False
        self._closing = False
        self._all_answered = False
        #: why the pool cannot serve (a failed probe, a worker that cannot start), for /health
        self.error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn the workers. Returns without waiting for their handshakes (see :attr:`ready`).

        Raises :class:`PoolStartError` when ``device="gpu"`` and JAX sees no GPU (this case
        waits for the probe, a few seconds).
        """
        if self._loop is not None:
            raise RuntimeError("the worker pool is already started")
        self._loop = asyncio.get_running_loop()
        self._accepting = True
        self._background(self._heartbeat())
        device = self.settings.device
        if device == "cpu" or (device == "auto" and not probe.may_have_gpu()):
            self._spawn_all(probe.cpu_plan(self.settings))
        elif device == "gpu":
            gpus, why = await probe.probe(self.probe_timeout_s)
            if not gpus:
                self._accepting = False
                raise PoolStartError(
                    f"device 'gpu' was requested but JAX sees no GPU ({why}); "
                    "install jax[cuda12] and check the driver, or use --device cpu / auto"
                )
            self._spawn_all(probe.gpu_plan(self.settings, gpus))
        else:
            self._background(self._start_auto())

    async def _start_auto(self) -> None:
        gpus, why = await probe.probe(self.probe_timeout_s)
        if self._closing:
            return
        if gpus:
            self._spawn_all(probe.gpu_plan(self.settings, gpus))
        else:
            log.info("no GPU for JAX (%s): running on the CPU", why)
            self._spawn_all(probe.cpu_plan(self.settings))

    def _spawn_all(self, plan: probe.Plan) -> None:
        self._slots = [Slot(index=i, device=label, env=env) for i, (label, env) in enumerate(plan)]
        for slot in self._slots:
            self._spawn(slot)

    def _spawn(self, slot: Slot) -> None:
        slot.proc = self._launcher.launch(slot, self._loop, self._on_message, self._on_exit)  # type: ignore[arg-type]

    @property
    def ready(self) -> bool:
        """Every worker has answered its startup handshake once, at least one can take work now,
        and the pool is not draining."""
        return self._accepting and self._all_answered and any(p.ready for p in self._live())

    def unavailable(self) -> str | None:
        """Why no worker can take a job now though the pool is :attr:`ready` (None: one can):
        every ready worker is stopped (``SIGSTOP``: it would hold whatever it is given) or has a
        full queue, counting the places held by requests admitted and not yet submitted. For
        readiness: a load balancer should send elsewhere what would get 503 here."""
        now = time.monotonic()
        ready = [p for p in self._ready() if not _stopped(p.pid) and not self._hung(p, now)]
        if not ready:
            return (f"every engine worker is stopped (SIGSTOP), hung (no answer to its heartbeat for "
                    f"{self._hang_s():g} s, no request running within its deadline) or restarting")
        limit = self.settings.queue_size
        held = sum(min(p.load, limit) for p in ready) + self._admitted
        if held >= limit * len(ready):
            return (f"every engine worker is fully booked: {held} requests queued, running or being validated "
                    f"for {limit * len(ready)} places (queue_size {limit} per worker)")
        return None

    async def drain(self, timeout_s: float) -> None:
        """Refuse new jobs, wait up to ``timeout_s`` for those in flight, then stop the workers.

        Jobs still running after ``timeout_s`` fail with :class:`NotReadyError` (shutting down).
        """
        self._accepting = False
        if self._loop is None:
            return
        deadline = time.monotonic() + max(0.0, timeout_s)
        while self._waited_on() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self._stop()

    async def close(self) -> None:
        """Stop at once: :meth:`drain` without waiting."""
        await self.drain(0.0)

    # -- the heartbeat ----------------------------------------------------------------------

    def _hang_s(self) -> float:
        return float(getattr(self.settings, "worker_hang_s", 10.0))

    def _hung(self, proc: WorkerHandle, now: float) -> bool:
        """``proc`` has not answered a heartbeat for ``worker_hang_s`` and no request it holds is
        still within its deadline (a long compute someone waits for is busy, not hung; one that
        outlived its caller's deadline, or silence with nothing to compute, is hung)."""
        sent = proc.ping_sent
        if sent is None or now - sent <= self._hang_s():
            return False
        return all(p.future.done() for p in proc.pending.values())

    async def _heartbeat(self) -> None:
        """Ping every ready worker, one ping outstanding at a time; its loop answers pong (the
        compile thread leaves it free while compiling), so an unanswered ping ages."""
        seq = itertools.count(1)
        while True:
            await asyncio.sleep(min(1.0, self._hang_s() / 4))
            for proc in self._ready():
                if proc.ping_sent is None:
                    proc.ping_sent = time.monotonic()
                    try:
                        proc.send(m.ping(next(seq)))
                    except Exception:  # noqa: BLE001 - a worker going away: its exit is handled elsewhere
                        proc.ping_sent = None

    def _waited_on(self) -> bool:
        return any(not p.future.done() for proc in self._live() for p in proc.pending.values())

    async def _stop(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        procs = self._live()
        for proc in procs:
            proc.stopping = True
            if proc.pending:  # the drain ran out of time (or only abandoned jobs are left)
                proc.kill()
            else:
                proc.send(m.stop())
        for attempt in range(2):
            waits = [asyncio.wait_for(p.exited.wait(), self.stop_timeout_s if attempt == 0 else 5.0) for p in procs]
            results = await asyncio.gather(*waits, return_exceptions=True)
            late = [p for p, r in zip(procs, results) if isinstance(r, BaseException)]
            if not late:
                break
            for proc in late:
                log.warning("worker %d (pid %d) did not stop in time: killing it", proc.slot.index, proc.pid)
                proc.kill()
            procs = late

    async def forget(self, network_id: str) -> None:
        """Tell every worker to drop a deleted network (and its compiled executables)."""
        for proc in self._live():
            proc.networks.discard(network_id)
            proc.send(m.forget(network_id))

    # -- jobs ------------------------------------------------------------------------------

    async def submit(self, job: GradJob, network_doc: Callable[[], dict[str, Any]],
                     admission: Admission | None = None) -> JobResult:
        """Run ``job`` on a worker and return its result; see the module docstring for errors.

        ``network_doc()`` is called only when the chosen worker does not have the network. The
        job takes the place ``admission`` held, if any.
        """
        if admission is not None:
            admission.release()
        if not self._accepting:
            if self._loop is None:
                raise NotReadyError("the engine workers are not started")
            raise NotReadyError("the service is draining: it takes no new requests", retry_after=5.0)
        now = time.monotonic()
        if job.deadline and now >= job.deadline:
            raise DeadlineExceededError("the request's deadline (timeout_ms) passed before it reached a worker")
        candidates = self._ready()
        if not candidates:
            if not self._all_answered:
                done = sum(1 for s in self._slots if s.ever_ready)
                raise NotReadyError(f"the engine workers are starting ({done} of {len(self._slots) or '?'} ready)")
            raise NotReadyError("no engine worker is ready: they are restarting")
        # a hung worker (its heartbeat unanswered, nobody waiting on what it computes) gets a job
        # only when every worker is hung: it would sit behind that compute
        candidates = [p for p in candidates if not self._hung(p, now)] or candidates
        loads = [p.load for p in candidates]
        chosen = scheduling.pick(loads, [job.network_id in p.networks for p in candidates],
                                 self.settings.queue_size, self.affinity_slack)
        proc, load = candidates[chosen], loads[chosen]
        if load >= self.settings.queue_size:
            raise self._queue_full(len(candidates), proc, f"{load} requests queued or running on the least loaded "
                                   f"one (queue_size {self.settings.queue_size})")
        if job.network_id not in proc.networks:
            job = dataclasses.replace(job, network_doc=network_doc())
        job_id = next(self._ids)
        loop = self._loop
        future: asyncio.Future[JobResult] = loop.create_future()  # type: ignore[union-attr]
        pending = Pending(future, job, network_doc, now)
        proc.pending[job_id] = pending
        proc.networks.add(job.network_id)
        pending.region = proc.send(m.job(job_id, job, now))
        # One timer per job (no wait_for/shield task): at the deadline it fails the future.
        timer = loop.call_later(job.deadline - time.monotonic(), self._expire, proc, job_id, future) \
            if job.deadline else None  # type: ignore[union-attr]
        try:
            return await future
        except asyncio.CancelledError:  # the client went away
            self._abandon(proc, job_id, future)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def admit(self) -> Admission:
        """A place in the workers' queues for a request whose body is still to be read and
        validated, or :class:`QueueFullError` at once if there is none: shedding load costs no
        parsing, and a burst gets its refusals before any body is read. The place is given back
        by :meth:`submit` (the job takes it) or by :meth:`Admission.release`."""
        limit = self.settings.queue_size
        ready = self._ready()
        if ready:  # none ready: submit says why
            held = scheduling.admission_refused(
                sum(len(p.pending) for p in ready), lambda: sum(min(p.load, limit) for p in ready),
                self._admitted, len(ready), limit)
            if held is not None:
                raise self._queue_full(
                    len(ready), min(ready, key=lambda p: p.load),
                    f"{held} requests queued, running or being read for its {limit * len(ready)} "
                    f"places (queue_size {limit} per worker)",
                )
        self._admitted += 1
        return Admission(self)

    @staticmethod
    def _queue_full(workers: int, proc: WorkerHandle, how_full: str) -> QueueFullError:
        """The refusal, with ``retry_after`` from ``proc``'s recent time per job."""
        return QueueFullError(f"all {workers} engine worker(s) are busy: {how_full}; retry later",
                              retry_after=scheduling.retry_after(proc.slot.service_s))

    def _expire(self, proc: WorkerHandle, job_id: int, future: asyncio.Future[JobResult]) -> None:
        """The job's deadline passed: its caller gets the error now; the worker skips the job if
        it has not started it (or finishes it, and the result is dropped)."""
        if future.done():
            return
        waited = "computing" if proc.running == job_id else "queued"
        future.set_exception(DeadlineExceededError(
            f"the request's deadline (timeout_ms) passed while it was {waited} on worker {proc.slot.index}"
        ))
        if job_id in proc.pending and proc.alive:
            proc.send(m.cancel(job_id))

    def _abandon(self, proc: WorkerHandle, job_id: int, future: asyncio.Future[JobResult]) -> None:
        """Nobody waits for this job any more: the worker skips it if it has not started it, or
        finishes it (a running computation cannot be interrupted) and the result is dropped."""
        future.cancel()
        if job_id in proc.pending and proc.alive:
            proc.send(m.cancel(job_id))

    def _live(self) -> list[WorkerHandle]:
        return [s.proc for s in self._slots if s.proc is not None and s.proc.alive]

    def _ready(self) -> list[WorkerHandle]:
        """The live workers that answered their handshake: those a job can go to."""
        return [p for p in self._live() if p.ready]

    # -- introspection ---------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        """Per worker slot, :meth:`Slot.row` (what /metrics and /health/ready read)."""
        return [slot.row() for slot in self._slots]

    # -- on the event loop -----------------------------------------------------------------

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        if self._on_event is not None:
            try:
                self._on_event(kind, data)
            except Exception:
                log.exception("on_event(%r) failed", kind)

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception() is None or log.error(
            "worker pool task failed", exc_info=t.exception()))

    def _on_message(self, proc: WorkerHandle, msg: Any) -> None:
        kind = msg[0]
        slot = proc.slot
        if kind == m.RESULT:
            job_id, result, evicted = m.read_result(msg)
            proc.networks.difference_update(evicted)
            slot.cache_stats = dict(result.cache_stats)
            slot.service_s = scheduling.service_time(slot.service_s, result.timing_ms)
            self._finish(proc, job_id, result, None)
        elif kind == m.ERROR:
            job_id, error_kind, message, path, stats, evicted = m.read_error(msg)
            proc.networks.difference_update(evicted)
            slot.cache_stats = dict(stats)
            self._finish(proc, job_id, None, remote_error(error_kind, message, path))
        elif kind == m.EXPIRED:
            job_id, stats = m.read_expired(msg)
            slot.cache_stats = dict(stats)
            held = proc.pending.get(job_id)
            # the worker skipped it: its caller went away (cancelled future) or its deadline passed
            self._emit("job_skipped", {"worker": slot.index, "reason": "client_gone" if held is not None
                                       and held.future.cancelled() else "deadline"})
            error = DeadlineExceededError(
                f"the request's deadline (timeout_ms) passed while it was queued on worker {slot.index}"
            )
            self._finish(proc, job_id, None, error)
        elif kind == m.UNKNOWN_NETWORK:
            self._resend(proc, m.payload(msg))
        elif kind == m.PONG:
            proc.ping_sent = None
        elif kind == m.HELLO:
            proc.info = m.payload(msg)
            # the networks its warm-up parsed (issue 17.5): their first jobs go by reference (a
            # network it lacks after all is answered unknown_network and sent again with its document)
            proc.networks.update(proc.info.get("networks") or ())
            proc.ready = True
            slot.cache_stats = dict(proc.info.get("cache_stats") or {})
            restarted = slot.ever_ready
            slot.ever_ready = True
            slot.failures = 0
            slot.last_error = None
            self._all_answered = all(s.ever_ready for s in self._slots)
            log.info("worker %d ready (pid %d, %s)", slot.index, proc.pid, proc.info.get("device"))
            self._emit("worker_ready", {"worker": slot.index, "pid": proc.pid, "device": proc.info.get("device"),
                                        "restarted": restarted})
        elif kind == m.FATAL:
            slot.last_error = self.error = m.payload(msg)
            log.error("%s", slot.last_error)

    def _finish(self, proc: WorkerHandle, job_id: int, result: JobResult | None, error: BaseException | None) -> None:
        pending = proc.pending.pop(job_id, None)
        if pending is None:
            return
        proc.free(pending.region)
        pending.region = None
        if pending.future.done():
            return  # its caller stopped waiting (deadline, disconnect)
        if error is not None:
            pending.future.set_exception(error)
        else:
            pending.future.set_result(result)  # type: ignore[arg-type]

    def _resend(self, proc: WorkerHandle, job_id: int) -> None:
        """The worker lacked the network (evicted it): send the job again with its document."""
        pending = proc.pending.get(job_id)
        if pending is None:
            return
        proc.free(pending.region)  # the worker is done with that message
        pending.region = None
        if pending.future.done():
            proc.pending.pop(job_id, None)
            return
        try:
            doc = pending.network_doc()
        except BaseException as exc:
            proc.pending.pop(job_id, None)
            pending.future.set_exception(exc)
            return
        pending.job = dataclasses.replace(pending.job, network_doc=doc)
        proc.networks.add(pending.job.network_id)
        pending.region = proc.send(m.job(job_id, pending.job, pending.submitted))

    def _on_exit(self, proc: WorkerHandle, exitcode: int | None) -> None:
        slot = proc.slot
        proc.alive = False
        proc.ready = False
        proc.exitcode = exitcode
        proc.close()
        proc.exited.set()
        running = proc.running
        lost = list(proc.pending.items())
        proc.pending.clear()
        if self._closing or proc.stopping:
            for _, pending in lost:
                if not pending.future.done():
                    pending.future.set_exception(NotReadyError("the service is shutting down", retry_after=5.0))
            return
        reason = describe_exit(exitcode)
        log.error("worker %d (pid %d) died (%s) holding %d request(s): restarting it",
                  slot.index, proc.pid, reason, len(lost))
        for job_id, pending in lost:
            if pending.future.done():
                continue
            where = "while computing this request" if job_id == running else "while this request waited in its queue"
            pending.future.set_exception(
                WorkerDiedError(f"worker {slot.index} (pid {proc.pid}) died ({reason}) {where}; it is being restarted")
            )
        slot.restarts += 1
        if not proc.info:  # it died before its handshake: back off before the next try
            slot.failures += 1
        self._emit("worker_restart", {
            "worker": slot.index, "pid": proc.pid, "exitcode": exitcode, "reason": reason,
            "lost_jobs": len(lost), "restarts": slot.restarts,
        })
        self._background(self._respawn(slot, scheduling.restart_delay(slot.failures)))

    async def _respawn(self, slot: Slot, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        if not self._closing:
            self._spawn(slot)
