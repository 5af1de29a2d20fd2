"""The validator: the engine's own checks (:meth:`engine.Engine.check`), run in the server.

A request that would fail in a worker fails here, and costs no worker time: wrong inputs,
weights, parameters or sens, shape and dtype mismatches anywhere in the graph, intermediates
over the size limit. A call that passed once passes again without a second look.

A network of :data:`CHECK_NODES` nodes or more gets only the cheap checks here (its inputs bound,
its per-call parameters): its abstract evaluation (tracing every node, ~0.6 ms of GIL per node)
would stall the server's event loop, the warm requests of every other network with it (3,000
nodes: 1.75 s, issue 12.2). The worker runs the same ``Engine.check_run`` on its check thread,
before it estimates and compiles, so a bad large network gets the same 422 naming its node
(:meth:`Validator.worker_error` puts the node's index back in the order the client sent).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

import engine
from engine.cache import LRUCache
from engine.engine import signature
from service.worker.main import CHECK_NODES

from .call import GradCall

_NODE_PATH = re.compile(r"nodes\[(\d+)\]")
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
        """Whether validate is cheap for this network and input signature: evaluated already, or
        a large network (the worker evaluates it)."""
        return len(net.nodes) >= CHECK_NODES or (net.id, signature(xs)) in self._seen

    @staticmethod
    def worker_error(net: engine.Network, exc: BaseException) -> None:
        """A worker's error about a node of ``net``, its path as this server would have said it.
        The worker parsed the document the server sent it (``Network.to_json``: nodes sorted by
        name, so its id does not depend on their order), so its ``nodes[i]`` counts in that order;
        the client's is ``net``'s own."""
        path = getattr(exc, "path", None)
        if not isinstance(path, str) or len(net.nodes) < CHECK_NODES:
            return
        found = _NODE_PATH.match(path, len(net.path)) if path.startswith(net.path) else None
        if found is None:
            return
        by_name = sorted(range(len(net.nodes)), key=lambda i: net.nodes[i].name)
        index = int(found.group(1))
        if index < len(by_name):
            exc.path = f"{net.path}nodes[{by_name[index]}]{path[found.end():]}"  # type: ignore[attr-defined]

    def bind_inputs(self, net: engine.Network, inputs: Any) -> list[np.ndarray]:
        return self.engine.bind_inputs(net, inputs)

    def validate(self, net: engine.Network, xs: list[np.ndarray], call: GradCall) -> None:
        """Raise what a worker would raise for this call (an ``engine.GradnetError``)."""
        # A call without parameters or vectors is valid or not by its network, input signature
        # and spec alone: one that passed already passes again (a lookup on the hot path).
        if len(net.nodes) >= CHECK_NODES:  # the worker evaluates it (module docstring)
            self.engine._check_parameters(net, call.parameters)  # what check_run checks before evaluating
            return
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
