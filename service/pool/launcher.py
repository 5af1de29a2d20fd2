"""Worker processes: starting one, talking to it, noticing that it is gone.

:class:`ProcessLauncher` spawns a worker (``multiprocessing`` ``spawn``: JAX is not fork-safe)
with its socket pair and its two shared-memory arenas (:mod:`service.ipc.arenas`);
:class:`ProcessWorker` is the pool's handle on it. Everything runs on the event loop
(``add_reader``/``add_writer``: no thread hand-off, which under load would wait for the GIL);
what the socket cannot take at once is written when it can. When the socket closes, a short
thread waits for the process to exit and reports it on the loop.

Every worker process alive in this interpreter is killed at exit if nobody stopped it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from ..ipc.arenas import Arena, ArenaFds, FirstFit, RingReleaser
from ..ipc.framing import FrameReader, decode_frame, encode_msg, write_parts
from ..settings import Settings
from ..worker.main import main as _worker_entry
from .slots import OnExit, OnMessage, Slot, WorkerHandle

log = logging.getLogger("gradserve.workers")

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


def describe_exit(exitcode: int | None) -> str:
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


class ProcessWorker(WorkerHandle):
    """A worker process: its socket, its arenas, and the frames not yet written."""

    def __init__(self, slot: Slot, process: Any, conn: Any, loop: asyncio.AbstractEventLoop,
                 arenas: tuple[Arena, Arena] | None, on_message: OnMessage, on_exit: OnExit) -> None:
        super().__init__(slot, process.pid)
        self.process = process
        self.conn = conn
        self.fd: int = conn.fileno()
        self.loop = loop
        self.reader = FrameReader(self.fd)
        self.outq: list[memoryview] = []  # what the socket has not taken yet (written when writable)
        self.jobs: Arena | None = arenas[0] if arenas else None
        self.jobs_alloc = FirstFit(arenas[0]) if arenas else None
        self.releaser = RingReleaser(arenas[1]) if arenas else None
        self.closed = False
        self._on_message = on_message
        self._on_exit = on_exit
        os.set_blocking(self.fd, False)  # the loop reads and writes it; nothing may block there
        loop.add_reader(self.fd, self._readable)

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

    def _result_region(self, start: int, length: int) -> Any:
        if self.releaser is None:
            raise ValueError("a reply refers to a results arena that this worker does not have")
        return self.releaser.track(start, length)

    def kill(self) -> None:
        self.process.kill()

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

    def _readable(self) -> None:
        """On the loop: the worker's socket is readable (one read takes all that is there)."""
        reader = self.reader
        try:
            reader.feed()
        except (BlockingIOError, InterruptedError):
            return
        except (EOFError, OSError):
            self.loop.remove_reader(self.fd)
            threading.Thread(target=self._reap, name=f"gradserve-worker-{self.slot.index}-reap", daemon=True).start()
            return
        while reader.ready:
            frame = reader.ready.popleft()
            try:
                msg = decode_frame(frame, self._result_region)
            except BaseException:
                log.exception("worker %d sent an unreadable message: killing it", self.slot.index)
                self.process.kill()
                return
            try:
                self._on_message(self, msg)
            except Exception:  # a bug: the messages after it must not wait for more data
                log.exception("worker %d: handling its %r message failed", self.slot.index, msg[0])

    def _reap(self) -> None:
        """Off the loop: wait for a worker whose socket closed to exit, then report it."""
        process = self.process
        process.join(5.0)
        if process.exitcode is None:
            log.warning("worker %d closed its socket but did not exit: killing it", self.slot.index)
            process.kill()
            process.join(5.0)
        with _LIVE_LOCK:
            _LIVE.discard(process)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self.loop.call_soon_threadsafe(self._on_exit, self, process.exitcode)


def worker_config(s: Settings) -> dict[str, Any]:
    """The plain configuration of a worker's engine loop (:class:`service.worker.main.Worker`),
    whichever transport runs it (a process here, a thread in :mod:`.inprocess`)."""
    from ..registry.executables import settings_config  # noqa: PLC0415 - the registry package is heavy

    return {
        "compile_cache_size": s.compile_cache_size,
        "max_elements": s.max_tensor_elements,
        "max_nodes": s.max_nodes,
        "compile_cache_dir": str(s.compile_cache_dir) if s.compile_cache_dir else None,
        "network_cache_size": s.network_cache_size,
        "compile_timeout_s": s.compile_timeout_s,
        "max_batch_size": s.max_batch_size,
        "batch_delay_us": s.batch_delay_us,
        "executable_store": settings_config(s),
        "warm_programs": s.warm_programs,
    }


class ProcessLauncher:
    """Starts worker processes for a pool."""

    #: the size of each of a worker's two shared-memory arenas (pages are used only when touched);
    #: larger buffers, or any when the arena is full, go through the socket. 0: no arenas.
    arena_bytes = 64 * 1024 * 1024

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ctx = multiprocessing.get_context("spawn")

    def launch(self, slot: Slot, loop: asyncio.AbstractEventLoop, on_message: OnMessage,
               on_exit: OnExit) -> ProcessWorker:
        config = worker_config(self.settings)
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
        log.info("worker %d started (pid %d, %s)", slot.index, process.pid, slot.device)
        return ProcessWorker(slot, process, parent_conn, loop, arenas, on_message, on_exit)

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
