"""The validator: the engine's own checks (:meth:`engine.Engine.check`), run in the server.

A request that would fail in a worker fails here, and costs no worker time: wrong inputs,
weights, parameters or sens, shape and dtype mismatches anywhere in the graph, intermediates
over the size limit. A call that passed once passes again without a second look.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import engine
from engine.cache import LRUCache
from engine.engine import signature

from .call import GradCall

_NO_DEVICE = "none: the server's validator never runs anything"


class Validator:
    """Its engine never compiles or runs anything, so it gets no JAX device: asking JAX for one
    would start its backends in the server process (and take a GPU). ``validate`` runs on the
    event loop and in the thread pool (the caches are thread-safe)."""

    def __init__(self, *, max_elements: int | None, cache_size: int) -> None:
        self.engine = engine.Engine(cache_size=cache_size, device=_NO_DEVICE, max_elements=max_elements)  # type: ignore[arg-type]
        # (network, input signature) evaluated already: validate is cheap for them
        self._seen: LRUCache[bool] = LRUCache(cache_size * 4)
        # calls that passed, by everything their validity depends on (no parameters, no sens)
        self._valid: LRUCache[bool] = LRUCache(cache_size * 4)

    def knows(self, net: engine.Network, xs: list[np.ndarray]) -> bool:
        """Whether this network and input signature were evaluated already (validate is cheap)."""
        return (net.id, signature(xs)) in self._seen

    def bind_inputs(self, net: engine.Network, inputs: Any) -> list[np.ndarray]:
        return self.engine.bind_inputs(net, inputs)

    def validate(self, net: engine.Network, xs: list[np.ndarray], call: GradCall) -> None:
        """Raise what a worker would raise for this call (an ``engine.GradnetError``)."""
        # A call without parameters or vectors is valid or not by its network, input signature
        # and spec alone: one that passed already passes again (a lookup on the hot path).
        sig = signature(xs)
        known = None
        if call.parameters is None and call.extra is None:
            known = (net.id, sig, call.spec)
            if known in self._valid:
                return
        self.engine.check_run(net, call.spec, xs, parameters=call.parameters, extra=call.extra)
        self._seen.put((net.id, sig), True)
        if known is not None:
            self._valid.put(known, True)
