"""The one bounded LRU of gradserve, with the counters the service exports.

The engine keeps its compiled executables, output shapes and device parameters in it; the
service keeps its parsed networks (registry, inline networks, each worker's) and the validator's
memory of calls that passed in it. A cached value may be anything, ``None`` included: a miss is
a missing key, never a falsy value.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")

_MISSING = object()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    compile_seconds: float = 0.0
    size: int = 0
    loaded: int = 0  # programs loaded from an executable store instead of compiled (engine/executables.py)

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


class LRUCache(Generic[V]):
    """Least-recently-used mapping bounded to ``capacity`` entries (thread-safe)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("cache capacity must be at least 1")
        self.capacity = capacity
        self.stats = CacheStats()
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, default: V | None = None) -> V | None:
        """The value (now the most recently used), or ``default`` when ``key`` is not cached."""
        with self._lock:
            value = self._items.get(key, _MISSING)
            if value is _MISSING:
                self.stats.misses += 1
                return default
            self._items.move_to_end(key)
            self.stats.hits += 1
            return value  # type: ignore[return-value]

    def put(self, key: Hashable, value: V) -> list[Hashable]:
        """Store ``value`` as the most recently used; returns the keys evicted to make room."""
        evicted: list[Hashable] = []
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                evicted.append(self._items.popitem(last=False)[0])
                self.stats.evictions += 1
            self.stats.size = len(self._items)
        return evicted

    def get_or_create(self, key: Hashable, create: Callable[[], V]) -> tuple[V, bool]:
        """The cached value, or ``create()``'s (stored); also whether it was a hit."""
        value = self.get(key, _MISSING)  # type: ignore[arg-type]
        if value is not _MISSING:
            return value, True  # type: ignore[return-value]
        value = create()
        self.put(key, value)
        return value, False

    def pop(self, key: Hashable) -> None:
        """Forget ``key`` (nothing if it is not cached)."""
        with self._lock:
            self._items.pop(key, None)
            self.stats.size = len(self._items)

    def discard_where(self, predicate: Callable[[Hashable], bool]) -> None:
        with self._lock:
            for key in [k for k in self._items if predicate(k)]:
                del self._items[key]
            self.stats.size = len(self._items)

    def keys(self) -> list[Hashable]:
        """The keys, least recently used first (a copy)."""
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        """Whether ``key`` is cached (neither a use nor counted)."""
        return key in self._items
