"""What crosses the process boundary between the HTTP server and an engine worker.

Tensors travel as NumPy arrays pickled with protocol 5 and out-of-band buffers (see
:mod:`service.workers`), so their bytes are copied once and never walked element by element.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
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

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (GradJob, tuple(getattr(self, name) for name in _FIELDS[GradJob]))


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

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (JobResult, tuple(getattr(self, name) for name in _FIELDS[JobResult]))


# Pickled as (class, field values): a few microseconds less per message than the generic
# dataclass reduction (copyreg, a state dict), on both ends of every job.
_FIELDS = {cls: tuple(f.name for f in fields(cls)) for cls in (GradJob, JobResult)}


def _rebuild(cls: type, values: tuple[Any, ...]) -> Any:
    return cls(*values)
