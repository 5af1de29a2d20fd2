"""The tensor codec: wire tensor objects <-> NumPy arrays.

A wire tensor is ``{"dtype", "shape", "data"}`` (flat or nested JSON numbers, with ``"NaN"``,
``"Infinity"`` and ``"-Infinity"`` standing in for non-finite values) or ``{"dtype", "shape",
"b64"}`` (little-endian raw bytes). The element count is checked against the limit *before*
anything is allocated, and the data is converted by NumPy in bulk, never element by element in
Python, so a large tensor costs one C loop. The one decoder of wire tensors in gradserve: the
server's request codec, the network parser, the Python client and the load tester all call
:func:`decode_tensor`; its fast path for the common small float tensor makes a tutorial-sized
call cost microseconds.
"""

from __future__ import annotations

import binascii
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pybase64  # SIMD base64: the standard library's decodes ~240 MB/s, this one at memory speed

from .dtypes import dtype_name, is_float, parse_dtype
from .errors import TensorError, TooLargeError

NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_ENCODINGS = ("json", "b64")


def _field(obj: Mapping[str, Any], path: str | None, *names: str) -> Any:
    for name in names:
        if name in obj:
            return obj[name]
    return None


#: the most dimensions an array may have (NumPy's limit; JAX's arrays are NumPy's)
MAX_RANK = 64
#: the most elements the non-zero dimensions of a shape may multiply to: NumPy refuses a shape
#: whose span times the item size passes 2**63 even when a zero dimension makes it empty, so
#: this is 2**63 over the widest item (16 bytes), checked before any array is made
MAX_SPAN = 2**59


def parse_shape(shape: Any, path: str | None) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise TensorError(f"shape must be a list of non-negative integers, got {_short(shape)}", _join(path, "shape"))
    check_shape(shape, _join(path, "shape"))
    return tuple(shape)


def check_shape(shape: Any, path: str | None) -> None:
    """Refuse a shape no array can have: more than :data:`MAX_RANK` dimensions, or non-zero
    dimensions whose product passes :data:`MAX_SPAN` (a zero-size ``[2**62, 4, 0]`` included).
    Python integers: nothing overflows."""
    if len(shape) > MAX_RANK:
        raise TensorError(f"shape has {len(shape)} dimensions, more than the {MAX_RANK} an array can have", path)
    span = 1
    for d in shape:
        if d:
            span *= d
            if span > MAX_SPAN:
                raise TensorError(
                    f"shape {_short(list(shape))} is larger than any array can be: its non-zero dimensions "
                    f"multiply to more than 2**59 elements (even an empty array must fit its other dimensions)",
                    path,
                )


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def element_count(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def check_size(shape: tuple[int, ...], max_elements: int | None, path: str | None) -> None:
    if max_elements is not None and element_count(shape) > max_elements:
        raise TooLargeError(
            f"tensor of shape {list(shape)} has {element_count(shape)} elements, over the limit "
            f"of {max_elements}",
            path,
        )


def _join(path: str | None, field: str) -> str:
    return f"{path}.{field}" if path else field


def _nested_shape(data: Any, path: str | None) -> tuple[int, ...]:
    """Infer the shape of a nested list by walking its first elements (depth-bounded)."""
    shape = []
    node = data
    while isinstance(node, list):
        shape.append(len(node))
        if len(shape) > 64:
            raise TensorError("nested data is more than 64 levels deep", _join(path, "data"))
        if not node:
            break
        node = node[0]
    return tuple(shape)


class JsonNumbers:
    """A flat JSON array of numbers that the request's JSON parser read in bulk, in place of the
    list of Python numbers it stands for (``service/http/bulk.py``: a large body's ``data``
    arrays, so that 21 million numbers are not 21 million Python objects, issue 12).

    ``values`` is what ``np.asarray`` makes of that list: int64 when every number is an integer
    that fits one, else float64, and float64 only when at least one number was written as a
    float (``1.0``, ``1e3``); any other list (bools, null, strings, nesting, integers past
    int64) is never a :class:`JsonNumbers`. :func:`decode_tensor` decodes it exactly as it
    decodes the list (same dtype rules, rounding and messages)."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray) -> None:
        if values.ndim != 1 or values.dtype not in (np.int64, np.float64):
            raise ValueError("JsonNumbers holds a flat int64 or float64 array")
        self.values = values

    def __len__(self) -> int:
        return self.values.size

    def __repr__(self) -> str:
        return f"JsonNumbers({self.values.size} × {self.values.dtype})"


class Base64Bytes:
    """A tensor's ``b64`` string that the request's JSON parser decoded in bulk, in place of the
    string (``service/http/bulk.py``: a large body's base64 text is decoded straight out of the
    body, with no Python str of it made first, issue 14). It is made only of text that
    ``pybase64.b64decode(validate=True)`` took whole, so ``raw`` is exactly what
    :func:`decode_tensor` makes of the string itself."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def __repr__(self) -> str:
        return f"Base64Bytes({len(self.raw)} bytes)"


_FAST_FLOATS = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64),
                "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64)}
_FAST_MAX = 4096


def _small_float_tensor(obj: Any, max_elements: int | None) -> np.ndarray | None:
    """The common small tensor, ``{"dtype": "float32", "shape": [...], "data": [flat finite
    numbers]}``, decoded exactly as the general path below decodes it, in a few
    microseconds instead of a few dozen; None for anything else (the
    general path decodes it, and says what is wrong)."""
    if type(obj) is not dict or len(obj) != 3:
        return None
    data = obj.get("data")
    shape = obj.get("shape")
    if type(data) is not list or type(shape) is not list or len(data) > _FAST_MAX:
        return None
    name = obj["dtype"] if "dtype" in obj else obj.get("datatype")
    if type(name) is not str:
        return None
    dtype = _FAST_FLOATS.get(name)
    if dtype is None:
        return None
    if len(shape) > MAX_RANK:
        return None
    count = 1
    for d in shape:
        if type(d) is not int or d < 0:
            return None
        count *= d
    if count != len(data) or count == 0 or (max_elements is not None and count > max_elements):
        return None  # (an empty tensor may have huge other dimensions: the general path checks them)
    large = False
    for v in data:
        if type(v) is not float and type(v) is not int:
            return None
        if not -3.4e38 <= v <= 3.4e38:
            large = True
    try:
        wide = np.array(data, dtype=np.float64)  # orjson parses no NaN or infinity; a huge int raises
    except (OverflowError, ValueError, TypeError):
        return None
    if dtype == np.float64:
        return wide.reshape(shape)
    if not large:
        return wide.astype(dtype).reshape(shape)
    with np.errstate(over="ignore", invalid="ignore"):
        arr = wide.astype(dtype)
    if not np.isfinite(arr).all():
        return None  # over float32's range: an error, and the engine says which value
    return arr.reshape(shape)


def decode_tensor(
    obj: Any,
    path: str | None = None,
    *,
    max_elements: int | None = None,
    binary: bytes | memoryview | None = None,
) -> np.ndarray:
    """Decode one wire tensor into a NumPy array of its declared dtype and shape.

    ``binary`` carries the raw bytes of a tensor sent with the Open Inference Protocol binary
    extension (its JSON part says ``binary_data_size``); the service's body codec slices them.
    """
    if binary is None:
        fast = _small_float_tensor(obj, max_elements)
        if fast is not None:
            return fast
    if not isinstance(obj, Mapping):
        raise TensorError(
            f"a tensor must be an object like {{\"dtype\": \"float32\", \"shape\": [2], \"data\": [1, 2]}}, "
            f"got {type(obj).__name__}",
            path,
        )
    dtype_field = "dtype" if "dtype" in obj else "datatype"
    if dtype_field not in obj:
        raise TensorError("a tensor needs a 'dtype' (or OIP 'datatype')", path)
    dtype = parse_dtype(obj[dtype_field], _join(path, dtype_field))
    raw_shape = obj.get("shape")
    data = obj.get("data")
    b64 = obj.get("b64")
    sources = sum(x is not None for x in (data, b64, binary))
    if sources != 1:
        raise TensorError("a tensor needs exactly one of 'data', 'b64' or binary data", path)

    if raw_shape is None:
        if type(data) is JsonNumbers:
            shape = (len(data),)
        elif not isinstance(data, list):
            raise TensorError("'shape' may be left out only when 'data' is a (nested) list", _join(path, "shape"))
        else:
            shape = _nested_shape(data, path)
        check_shape(shape, _join(path, "data"))
    else:
        shape = parse_shape(raw_shape, path)
    check_size(shape, max_elements, path)
    count = element_count(shape)

    if data is not None:
        return _decode_data(data, dtype, shape, count, raw_shape is None, path)
    raw = binary if binary is not None else _b64(b64, path)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise TensorError(
            f"got {len(raw)} bytes of data, expected {expected} for {dtype_name(dtype)} of shape {list(shape)}",
            _join(path, "b64" if b64 is not None else "binary_data_size"),
        )
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(shape)


def _b64(value: Any, path: str | None) -> bytes:
    if type(value) is Base64Bytes:
        return value.raw
    if not isinstance(value, str):
        raise TensorError("'b64' must be a base64 string", _join(path, "b64"))
    try:
        return pybase64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise TensorError("'b64' is not valid base64", _join(path, "b64")) from None


#: what a client wrote, by the kind of array NumPy made of it (never NumPy's one-letter codes)
_KINDS = {"U": "strings", "S": "strings", "f": "non-integer numbers", "c": "complex numbers", "b": "booleans",
          "O": "mixed values", "i": "integers", "u": "integers", "V": "values that are not numbers"}


def _kind(array: np.ndarray) -> str:
    return _KINDS.get(array.dtype.kind, "values that are not numbers")


def _exact_ints(data: Any, wide: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
    """NumPy widens integers it cannot hold in one 64-bit type (a negative next to one >= 2**63,
    or one beyond 64 bits) to float64 or object; keep them as exact Python ints instead, so that
    uint64 values near 2**64 decode exactly and the range check below reports too-large ones."""
    exact = np.asarray(data, dtype=object)
    if exact.shape != wide.shape or not all(type(v) is int for v in exact.reshape(-1)):
        raise TensorError(f"{dtype_name(dtype)} tensor data must be integers, got {_kind(wide)}", where)
    return exact


def _list_wide(data: Any, dtype: np.dtype, shape: tuple[int, ...], where: str) -> np.ndarray:
    """A list of JSON values as NumPy reads it: float64 for a float dtype, else its own type."""
    if not isinstance(data, list):
        if shape == () and isinstance(data, (int, float, bool, str)):
            data = [data]
        else:
            raise TensorError("'data' must be a list of numbers", where)
    floating = is_float(dtype)
    try:
        # Parse as float64 (or the integer/bool type itself) in one NumPy call; the strings
        # "NaN"/"Infinity"/"-Infinity" are understood by float() and so by NumPy.
        if floating:
            wide = np.asarray(data, dtype=np.float64)
            # NumPy reads a JSON null as NaN: only the string "NaN" stands for one.
            if np.isnan(wide).any() and any(v is None for v in np.asarray(data, dtype=object).reshape(-1)):
                raise TensorError('\'data\' holds null: write "NaN" for a NaN', where)
        elif dtype == np.bool_:
            wide = np.asarray(data)
            if wide.size and wide.dtype != np.bool_:
                raise TensorError(f"bool tensor data must be true/false, got {_kind(wide)}", where)
        else:
            wide = np.asarray(data)
            if wide.size and wide.dtype.kind in "fO":
                wide = _exact_ints(data, wide, dtype, where)
            if wide.size and wide.dtype.kind not in "iuO":
                raise TensorError(f"{dtype_name(dtype)} tensor data must be integers, got {_kind(wide)}", where)
    except TensorError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        what = 'numbers (or "NaN", "Infinity", "-Infinity")' if floating else "numbers"
        raise TensorError(
            f"'data' must be {what} in a regular (non-ragged) list: {exc}",
            where,
        ) from None
    return wide


def _bulk_wide(data: JsonNumbers, dtype: np.dtype, where: str) -> np.ndarray:
    """What :func:`_list_wide` makes of the list ``data`` stands for, from its bulk values: no
    null, string or bool can be among them, and float64 values mean a float was among them."""
    values = data.values
    if is_float(dtype):
        return values.astype(np.float64, copy=False)
    if dtype == np.bool_ and values.size:
        raise TensorError(f"bool tensor data must be true/false, got {_kind(values)}", where)
    if values.dtype.kind == "f" and values.size:  # a number written as a float: never an integer (_exact_ints)
        raise TensorError(f"{dtype_name(dtype)} tensor data must be integers, got {_kind(values)}", where)
    return values


def _decode_data(
    data: Any, dtype: np.dtype, shape: tuple[int, ...], count: int, inferred: bool, path: str | None
) -> np.ndarray:
    where = _join(path, "data")
    floating = is_float(dtype)
    wide = _bulk_wide(data, dtype, where) if type(data) is JsonNumbers else _list_wide(data, dtype, shape, where)
    if wide.size != count:
        raise TensorError(f"'data' has {wide.size} elements, but shape {list(shape)} needs {count}", where)
    if not inferred and wide.ndim > 1 and wide.shape != shape:
        raise TensorError(f"nested 'data' has shape {list(wide.shape)}, but 'shape' says {list(shape)}", where)
    if floating:
        with np.errstate(over="ignore", invalid="ignore"):
            arr = wide.astype(dtype)
        # (float32 and float64 are NumPy's own: no float64 copy of a 21-million-number array)
        inf = np.isinf(arr) if arr.dtype in (np.float32, np.float64) else np.isinf(arr.astype(np.float64))
        overflow = inf & np.isfinite(wide)
        if overflow.any():
            bad = float(wide[overflow][0])
            raise TensorError(f"value {bad} is out of range for {dtype_name(dtype)}", where)
    else:
        if wide.size and dtype.kind in "iu":
            info = np.iinfo(dtype)
            if wide.min() < info.min or wide.max() > info.max:
                raise TensorError(f"values are out of range for {dtype_name(dtype)} [{info.min}, {info.max}]", where)
        arr = wide.astype(dtype)
    return arr.reshape(shape)


def _json_safe(flat: np.ndarray) -> Any:
    """Flat data in a form orjson serializes: the array itself when it can (fast path)."""
    if is_float(flat.dtype):
        if flat.dtype in (np.float32, np.float64) and np.isfinite(flat).all():
            return flat
        values = flat.astype(np.float64).tolist()
        if not np.isfinite(flat.astype(np.float64)).all():
            values = [v if math.isfinite(v) else ("NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")) for v in values]
        return values
    return flat


def b64_bytes(array: np.ndarray) -> bytes:
    """The base64 of ``array``'s little-endian, row-major bytes, read where they lie (no copy of
    the array first when it is already contiguous and little-endian)."""
    arr = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return pybase64.b64encode(memoryview(arr.reshape(-1).view(np.uint8)))


def encode_tensor(array: Any, encoding: str = "json") -> dict[str, Any]:
    """A wire tensor for ``array``: ``json`` (data) or ``b64``.

    The ``data`` of a ``json`` tensor may be a NumPy array: serialize with
    ``orjson.OPT_SERIALIZE_NUMPY`` (or call ``.tolist()``).
    """
    arr = np.asarray(array)
    head = {"dtype": dtype_name(arr.dtype), "shape": list(arr.shape)}
    if encoding == "json":
        head["data"] = _json_safe(np.ascontiguousarray(arr).reshape(-1))
    elif encoding == "b64":
        head["b64"] = b64_bytes(arr).decode("ascii")
    else:
        raise ValueError(f"unknown encoding {encoding!r}: expected one of {_ENCODINGS}")
    return head
