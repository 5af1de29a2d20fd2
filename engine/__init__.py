"""gradserve's engine: ``gradnet/1`` networks, MindSpore GradOperation semantics, run by JAX.

A pure library (JAX and NumPy only). The public surface::

    net = engine.parse_network(doc)                 # validate; net.id is the canonical id
    result = engine.Engine().grad(net, [x, y], get_all=True)
    result = engine.run_request(request_dict)       # a whole /grad-shaped request

Importing it changes no global state: whoever starts JAX (the worker, the server's validator,
the benchmarks, the tests) calls :func:`configure_jax` first, and :class:`Engine` refuses to
start without it (float64 would silently become float32).
"""

from .dtypes import DTYPES, OIP_DTYPES, dtype_name, parse_dtype
from .engine import Engine, GradResult, configure_compile_cache, configure_jax
from .errors import (
    ArgumentError,
    AttrError,
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
from .grad import GradSpec
from .network import Network, parse_network
from .ops import OPS, catalog
from .request import decode_inputs, decode_parameters, decode_sens, run_request
from .tensors import decode_tensor, encode_tensor

__all__ = [
    "DTYPES", "OIP_DTYPES", "OPS", "ArgumentError", "AttrError", "CycleError", "DTypeError",
    "DuplicateNameError", "Engine", "GradResult", "GradSpec", "GradnetError", "Network",
    "NetworkError", "SensError", "ShapeError", "TensorError", "TooLargeError", "UndefinedNameError",
    "UnknownOpError", "catalog", "configure_compile_cache", "decode_inputs", "decode_parameters",
    "configure_jax", "decode_sens", "decode_tensor", "dtype_name", "encode_tensor", "parse_dtype", "parse_network",
    "run_request",
]
