"""The engine worker process: one :class:`engine.Engine` on one device, fed over a pipe.

Started by :class:`service.workers.WorkerPool` with the ``spawn`` start method (JAX is not
fork-safe). This module is imported before the child sets up its environment, so it imports
nothing heavy at the top (NumPy, for the framing, but no JAX): JAX is imported only in
:func:`main`, after ``JAX_PLATFORMS`` / ``CUDA_VISIBLE_DEVICES`` are in place.

Messages are tuples, pickled with protocol 5 and out-of-band buffers, one frame each (see
"framing" below): NumPy arrays cross as whole buffers, the large ones through a shared-memory
arena of the receiver (:class:`Arena`) instead of the socket. Both ends are gradserve's own
processes; nothing an HTTP client sent is ever unpickled.

Server -> worker::

    ("job", job_id, GradJob wire tuple, sent_at)   # sent_at: time.monotonic() in the server
    ("forget", network_id)
    ("cancel", job_id)                  # nobody waits for it: skip it if not started
    ("stop",)                           # finish what is queued, then exit

Worker -> server::

    ("hello", info)                     # the startup handshake: pid, device, platform, devices
    ("fatal", message)                  # the engine could not start; the process exits next
    ("result", job_id, JobResult wire tuple, evicted)
    ("json_part", job_id, pieces | None)  # after a result with json_split: the worker's JSON text
    ("error", job_id, code, message, path, status, cache_stats, evicted)
    ("expired", job_id, cache_stats)    # deadline passed or cancelled while it waited: not computed
    ("unknown_network", job_id)         # no network_doc and the network is not (or no longer) here

``evicted`` lists the network ids this worker dropped from its LRU of parsed networks, so the
server knows to send their documents again.
"""

from __future__ import annotations

import mmap
import os
import pickle
import select
import signal
import struct
import sys
import threading
import time
import traceback
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import numpy as np

# -- framing (used by both ends) -----------------------------------------------------------
#
# One message is one frame, written with one writev and read back with as few reads as there
# are: ``<Q length>`` then the head ``<I buffers><Q pickle length><Q region start><Q region
# length>``, one ``<q offset><Q size>`` per out-of-band buffer, the pickle, and the inline
# buffers. A buffer of SHARED_MIN_BYTES or more crosses through the receiver's shared-memory
# arena when it has room (offset >= 0: from the start of the message's region), so a large
# tensor is copied once into shared memory and never pushed through the socket; the rest travel
# inline. Small messages cost one system call on each side, and one wake-up of the reader.

_LEN = struct.Struct("<Q")
_HEAD = struct.Struct("<IQQQ")
_BUF = struct.Struct("<qQ")
#: a buffer at least this large goes through the shared arena (when there is one, with room)
SHARED_MIN_BYTES = 32 * 1024
#: a frame at least this large is read straight into its own buffer
_BIG_FRAME = 256 * 1024
_READ_CHUNK = 256 * 1024
_SMALL_INLINE = 4096  # inline buffers up to this size are joined into the frame's first part
_IOV_MAX = 512
_ALIGN = 64


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


class Arena:
    """A shared-memory segment (an anonymous memfd) that the server and one worker both map.

    Two per worker: jobs (the server allocates regions first-fit and frees a region when the
    worker has answered its job) and results (a ring the worker allocates from; the server
    publishes in the header how far it has released, once the arrays built on a region are
    gone). Pages are touched only when used; a region is reused from the start whenever the
    arena is empty, and what lies past ``keep`` bytes is given back to the system then."""

    HEADER = mmap.PAGESIZE
    #: bytes kept mapped (warm) when the arena empties; the rest is given back
    KEEP = 8 * 1024 * 1024

    def __init__(self, fd: int, size: int) -> None:
        self.size = size
        self.mm = mmap.mmap(fd, self.HEADER + size)
        # The consumer's released position (ring arenas): one aligned 8-byte word.
        self.mark = np.frombuffer(self.mm, np.uint64, 1, 0)
        self.view = memoryview(self.mm)[self.HEADER:]

    @classmethod
    def create(cls, size: int) -> tuple[Arena, int]:
        """A new arena and its file descriptor (close it once the worker has its copy)."""
        fd = os.memfd_create("gradserve-arena", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, cls.HEADER + size)
            return cls(fd, size), fd
        except BaseException:
            os.close(fd)
            raise

    def region(self, offset: int, length: int) -> np.ndarray:
        """A fresh uint8 array over ``[offset, offset + length)`` whose base is the mapping
        itself, so every array built on it keeps exactly this object alive."""
        return np.frombuffer(self.mm, np.uint8, length, self.HEADER + offset)

    def trim(self, upto: int) -> None:
        """Give back the pages past KEEP (up to ``upto``): nothing may use them now."""
        if upto > self.KEEP and hasattr(mmap, "MADV_REMOVE"):
            try:
                self.mm.madvise(mmap.MADV_REMOVE, self.HEADER + self.KEEP, min(upto, self.size) - self.KEEP)
            except OSError:
                pass


class FirstFit:
    """The server's allocator of a jobs arena (regions are freed in any order)."""

    def __init__(self, arena: Arena) -> None:
        self.arena = arena
        self.used: list[tuple[int, int]] = []  # (start, end), sorted
        self.high = 0

    def alloc(self, size: int) -> int | None:
        prev = 0
        for i, (start, end) in enumerate(self.used):
            if start - prev >= size:
                self.used.insert(i, (prev, prev + size))
                return prev
            prev = end
        if self.arena.size - prev < size:
            return None
        self.used.append((prev, prev + size))
        self.high = max(self.high, prev + size)
        return prev

    def free(self, start: int) -> None:
        for i, (s, _) in enumerate(self.used):
            if s == start:
                del self.used[i]
                break
        if not self.used and self.high > Arena.KEEP:
            self.arena.trim(self.high)
            self.high = 0


class RingWriter:
    """The worker's allocator of a results arena: a ring in monotonic positions; the server
    publishes how far it has released in the arena's header."""

    def __init__(self, arena: Arena) -> None:
        self.arena = arena
        self.head = 0
        self.floor = 0  # nothing before this is in use (where the ring last started afresh)
        self.high = 0

    def alloc(self, size: int) -> int | None:
        cap = self.arena.size
        if size > cap:
            return None
        released = max(int(self.arena.mark[0]), self.floor)
        if released >= self.head:  # empty: start again from the beginning of the arena
            if self.high > Arena.KEEP:
                self.arena.trim(self.high)
                self.high = 0
            start = self.floor = -(-self.head // cap) * cap
        else:
            start = self.head
            if start % cap + size > cap:
                start = -(-start // cap) * cap
            if start + size > released + cap:
                return None
        self.head = start + size
        self.high = max(self.high, start % cap + size)
        return start


class RingReleaser:
    """The server's side of a results ring: regions arrive in order and are released in any
    order (when the arrays on them are gone); the published position advances over the
    released prefix. Thread-safe (an array may die on a thread-pool thread)."""

    def __init__(self, arena: Arena) -> None:
        self.arena = arena
        self.regions: deque[list[Any]] = deque()
        self.lock = threading.Lock()

    def track(self, start: int, length: int) -> np.ndarray:
        """The region's array; the region is released when it (and every view) is gone."""
        entry = [start + length, False]
        with self.lock:
            self.regions.append(entry)
        region = self.arena.region(start % self.arena.size, length)
        finalizer = weakref.finalize(region, self._release, entry)
        finalizer.atexit = False
        return region

    def _release(self, entry: list[Any]) -> None:
        with self.lock:
            entry[1] = True
            regions = self.regions
            end = None
            while regions and regions[0][1]:
                end = regions.popleft()[0]
            if end is not None:
                self.arena.mark[0] = end


Alloc = Callable[[int], "int | None"]


def encode_msg(msg: Any, alloc: Alloc | None = None, arena: Arena | None = None) -> tuple[list[Any], int | None]:
    """The parts of ``msg``'s frame (for one writev), and the start of the arena region its large
    buffers were copied to (None: none, everything is inline)."""
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(msg, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    start = None
    total = 0
    if alloc is not None and arena is not None:
        total = sum(_aligned(r.nbytes) for r in raws if r.nbytes >= SHARED_MIN_BYTES)
        if total:
            start = alloc(total)
    descr = []
    inline: list[Any] = []
    inline_size = 0
    offset = 0
    base = start % arena.size if start is not None else 0  # type: ignore[union-attr]
    for raw in raws:
        n = raw.nbytes
        if start is not None and n >= SHARED_MIN_BYTES:
            arena.view[base + offset:base + offset + n] = raw  # type: ignore[union-attr]
            descr.append(_BUF.pack(offset, n))
            offset += _aligned(n)
        else:
            descr.append(_BUF.pack(-1, n))
            inline.append(raw)
            inline_size += n
    head = _HEAD.pack(len(raws), len(payload), start or 0, total if start is not None else 0) + b"".join(descr)
    size = len(head) + len(payload) + inline_size
    if inline_size <= _SMALL_INLINE:
        return [b"".join([_LEN.pack(size), head, payload, *inline])], start
    return [_LEN.pack(size) + head + payload, *inline], start


def decode_frame(frame: bytearray, region: Callable[[int, int], Any] | None = None) -> Any:
    """The message in ``frame`` (without its length); ``region(start, length)`` gives the array of
    the arena region that its shared buffers are in."""
    count, payload_len, start, length = _HEAD.unpack_from(frame, 0)
    view = memoryview(frame)
    pos = _HEAD.size + count * _BUF.size
    payload = view[pos:pos + payload_len]
    pos += payload_len
    shared = region(start, length) if length and region is not None else None
    buffers: list[Any] = []
    for i in range(count):
        offset, n = _BUF.unpack_from(frame, _HEAD.size + i * _BUF.size)
        if offset < 0:
            buffers.append(view[pos:pos + n])
            pos += n
        else:
            if shared is None:
                raise ValueError("a message refers to a shared arena that this end does not have")
            buffers.append(shared[offset:offset + n])
    return pickle.loads(payload, buffers=buffers)


def write_parts(fd: int, parts: list[Any]) -> list[Any]:
    """Write ``parts`` with as few writev calls as it takes; on a non-blocking descriptor, stop
    when it would block and return what is left (``[]``: all written)."""
    views = [p if isinstance(p, memoryview) else memoryview(p) for p in parts]
    while views:
        try:
            n = os.writev(fd, views[:_IOV_MAX])
        except BlockingIOError:
            return views
        except InterruptedError:
            continue
        while n and views:
            k = views[0].nbytes
            if n >= k:
                n -= k
                views.pop(0)
            else:
                views[0] = views[0][n:]
                n = 0
        while views and views[0].nbytes == 0:
            views.pop(0)
    return views


class FrameReader:
    """Frames from a stream descriptor, read in chunks (several small frames per read) or, for a
    large frame, straight into its own buffer. Every frame is a fresh ``bytearray``, so arrays
    built on it are writable and outlive the reader's buffer."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = bytearray()
        self.big: bytearray | None = None
        self.got = 0
        self.ready: deque[bytearray] = deque()

    def feed(self) -> None:
        """Read once (``EOFError`` at end of stream; ``BlockingIOError`` if nothing is there)."""
        if self.big is not None:
            n = os.readv(self.fd, [memoryview(self.big)[self.got:]])
            if n == 0:
                raise EOFError
            self.got += n
            if self.got == len(self.big):
                self.ready.append(self.big)
                self.big = None
            return
        data = os.read(self.fd, _READ_CHUNK)
        if not data:
            raise EOFError
        pending = self.pending
        pending += data
        while len(pending) >= _LEN.size:
            (n,) = _LEN.unpack_from(pending, 0)
            end = _LEN.size + n
            if len(pending) >= end:
                self.ready.append(pending[_LEN.size:end])
                del pending[:end]
            else:
                if n >= _BIG_FRAME:
                    big = bytearray(n)
                    have = len(pending) - _LEN.size
                    big[:have] = pending[_LEN.size:]
                    pending.clear()
                    self.big, self.got = big, have
                break


def send_msg(conn: Any, msg: Any) -> None:
    """Send ``msg`` over a blocking connection (blocks until it is all written)."""
    write_parts(conn.fileno(), encode_msg(msg)[0])


def _read_exactly(fd: int, buf: memoryview) -> None:
    got = 0
    while got < buf.nbytes:
        n = os.readv(fd, [buf[got:]])
        if n == 0:
            raise EOFError
        got += n


def recv_msg(conn: Any) -> Any:
    """Receive one message sent by :func:`send_msg` (blocks; ``EOFError`` when the peer is gone).
    Inline buffers land in a fresh ``bytearray``, so arrays come back writable."""
    fd = conn.fileno()
    head = bytearray(_LEN.size)
    _read_exactly(fd, memoryview(head))
    (n,) = _LEN.unpack_from(head, 0)
    frame = bytearray(n)
    _read_exactly(fd, memoryview(frame))
    return decode_frame(frame)


# -- the device probe ----------------------------------------------------------------------

PROBE_CODE = """
import json
try:
    import jax
    try:
        gpus = [str(d) for d in jax.devices("gpu")]
    except Exception:
        gpus = []
    print(json.dumps({"gpus": gpus, "jax": jax.__version__}))
except Exception as exc:
    print(json.dumps({"gpus": [], "error": f"{type(exc).__name__}: {exc}"}))
"""
"""Run as ``python -c PROBE_CODE`` by the pool: how many GPUs JAX sees, without the server
process itself initialising a backend (which would take a GPU)."""


# -- the worker ----------------------------------------------------------------------------


class ArenaFds:
    """A worker's two arenas (jobs, results) as descriptors, duplicated into the spawned child
    when the process object is pickled (as multiprocessing passes a Connection)."""

    def __init__(self, jobs_fd: int, jobs_size: int, results_fd: int, results_size: int) -> None:
        self.jobs_fd, self.jobs_size = jobs_fd, jobs_size
        self.results_fd, self.results_size = results_fd, results_size

    def __reduce__(self) -> Any:
        from multiprocessing import reduction  # noqa: PLC0415

        return (_rebuild_arena_fds, (reduction.DupFd(self.jobs_fd), self.jobs_size,
                                     reduction.DupFd(self.results_fd), self.results_size))


def _rebuild_arena_fds(jobs: Any, jobs_size: int, results: Any, results_size: int) -> ArenaFds:
    return ArenaFds(jobs.detach(), jobs_size, results.detach(), results_size)


class _Worker:
    def __init__(self, conn: Any, config: dict[str, Any], arenas: ArenaFds | None = None) -> None:
        import engine  # noqa: PLC0415 - after the environment is set up
        from service import codec  # noqa: PLC0415
        from service.jobs import GradJob, JobResult  # noqa: PLC0415

        self.engine_mod = engine
        self.codec = codec
        self.JobResult = JobResult
        self.GradJob = GradJob
        self.conn = conn
        self.config = config
        self.engine = engine.Engine(
            cache_size=config["compile_cache_size"],
            max_elements=config["max_elements"],
            compile_cache_dir=config["compile_cache_dir"],
        )
        self.networks: OrderedDict[str, Any] = OrderedDict()
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
        self.send(("hello", {
            "pid": os.getpid(),
            "device": str(device),
            "platform": device.platform,
            "devices": [str(d) for d in jax.devices()],
            "jax": jax.__version__,
            "cache_stats": self.engine.stats,
        }))

    def network(self, job: Any) -> tuple[Any, list[str]]:
        """The parsed network for ``job`` (None if unknown and no doc), and the ids evicted."""
        evicted: list[str] = []
        net = self.networks.get(job.network_id)
        if net is None and job.network_doc is not None:
            net = self.engine_mod.parse_network(
                job.network_doc, max_nodes=self.config["max_nodes"], max_elements=self.config["max_elements"],
                path=job.network_path,
            )
            self.networks[job.network_id] = net
            while len(self.networks) > self.config["network_cache_size"]:
                old, _ = self.networks.popitem(last=False)
                evicted.append(old)
        if net is not None:
            if net.path != job.network_path:  # kept as the latest caller named it: errors say the same
                net = self.networks[job.network_id] = net.with_path(job.network_path)
            self.networks.move_to_end(job.network_id)
        return net, evicted

    def run_job(self, job_id: int, job: Any, sent_at: float) -> None:
        started = time.monotonic()
        if job_id in self.cancelled or (job.deadline and started > job.deadline):
            self.cancelled.discard(job_id)
            self.send(("expired", job_id, self.engine.stats))
            return
        evicted: list[str] = []
        try:
            net, evicted = self.network(job)
            if net is None:
                self.send(("unknown_network", job_id))
                return
            result = self.engine.grad(
                net,
                job.inputs,
                parameters=job.parameters,
                get_all=job.get_all,
                get_by_list=job.get_by_list,
                sens_param=job.sens_param,
                weights=job.weights,
                sens=job.sens,
                return_value=job.return_value,
            )
            timing = dict(result.timing_ms)
            timing["queue"] = max(0.0, (started - sent_at) * 1e3)
            split = arrays = None
            if job.json_split:  # a large JSON result: the server and this worker write it together
                fields = {"gradients": result.gradients}
                if job.return_value:
                    fields["value"] = result.value or []
                arrays = self.codec.flat_tensors(fields)
                split = self.codec.split_point(arrays)
            reply = self.JobResult(
                gradients=result.gradients,
                gradient_names=result.gradient_names,
                value=result.value,
                timing_ms=timing,
                cache_hit=result.cache_hit,
                cache_stats=self.engine.stats,
                json_split=split,
            )
            self.send(("result", job_id, reply.to_wire(), evicted))
            if split is not None:
                self._send_share(job_id, arrays, split)  # type: ignore[arg-type]
        except self.engine_mod.GradnetError as exc:
            self.send(("error", job_id, exc.code, exc.message, exc.path, exc.status, self.engine.stats, evicted))
        except Exception as exc:  # a bug, or the device ran out of memory: this job fails, we go on
            traceback.print_exc()
            message = f"the engine failed: {type(exc).__name__}: {exc}"
            self.send(("error", job_id, "internal_error", message, None, 500, self.engine.stats, evicted))

    def _send_share(self, job_id: int, arrays: list[Any], split: int) -> None:
        """The JSON text of this worker's share of a split result (see :meth:`run_job`): the
        server writes the rest meanwhile. None if it cannot (a NaN, a failure): the server then
        writes all of it by the general path."""
        try:
            text = self.codec.write_share(arrays, split, worker=True)
            part: Any = None if text is None else [pickle.PickleBuffer(p) for p in text]
        except Exception:
            traceback.print_exc()
            part = None
        self.send(("json_part", job_id, part))

    def _take(self, msg: Any, backlog: deque[Any]) -> None:
        if msg[0] == "cancel":
            self.cancelled.add(msg[1])
        else:
            backlog.append(msg)

    def serve(self, parent_pid: int) -> None:
        """Read the pipe on this thread (no hand-off between threads on the hot path). Before
        each job everything already sent is read, so a cancellation that arrived while the
        previous job ran is honoured."""
        backlog: deque[Any] = deque()
        while True:
            if not backlog:
                while (msg := self._next(1.0)) is None:
                    if os.getppid() != parent_pid:
                        return  # reparented: the server died without closing our pipe
                self._take(msg, backlog)
            while (msg := self._next(0)) is not None:
                self._take(msg, backlog)
            msg = backlog.popleft()
            kind = msg[0]
            if kind == "job":
                self.run_job(msg[1], self.GradJob.from_wire(msg[2]), msg[3])
                self.cancelled.discard(msg[1])
                if len(self.cancelled) > 1024:  # cancellations that came after their job ran
                    self.cancelled.difference_update([i for i in list(self.cancelled) if i < msg[1]])
            elif kind == "forget":
                self.networks.pop(msg[1], None)
                self.engine.forget(msg[1])
            elif kind == "stop":
                return


def main(conn: Any, index: int, env: dict[str, str], config: dict[str, Any], arenas: ArenaFds | None = None) -> None:
    """Entry point of a worker process (the ``target`` of its ``multiprocessing.Process``)."""
    # The server drains on SIGTERM/SIGINT and then stops us over the pipe; a signal sent to the
    # whole process group (Ctrl-C, systemd) must not kill the requests we are computing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import faulthandler  # noqa: PLC0415

    faulthandler.enable()  # a segfault in XLA leaves a stack on stderr
    os.environ.update(env)
    parent_pid = os.getppid()

    try:
        if env.get("JAX_PLATFORMS"):
            import jax  # noqa: PLC0415

            # The server's __main__ may have imported jax before os.environ was updated.
            jax.config.update("jax_platforms", env["JAX_PLATFORMS"])
        worker = _Worker(conn, config, arenas)
        worker.hello()
    except BaseException as exc:
        traceback.print_exc()
        try:
            send_msg(conn, ("fatal", f"worker {index} could not start its engine: {type(exc).__name__}: {exc}"))
        except Exception:
            pass
        sys.stderr.flush()
        os._exit(3)
    try:
        worker.serve(parent_pid)
    except (EOFError, OSError):
        pass  # the server closed the pipe or died: without it nobody reads our answers
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
