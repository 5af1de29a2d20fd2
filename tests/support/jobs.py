"""GradJobs of GradOperation for the pool and transport tests, built as the handler builds them."""

from __future__ import annotations

from typing import Any

from engine.transforms import GradOperation, to_wire
from service.ipc.messages import GradJob


def grad_job(network_id: str, inputs: Any, *, get_all: bool = False, get_by_list: bool = False,
             sens_param: bool = False, weights: list[str] | None = None, sens: Any = None,
             return_value: bool = False, **fields: Any) -> GradJob:
    """A job for ``GradOperation(get_all, get_by_list, sens_param)`` with these weights and sens."""
    spec = GradOperation(get_all, get_by_list, sens_param, None if weights is None else tuple(weights), return_value)
    return GradJob(network_id=network_id, inputs=inputs, spec=to_wire(spec), extra=sens, **fields)
