"""Dynamic batching in a worker (issue 14.1, API.md section 9), knowing nothing of sockets.

Whoever holds the jobs (the worker process's loop, :mod:`service.worker.main`, or an engine in
the HTTP process) hands :class:`Batcher` the jobs it has now: :meth:`Batcher.plan` groups those
that may share one program (:meth:`Batcher.key`: network, transform spec, shapes and dtypes of
the inputs and the per-call vectors), in the order their first job came, at most
``max_batch_size`` each; :meth:`Batcher.run` computes a group as one vmapped call of the
engine (:meth:`engine.Engine.run_batch`) and returns one outcome per job, which the caller
answers as it answers any job.

- Every job is bound and checked on its own first (:meth:`engine.Engine.prepare`): a bad one
  gets its own error and the others are stacked without it.
- A batched program is compiled in the background, on this module's own thread, the first time
  its bucket is wanted; until it is ready, and for good if it fails to compile or to run, the
  jobs are answered :data:`ALONE`: the caller runs each one as it would without batching. So a
  request never waits for a batched compile, and a batch never fails because of batching.
- Jobs with per-call parameter values run alone (their parameters are not shared), and so do
  jobs of more than :attr:`Batcher.MAX_JOB_BYTES` of inputs (1 MiB: enough work of their own).

Deadlines and cancellations stay the caller's: it drops what expired before it calls
:meth:`Batcher.run`, as it does before running any job.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import numpy as np

log = logging.getLogger("gradserve.worker")

T = TypeVar("T")

#: an outcome of :meth:`Batcher.run`: this job was not batched, run it as usual
ALONE = None


def signature(value: Any) -> Any:
    """What a compiled program depends on in a job's arrays: shapes and dtypes, not values."""
    if type(value) is np.ndarray:  # the common case first: a job's arrays are NumPy's
        return (value.shape, value.dtype.str)
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        # dtype.str, not str(dtype): 0.16 against 2.8 µs, and a job's key is taken on every call
        return (tuple(value.shape), value.dtype.str)
    if isinstance(value, (list, tuple)):
        return tuple(signature(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, signature(v)) for k, v in value.items()))
    return value if value is None or isinstance(value, (int, float, str, bool)) else type(value).__name__


def _nbytes(value: Any) -> int:
    if hasattr(value, "nbytes"):
        return int(value.nbytes)
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    return 0


class Batcher:
    """Groups jobs and computes each group as one batched engine call (see the module docstring).

    ``engine`` is an :class:`engine.Engine`; ``max_batch_size`` 1 turns batching off (every job
    is :data:`ALONE`). ``background``: batched programs compile on a thread of their own (False:
    in :meth:`run`, for tests and callers without threads)."""

    MAX_FAILED = 1024
    #: a job whose inputs and vectors hold more bytes runs alone: it has work enough of its own,
    #: and a batch of them would stack up to max_batch_size copies
    MAX_JOB_BYTES = 1 << 20

    def __init__(self, engine: Any, max_batch_size: int, *, background: bool = True) -> None:
        from engine import GradnetError, batching  # noqa: PLC0415 - the worker imports JAX late

        self.engine = engine
        self.max_batch_size = max(1, int(max_batch_size))
        self.background = background
        self._batching = batching
        self._gradnet_error = GradnetError
        self._lock = threading.Lock()
        self._compiling: set[Hashable] = set()  # (call key, size) queued or compiling
        self.failed: dict[Hashable, str] = {}  # (call key, size) -> why it runs unbatched for good
        self._queue: queue.SimpleQueue[Any] | None = None

    @property
    def enabled(self) -> bool:
        return self.max_batch_size > 1

    def key(self, job: Any) -> Hashable | None:
        """Jobs of equal keys may be one batch; None: this one runs alone. ``job`` is a
        :class:`service.ipc.messages.GradJob`."""
        if not self.enabled or job.parameters is not None or _nbytes(job.inputs) + _nbytes(job.extra) > \
                self.MAX_JOB_BYTES:
            return None
        return (job.network_id, job.spec, signature(job.inputs), signature(job.extra))

    def plan(self, items: Sequence[T], key: Callable[[T], Hashable | None]) -> list[list[T]]:
        """``items`` grouped by ``key`` (None: a group of its own), in the order of each group's
        first item, each group at most ``max_batch_size`` long."""
        groups: list[list[T]] = []
        open_: dict[Hashable, list[T]] = {}
        for item in items:
            k = key(item)
            group = open_.get(k) if k is not None else None
            if group is None or len(group) >= self.max_batch_size:
                group = []
                groups.append(group)
                if k is not None:
                    open_[k] = group
            group.append(item)
        return groups

    def run(self, net: Any, spec: Any, jobs: Sequence[Any]) -> list[Any]:
        """One outcome per job of one group (same network ``net`` and engine ``spec``): a
        :class:`engine.GradResult`, the exception that job raised, or :data:`ALONE`."""
        outcomes: list[Any] = [ALONE] * len(jobs)
        by_key: dict[Hashable, list[tuple[int, Any]]] = {}
        engine = self.engine
        for i, job in enumerate(jobs):
            try:
                call = engine.prepare(net, spec, job.inputs, extra=job.extra)
            except self._gradnet_error as exc:
                outcomes[i] = exc
                continue
            by_key.setdefault(call.key, []).append((i, call))
        for calls in by_key.values():
            if len(calls) < 2:
                continue  # alone: the usual path (and its fast path) is the fastest for one
            size = self._batching.bucket(len(calls), self.max_batch_size)
            first = calls[0][1]
            wanted = (first.key, size)
            if wanted in self.failed:
                continue
            if not engine.batch_compiled(first, size):
                if self.background:
                    self._compile_later(net, first, size)
                    continue
                if not self._compile(net, first, size):
                    continue
            try:
                results = engine.run_batch(net, [c for _, c in calls], size)
            except Exception as exc:  # noqa: BLE001 - batching must never fail a job: run them alone
                self._remember(wanted, f"the batched program failed: {type(exc).__name__}: {exc}")
                continue
            for (i, _), result in zip(calls, results):
                outcomes[i] = result
        return outcomes

    # -- batched programs, compiled off the job path -------------------------------------------

    def _compile(self, net: Any, call: Any, size: int) -> bool:
        try:
            self.engine.compile_batch(net, call, size)
            return True
        except Exception as exc:  # noqa: BLE001 - a batched compile that fails: unbatched from now on
            self._remember((call.key, size), f"the batched program did not compile: {type(exc).__name__}: {exc}")
            return False

    def _remember(self, wanted: Hashable, why: str) -> None:
        log.warning("batches of %s run unbatched: %s", wanted[1], why)  # type: ignore[index]
        with self._lock:
            if len(self.failed) >= self.MAX_FAILED:
                self.failed.pop(next(iter(self.failed)))
            self.failed[wanted] = why

    def _compile_later(self, net: Any, call: Any, size: int) -> None:
        wanted = (call.key, size)
        with self._lock:
            if wanted in self._compiling:
                return
            self._compiling.add(wanted)
            if self._queue is None:
                self._queue = queue.SimpleQueue()
                threading.Thread(target=self._compile_loop, name="batch-compile", daemon=True).start()
        self._queue.put((net, call, size))

    def _compile_loop(self) -> None:
        assert self._queue is not None
        # Nobody waits for these compiles: the lowest CPU priority (this thread only, and the
        # LLVM threads it starts), so that the jobs computing meanwhile win the cores.
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # Linux: a thread id is a task
        except (AttributeError, OSError):
            pass
        while True:
            net, call, size = self._queue.get()
            try:
                self._compile(net, call, size)
            finally:
                with self._lock:
                    self._compiling.discard((call.key, size))

    def idle(self) -> bool:
        """No batched program is queued or compiling (for tests)."""
        with self._lock:
            return not self._compiling
