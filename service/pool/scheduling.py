"""The pool's decisions, as pure functions of numbers: which worker takes a job, whether a
request gets a place in the queues, how long a refused client should wait, how long a crashing
worker waits before its next start. :class:`service.pool.WorkerPool` applies them; the unit
tests (``tests/service/pool/test_scheduling.py``) check them without any process.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


def pick(loads: Sequence[int], warm: Sequence[bool], queue_size: int, slack: int) -> int:
    """The position of the worker for a job, among ready workers in slot order.

    ``loads[i]`` is worker i's load and ``warm[i]`` whether it has the job's network (and so,
    most likely, its compiled program). The least loaded warm worker gets the job unless its
    queue is full or it holds more than ``slack`` jobs over the least loaded worker, which gets it
    otherwise (and then learns the network: a hot network spreads as load requires). Ties go to
    the lowest slot."""
    least = 0
    best = -1
    for i, load in enumerate(loads):
        if load < loads[least]:
            least = i
        if warm[i] and (best < 0 or load < loads[best]):
            best = i
    if best >= 0 and loads[best] < queue_size and loads[best] <= loads[least] + slack:
        return best
    return least


def admission_refused(upper_bound: int, used: Callable[[], int], admitted: int, workers: int,
                      queue_size: int) -> int | None:
    """None if one more request may take a place in the queues of ``workers`` ready workers of
    ``queue_size`` places each, ``admitted`` places being held by requests still being read;
    else how many requests hold the places (queued, running or being read).

    ``upper_bound`` bounds the jobs the workers hold from above (cheap: the common case decides
    on it alone); ``used()`` counts them exactly (each worker's load, at most ``queue_size``)."""
    room = queue_size * workers - admitted
    if upper_bound < room:
        return None
    exact = used()
    if exact < room:
        return None
    return exact + admitted


def retry_after(service_s: float) -> float:
    """``Retry-After`` (seconds) for a refused request: a worker's recent time per job, 1 to 30."""
    return float(max(1, min(30, math.ceil(service_s))))


def service_time(average_s: float, timing_ms: dict[str, float]) -> float:
    """The moving average of a worker's time per job, updated with one job's timing."""
    took = (timing_ms.get("compile", 0.0) + timing_ms.get("compute", 0.0)) / 1e3
    return 0.8 * average_s + 0.2 * took


def restart_delay(failures: int) -> float:
    """Seconds before respawning a worker that died ``failures`` times in a row before its
    handshake (0 for one that had started: it is restarted at once)."""
    return 0.0 if failures == 0 else min(30.0, 0.5 * 2 ** (failures - 1))
