"""The shared-memory arenas between the server and one worker (anonymous memfds).

Two per worker: jobs (the server allocates regions first-fit with :class:`FirstFit` and frees a
region when the worker has answered its job) and results (a ring the worker allocates from with
:class:`RingWriter`; the server's :class:`RingReleaser` publishes how far it has released, once
the arrays built on a region are gone). :class:`ArenaFds` carries a worker's two descriptors
into the spawned child. The framing (:mod:`service.ipc.framing`) decides which buffers go here.
"""

from __future__ import annotations

import mmap
import os
import threading
import weakref
from collections import deque
from typing import Any

import numpy as np


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
