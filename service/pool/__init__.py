"""The pool of engine workers (see :mod:`.pool`).

- :mod:`.pool`: :class:`WorkerPool`'s lifecycle, jobs and replies;
- :mod:`.scheduling`: routing, admission, Retry-After and restart back-off, as pure functions;
- :mod:`.slots`: the bookkeeping of each worker (slots, handles, pending jobs);
- :mod:`.launcher`: worker processes and their sockets;
- :mod:`.probe`: the GPU probe and the plan of worker slots.
"""

from .pool import Admission, PoolStartError, WorkerPool

__all__ = ["Admission", "PoolStartError", "WorkerPool"]
