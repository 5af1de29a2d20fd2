"""The pool of engine worker processes behind ``POST /grad``.

N worker processes (default: one per GPU that JAX sees, else one on the CPU), each owning one
device, one :class:`engine.Engine` and its compile cache. The server never initialises a JAX
backend itself (it would take a GPU): a short-lived probe process counts the GPUs.

- **Routing**: a job goes to a worker that already has its network (and so, most likely, its
  compiled executable) unless that worker is more than :attr:`WorkerPool.affinity_slack` jobs
  busier than the least loaded one; otherwise to the least loaded worker, which then learns
  the network too (a hot network spreads over the workers as load requires).
- **Transport**: a socket pair per worker; each message is one frame, pickled with protocol 5
  and out-of-band buffers (:mod:`service.worker_main`), written with one ``writev`` and read in
  chunks, so a small message costs one system call and one wake-up on each side. Buffers of
  32 KiB or more go through two shared-memory arenas per worker (memfd) instead of the socket:
  a job's inputs are copied into the jobs arena and freed when the worker has answered; a
  result's arrays are views of the results arena, released when they are garbage. Everything
  runs on the event loop (``add_reader``/``add_writer``: no thread hand-off, which under load
  would wait for the GIL); what the socket cannot take at once is written when it can.
- **Back-pressure**: at most ``settings.queue_size`` jobs queued or running per worker; beyond
  that :class:`QueueFullError` (503 with ``Retry-After``). A request takes its place with
  :meth:`WorkerPool.admit` before its body is read (requests still being read and validated count),
  so under overload the 503 comes at once and costs no parsing.
- **Deadlines**: the caller stops waiting at ``job.deadline`` (:class:`DeadlineExceededError`);
  the worker finishes or skips the job (a job whose deadline passed while it was queued is not
  computed) and the late result is dropped.
- **Crashes**: a worker that exits fails exactly the jobs it held (:class:`WorkerDiedError`) and
  is respawned (with back-off when it dies before its handshake). ``on_event("worker_restart")``
  tells the metrics.
- **Shutdown**: :meth:`WorkerPool.drain` refuses new jobs, waits for those in flight, then stops
  the workers. Workers ignore SIGINT/SIGTERM (a signal to the whole process group must not cut
  requests short); they exit when told to, or as soon as the server's end of the pipe closes.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .errors import (
    DeadlineExceededError,
    NotReadyError,
    QueueFullError,
    RemoteError,
    WorkerDiedError,
)
from .jobs import GradJob, JobResult
from .settings import Settings
from .worker_main import (
    PROBE_CODE,
    Arena,
    ArenaFds,
    FirstFit,
    FrameReader,
    RingReleaser,
    decode_frame,
    encode_msg,
    write_parts,
)
from .worker_main import main as _worker_entry

log = logging.getLogger("gradserve.workers")

EventHook = Callable[[str, dict[str, Any]], None]

# Every worker process alive in this interpreter, killed at exit if nobody stopped it.
_LIVE: set[Any] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _kill_leftovers() -> None:  # runs before multiprocessing's own exit handler (LIFO)
    with _LIVE_LOCK:
        processes = list(_LIVE)
    for process in processes:
        with contextlib.suppress(Exception):
            if process.is_alive():
                process.kill()
                process.join(2.0)


class PoolStartError(RuntimeError):
    """The pool cannot start as configured (``device="gpu"`` and JAX sees no GPU)."""


@dataclasses.dataclass
class _Pending:
    future: asyncio.Future[JobResult]
    job: GradJob
    network_doc: Callable[[], dict[str, Any]]
    submitted: float
    region: int | None = None  # its inputs' region of the jobs arena, freed when the worker answers
    part: asyncio.Future[Any] | None = None  # a split JSON result: the worker's share, still to come


class _Proc:
    """One incarnation of a worker slot: its process, socket, arenas and the jobs it holds."""

    def __init__(self, slot: _Slot, process: Any, conn: Any, loop: asyncio.AbstractEventLoop,
                 arenas: tuple[Arena, Arena] | None) -> None:
        self.slot = slot
        self.process = process
        self.conn = conn
        self.fd: int = conn.fileno()
        self.loop = loop
        self.pid: int = process.pid
        self.reader = FrameReader(self.fd)
        self.outq: list[memoryview] = []  # what the socket has not taken yet (written when writable)
        self.jobs: Arena | None = arenas[0] if arenas else None
        self.jobs_alloc = FirstFit(arenas[0]) if arenas else None
        self.releaser = RingReleaser(arenas[1]) if arenas else None
        self.pending: dict[int, _Pending] = {}
        self.networks: set[str] = set()
        self.info: dict[str, Any] = {}
        self.ready = False  # answered its handshake
        self.alive = True
        self.stopping = False
        self.closed = False
        self.exitcode: int | None = None
        self.exited = asyncio.Event()

    @property
    def running(self) -> int | None:
        """The job the worker computes now: it takes jobs in order, so the oldest one held."""
        return next(iter(self.pending), None)

    def send(self, msg: Any) -> int | None:
        """Write ``msg`` to the worker, on the loop and without blocking: what the socket does not
        take now is written as soon as it can. Returns the start of the jobs-arena region that
        the message's large buffers were copied to (None: none), to :meth:`free` when the worker
        has answered."""
        if self.closed:
            return None
        parts, region = encode_msg(msg, self.jobs_alloc.alloc if self.jobs_alloc is not None else None, self.jobs)
        if self.outq:
            self.outq.extend(memoryview(p) for p in parts)
            return region
        try:
            rest = write_parts(self.fd, parts)
        except OSError:
            return region  # the worker is gone; the reader reports it
        if rest:
            self.outq = rest
            self.loop.add_writer(self.fd, self._flush)
        return region

    def _flush(self) -> None:
        try:
            self.outq = write_parts(self.fd, self.outq)
        except OSError:
            self.outq = []
        if not self.outq:
            self.loop.remove_writer(self.fd)

    def free(self, region: int | None) -> None:
        if region is not None and self.jobs_alloc is not None and not self.closed:
            self.jobs_alloc.free(region)

    def result_region(self, start: int, length: int) -> Any:
        if self.releaser is None:
            raise ValueError("a reply refers to a results arena that this worker does not have")
        return self.releaser.track(start, length)

    def close(self) -> None:
        """On the loop, once the process is gone: stop watching and close the socket."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.loop.remove_writer(self.fd)
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.fd)
        self.outq = []
        with contextlib.suppress(OSError):
            self.conn.close()

    @property
    def load(self) -> int:
        """Jobs that occupy this worker: those someone waits for, and the one it computes.
        Abandoned jobs still in its queue (deadline passed, caller gone) are skipped there."""
        return sum(1 for job_id, p in self.pending.items() if not p.future.done() or job_id == self.running)


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


@dataclasses.dataclass
class _Slot:
    index: int
    device: str  # "cpu" or "gpu:<n>"
    env: dict[str, str]
    proc: _Proc | None = None
    restarts: int = 0
    failures: int = 0  # consecutive deaths before a handshake (back-off)
    ever_ready: bool = False
    cache_stats: dict[str, float] = dataclasses.field(default_factory=dict)
    service_s: float = 1.0  # moving average of a job's time in the worker, for Retry-After
    last_error: str | None = None


@contextlib.contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    """``os.environ`` plus ``extra`` while a child is spawned (it inherits the environment)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _may_have_gpu() -> bool:
    """Cheap pre-check before probing: a GPU needs a device node, and JAX_PLATFORMS may rule it out."""
    platforms = os.environ.get("JAX_PLATFORMS", "").lower()
    if platforms and not any(p in platforms for p in ("cuda", "gpu", "rocm")):
        return False
    if any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")):
        return True
    with contextlib.suppress(OSError):
        return any(name.startswith("nvidia") for name in os.listdir("/dev"))
    return False


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if -exitcode == signal.SIGKILL:
            return f"killed by {name}, e.g. by the kernel's out-of-memory killer"
        return f"killed by {name}"
    return f"exit code {exitcode}"


class WorkerPool:
    """Engine worker processes, used from the server's event loop.

    >>> pool = WorkerPool(settings, on_event=metrics.on_pool_event)
    >>> await pool.start()                       # returns at once; pool.ready comes later
    >>> result = await pool.submit(job, lambda: registry.get(job.network_id).to_json("b64"))
    >>> await pool.drain(settings.drain_timeout_s)

    ``on_event(kind, data)`` is called on the event loop with ``"worker_ready"``
    (``worker, pid, device, restarted``) and ``"worker_restart"`` (``worker, pid, exitcode,
    reason, lost_jobs, restarts``).
    """

    #: prefer a worker that has the network unless it holds this many more jobs than the least loaded
    affinity_slack = 2
    #: how long a stopped worker may take to exit before it is killed
    stop_timeout_s = 10.0
    #: how long the GPU probe may take
    probe_timeout_s = 120.0
    #: the size of each of a worker's two shared-memory arenas (pages are used only when touched);
    #: larger buffers, or any when the arena is full, go through the socket. 0: no arenas.
    arena_bytes = 64 * 1024 * 1024

    def __init__(self, settings: Settings, *, on_event: EventHook | None = None) -> None:
        self.settings = settings
        self._on_event = on_event
        self._ctx = multiprocessing.get_context("spawn")
        self._slots: list[_Slot] = []
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
        device = self.settings.device
        if device == "cpu" or (device == "auto" and not _may_have_gpu()):
            self._spawn_all(self._cpu_plan())
        elif device == "gpu":
            gpus, why = await self._probe()
            if not gpus:
                self._accepting = False
                raise PoolStartError(
                    f"device 'gpu' was requested but JAX sees no GPU ({why}); "
                    "install jax[cuda12] and check the driver, or use --device cpu / auto"
                )
            self._spawn_all(self._gpu_plan(gpus))
        else:
            self._background(self._start_auto())

    async def _start_auto(self) -> None:
        gpus, why = await self._probe()
        if self._closing:
            return
        if gpus:
            self._spawn_all(self._gpu_plan(gpus))
        else:
            log.info("no GPU for JAX (%s): running on the CPU", why)
            self._spawn_all(self._cpu_plan())

    def _cpu_plan(self) -> list[tuple[str, dict[str, str]]]:
        return [("cpu", {"JAX_PLATFORMS": "cpu"})] * (self.settings.workers or 1)

    def _gpu_plan(self, gpus: list[str]) -> list[tuple[str, dict[str, str]]]:
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        if len(visible) < len(gpus):
            visible = [str(i) for i in range(len(gpus))]
        plan = []
        for i in range(self.settings.workers or len(gpus)):
            g = i % len(gpus)
            plan.append((f"gpu:{g}", {"CUDA_VISIBLE_DEVICES": visible[g], "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}))
        return plan

    async def _probe(self) -> tuple[list[str], str]:
        """The GPUs JAX sees, from a short-lived process, and a reason when there are none."""
        env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", TF_CPP_MIN_LOG_LEVEL="3")
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", PROBE_CODE, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            return [], f"the probe could not start: {exc}"
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.probe_timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return [], f"the probe took over {self.probe_timeout_s:.0f} s"
        except asyncio.CancelledError:  # drained while probing
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise
        lines = out.decode(errors="replace").strip().splitlines()
        try:
            found = json.loads(lines[-1])
        except (IndexError, ValueError):
            tail = err.decode(errors="replace").strip().splitlines()[-1:]
            return [], f"the probe failed (exit code {proc.returncode}): {' '.join(tail)}"
        gpus = list(found.get("gpus") or [])
        return gpus, found.get("error") or ("no GPU device" if not gpus else "")

    def _spawn_all(self, plan: list[tuple[str, dict[str, str]]]) -> None:
        self._slots = [_Slot(index=i, device=label, env=env) for i, (label, env) in enumerate(plan)]
        for slot in self._slots:
            self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        s = self.settings
        config = {
            "compile_cache_size": s.compile_cache_size,
            "max_elements": s.max_tensor_elements,
            "max_nodes": s.max_nodes,
            "compile_cache_dir": str(s.compile_cache_dir) if s.compile_cache_dir else None,
            "network_cache_size": s.network_cache_size,
        }
        arenas, fds = self._arenas()
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_entry,
            args=(child_conn, slot.index, slot.env, config, fds),
            name=f"gradserve-worker-{slot.index}",
            daemon=True,
        )
        try:
            with _environ(slot.env):
                process.start()
        finally:
            child_conn.close()  # so that the child's death reads as EOF here
            if fds is not None:  # the child has its own copies; the mappings stay
                os.close(fds.jobs_fd)
                os.close(fds.results_fd)
        with _LIVE_LOCK:
            _LIVE.add(process)
        proc = _Proc(slot, process, parent_conn, self._loop, arenas)  # type: ignore[arg-type]
        slot.proc = proc
        log.info("worker %d started (pid %d, %s)", slot.index, proc.pid, slot.device)
        os.set_blocking(proc.fd, False)  # the loop reads and writes it; nothing may block there
        self._loop.add_reader(proc.fd, self._readable, proc)  # type: ignore[union-attr]

    def _arenas(self) -> tuple[tuple[Arena, Arena] | None, ArenaFds | None]:
        """A new worker's two shared-memory arenas, or none (no memfd here: everything goes
        through the socket)."""
        size = self.arena_bytes
        if not size or not hasattr(os, "memfd_create"):
            return None, None
        made: list[tuple[Arena, int]] = []
        try:
            for _ in range(2):
                made.append(Arena.create(size))
        except OSError as exc:
            for _, fd in made:
                os.close(fd)
            log.warning("no shared-memory arena (%s): large tensors go through the socket", exc)
            return None, None
        (jobs, jobs_fd), (results, results_fd) = made
        return (jobs, results), ArenaFds(jobs_fd, size, results_fd, size)

    @property
    def ready(self) -> bool:
        """Every worker has answered its startup handshake once, at least one can take work now,
        and the pool is not draining."""
        return self._accepting and self._all_answered and any(p.ready for p in self._live())

    @property
    def size(self) -> int:
        """The number of worker slots (0 until the GPU probe has answered)."""
        return len(self._slots)

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

    def _waited_on(self) -> bool:
        return any(not p.future.done() or (p.part is not None and not p.part.done())
                   for proc in self._live() for p in proc.pending.values())

    async def _stop(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        procs = self._live()
        for proc in procs:
            proc.stopping = True
            if proc.pending:  # the drain ran out of time (or only abandoned jobs are left)
                proc.process.kill()
            else:
                proc.send(("stop",))
        for attempt in range(2):
            waits = [asyncio.wait_for(p.exited.wait(), self.stop_timeout_s if attempt == 0 else 5.0) for p in procs]
            results = await asyncio.gather(*waits, return_exceptions=True)
            late = [p for p, r in zip(procs, results) if isinstance(r, BaseException)]
            if not late:
                break
            for proc in late:
                log.warning("worker %d (pid %d) did not stop in time: killing it", proc.slot.index, proc.pid)
                proc.process.kill()
            procs = late

    async def forget(self, network_id: str) -> None:
        """Tell every worker to drop a deleted network (and its compiled executables)."""
        for proc in self._live():
            proc.networks.discard(network_id)
            proc.send(("forget", network_id))

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
        proc, load = self._pick(candidates, job.network_id)
        if load >= self.settings.queue_size:
            raise self._queue_full(len(candidates), proc, f"{load} requests queued or running on the least loaded "
                                   f"one (queue_size {self.settings.queue_size})")
        if job.network_id not in proc.networks:
            job = dataclasses.replace(job, network_doc=network_doc())
        job_id = next(self._ids)
        loop = self._loop
        future: asyncio.Future[JobResult] = loop.create_future()  # type: ignore[union-attr]
        pending = _Pending(future, job, network_doc, now)
        proc.pending[job_id] = pending
        proc.networks.add(job.network_id)
        pending.region = proc.send(("job", job_id, job.to_wire(), now))
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
        validated, or :class:`QueueFullError` (503) at once if there is none: shedding load
        costs no parsing, and a burst gets its refusals before any body is read. The place is
        given back by :meth:`submit` (the job takes it) or by :meth:`Admission.release`."""
        limit = self.settings.queue_size
        ready = self._ready()
        if ready:  # none ready: submit says why
            room = limit * len(ready) - self._admitted
            # len(pending) bounds a worker's load from above: the common case counts nothing
            if sum(len(p.pending) for p in ready) >= room:
                used = sum(min(p.load, limit) for p in ready)
                if used >= room:
                    raise self._queue_full(
                        len(ready), min(ready, key=lambda p: p.load),
                        f"{used + self._admitted} requests queued, running or being read for its {limit * len(ready)} "
                        f"places (queue_size {limit} per worker)",
                    )
        self._admitted += 1
        return Admission(self)

    @staticmethod
    def _queue_full(workers: int, proc: _Proc, how_full: str) -> QueueFullError:
        """503, with ``Retry-After`` from ``proc``'s recent time per job."""
        return QueueFullError(f"all {workers} engine worker(s) are busy: {how_full}; retry later",
                              retry_after=float(max(1, min(30, math.ceil(proc.slot.service_s)))))

    def _expire(self, proc: _Proc, job_id: int, future: asyncio.Future[JobResult]) -> None:
        """The job's deadline passed: its caller gets a 504 now; the worker skips the job if it
        has not started it (or finishes it, and the result is dropped)."""
        if future.done():
            return
        waited = "computing" if proc.running == job_id else "queued"
        future.set_exception(DeadlineExceededError(
            f"the request's deadline (timeout_ms) passed while it was {waited} on worker {proc.slot.index}"
        ))
        if job_id in proc.pending and proc.alive:
            proc.send(("cancel", job_id))

    def _abandon(self, proc: _Proc, job_id: int, future: asyncio.Future[JobResult]) -> None:
        """Nobody waits for this job any more: the worker skips it if it has not started it, or
        finishes it (a running computation cannot be interrupted) and the result is dropped."""
        future.cancel()
        if job_id in proc.pending and proc.alive:
            proc.send(("cancel", job_id))

    def _pick(self, candidates: list[_Proc], network_id: str) -> tuple[_Proc, int]:
        """The worker for a job, and its load (each worker's load is counted once)."""
        loads = [(p.load, p.slot.index, p) for p in candidates]
        least = min(loads, key=lambda t: t[:2])
        warm = [t for t in loads if network_id in t[2].networks]
        if warm:
            best = min(warm, key=lambda t: t[:2])
            if best[0] < self.settings.queue_size and best[0] <= least[0] + self.affinity_slack:
                return best[2], best[0]
        return least[2], least[0]

    def _live(self) -> list[_Proc]:
        return [s.proc for s in self._slots if s.proc is not None and s.proc.alive]

    def _ready(self) -> list[_Proc]:
        """The live workers that answered their handshake: those a job can go to."""
        return [p for p in self._live() if p.ready]

    # -- introspection ---------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        """Per worker: index, pid, device, jax_device, alive, ready, queued, running, restarts,
        networks (how many it holds), cache (its engine's compile-cache stats: hits, misses,
        evictions, compile_seconds, size, from its latest reply) and last_error."""
        rows = []
        for slot in self._slots:
            proc = slot.proc
            running = 1 if proc is not None and proc.running in proc.pending else 0
            # queued: the jobs it will compute (abandoned ones it will skip are left out)
            rows.append({
                "index": slot.index,
                "pid": proc.pid if proc else None,
                "device": slot.device,
                "jax_device": proc.info.get("device") if proc else None,
                "alive": bool(proc and proc.alive),
                "ready": bool(proc and proc.alive and proc.ready),
                "queued": (proc.load - running) if proc else 0,
                "running": running,
                "restarts": slot.restarts,
                "networks": len(proc.networks) if proc else 0,
                "cache": dict(slot.cache_stats),
                "last_error": slot.last_error,
            })
        return rows

    # -- the I/O threads -------------------------------------------------------------------

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(fn, *args)

    def _readable(self, proc: _Proc) -> None:
        """On the loop: the worker's socket is readable (one read takes all that is there)."""
        reader = proc.reader
        try:
            reader.feed()
        except (BlockingIOError, InterruptedError):
            return
        except (EOFError, OSError):
            self._loop.remove_reader(proc.fd)  # type: ignore[union-attr]
            threading.Thread(target=self._reap, args=(proc,), name=f"gradserve-worker-{proc.slot.index}-reap",
                             daemon=True).start()
            return
        while reader.ready:
            frame = reader.ready.popleft()
            try:
                msg = decode_frame(frame, proc.result_region)
            except BaseException:
                log.exception("worker %d sent an unreadable message: killing it", proc.slot.index)
                proc.process.kill()
                return
            try:
                self._on_message(proc, msg)
            except Exception:  # a bug: the messages after it must not wait for more data
                log.exception("worker %d: handling its %r message failed", proc.slot.index, msg[0])

    def _reap(self, proc: _Proc) -> None:
        """Off the loop: wait for a worker whose socket closed to exit, then report it."""
        process = proc.process
        process.join(5.0)
        if process.exitcode is None:
            log.warning("worker %d closed its pipe but did not exit: killing it", proc.slot.index)
            process.kill()
            process.join(5.0)
        with _LIVE_LOCK:
            _LIVE.discard(process)
        self._post(self._on_exit, proc, process.exitcode)

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

    def _on_message(self, proc: _Proc, msg: Any) -> None:
        kind = msg[0]
        slot = proc.slot
        if kind == "result":
            _, job_id, wire, evicted = msg
            result = JobResult.from_wire(wire)
            proc.networks.difference_update(evicted)
            slot.cache_stats = dict(result.cache_stats)
            self._finish(proc, job_id, result, None)
        elif kind == "error":
            _, job_id, code, message, path, status, stats, evicted = msg
            proc.networks.difference_update(evicted)
            slot.cache_stats = dict(stats)
            self._finish(proc, job_id, None, RemoteError(code, message, path, status))
        elif kind == "expired":
            slot.cache_stats = dict(msg[2])
            error = DeadlineExceededError(
                f"the request's deadline (timeout_ms) passed while it was queued on worker {slot.index}"
            )
            self._finish(proc, msg[1], None, error)
        elif kind == "json_part":
            pending = proc.pending.pop(msg[1], None)
            if pending is not None and pending.part is not None and not pending.part.done():
                pending.part.set_result(msg[2])
        elif kind == "unknown_network":
            self._resend(proc, msg[1])
        elif kind == "hello":
            proc.info = msg[1]
            proc.ready = True
            slot.cache_stats = dict(msg[1].get("cache_stats") or {})
            restarted = slot.ever_ready
            slot.ever_ready = True
            slot.failures = 0
            slot.last_error = None
            self._all_answered = all(s.ever_ready for s in self._slots)
            log.info("worker %d ready (pid %d, %s)", slot.index, proc.pid, proc.info.get("device"))
            self._emit("worker_ready", {"worker": slot.index, "pid": proc.pid, "device": proc.info.get("device"),
                                        "restarted": restarted})
        elif kind == "fatal":
            slot.last_error = msg[1]
            self.error = msg[1]
            log.error("%s", msg[1])

    def _finish(self, proc: _Proc, job_id: int, result: JobResult | None, error: BaseException | None) -> None:
        if result is not None and result.json_split is not None and job_id in proc.pending:
            # The worker writes part of the JSON text next: it stays busy with (and holds) the job
            # until that comes ("json_part").
            pending = proc.pending[job_id]
            pending.part = result.json_part = self._loop.create_future()  # type: ignore[union-attr]
        else:
            pending = proc.pending.pop(job_id, None)  # type: ignore[assignment]
            if pending is None:
                return
        proc.free(pending.region)
        pending.region = None
        if result is not None:  # the worker's own time for it, for Retry-After
            took = (result.timing_ms.get("compile", 0.0) + result.timing_ms.get("compute", 0.0)) / 1e3
            proc.slot.service_s = 0.8 * proc.slot.service_s + 0.2 * took
        if pending.future.done():
            return  # its caller stopped waiting (deadline, disconnect)
        if error is not None:
            pending.future.set_exception(error)
        else:
            pending.future.set_result(result)  # type: ignore[arg-type]

    def _resend(self, proc: _Proc, job_id: int) -> None:
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
        pending.region = proc.send(("job", job_id, pending.job.to_wire(), pending.submitted))

    def _on_exit(self, proc: _Proc, exitcode: int | None) -> None:
        slot = proc.slot
        proc.alive = False
        proc.ready = False
        proc.exitcode = exitcode
        proc.close()
        proc.exited.set()
        lost = list(proc.pending.items())
        proc.pending.clear()
        for _, pending in lost:  # a split JSON result's other half: the server writes it all
            if pending.part is not None and not pending.part.done():
                pending.part.set_result(None)
        if self._closing or proc.stopping:
            for _, pending in lost:
                if not pending.future.done():
                    pending.future.set_exception(NotReadyError("the service is shutting down", retry_after=5.0))
            return
        reason = _describe_exit(exitcode)
        log.error("worker %d (pid %d) died (%s) holding %d request(s): restarting it",
                  slot.index, proc.pid, reason, len(lost))
        for job_id, pending in lost:
            if pending.future.done():
                continue
            where = "while computing this request" if job_id == proc.running else "while this request waited in its queue"
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
        delay = 0.0 if slot.failures == 0 else min(30.0, 0.5 * 2 ** (slot.failures - 1))
        self._background(self._respawn(slot, delay))

    async def _respawn(self, slot: _Slot, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        if not self._closing:
            self._spawn(slot)
