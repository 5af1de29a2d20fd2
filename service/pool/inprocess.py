"""The in-process transport of the pool (``GRADSERVE_WORKER_MODE=inprocess``, issue 14.4): the
engine runs inside the HTTP process, on a thread of its own, and tiny warm calls on the event loop.

The split design hands every job to a worker process: four cross-process wake-ups per request
(~60 µs each on a 2-vCPU VM, docs/benchmarks.md) and a copy of large arrays through shared memory
each way. Here the worker's engine loop is the same code (:class:`service.worker.main.Worker`:
its batching, compile budget, failure cache, cancellation and skipping of abandoned jobs), driven
through an in-memory queue instead of a socket:

- messages are the same tuples (:mod:`service.ipc.messages`) but are never pickled: a job's
  arrays (views of the request body) and a result's arrays (views of the engine's buffers) are
  handed over as they are;
- a job the engine thread would take at once, whose program has run before (warm) and took at
  most :data:`INLINE_MAX_MS` (1 ms) last time, is computed right on the event loop: no thread
  wake-up at all (the tutorial network's call is ~50 µs; the loop is blocked no longer than a
  JSON parse);
- everything else (first calls, which compile on the worker's compile thread; large calls; calls
  that arrive while the engine is busy, which may batch) goes to the engine thread.

What the process boundary gave, this design gets from one HTTP process per device under a
supervisor (:mod:`service.supervisor`): a crash (a segfault in XLA, the OOM killer) takes down the
process and exactly the requests it held; the supervisor starts it again on the same inherited
listening socket, so connections wait in its backlog meanwhile instead of being refused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import traceback
from collections import deque
from typing import Any

from ..ipc import messages as m
from ..settings import Settings
from .launcher import worker_config
from .slots import OnExit, OnMessage, Slot, WorkerHandle

log = logging.getLogger("gradserve.workers")

#: a warm program whose last call computed within this many milliseconds runs on the event loop
#: when the engine thread is idle (measured: docs/benchmarks.md "Hot path and process design")
INLINE_MAX_MS = 1.0
#: programs whose last duration is remembered (cleared past this)
_TINY_MAX = 4096
#: once the engine has taken this many bytes of job inputs since the heap was last trimmed, and
#: then has been idle for TRIM_IDLE_S, the free heap goes back to the OS (see :func:`_trim_heap`)
TRIM_BYTES = 4 * 1024 * 1024
TRIM_IDLE_S = 0.2


def _trim_heap() -> None:
    """glibc's ``malloc_trim(0)``: the free pages of every malloc arena go back to the OS.

    In this design one process holds the request bodies, their decoded arrays and the engine's
    buffers, and the CLI keeps blocks of up to 8 MiB on the heap (the MLP's calls paid ~2,000 page
    faults each with fresh mappings, service/cli.py): after a burst of large requests their freed
    pages stayed in RSS (tests/hardening/test_overload.py, a burst of 5 MiB bodies: 92 and 102 MiB
    over the baseline 20 s later, in two runs; with this, 18 MiB under it). Called on the engine
    thread once it has been idle TRIM_IDLE_S after large jobs, never between the requests of a
    steady load; it costs about 13 ms per 150 MB given back, ~0.05 ms when there is nothing to
    give. No-op without glibc."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes  # noqa: PLC0415

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


class _Wake:
    """The engine thread's wake-up: a pipe the thread polls (the Worker's poller watches its
    ``fileno()``), written once per message put in the inbox."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)

    def fileno(self) -> int:
        return self.r

    def poke(self) -> None:
        try:
            os.write(self.w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already: the thread will wake

    def clear(self) -> None:
        try:
            while os.read(self.r, 4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def close(self) -> None:
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass


def _thread_worker_class() -> type:
    """:class:`service.worker.main.Worker` fed from an in-memory inbox (imported late: it imports
    the engine)."""
    from ..worker.main import Worker  # noqa: PLC0415

    class ThreadWorker(Worker):
        def __init__(self, handle: InProcessWorker, config: dict[str, Any]) -> None:
            self.handle = handle
            self.taken = 0  # bytes of job inputs since the heap was last trimmed
            super().__init__(handle.wake, config, None)

        def send(self, msg: Any) -> None:
            self.handle.deliver(msg)

        def run_job(self, job_id: int, job: Any, sent_at: float, *args: Any, **kwargs: Any) -> None:
            inputs = job.inputs
            self.taken += sum(getattr(a, "nbytes", 0) for a in (inputs.values() if isinstance(inputs, dict) else inputs))
            super().run_job(job_id, job, sent_at, *args, **kwargs)

        def _next(self, timeout: float) -> Any:
            """The next message of the inbox, or None if none came within ``timeout`` seconds."""
            handle = self.handle
            inbox = handle.inbox
            while not inbox:
                if timeout == 0:
                    return None
                trim = self.taken >= TRIM_BYTES
                wait = min(timeout, TRIM_IDLE_S) if trim else timeout
                handle.idle = True  # from here on the pool pokes the wake-up pipe (send)
                try:
                    if inbox:  # put there before idle was set, so with no poke
                        break
                    woken = self.poller.poll(wait * 1000)
                finally:
                    handle.idle = False
                if not woken:
                    if not trim:
                        return None
                    self.taken = 0  # idle after large jobs: give their freed memory back
                    _trim_heap()
                    timeout -= wait
                    if timeout <= 0:
                        return None
                    continue
                handle.wake.clear()
            return inbox.popleft()

    return ThreadWorker


class InProcessWorker(WorkerHandle):
    """The pool's handle on an engine thread of this process (see the module docstring)."""

    def __init__(self, slot: Slot, loop: asyncio.AbstractEventLoop, config: dict[str, Any],
                 on_message: OnMessage, on_exit: OnExit) -> None:
        super().__init__(slot, os.getpid())
        self.loop = loop
        self.config = config
        self.inbox: deque[Any] = deque()
        self.wake = _Wake()
        self.worker: Any = None  # the ThreadWorker, once the engine thread has built it
        self.idle = False  # the engine thread waits for a message (and holds no job)
        self.gone = False
        self.keys: dict[int, Any] = {}  # job id -> its program's key, until answered
        self.tiny: dict[Any, bool] = {}  # program key -> its last call took <= INLINE_MAX_MS
        self.inlined = 0  # jobs computed on the event loop (for tests and benchmarks)
        self._outbox: deque[Any] = deque()  # messages from the engine's threads, for the loop (deliver)
        self._flush_due = False
        self._loop_thread = threading.get_ident()
        self._on_message = on_message
        self._on_exit = on_exit
        self.thread = threading.Thread(target=self._run, name=f"gradserve-engine-{slot.index}", daemon=True)
        self.thread.start()

    # -- the engine thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            worker = _thread_worker_class()(self, self.config)
            if hasattr(worker, "warm_up"):
                worker.warm_up()
            self.worker = worker
            worker.hello()
        except BaseException as exc:  # noqa: BLE001 - reported to the pool, like a worker's
            traceback.print_exc()
            self.deliver(m.fatal(f"worker {self.slot.index} could not start its engine: {type(exc).__name__}: {exc}"))
            self._exited(3)
            return
        code = 0
        try:
            worker.serve(os.getppid())
        except BaseException:  # noqa: BLE001 - a bug in the loop: the pool restarts the thread
            traceback.print_exc()
            code = 1
        self._exited(code)

    def _exited(self, code: int) -> None:
        try:
            self.loop.call_soon_threadsafe(self._flush_then_exit, code)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting

    # -- replies, on the loop ------------------------------------------------------------------

    def deliver(self, msg: Any) -> None:
        """A message from the engine (any thread) to the pool, on the loop. From another thread
        the messages wait in an outbox that one callback empties: a batch's answers wake the loop
        once, not once each (a call_soon_threadsafe is a write to the loop's wake-up pipe)."""
        if threading.get_ident() == self._loop_thread:
            self._handle(msg)
            return
        self._outbox.append(msg)
        if not self._flush_due:
            self._flush_due = True
            try:
                self.loop.call_soon_threadsafe(self._flush)
            except RuntimeError:
                pass  # the loop is closed

    def _flush(self) -> None:
        self._flush_due = False  # first: a message put after this schedules a flush of its own
        outbox = self._outbox
        while outbox:
            self._handle(outbox.popleft())

    def _handle(self, msg: Any) -> None:
        if self.gone:
            return
        kind = msg[0]
        if kind in (m.RESULT, m.ERROR, m.EXPIRED):
            key = self.keys.pop(msg[1], None)
            if key is not None and kind == m.RESULT:
                if len(self.tiny) > _TINY_MAX:
                    self.tiny.clear()
                timing = m.read_result(msg)[1].timing_ms
                self.tiny[key] = timing.get("compile", 0.0) == 0 and timing.get("compute", 1e9) <= INLINE_MAX_MS
        self._on_message(self, msg)

    # -- the pool's side -----------------------------------------------------------------------

    def send(self, msg: Any) -> int | None:
        if self.gone:
            return None
        kind = msg[0]
        worker = self.worker
        if kind == m.CANCEL and worker is not None:
            worker.cancelled.add(m.payload(msg))  # read before its job runs, as the socket's would be
            return None
        if kind == m.JOB and worker is not None and self._inline(worker, msg):
            return None
        self.inbox.append(msg)
        if self.idle:  # a busy engine thread reads the inbox before it waits again: no write needed
            self.wake.poke()
        return None

    def _inline(self, worker: Any, msg: Any) -> bool:
        """Compute ``msg``'s job here and now if it is warm and tiny and the engine thread is idle
        with nothing else to do (so jobs stay in order and the engine is used by one thread)."""
        job_id, job, sent_at = m.read_job(msg)
        try:
            key = worker.compiles.key(job)
        except Exception:  # noqa: BLE001 - an odd job: the engine thread says what is wrong
            return False
        self.keys[job_id] = key
        if not (self.tiny.get(key) and self.idle and not self.inbox and len(self.pending) == 1
                and key in worker.compiles.warm and not worker.compiles.running):
            return False
        self.inlined += 1
        worker.run_job(job_id, job, sent_at)  # its answer comes back through deliver(), at once
        return True

    def kill(self) -> None:
        """A thread cannot be killed: the pool stops waiting for it (its jobs fail as a dead
        worker's would) and the thread exits after what it computes now."""
        self.inbox.append(m.stop())
        self.wake.poke()
        self.loop.call_soon(self._exit, -9)

    def _flush_then_exit(self, code: int) -> None:
        self._flush()  # the thread's last answers first, as they were sent
        self._exit(code)

    def _exit(self, code: int) -> None:
        if not self.gone:
            self.gone = True
            self._on_exit(self, code)

    def close(self) -> None:
        if not self.thread.is_alive():
            self.wake.close()


class InProcessLauncher:
    """Starts in-process engine threads for a pool (one per slot; the supervisor gives each HTTP
    process one slot, its device)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def launch(self, slot: Slot, loop: asyncio.AbstractEventLoop, on_message: OnMessage,
               on_exit: OnExit) -> InProcessWorker:
        os.environ.update({k: v for k, v in slot.env.items() if k not in os.environ})
        worker = InProcessWorker(slot, loop, worker_config(self.settings), on_message, on_exit)
        log.info("engine %d started in process %d (%s)", slot.index, worker.pid, slot.device)
        return worker


__all__ = ["INLINE_MAX_MS", "InProcessLauncher", "InProcessWorker"]
