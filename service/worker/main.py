"""The engine worker process: one :class:`engine.Engine` on one device, fed over a socket.

Started by the pool (:mod:`service.pool.launcher`) with the ``spawn`` start method (JAX is not
fork-safe). This module is imported before the child sets up its environment, so it imports
nothing heavy at the top (the framing, which needs NumPy, but no JAX): JAX is imported and
configured only in :func:`main`, after ``JAX_PLATFORMS`` / ``CUDA_VISIBLE_DEVICES`` are in place.

It reads messages (:mod:`service.ipc.messages`) in order and answers each job with one
message. A job alone is computed at once; jobs queued together that share a program are computed
as one batch (:mod:`service.worker.batcher`, ``max_batch_size``), each answered on its own. It knows nothing of HTTP: its answers are arrays and engine
error kinds, which the server encodes.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator
from typing import Any

from service.ipc import messages as m
from service.ipc.arenas import Arena, ArenaFds, RingWriter
from service.ipc.framing import FrameReader, decode_frame, encode_msg, send_msg, write_parts
from service.worker.batcher import ALONE, Batcher
from service.worker.batcher import signature as _signature


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
            executables=_executable_store(config.get("executable_store")),
        )
        self.networks: Any = LRUCache(config["network_cache_size"])
        self.cancelled: set[int] = set()  # job ids nobody waits for any more
        self.compiles = _CompileBudget(self, config.get("compile_timeout_s"))
        # Dynamic batching (issue 14.1): jobs queued together that share a program run as one
        # vmapped call; a batch that is not full waits at most batch_delay_s for more.
        self.batcher = Batcher(self.engine, config.get("max_batch_size", 1))
        self.batch_delay_s = max(0.0, config.get("batch_delay_us", 0) / 1e6)
        self.backlog: deque[Any] = deque()  # messages read and not yet handled
        self.fd = conn.fileno()
        self.send_lock = threading.Lock()
        self._corked: list[Any] | None = None  # the parts held by answers_together
        self._corked_by: int | None = None
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
        with self.send_lock:  # the compile thread answers too
            parts, _ = encode_msg(msg, self.ring.alloc if self.ring is not None else None, self.results)
            corked = self._corked
            if corked is not None:
                if threading.get_ident() == self._corked_by:
                    corked += parts  # written with the rest of the batch's answers (answers_together)
                    return
                # another thread's answer: what is held goes first, so the socket carries the
                # messages in the order their shared-memory regions were taken from the ring
                parts = corked + parts
                corked.clear()
            write_parts(self.fd, parts)

    @contextlib.contextmanager
    def answers_together(self) -> Iterator[None]:
        """The answers this thread sends meanwhile are written with one writev at the end: a
        batch's answers wake the server once, not once each."""
        with self.send_lock:
            self._corked, self._corked_by = [], threading.get_ident()
        try:
            yield
        finally:
            with self.send_lock:
                parts, self._corked = self._corked or [], None
                if parts:
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

    def warm_up(self) -> int:
        """Load (and run once) the programs most recently used by any worker sharing our
        executable store, before we say hello: a replica the autoscaler adds takes its first
        requests warm (issue 17.5). Bounded in count and time; a bad entry is skipped."""
        store = self.engine.executables
        limit = int(self.config.get("warm_programs") or 0)
        if store is None or limit <= 0:
            return 0
        loaded, deadline = 0, time.monotonic() + _WARM_UP_S
        try:
            entries = store.recent(limit)
        except Exception as exc:  # noqa: BLE001 - a cold start, not a failed one
            print(f"gradserve worker: executable store unreadable, starting cold: {exc}", file=sys.stderr)
            return 0
        network_ids: list[str] = []
        for data in entries:
            if time.monotonic() > deadline:
                break
            loaded += self.engine.preload(data)
            network_ids.append(_entry_network(data))
        self._warm_networks([i for i in dict.fromkeys(network_ids) if i], deadline)
        return loaded

    def _warm_networks(self, network_ids: list[str], deadline: float) -> None:
        """Parse the preloaded programs' networks (still registered) from the registry, so that
        the first job for one needs no document: the hello tells the pool we hold them."""
        from service.registry.executables import registry_documents  # noqa: PLC0415

        for network_id, document in registry_documents(self.config.get("executable_store"), network_ids):
            if time.monotonic() > deadline:
                break
            try:
                import orjson  # noqa: PLC0415

                net = self.engine_mod.parse_network(orjson.loads(document), max_nodes=self.config["max_nodes"],
                                                    max_elements=self.config["max_elements"])
            except Exception as exc:  # noqa: BLE001 - it then comes with its first job
                print(f"gradserve worker: network {network_id} not pre-parsed: {exc}", file=sys.stderr)
                continue
            if net.id == network_id:  # as the server names it; else the job brings its document
                self.networks.put(network_id, net)

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
            "networks": self.networks.keys(),  # parsed by the warm-up: the pool sends these by reference
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

    def spec(self, job: m.GradJob) -> Any:
        """The engine's spec of a job's plain-data spec (remembered)."""
        spec = self.specs.get(job.spec)
        if spec is None:
            if len(self.specs) > 4096:
                self.specs.clear()
            spec = self.specs[job.spec] = self.from_wire(job.spec)
        return spec

    def run_job(self, job_id: int, job: m.GradJob, sent_at: float, net: Any = None,
                evicted: list[str] | None = None, send: Any = None, batch_wait_s: float = 0.0) -> None:
        """Compute ``job`` and answer it (with ``send``: the compile thread collects its answers)."""
        send = send or self.send
        started = time.monotonic()
        if job_id in self.cancelled or (job.deadline and started > job.deadline):
            self.cancelled.discard(job_id)
            send(m.expired(job_id, self.engine.stats))
            return
        evicted = evicted or []
        try:
            if net is None:
                net, evicted = self.network(job)
                if net is None:
                    send(m.unknown_network(job_id))
                    return
                if self.compiles.divert(job_id, job, sent_at, net, evicted):
                    return  # a cold program: compiled (and run) on the compile thread
            result = self.engine.run(net, self.spec(job), job.inputs, parameters=job.parameters, extra=job.extra)
            send(self._result(job_id, result, started - sent_at, 1, batch_wait_s, evicted))
        except self.engine_mod.GradnetError as exc:
            send(m.error(job_id, type(exc).__name__, exc.message, exc.path, self.engine.stats, evicted))
        except Exception as exc:  # a bug, or the device ran out of memory: this job fails, we go on
            traceback.print_exc()
            message = f"the engine failed: {type(exc).__name__}: {exc}"
            send(m.error(job_id, m.INTERNAL, message, None, self.engine.stats, evicted))

    def _result(self, job_id: int, result: Any, queued_s: float, batch_size: int, batch_wait_s: float,
                evicted: list[str]) -> Any:
        timing = dict(result.timing_ms)
        timing["queue"] = max(0.0, queued_s * 1e3)
        # for the server's histograms (gradserve_batch_size, gradserve_batch_wait_seconds)
        timing["batch_size"] = float(batch_size)
        timing["batch_wait"] = batch_wait_s * 1e3
        reply = m.JobResult(fields=result.fields, timing_ms=timing, cache_hit=result.cache_hit,
                            cache_stats=self.engine.stats)
        return m.result(job_id, reply, evicted)

    def _take(self, msg: Any, backlog: deque[Any]) -> None:
        if msg[0] == m.CANCEL:
            self.cancelled.add(m.payload(msg))
        elif msg[0] == m.PING:
            # The heartbeat (hung-worker detection, issue 12.7): answered by the loop that reads
            # the jobs, between jobs and while a compile runs on the compile thread; a loop stuck
            # in a compute answers late, a stopped process never.
            self.send(m.pong(m.payload(msg)))
        else:
            backlog.append(msg)

    def serve(self, parent_pid: int) -> None:
        """Read the socket on this thread (no hand-off between threads on the hot path). Before
        each job (or batch) everything already sent is read, so a cancellation that arrived
        while the previous one ran is honoured."""
        backlog = self.backlog
        while True:
            if not backlog:
                while (msg := self._next(self.compiles.poll_s())) is None:
                    self.compiles.check_budget()
                    if os.getppid() != parent_pid:
                        return  # reparented: the server died without closing our socket
                self._take(msg, backlog)
            self._drain()
            if not backlog:  # only cancellations came (a job on the compile thread can be cancelled)
                continue
            kind = backlog[0][0]
            if kind == m.JOB and self.batcher.enabled and len(backlog) > 1 and backlog[1][0] == m.JOB:
                self.run_jobs(self._jobs())  # two or more jobs at hand: they may batch
                continue
            msg = backlog.popleft()
            if kind == m.JOB:  # a lone job never waits for others
                job_id, job, sent_at = m.read_job(msg)
                self.compiles.check_budget()
                self.run_job(job_id, job, sent_at)
                self._done(job_id)
            elif kind == m.FORGET:
                network_id = m.payload(msg)
                self.networks.pop(network_id)
                self.engine.forget(network_id)
            elif kind == m.STOP:
                return

    def _drain(self) -> None:
        """Read every message already sent, without waiting."""
        while (msg := self._next(0)) is not None:
            self._take(msg, self.backlog)

    def _done(self, job_id: int) -> None:
        self.cancelled.discard(job_id)
        if len(self.cancelled) > 1024:  # cancellations that came after their job ran
            self.cancelled.difference_update([i for i in list(self.cancelled) if i < job_id])

    # -- batches -------------------------------------------------------------------------------

    def _jobs(self) -> list[list[Any]]:
        """The jobs at the head of the backlog (up to the first message that is not a job), as
        ``[job_id, job, sent_at, taken_at, wait_s]``. When two or more of them could batch and
        their batch is not full, it waits up to ``batch_delay_s`` for more (a lone job never
        waits: it is run at once)."""
        backlog, batcher = self.backlog, self.batcher
        jobs: list[list[Any]] = []
        now = time.monotonic()
        while backlog and backlog[0][0] == m.JOB:
            jobs.append([*m.read_job(backlog.popleft()), now, 0.0])
        if self.batch_delay_s <= 0:
            return jobs
        counts: dict[Any, int] = {}
        for entry in jobs:
            k = batcher.key(entry[1])
            if k is not None:
                counts[k] = counts.get(k, 0) + 1
        if not counts or not 2 <= max(counts.values()) < batcher.max_batch_size:
            return jobs
        start = now
        end = start + self.batch_delay_s
        while not backlog and (left := end - time.monotonic()) > 0:
            msg = self._next(left)
            if msg is None:
                break
            self._take(msg, backlog)
            while backlog and backlog[0][0] == m.JOB:  # what came meanwhile joins (others wait their turn)
                entry = [*m.read_job(backlog.popleft()), time.monotonic(), 0.0]
                jobs.append(entry)
                k = batcher.key(entry[1])
                if k is not None:
                    counts[k] = counts.get(k, 0) + 1
                    if counts[k] >= batcher.max_batch_size:
                        end = 0.0  # a batch is full: go
        done = time.monotonic()
        for entry in jobs:
            entry[4] = done - max(start, entry[3])
        return jobs

    def run_jobs(self, jobs: list[list[Any]]) -> None:
        """Compute ``jobs`` (from :meth:`_jobs`) in order of arrival, each group of those that
        share a program as one batch (:class:`Batcher`), the others one by one."""
        batcher = self.batcher
        for group in batcher.plan(jobs, lambda entry: batcher.key(entry[1])):
            self._drain()  # cancellations that came while the previous group ran
            self.compiles.check_budget()
            now = time.monotonic()
            live = []
            for entry in group:
                job_id, job = entry[0], entry[1]
                if job_id in self.cancelled or (job.deadline and now > job.deadline):
                    self.run_job(job_id, job, entry[2])  # answered expired, as a job run alone is
                    self._done(job_id)
                else:
                    live.append(entry)
            if len(live) > 1:
                live = self._run_batch(live)
            for job_id, job, sent_at, _, wait_s in live:  # the ones that run alone
                self.run_job(job_id, job, sent_at, batch_wait_s=wait_s)
                self._done(job_id)

    def _run_batch(self, group: list[list[Any]]) -> list[list[Any]]:
        """Answer what :class:`Batcher` computes of ``group`` (one key) as one batch; returns the
        entries to run alone (a cold program, a batched program not compiled yet or failed)."""
        first = group[0][1]
        if self.compiles.key(first) not in self.compiles.warm:
            return group  # never run here: its first run goes through the compile budget
        try:
            net, evicted = self.network(first)
        except self.engine_mod.GradnetError:
            return group  # the usual path answers each one
        if net is None:
            return group
        started = time.monotonic()
        try:
            outcomes = self.batcher.run(net, self.spec(first), [entry[1] for entry in group])
        except Exception:  # noqa: BLE001 - a bug in batching must not cost the jobs: run them alone
            traceback.print_exc()
            return group
        alone = []
        n = sum(1 for o in outcomes if o is not ALONE and not isinstance(o, BaseException))
        with self.answers_together():
            for entry, outcome in zip(group, outcomes):
                job_id, _, sent_at, _, wait_s = entry
                if outcome is ALONE:
                    alone.append(entry)
                    continue
                if isinstance(outcome, self.engine_mod.GradnetError):
                    self.send(m.error(job_id, type(outcome).__name__, outcome.message, outcome.path,
                                      self.engine.stats, evicted))
                elif isinstance(outcome, BaseException):
                    message = f"the engine failed: {type(outcome).__name__}: {outcome}"
                    self.send(m.error(job_id, m.INTERNAL, message, None, self.engine.stats, evicted))
                else:
                    self.send(self._result(job_id, outcome, started - sent_at, n, wait_s, evicted))
                evicted = []
                self._done(job_id)
        return alone


#: the longest a starting worker spends preloading programs before it takes requests
_WARM_UP_S = 30.0


def _entry_network(data: bytes) -> str:
    """The network id an executable-store entry's program names ("" if unreadable)."""
    try:
        from engine.executables import read_header  # noqa: PLC0415

        return str(read_header(data)[0]["program"]["network_id"])
    except Exception:  # noqa: BLE001 - a damaged entry: preload skipped it too
        return ""


def _executable_store(config: Any) -> Any:
    """The worker's executable store (service/registry/executables.py), or None."""
    if not config:
        return None
    try:
        from service.registry.executables import open_store  # noqa: PLC0415

        return open_store(config)
    except Exception as exc:  # noqa: BLE001 - without a store the worker compiles everything itself
        print(f"gradserve worker: no executable store ({exc})", file=sys.stderr)
        return None


class _CompileBudget:
    """Compiles off the warm path (issue 12.2). A job whose program this worker has not run yet
    (network, spec and shapes) goes to one compile thread, which compiles and runs it; warm jobs
    keep running on the main thread meanwhile (XLA compiles without the GIL). A compile has
    ``timeout_s``: past it the job fails with :class:`engine.errors.CompileError` (422) and the
    program is remembered as failed, as is one the compiler refused, so the same call fails at
    once the next time. (A running compile cannot be interrupted: the thread finishes it and its
    result is dropped.) Before compiling, a cost estimate (seconds per node, learned from this
    worker's own compiles) turns away a network that cannot finish within the budget."""

    #: compile seconds ~ per_node * nodes ** EXPONENT (issue 12 measured a chain of 1,000 Tanh at 3.5 s, 3,000 at
    #: 12 s: exponent 1.12); per_node starts from those figures and is learned
    EXPONENT = 1.12
    PER_NODE = 3.5 / 1000**1.12
    MAX_FAILED = 1024

    def __init__(self, worker: Worker, timeout_s: float | None) -> None:
        self.worker = worker
        self.timeout_s = timeout_s
        self.warm: set[Any] = set()
        self.failed: dict[Any, str] = {}
        self.per_node = self.PER_NODE
        self.lock = threading.Lock()
        self.running: dict[int, tuple[Any, float]] = {}  # job id -> (key, compile start)
        self.answered: set[int] = set()  # jobs failed by the budget while their compile went on
        self.queue: Any = None  # the compile thread's
        self.checks: Any = None  # the check thread's (large networks)

    def key(self, job: m.GradJob) -> Any:
        """The job's program: network, spec (plain hashable data) and its arrays' signatures."""
        key = job.program_key
        if key is None:
            key = job.program_key = (job.network_id, job.spec, _signature(job.inputs), _signature(job.parameters),
                                     _signature(job.extra))
        return key

    def divert(self, job_id: int, job: m.GradJob, sent_at: float, net: Any, evicted: list[str]) -> bool:
        """True if the job was answered (a remembered failure, an estimate over budget) or handed
        to the compile thread; False: it is warm, the caller runs it."""
        key = self.key(job)
        if key in self.warm:
            return False
        nodes = len(getattr(net, "nodes", ()))
        if nodes >= CHECK_NODES and key not in self.failed:
            # The server left this network's abstract evaluation to us (service/grad/validator.py):
            # the check thread does it, then the estimate and the compile, as below.
            self._thread("checks", self._check_loop).put((job_id, job, sent_at, net, evicted, key, nodes))
            return True
        self._refuse_or_compile(job_id, job, sent_at, net, evicted, key, nodes)
        return True

    def _refuse_or_compile(self, job_id: int, job: m.GradJob, sent_at: float, net: Any, evicted: list[str],
                           key: Any, nodes: int) -> None:
        """Answer a remembered failure or an estimate over budget, or queue the compile."""
        worker = self.worker
        errors = worker.engine_mod.errors
        why = self.failed.get(key)
        if why is None and self.timeout_s is not None:
            estimate = self.per_node * nodes**self.EXPONENT
            if estimate > self.timeout_s:
                why = (f"the network's {nodes} nodes would take about {estimate:.0f} s to compile, over the "
                       f"compile budget of {self.timeout_s:g} s (--compile-timeout-s): split it, or raise the budget")
                self._remember(key, why)
        if why is not None:
            worker.send(m.error(job_id, errors.CompileError.__name__, why, job.network_path.rstrip(".") or None,
                                worker.engine.stats, evicted))
            return
        self._thread("queue", self._compile_loop).put((job_id, job, sent_at, net, evicted, key, nodes))

    def _thread(self, attr: str, loop: Any) -> Any:
        """The queue of the thread that runs ``loop`` (started on first use)."""
        with self.lock:
            q = getattr(self, attr)
            if q is None:
                import queue  # noqa: PLC0415

                q = queue.SimpleQueue()
                setattr(self, attr, q)
                threading.Thread(target=loop, name=attr, daemon=True).start()
        return q

    def _check_loop(self) -> None:
        """The check of large networks (:data:`CHECK_NODES` nodes or more), off the main thread:
        ``Engine.check_run``, the server's validator's own check, so a bad network gets the same
        422 naming its node as a small one gets from the server. Tracing 3,000 nodes holds the
        GIL for seconds: done in the server it stalled every warm request there (issue 12.2);
        here it yields to the warm path as the compile thread does."""
        worker = self.worker
        _yield_to_the_warm_path()
        while True:
            job_id, job, sent_at, net, evicted, key, nodes = self.checks.get()
            if job.deadline and time.monotonic() > job.deadline:
                worker.send(m.expired(job_id, worker.engine.stats))
                continue
            try:
                worker.engine.check_run(net, worker.spec(job), job.inputs, parameters=job.parameters,
                                        extra=job.extra)
            except worker.engine_mod.GradnetError as exc:
                worker.send(m.error(job_id, type(exc).__name__, exc.message, exc.path, worker.engine.stats, evicted))
                continue
            except Exception as exc:  # noqa: BLE001 - the thread must go on
                traceback.print_exc()
                worker.send(m.error(job_id, m.INTERNAL, f"the engine failed: {type(exc).__name__}: {exc}", None,
                                    worker.engine.stats, evicted))
                continue
            self._refuse_or_compile(job_id, job, sent_at, net, evicted, key, nodes)

    def _remember(self, key: Any, why: str) -> None:
        with self.lock:
            if len(self.failed) >= self.MAX_FAILED:
                self.failed.pop(next(iter(self.failed)))
            self.failed[key] = why

    def _compile_loop(self) -> None:
        worker = self.worker
        _yield_to_the_warm_path()
        while True:
            job_id, job, sent_at, net, evicted, key, nodes = self.queue.get()
            if key in self.failed:  # failed while this one waited: fail fast too
                worker.send(m.error(job_id, "CompileError", self.failed[key], None, worker.engine.stats, evicted))
                continue
            with self.lock:
                self.running[job_id] = (key, time.monotonic())
            replies: list[Any] = []
            try:
                worker.run_job(job_id, job, sent_at, net, evicted, replies.append)
            except Exception as exc:  # noqa: BLE001 - the thread must go on
                replies.append(m.error(job_id, m.INTERNAL, f"the engine failed: {exc}", None, {}, evicted))
            with self.lock:
                self.running.pop(job_id, None)
                late = job_id in self.answered
                self.answered.discard(job_id)
            for reply in replies:
                kind = reply[0]
                if kind == m.RESULT:
                    self.warm.add(key)
                    compile_ms = m.read_result(reply)[1].timing_ms.get("compile", 0.0)
                    if nodes >= 100 and compile_ms > 0:  # learn this machine's cost per node
                        self.per_node = max(self.PER_NODE / 4, compile_ms / 1e3 / nodes**self.EXPONENT)
                elif kind == m.ERROR and m.read_error(reply)[1] == m.INTERNAL:
                    self._remember(key, "the compiler failed on this network before: " + m.read_error(reply)[2])
                if not late:
                    worker.send(reply)

    def poll_s(self) -> float:
        """How long the main loop may wait for a message before it must check the budget."""
        return 1.0 if not self.running else 0.05

    def check_budget(self) -> None:
        """Fail the jobs whose compile has run past the budget (their compile goes on)."""
        if not self.running or self.timeout_s is None:
            return
        now = time.monotonic()
        with self.lock:
            over = [(job_id, key) for job_id, (key, start) in self.running.items()
                    if now - start > self.timeout_s and job_id not in self.answered]
            self.answered.update(job_id for job_id, _ in over)
        for job_id, key in over:
            why = (f"compiling this network took more than the compile budget of {self.timeout_s:g} s "
                   "(--compile-timeout-s); it is remembered as failed: split it, or raise the budget")
            self._remember(key, why)
            self.worker.send(m.error(job_id, "CompileError", why, None, self.worker.engine.stats, []))


#: networks of this many nodes or more are checked (abstract evaluation) in the worker, on its
#: check thread, not in the server: tracing costs ~0.6 ms of GIL per node (3,000 nodes held the
#: server's GIL 1.75 s, stalling its warm requests, issue 12.2); a smaller network's check stays
#: in the server, where a bad call costs no worker time
CHECK_NODES = 256

#: the GIL switch interval while a compile thread exists (Python's default is 5 ms)
COMPILE_SWITCH_S = 0.0005


def _yield_to_the_warm_path() -> None:
    """Called on the compile thread: warm jobs come first (issue 12.2's goal: a warm call within
    50 ms while a large network compiles). Tracing and lowering a network is Python, holding the
    GIL: with the default 5 ms switch interval each time the main thread wakes (a frame in, a
    compute done) it could wait 5 ms for it, several times per job. And the thread's compile work
    (LLVM included: threads it starts inherit it) runs at the lowest CPU priority (nice 19, this
    thread only), so the warm jobs' computes win the cores."""
    sys.setswitchinterval(min(sys.getswitchinterval(), COMPILE_SWITCH_S))
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # Linux: a thread id is a task
    except (AttributeError, OSError):
        pass  # not Linux, or not allowed: the switch interval alone


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
        worker.warm_up()
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
