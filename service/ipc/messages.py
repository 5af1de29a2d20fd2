"""What crosses the process boundary between the HTTP server and an engine worker.

A job or a result crosses as a plain tuple of its fields (:meth:`GradJob.to_wire`,
:meth:`GradJob.from_wire`, and the same for :class:`JobResult`), its arrays as ``(buffer,
dtype, shape)`` triples whose buffers pickle protocol 5 carries out of band (see
:mod:`service.worker_main`): their bytes are copied once and never walked element by element,
and the pickle holds no class or function reference to look up on the other side.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class GradJob:
    """One /grad call, decoded and validated against the registry, ready for an engine."""

    network_id: str
    inputs: list[np.ndarray] | dict[str, np.ndarray]
    get_all: bool = False
    get_by_list: bool = False
    sens_param: bool = False
    weights: list[str] | None = None
    sens: np.ndarray | list[np.ndarray] | None = None
    parameters: dict[str, np.ndarray] | None = None
    return_value: bool = False
    deadline: float = 0.0  # time.monotonic() (system-wide on Linux) after which nobody waits
    # The gradnet/1 document (parameters as b64), sent only to a worker that lacks the network.
    network_doc: dict[str, Any] | None = None
    # The prefix of the network's error paths: "network." inline, "" registered (Network.path).
    network_path: str = ""
    # The response is JSON: a large result's text is written by the worker and the server
    # together (see service.codec.split_point).
    json_split: bool = False

    def to_wire(self) -> tuple[Any, ...]:
        return (self.network_id, pack(self.inputs), self.get_all, self.get_by_list, self.sens_param, self.weights,
                pack(self.sens), pack(self.parameters), self.return_value, self.deadline, self.network_doc,
                self.network_path, self.json_split)

    @classmethod
    def from_wire(cls, wire: tuple[Any, ...]) -> GradJob:
        (network_id, inputs, get_all, get_by_list, sens_param, weights, sens, parameters, return_value, deadline,
         network_doc, network_path, json_split) = wire
        return cls(network_id, unpack(inputs), get_all, get_by_list, sens_param, weights, unpack(sens),
                   unpack(parameters), return_value, deadline, network_doc, network_path, json_split)


@dataclass
class JobResult:
    gradients: Any
    gradient_names: Any
    value: list[np.ndarray] | None
    timing_ms: dict[str, float] = field(default_factory=dict)  # compile, compute (in the worker)
    cache_hit: bool = False
    cache_stats: dict[str, float] = field(default_factory=dict)  # the worker's engine.stats
    # Where the worker splits the JSON text of the result (an element index into the flattened
    # tensors, see service.codec.split_point): it writes the text of the elements before it and
    # sends them in a second message; None: no split.
    json_split: int | None = None
    # In the server only: the future of that second message (the worker's JSON pieces, or None).
    json_part: Any = None

    def to_wire(self) -> tuple[Any, ...]:
        return (pack(self.gradients), self.gradient_names, pack(self.value), self.timing_ms, self.cache_hit,
                self.cache_stats, self.json_split)

    @classmethod
    def from_wire(cls, wire: tuple[Any, ...]) -> JobResult:
        gradients, names, value, timing_ms, cache_hit, cache_stats, json_split = wire
        return cls(unpack(gradients), names, unpack(value), timing_ms, cache_hit, cache_stats, json_split)


# Arrays on the wire: a tuple (nothing else in a job or result is a tuple: JSON gives lists).


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
