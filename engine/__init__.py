"""gradserve's engine: ``gradnet/1`` networks, MindSpore GradOperation semantics, run by JAX.

A pure library (JAX and NumPy only). The public surface::

    net = engine.parse_network(doc)                 # validate; net.id is the canonical id
    result = engine.Engine().grad(net, [x, y], get_all=True)
    result = engine.run_request(request_dict)       # a whole /grad-shaped request
"""

import jax as _jax

# float64 tensors must stay float64; every op keeps float32 as float32 under x64 (tested).
_jax.config.update("jax_enable_x64", True)

from .dtypes import DTYPES, OIP_DTYPES, dtype_name, parse_dtype  # noqa: E402
from .engine import Engine, GradResult, configure_compile_cache  # noqa: E402
from .errors import (  # noqa: E402
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
from .grad import GradSpec  # noqa: E402
from .network import Network, parse_network  # noqa: E402
from .ops import OPS, catalog  # noqa: E402
from .request import decode_inputs, decode_parameters, decode_sens, run_request  # noqa: E402
from .tensors import decode_tensor, encode_tensor  # noqa: E402

__all__ = [
    "DTYPES", "OIP_DTYPES", "OPS", "ArgumentError", "AttrError", "CycleError", "DTypeError",
    "DuplicateNameError", "Engine", "GradResult", "GradSpec", "GradnetError", "Network",
    "NetworkError", "SensError", "ShapeError", "TensorError", "TooLargeError", "UndefinedNameError",
    "UnknownOpError", "catalog", "configure_compile_cache", "decode_inputs", "decode_parameters",
    "decode_sens", "decode_tensor", "dtype_name", "encode_tensor", "parse_dtype", "parse_network",
    "run_request",
]
