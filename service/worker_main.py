"""The engine worker process: one :class:`engine.Engine` on one device, fed over a pipe.

Started by :class:`service.workers.WorkerPool` with the ``spawn`` start method (JAX is not
fork-safe). This module is imported before the child sets up its environment, so it imports
nothing heavy at the top: JAX is imported only in :func:`main`, after ``JAX_PLATFORMS`` /
``CUDA_VISIBLE_DEVICES`` are in place.

Messages are tuples, pickled with protocol 5 and out-of-band buffers (:func:`send_msg`,
:func:`recv_msg`): NumPy arrays cross the pipe as whole buffers. Both ends are gradserve's own
processes; nothing an HTTP client sent is ever unpickled.

Server -> worker::

    ("job", job_id, GradJob, sent_at)   # sent_at: time.monotonic() in the server
    ("forget", network_id)
    ("cancel", job_id)                  # nobody waits for it: skip it if not started
    ("stop",)                           # finish what is queued, then exit

Worker -> server::

    ("hello", info)                     # the startup handshake: pid, device, platform, devices
    ("fatal", message)                  # the engine could not start; the process exits next
    ("started", job_id)
    ("result", job_id, JobResult, evicted)
    ("error", job_id, code, message, path, status, cache_stats, evicted)
    ("expired", job_id, cache_stats)    # deadline passed or cancelled while it waited: not computed
    ("unknown_network", job_id)         # no network_doc and the network is not (or no longer) here

``evicted`` lists the network ids this worker dropped from its LRU of parsed networks, so the
server knows to send their documents again.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import time
import traceback
from collections import OrderedDict, deque
from typing import Any

_COUNT = struct.Struct("<I")
_SIZE = struct.Struct("<Q")


# -- framing (used by both ends) -----------------------------------------------------------


def encode_msg(msg: Any) -> list[Any]:
    """The frames of ``msg``: one with the pickle and the buffer sizes, then one per buffer."""
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(msg, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    head = _COUNT.pack(len(raws)) + b"".join(_SIZE.pack(r.nbytes) for r in raws)
    return [head + payload, *raws]


def frames_size(frames: list[Any]) -> int:
    return sum(memoryview(f).nbytes for f in frames)


def write_frames(conn: Any, frames: list[Any]) -> None:
    for frame in frames:
        conn.send_bytes(frame)


def send_msg(conn: Any, msg: Any) -> None:
    """Send ``msg`` (see :func:`encode_msg`); blocks until the pipe takes it."""
    write_frames(conn, encode_msg(msg))


def recv_msg(conn: Any) -> Any:
    """Receive one message sent by :func:`send_msg` (blocks; ``EOFError`` when the peer is gone).

    Out-of-band buffers land in fresh ``bytearray`` objects, so arrays come back writable.
    """
    head = conn.recv_bytes()
    (count,) = _COUNT.unpack_from(head, 0)
    offset = _COUNT.size
    buffers = []
    for _ in range(count):
        (size,) = _SIZE.unpack_from(head, offset)
        offset += _SIZE.size
        buf = bytearray(size)
        if size:
            conn.recv_bytes_into(buf)
        else:
            conn.recv_bytes()
        buffers.append(buf)
    return pickle.loads(memoryview(head)[offset:], buffers=buffers)


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


class _Worker:
    def __init__(self, conn: Any, config: dict[str, Any]) -> None:
        import engine  # noqa: PLC0415 - after the environment is set up
        from service.jobs import JobResult  # noqa: PLC0415

        self.engine_mod = engine
        self.JobResult = JobResult
        self.conn = conn
        self.config = config
        self.engine = engine.Engine(
            cache_size=config["compile_cache_size"],
            max_elements=config["max_elements"],
            compile_cache_dir=config["compile_cache_dir"],
        )
        self.networks: OrderedDict[str, Any] = OrderedDict()
        self.cancelled: set[int] = set()  # job ids nobody waits for any more

    def send(self, msg: Any) -> None:
        send_msg(self.conn, msg)

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
                path="network.",
            )
            self.networks[job.network_id] = net
            while len(self.networks) > self.config["network_cache_size"]:
                old, _ = self.networks.popitem(last=False)
                evicted.append(old)
        if net is not None:
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
            reply = self.JobResult(
                gradients=result.gradients,
                gradient_names=result.gradient_names,
                value=result.value,
                timing_ms=timing,
                cache_hit=result.cache_hit,
                cache_stats=self.engine.stats,
            )
            self.send(("result", job_id, reply, evicted))
        except self.engine_mod.GradnetError as exc:
            self.send(("error", job_id, exc.code, exc.message, exc.path, exc.status, self.engine.stats, evicted))
        except Exception as exc:  # a bug, or the device ran out of memory: this job fails, we go on
            traceback.print_exc()
            message = f"the engine failed: {type(exc).__name__}: {exc}"
            self.send(("error", job_id, "internal_error", message, None, 500, self.engine.stats, evicted))

    def _take(self, msg: Any, backlog: deque[Any]) -> None:
        if msg[0] == "cancel":
            self.cancelled.add(msg[1])
        else:
            backlog.append(msg)

    def serve(self, parent_pid: int) -> None:
        """Read the pipe on this thread (no hand-off between threads on the hot path). Before
        each job everything already sent is read, so a cancellation that arrived while the
        previous job ran is honoured."""
        conn = self.conn
        backlog: deque[Any] = deque()
        while True:
            if not backlog:
                while not conn.poll(1.0):
                    if os.getppid() != parent_pid:
                        return  # reparented: the server died without closing our pipe
                self._take(recv_msg(conn), backlog)
            while conn.poll(0):
                self._take(recv_msg(conn), backlog)
            msg = backlog.popleft()
            kind = msg[0]
            if kind == "job":
                self.run_job(msg[1], msg[2], msg[3])
                self.cancelled.discard(msg[1])
                if len(self.cancelled) > 1024:  # cancellations that came after their job ran
                    self.cancelled.difference_update([i for i in list(self.cancelled) if i < msg[1]])
            elif kind == "forget":
                self.networks.pop(msg[1], None)
                self.engine.forget(msg[1])
            elif kind == "stop":
                return


def main(conn: Any, index: int, env: dict[str, str], config: dict[str, Any]) -> None:
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
        worker = _Worker(conn, config)
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
