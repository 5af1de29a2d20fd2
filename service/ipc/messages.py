"""Every message between the server and a worker: the one owner of their layouts.

A message is a plain tuple whose first item is its kind; each kind has a constructor and, where
the receiver needs more than the kind, a reader here, and no other module indexes or unpacks a
message. A message holds its :class:`GradJob` or :class:`JobResult` itself, so that a transport
within one process (:mod:`service.pool.inprocess`) hands it over as it is; between processes
(:mod:`service.ipc.framing`, through :func:`to_wire` and :func:`from_wire`) it crosses as a tuple
of its fields, its arrays as ``(buffer, dtype, shape)`` triples whose buffers pickle protocol 5
carries out of band: their bytes are copied once and never walked element by element, and the
pickle holds no class or function reference to look up on the other side.

Server -> worker::

    job(job_id, GradJob, sent_at)      # sent_at: time.monotonic() in the server
    forget(network_id)                 # the network was deleted
    cancel(job_id)                     # nobody waits for it: skip it if not started
    stop()                             # finish what is queued, then exit
    ping(seq)                          # the heartbeat: the worker's loop answers pong(seq)

Worker -> server::

    hello(info)                        # the startup handshake: pid, device, platform, devices
    fatal(message)                     # the engine could not start; the process exits next
    result(job_id, JobResult, evicted)
    error(job_id, kind, message, path, cache_stats, evicted)
    expired(job_id, cache_stats)       # deadline passed or cancelled while it waited: not computed
    unknown_network(job_id)            # no network_doc and the network is not (or no longer) here
    pong(seq)                          # the heartbeat's answer, from the loop that reads the jobs

``evicted`` lists the network ids the worker dropped from its LRU of parsed networks, so the
server knows to send their documents again. An error's ``kind`` is the name of the engine error
class (:mod:`engine.errors`), or :data:`INTERNAL` when the engine failed otherwise.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np

JOB, FORGET, CANCEL, STOP = "job", "forget", "cancel", "stop"
PING, PONG = "ping", "pong"
HELLO, FATAL, RESULT, ERROR, EXPIRED, UNKNOWN_NETWORK = (
    "hello", "fatal", "result", "error", "expired", "unknown_network")
#: an error's kind when the engine failed in a way that is not the request's fault
INTERNAL = "internal"


#: the spec of GradOperation() without flags, as plain data (engine.transforms.to_wire)
GRAD_OPERATION = ("grad_operation", False, False, False, None, False, None)


@dataclass
class GradJob:
    """One transform call (/grad, /jvp, /vjp, /jacobian, /hvp), decoded and validated in the
    server, ready for an engine."""

    network_id: str
    inputs: list[np.ndarray] | dict[str, np.ndarray]
    # What to compute: the engine's transform spec as plain data (engine.transforms.to_wire),
    # so this module needs no engine and the pickle no class reference.
    spec: tuple[Any, ...] = GRAD_OPERATION
    # The call's vectors: sens, tangents, cotangents or hvp vectors, as the spec says.
    extra: np.ndarray | list[np.ndarray] | None = None
    parameters: dict[str, np.ndarray] | None = None
    deadline: float = 0.0  # time.monotonic() (system-wide on Linux) after which nobody waits
    # The gradnet/1 document (parameters as b64), sent only to a worker that lacks the network.
    network_doc: dict[str, Any] | None = None
    # The prefix of the network's error paths: "network." inline, "" registered (Network.path).
    network_path: str = ""
    # The worker's key of the compiled program this job runs (service.worker.main), taken once:
    # the in-process transport, the compile budget and the batcher each ask for it. Not sent.
    program_key: Any = field(default=None, repr=False, compare=False)

    def to_wire(self) -> tuple[Any, ...]:
        return (self.network_id, pack(self.inputs), self.spec, pack(self.extra), pack(self.parameters),
                self.deadline, self.network_doc, self.network_path)

    @classmethod
    def from_wire(cls, wire: tuple[Any, ...]) -> GradJob:
        network_id, inputs, spec, extra, parameters, deadline, network_doc, network_path = wire
        return cls(network_id, unpack(inputs), spec, unpack(extra), unpack(parameters), deadline,
                   network_doc, network_path)


@dataclass
class JobResult:
    """A worker's answer to a :class:`GradJob`: the answer's fields (tensors nested as the
    transform answers them, and names), in the order the response writes them."""

    fields: dict[str, Any]
    timing_ms: dict[str, float] = field(default_factory=dict)  # compile, compute, queue (in the worker)
    cache_hit: bool = False
    cache_stats: dict[str, float] = field(default_factory=dict)  # the worker's engine.stats

    def to_wire(self) -> tuple[Any, ...]:
        return (pack(self.fields), self.timing_ms, self.cache_hit, self.cache_stats)

    @classmethod
    def from_wire(cls, wire: tuple[Any, ...]) -> JobResult:
        fields, timing_ms, cache_hit, cache_stats = wire
        return cls(unpack(fields), timing_ms, cache_hit, cache_stats)

    @property
    def gradients(self) -> Any:
        return self.fields.get("gradients")

    @property
    def gradient_names(self) -> Any:
        return self.fields.get("gradient_names")

    @property
    def value(self) -> Any:
        return self.fields.get("value")


# -- server -> worker ------------------------------------------------------------------------


def job(job_id: int, grad_job: GradJob, sent_at: float) -> tuple[Any, ...]:
    return (JOB, job_id, grad_job, sent_at)


def read_job(msg: tuple[Any, ...]) -> tuple[int, GradJob, float]:
    """``(job_id, job, sent_at)``."""
    return msg[1], msg[2], msg[3]


def forget(network_id: str) -> tuple[Any, ...]:
    return (FORGET, network_id)


def cancel(job_id: int) -> tuple[Any, ...]:
    return (CANCEL, job_id)


def ping(seq: int) -> tuple[Any, ...]:
    return (PING, seq)


def pong(seq: int) -> tuple[Any, ...]:
    return (PONG, seq)


def stop() -> tuple[Any, ...]:
    return (STOP,)


# -- worker -> server ------------------------------------------------------------------------


def hello(info: dict[str, Any]) -> tuple[Any, ...]:
    return (HELLO, info)


def fatal(message: str) -> tuple[Any, ...]:
    return (FATAL, message)


def result(job_id: int, job_result: JobResult, evicted: list[str]) -> tuple[Any, ...]:
    return (RESULT, job_id, job_result, evicted)


def read_result(msg: tuple[Any, ...]) -> tuple[int, JobResult, list[str]]:
    """``(job_id, result, evicted)``."""
    return msg[1], msg[2], msg[3]


def error(job_id: int, kind: str, message: str, path: str | None, cache_stats: dict[str, float],
          evicted: list[str]) -> tuple[Any, ...]:
    return (ERROR, job_id, kind, message, path, cache_stats, evicted)


def read_error(msg: tuple[Any, ...]) -> tuple[int, str, str, str | None, dict[str, float], list[str]]:
    """``(job_id, kind, message, path, cache_stats, evicted)``."""
    _, job_id, kind, message, path, cache_stats, evicted = msg
    return job_id, kind, message, path, cache_stats, evicted


def expired(job_id: int, cache_stats: dict[str, float]) -> tuple[Any, ...]:
    return (EXPIRED, job_id, cache_stats)


def unknown_network(job_id: int) -> tuple[Any, ...]:
    return (UNKNOWN_NETWORK, job_id)


def payload(msg: tuple[Any, ...]) -> Any:
    """The one field after the kind of a one-field message (forget, cancel, hello, fatal,
    unknown_network)."""
    return msg[1]


def read_expired(msg: tuple[Any, ...]) -> tuple[int, dict[str, float]]:
    """``(job_id, cache_stats)``."""
    return msg[1], msg[2]


# -- between processes ------------------------------------------------------------------------


def to_wire(msg: tuple[Any, ...]) -> tuple[Any, ...]:
    """``msg`` as plain data for the pickle: its job or result as the tuple of its fields."""
    if len(msg) == 4 and isinstance(msg[2], (GradJob, JobResult)):
        return (msg[0], msg[1], msg[2].to_wire(), msg[3])
    return msg


def from_wire(msg: Any) -> Any:
    """:func:`to_wire` undone, on the receiving end."""
    if isinstance(msg, tuple) and len(msg) == 4 and isinstance(msg[2], tuple):
        kind = msg[0]
        if kind == JOB:
            return (kind, msg[1], GradJob.from_wire(msg[2]), msg[3])
        if kind == RESULT:
            return (kind, msg[1], JobResult.from_wire(msg[2]), msg[3])
    return msg


# -- arrays on the wire: a tuple (nothing else in a job or result is a tuple: JSON gives lists) --


def pack(value: Any) -> Any:
    """Every array in ``value`` (an array, or lists and dicts of them) as ``(buffer, dtype, shape)``."""
    if isinstance(value, np.ndarray):
        dtype = value.dtype
        if dtype.isbuiltin == 1 and not dtype.hasobject:
            return (pickle.PickleBuffer(np.ascontiguousarray(value)), dtype.str, value.shape)
        return (value, None, None)  # an unusual dtype: NumPy pickles it itself
    if isinstance(value, list):
        return [pack(v) for v in value]
    if isinstance(value, dict):
        return {k: pack(v) for k, v in value.items()}
    return value


def unpack(value: Any) -> Any:
    """:func:`pack` undone: arrays over the received buffers (no copy)."""
    if isinstance(value, tuple):
        buffer, dtype, shape = value
        return buffer if dtype is None else np.frombuffer(buffer, dtype=dtype).reshape(shape)
    if isinstance(value, list):
        return [unpack(v) for v in value]
    if isinstance(value, dict):
        return {k: unpack(v) for k, v in value.items()}
    return value
