"""A large JSON body's tensor payloads parsed in bulk: number arrays without a Python object
per number (issue 12, point 4), base64 strings without a Python str of them (issue 14).

orjson makes a Python object of every number of a ``data`` array: 21 million float32 numbers
(a 200 MiB body) become 21 million floats and a list, 670 MB, before NumPy copies them once
more. :func:`loads` finds the flat arrays of numbers that follow a ``"data":`` key, parses each
in slices of a few MiB into one preallocated array (simdjson, which writes the numbers into
a buffer with no Python object per number; orjson and NumPy for what it refuses, a slice's
objects at a time), and hands orjson the small rest of the text with a placeholder string in
each array's place. The tensors of the call (``inputs``, ``parameters`` and the call's
vectors) get an :class:`engine.tensors.JsonNumbers`, which the one tensor decoder decodes exactly
as it decodes the list; a placeholder anywhere else (a network's parameters, whose JSON is
fingerprinted and stored) is put back as the list orjson makes of its text.

A long ``"b64":`` string is cut out the same way. orjson would copy its text into a str (the
MLP's 535 KB input: half of the 0.3 ms that orjson took over the whole body), which the
decoder then reads once more; here a call tensor's string is decoded straight from the body
into an :class:`engine.tensors.Base64Bytes`, when ``pybase64`` takes the text whole (so the
text is base64's alphabet alone: a JSON string with no escapes, whose str orjson would have made
of the same characters). Text it does not take is left to orjson, and so is any string with a
backslash in it.

The result is the document ``orjson.loads(body)`` gives, with those lists and strings replaced:
each array is checked to be valid JSON (every slice parsed by simdjson or orjson), a placeholder
is a whole JSON value (a random one, found where a tensor's ``data`` or ``b64`` is), and the
body's own error is raised by orjson itself (its message and position) whenever anything does not
add up.
"""

from __future__ import annotations

import binascii
import re
import secrets
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pybase64
import simdjson

from engine.tensors import Base64Bytes, JsonNumbers

#: bodies smaller than this are parsed by orjson alone (the scan costs more than it saves: at 87 KB
#: of numbers the two cost the same, at 175 KB the bulk path is 30 % faster; the MLP's b64
#: request is 540 KB)
MIN_BODY_BYTES = 128 << 10
#: arrays whose text is shorter than this stay lists
MIN_ARRAY_BYTES = 64 << 10
#: text parsed per slice (about 200,000 numbers: simdjson's buffers of ~3 MB, or ~7 MB of Python
#: objects where orjson reads it; the MLP's 1.1 MB input is one slice. 4 MiB slices put the
#: 64 MiB body of tests/hardening/test_memory.py at 3.2x its size against 2.5-2.6x)
SLICE_BYTES = 2 << 20
#: base64 strings shorter than this stay strs
MIN_B64_BYTES = 64 << 10
#: the top-level fields whose tensors take a JsonNumbers or Base64Bytes (API.md §3; the transforms' vectors)
TENSOR_FIELDS = ("inputs", "parameters", "sens", "tangents", "cotangents", "vectors")

_KEY = b'"data"'
_OPEN = re.compile(rb"\s*:\s*\[")
_B64_KEY = b'"b64"'
_B64_OPEN = re.compile(rb'\s*:\s*"')
#: every byte a flat array of JSON numbers can hold (orjson checks the grammar)
_NUMBER_BYTES = b"0123456789+-.eE, \t\r\n"
_FLOAT_BYTES = re.compile(rb"[.eE]")


def loads(body: bytes | memoryview) -> Any:
    """``orjson.loads(body)``, with the large flat number arrays of the call's tensors as
    :class:`JsonNumbers` and their long base64 strings as :class:`Base64Bytes` (see the
    module's docstring); raises what orjson raises."""
    data = bytes(body) if isinstance(body, memoryview) else body
    if len(data) < MIN_BODY_BYTES:
        return orjson.loads(data)
    # Each scan reads the whole body (~0.5 ms a MB here): only the kinds the body holds are looked
    # for. A window with a comma lies among numbers (or JSON's own structure), one with none
    # inside a long string; an array or string the windows miss is only left to orjson.
    commas = comma_windows(data, len(data))
    regions = sorted((_number_regions(data) if any(commas) else []) + (_b64_regions(data) if not all(commas) else []))
    if not regions or any(a[1] > b[0] for a, b in zip(regions, regions[1:])):
        return orjson.loads(data)  # (regions of separate values never overlap: only broken JSON)
    nonce = secrets.token_hex(16)
    names: dict[str, tuple[int, int]] = {}
    parts: list[bytes] = []
    at = 0
    for k, (start, end) in enumerate(regions):
        name = f"\0gradserve-numbers-{nonce}-{k}"
        names[name] = (start, end)
        parts += (data[at:start], b'"\\u0000gradserve-numbers-%s-%d"' % (nonce.encode(), k))
        at = end
    parts.append(data[at:])
    try:
        doc = orjson.loads(b"".join(parts))
    except orjson.JSONDecodeError:
        doc = None
    del parts
    if doc is None:
        return orjson.loads(data)  # the body's own error, at its own position
    left = dict(names)
    try:
        if isinstance(doc, dict):
            _bulk_for_tensors(doc, data, left)
        if left:
            _put_back(doc, data, left)
    except ValueError:  # a value that is not valid JSON after all (orjson's errors are ValueErrors)
        left = names
    if left:  # not valid, or a placeholder not where a value can be: orjson says what and where
        return orjson.loads(data)
    return doc


def comma_windows(data: bytes, size: int, windows: int = 8, width: int = 64) -> list[bool]:
    """Whether each of ``windows`` samples of ``width`` bytes, spread evenly over the first
    ``size`` bytes of ``data``, holds a comma: a JSON array of numbers has one every few bytes,
    base64 none. Microseconds, whatever the size."""
    step = size // (windows + 1)
    return [data.find(b",", step * i, step * i + width) >= 0 for i in range(1, windows + 1)]


def _key_at(data: bytes, at: int) -> bool:
    """Whether the quote at ``at`` opens a key, not an escaped quote inside a string."""
    slashes = 0
    while at - slashes > 0 and data[at - slashes - 1] == 0x5C:  # backslash
        slashes += 1
    return slashes % 2 == 0


def _values_after(data: bytes, key: bytes, opener: re.Pattern[bytes], close: bytes,
                  keep: Callable[[int, int], bool]) -> list[tuple[int, int]]:
    """The (start, end) of each value that follows ``key`` (a key: not inside a string) and
    ``opener`` (its colon and first byte), up to the first ``close`` byte, where ``keep``."""
    out = []
    at = data.find(key)
    while at >= 0:
        opened = opener.match(data, at + len(key)) if _key_at(data, at) else None
        if opened is None:
            at = data.find(key, at + 1)
            continue
        start = opened.end() - 1
        end = data.find(close, start + 1)
        if end < 0:
            break
        end += 1
        if keep(start, end):
            out.append((start, end))
        at = data.find(key, end)
    return out


def _b64_regions(data: bytes) -> list[tuple[int, int]]:
    """Each long string with no backslash (quotes included) after a ``"b64":`` key."""
    return _values_after(data, _B64_KEY, _B64_OPEN, b'"',
                         lambda start, end: end - start >= MIN_B64_BYTES and data.find(b"\\", start, end) < 0)


def _number_regions(data: bytes) -> list[tuple[int, int]]:
    """Each long flat array of number characters after a ``"data":`` key."""
    return _values_after(data, _KEY, _OPEN, b"]", lambda start, end: end - start >= MIN_ARRAY_BYTES and not
                         data[start + 1:end - 1].translate(None, _NUMBER_BYTES))


def _numbers(data: bytes, start: int, end: int) -> JsonNumbers | None:
    """The array ``data[start:end]`` (``[`` to ``]``) as a JsonNumbers, or None when NumPy would
    not read its list as int64 or float64 (integers past int64: it stays a list). Raises
    ValueError when it is not a valid JSON array."""
    inner_start, inner_end = start + 1, end - 1
    if inner_end - inner_start <= SLICE_BYTES:  # one slice: its array is the values
        values = _slice_values(memoryview(data)[start:end], _FLOAT_BYTES.search(data, inner_start, inner_end) is not None)
        return None if values is None else JsonNumbers(values)
    # (NumPy counts the commas at ten times the speed of bytes.count here)
    count = np.count_nonzero(np.frombuffer(data, np.uint8, inner_end - inner_start, inner_start) == 0x2C)
    values = np.empty(count + 1, dtype=np.int64)
    floats = False
    filled = 0
    at = inner_start
    while at < inner_end:
        stop = data.find(b",", min(at + SLICE_BYTES, inner_end), inner_end)
        stop = inner_end if stop < 0 else stop
        piece = data[at:stop]
        part = _slice_values(b"[" + piece + b"]", floats or _FLOAT_BYTES.search(piece) is not None)
        if part is None:
            return None  # integers only, one past int64: NumPy's own reading of the list decides
        n = part.size
        if filled + n > values.size:
            raise ValueError("not a JSON array")
        if part.dtype == np.float64 and not floats:  # NumPy reads the whole list as float64: so does this from here on
            as_float = values.view(np.float64)
            for i in range(0, filled, 1 << 20):
                as_float[i:i + (1 << 20)] = values[i:i + (1 << 20)]
            values, floats = as_float, True
        values[filled:filled + n] = part
        filled += n
        at = stop + 1
        if stop == inner_end:
            break
    if filled != values.size:
        raise ValueError("not a JSON array")
    return JsonNumbers(values)


# One parser, reused: it keeps its buffers (about 16 bytes a number of the largest slice it read,
# ~3 MB for a 2 MiB slice), which a parser per thread would keep in every thread of the pool. A
# slice that arrives while it is busy gets a parser of its own, dropped after.
_parser = simdjson.Parser()
_parser_lock = threading.Lock()


def _slice_values(text: bytes | memoryview, floats: bool) -> np.ndarray | None:
    """A slice's flat array of numbers (``text``: ``[`` to ``]``) as float64 when ``floats`` (some
    number of the array is written as a float), else int64; None when its integers do not all
    fit an int64. Raises ValueError when it is not a valid JSON array.

    simdjson reads the numbers straight into the array (no Python object per number: 1.7 ms for
    the MLP's 100,352 inputs, against 6.6 ms for orjson's list and NumPy's copy of it), with the
    same correctly rounded float64s and int64s. Anything it refuses (a number past 64 bits, a
    broken array) goes to orjson and NumPy, whose reading of the list is the definition."""
    global _parser
    shared = _parser_lock.acquire(blocking=False)
    try:
        parser = _parser if shared else simdjson.Parser()
        try:
            return np.frombuffer(parser.parse(text).as_buffer(of_type="d" if floats else "i"),
                                 dtype=np.float64 if floats else np.int64)
        except (ValueError, TypeError, RuntimeError):
            if shared:
                _parser = simdjson.Parser()  # (nothing can still hold the new one's document)
    finally:
        if shared:
            _parser_lock.release()
    try:
        part = np.asarray(orjson.loads(text))
    except orjson.JSONDecodeError:
        raise ValueError("not a JSON array") from None
    if part.dtype == np.int64 and not floats:
        return part
    if part.dtype.kind in "fiu" and floats:
        return part.astype(np.float64)
    return None


def _base64(data: bytes, start: int, end: int) -> Any:
    """The string ``data[start:end]`` (quotes included) as a Base64Bytes, when pybase64 takes its
    text whole; else the str orjson makes of it (ValueError when it is not a JSON string)."""
    try:
        return Base64Bytes(pybase64.b64decode(memoryview(data)[start + 1:end - 1], validate=True))
    except (binascii.Error, ValueError):
        return orjson.loads(data[start:end])  # not base64: the decoder says so of the string


def _bulk_for_tensors(doc: dict, data: bytes, left: dict[str, tuple[int, int]]) -> None:
    """Each placeholder at a call tensor's ``data`` becomes its JsonNumbers (or its list), and
    at its ``b64`` its Base64Bytes (or its str)."""
    for field in TENSOR_FIELDS:
        node = doc.get(field)
        tensors = [node]
        if isinstance(node, list):
            tensors += node
        elif isinstance(node, dict):
            tensors += node.values()
        for tensor in tensors:
            if type(tensor) is not dict:
                continue
            name = tensor.get("data")
            if type(name) is str and name in left and data[left[name][0]] == 0x5B:  # [
                start, end = left.pop(name)
                numbers = _numbers(data, start, end)
                tensor["data"] = numbers if numbers is not None else orjson.loads(data[start:end])
            name = tensor.get("b64")
            if type(name) is str and name in left and data[left[name][0]] == 0x22:  # "
                start, end = left.pop(name)
                tensor["b64"] = _base64(data, start, end)


def _put_back(doc: Any, data: bytes, left: dict[str, tuple[int, int]]) -> None:
    """Each placeholder still in ``doc`` (outside the call's tensors) becomes the list orjson
    makes of its text; found ones leave ``left``."""
    stack = [doc]
    while stack and left:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in list(items):
            if type(value) is str:
                span = left.pop(value, None)
                if span is not None:
                    node[key] = orjson.loads(data[span[0]:span[1]])
            elif isinstance(value, (dict, list)):
                stack.append(value)


def release(doc: Any) -> None:
    """Drop the bulk values of ``doc``'s call tensors once they are decoded (the arrays hold
    them now): a large body's float64 copy of its numbers does not outlive the decoding, so it
    is not held while the call computes and its answer is encoded. (A tensor decoded again after
    this would have no data: nothing does.)"""
    if not isinstance(doc, dict):
        return
    for field in TENSOR_FIELDS:
        node = doc.get(field)
        tensors = [node] + (list(node) if isinstance(node, list) else list(node.values()) if isinstance(node, dict)
                            else [])
        for tensor in tensors:
            if type(tensor) is dict and type(tensor.get("data")) is JsonNumbers:
                tensor["data"].values = np.empty(0, tensor["data"].values.dtype)  # (a view would keep the buffer)
