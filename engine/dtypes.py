"""Wire dtype names and their NumPy equivalents."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from .errors import TensorError

#: Our canonical spelling -> NumPy dtype (always little-endian on the wire).
DTYPES: dict[str, np.dtype] = {
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "int8": np.dtype(np.int8),
    "int16": np.dtype(np.int16),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16),
    "uint32": np.dtype(np.uint32),
    "uint64": np.dtype(np.uint64),
    "bool": np.dtype(np.bool_),
}

#: The Open Inference Protocol's spellings, accepted on input.
OIP_DTYPES: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BF16": "bfloat16",
}

FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})

_NAME_OF = {dt: name for name, dt in DTYPES.items()}


def dtype_name(dtype: np.dtype | type) -> str:
    """The wire name of a NumPy (or JAX) dtype."""
    dt = np.dtype(dtype)
    try:
        return _NAME_OF[dt]
    except KeyError:
        raise TensorError(f"dtype {dt} has no wire representation") from None


def parse_dtype(name: object, path: str | None = None) -> np.dtype:
    """Resolve a wire dtype name (ours or OIP's) to a NumPy dtype."""
    if isinstance(name, str):
        if name in DTYPES:
            return DTYPES[name]
        if name in OIP_DTYPES:
            return DTYPES[OIP_DTYPES[name]]
    raise TensorError(
        f"unknown dtype {name!r}: expected one of {', '.join(DTYPES)} "
        f"(or the Open Inference Protocol spelling {', '.join(OIP_DTYPES)})",
        path,
    )


def is_float(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.floating) or dtype == DTYPES["bfloat16"]
