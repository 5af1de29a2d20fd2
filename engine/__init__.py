"""gradserve's engine: ``gradnet/1`` networks, MindSpore GradOperation semantics, run by JAX.

A pure library (JAX and NumPy only). The public surface::

    net = engine.parse_network(doc)                 # validate; net.id is the canonical id
    result = engine.Engine().grad(net, [x, y], get_all=True)
    result = engine.run_request(request_dict)       # a whole /grad-shaped request

Importing it changes no global state: whoever starts JAX (the worker, the server's validator,
the benchmarks, the tests) calls :func:`configure_jax` first, and :class:`Engine` refuses to
start without it (float64 would silently become float32).

The wire codec (:mod:`.dtypes`, :mod:`.errors`, :mod:`.tensors`) imports no JAX, so a client or
a load generator decodes tensors with the one decoder without loading JAX; the rest is imported
on first use (``engine.Engine``, ``from engine import parse_network``).
"""

from importlib import import_module
from typing import Any

from .dtypes import DTYPES, OIP_DTYPES, dtype_name, parse_dtype
from .errors import (
    ArgumentError,
    AttrError,
    CodedError,
    CycleError,
    DTypeError,
    DuplicateNameError,
    GradnetError,
    NetworkError,
    SensError,
    ShapeError,
    TensorError,
    TooLargeError,
    UndefinedNameError,
    UnknownOpError,
)
from .tensors import decode_tensor, encode_tensor

#: the names that need JAX, and the module of each (imported on first use)
_LAZY = {
    "Engine": "engine", "GradResult": "engine", "configure_compile_cache": "engine", "configure_jax": "engine",
    "GradOperation": "transforms", "Grad": "transforms", "Jvp": "transforms", "Vjp": "transforms",
    "Jacobian": "transforms", "Hvp": "transforms", "Network": "network", "parse_network": "network", "OPS": "ops", "catalog": "ops",
    "decode_inputs": "request", "decode_parameters": "request", "decode_sens": "request",
    "run_request": "request",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "DTYPES", "OIP_DTYPES", "OPS", "ArgumentError", "AttrError", "CodedError", "CycleError", "DTypeError",
    "DuplicateNameError", "Engine", "GradResult", "GradOperation", "Grad", "Jvp", "Vjp", "Jacobian", "Hvp", "GradnetError", "Network",
    "NetworkError", "SensError", "ShapeError", "TensorError", "TooLargeError", "UndefinedNameError",
    "UnknownOpError", "catalog", "configure_compile_cache", "configure_jax", "decode_inputs",
    "decode_parameters", "decode_sens", "decode_tensor", "dtype_name", "encode_tensor", "parse_dtype",
    "parse_network", "run_request",
]
