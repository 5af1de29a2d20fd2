"""The engine worker process: one :class:`engine.Engine` on one device, fed over a socket.

Started by the pool (:mod:`service.pool.launcher`) with the ``spawn`` start method (JAX is not
fork-safe). This module is imported before the child sets up its environment, so it imports
nothing heavy at the top (the framing, which needs NumPy, but no JAX): JAX is imported and
configured only in :func:`main`, after ``JAX_PLATFORMS`` / ``CUDA_VISIBLE_DEVICES`` are in place.

It reads messages (:mod:`service.ipc.messages`) in order, computes one job at a time, and
answers each job with one message. It knows nothing of HTTP: its answers are arrays and engine
error kinds, which the server encodes.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
import traceback
from collections import deque
from typing import Any

from service.ipc import messages as m
from service.ipc.arenas import Arena, ArenaFds, RingWriter
from service.ipc.framing import FrameReader, decode_frame, encode_msg, send_msg, write_parts


class Worker:
    """The worker's state: its engine, its LRU of parsed networks, its end of the socket."""

    def __init__(self, conn: Any, config: dict[str, Any], arenas: ArenaFds | None = None) -> None:
        import engine  # noqa: PLC0415 - after the environment is set up
        from engine.cache import LRUCache  # noqa: PLC0415
        from engine.transforms import from_wire  # noqa: PLC0415

        self.engine_mod = engine
        self.from_wire = from_wire
        self.specs: dict[tuple[Any, ...], Any] = {}  # a job's spec (plain data) -> the engine's spec
        self.conn = conn
        self.config = config
        self.engine = engine.Engine(
            cache_size=config["compile_cache_size"],
            max_elements=config["max_elements"],
            compile_cache_dir=config["compile_cache_dir"],
        )
        self.networks: Any = LRUCache(config["network_cache_size"])
        self.cancelled: set[int] = set()  # job ids nobody waits for any more
        self.fd = conn.fileno()
        self.reader = FrameReader(self.fd)
        self.poller = select.poll()
        self.poller.register(self.fd, select.POLLIN)
        self.jobs: Arena | None = None
        self.results: Arena | None = None
        self.ring: RingWriter | None = None
        if arenas is not None:
            self.jobs = Arena(arenas.jobs_fd, arenas.jobs_size)
            self.results = Arena(arenas.results_fd, arenas.results_size)
            os.close(arenas.jobs_fd)
            os.close(arenas.results_fd)
            self.ring = RingWriter(self.results)

    def send(self, msg: Any) -> None:
        parts, _ = encode_msg(msg, self.ring.alloc if self.ring is not None else None, self.results)
        write_parts(self.fd, parts)

    def _job_region(self, start: int, length: int) -> Any:
        if self.jobs is None:
            raise ValueError("a job refers to a jobs arena that this worker does not have")
        return self.jobs.region(start % self.jobs.size, length)

    def _next(self, timeout: float) -> Any:
        """The next message, or None if none came within ``timeout`` seconds."""
        reader = self.reader
        while not reader.ready:
            if not self.poller.poll(timeout * 1000):
                return None
            reader.feed()
            if timeout == 0 and not reader.ready:
                return None
        return decode_frame(reader.ready.popleft(), self._job_region)

    def hello(self) -> None:
        import jax  # noqa: PLC0415

        device = self.engine.device
        self.send(m.hello({
            "pid": os.getpid(),
            "device": str(device),
            "platform": device.platform,
            "devices": [str(d) for d in jax.devices()],
            "jax": jax.__version__,
            "cache_stats": self.engine.stats,
        }))

    def network(self, job: m.GradJob) -> tuple[Any, list[str]]:
        """The parsed network for ``job`` (None if unknown and no doc), and the ids evicted."""
        evicted: list[str] = []
        net = self.networks.get(job.network_id)
        if net is None and job.network_doc is not None:
            net = self.engine_mod.parse_network(
                job.network_doc, max_nodes=self.config["max_nodes"], max_elements=self.config["max_elements"],
                path=job.network_path,
            )
            evicted = self.networks.put(job.network_id, net)  # type: ignore[assignment]
        if net is not None and net.path != job.network_path:  # kept as the latest caller named it
            net = net.with_path(job.network_path)
            self.networks.put(job.network_id, net)
        return net, evicted

    def run_job(self, job_id: int, job: m.GradJob, sent_at: float) -> None:
        started = time.monotonic()
        if job_id in self.cancelled or (job.deadline and started > job.deadline):
            self.cancelled.discard(job_id)
            self.send(m.expired(job_id, self.engine.stats))
            return
        evicted: list[str] = []
        try:
            net, evicted = self.network(job)
            if net is None:
                self.send(m.unknown_network(job_id))
                return
            spec = self.specs.get(job.spec)
            if spec is None:
                if len(self.specs) > 4096:
                    self.specs.clear()
                spec = self.specs[job.spec] = self.from_wire(job.spec)
            result = self.engine.run(net, spec, job.inputs, parameters=job.parameters, extra=job.extra)
            timing = dict(result.timing_ms)
            timing["queue"] = max(0.0, (started - sent_at) * 1e3)
            reply = m.JobResult(
                fields=result.fields,
                timing_ms=timing,
                cache_hit=result.cache_hit,
                cache_stats=self.engine.stats,
            )
            self.send(m.result(job_id, reply, evicted))
        except self.engine_mod.GradnetError as exc:
            self.send(m.error(job_id, type(exc).__name__, exc.message, exc.path, self.engine.stats, evicted))
        except Exception as exc:  # a bug, or the device ran out of memory: this job fails, we go on
            traceback.print_exc()
            message = f"the engine failed: {type(exc).__name__}: {exc}"
            self.send(m.error(job_id, m.INTERNAL, message, None, self.engine.stats, evicted))

    def _take(self, msg: Any, backlog: deque[Any]) -> None:
        if msg[0] == m.CANCEL:
            self.cancelled.add(m.payload(msg))
        else:
            backlog.append(msg)

    def serve(self, parent_pid: int) -> None:
        """Read the socket on this thread (no hand-off between threads on the hot path). Before
        each job everything already sent is read, so a cancellation that arrived while the
        previous job ran is honoured."""
        backlog: deque[Any] = deque()
        while True:
            if not backlog:
                while (msg := self._next(1.0)) is None:
                    if os.getppid() != parent_pid:
                        return  # reparented: the server died without closing our socket
                self._take(msg, backlog)
            while (msg := self._next(0)) is not None:
                self._take(msg, backlog)
            msg = backlog.popleft()
            kind = msg[0]
            if kind == m.JOB:
                job_id, job, sent_at = m.read_job(msg)
                self.run_job(job_id, job, sent_at)
                self.cancelled.discard(job_id)
                if len(self.cancelled) > 1024:  # cancellations that came after their job ran
                    self.cancelled.difference_update([i for i in list(self.cancelled) if i < job_id])
            elif kind == m.FORGET:
                network_id = m.payload(msg)
                self.networks.pop(network_id)
                self.engine.forget(network_id)
            elif kind == m.STOP:
                return


def main(conn: Any, index: int, env: dict[str, str], config: dict[str, Any], arenas: ArenaFds | None = None) -> None:
    """Entry point of a worker process (the ``target`` of its ``multiprocessing.Process``)."""
    # The server drains on SIGTERM/SIGINT and then stops us over the socket; a signal sent to the
    # whole process group (Ctrl-C, systemd) must not kill the requests we are computing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import faulthandler  # noqa: PLC0415

    faulthandler.enable()  # a segfault in XLA leaves a stack on stderr
    os.environ.update(env)
    parent_pid = os.getppid()

    try:
        import jax  # noqa: PLC0415

        if env.get("JAX_PLATFORMS"):
            # The server's __main__ may have imported jax before os.environ was updated.
            jax.config.update("jax_platforms", env["JAX_PLATFORMS"])
        import engine  # noqa: PLC0415

        engine.configure_jax()  # this process starts JAX: it configures it
        worker = Worker(conn, config, arenas)
        worker.hello()
    except BaseException as exc:
        traceback.print_exc()
        try:
            send_msg(conn, m.fatal(f"worker {index} could not start its engine: {type(exc).__name__}: {exc}"))
        except Exception:
            pass
        sys.stderr.flush()
        os._exit(3)
    try:
        worker.serve(parent_pid)
    except (EOFError, OSError):
        pass  # the server closed the socket or died: without it nobody reads our answers
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
