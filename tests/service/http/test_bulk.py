"""service/http/bulk.py: a large JSON body's number arrays and base64 strings parsed in bulk
decode exactly as orjson's lists and strs do (values, dtypes, rounding, every error and its
message), and the bulk path is the one taken."""

from __future__ import annotations

import base64
import math

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import GradnetError
from engine.tensors import Base64Bytes, JsonNumbers, decode_tensor
from service.http import bulk

DTYPES = ["float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint32",
          "uint64", "bool", "complex64"]

ints = st.one_of(st.integers(-300, 300), st.integers(-2**63, 2**63 - 1),
                 st.sampled_from([2**63 - 1, -2**63, 2**63, 2**64 - 1, 2**64, -2**63 - 1, 10**30, 0, -1]))
floats = st.floats(allow_nan=False, allow_infinity=False).map(repr) | st.sampled_from(
    ["-0.0", "1e3", "1E-3", "2.5e+10", "3.4028235e38", "3.5e38", "65520.0", "1e308", "4.9e-324", "0.1234567",
     "1e-400", "2.2250738585072011e-308", "0.1000000000000000055511151231257827021181583404541015625",
     "123456789012345678901234567890.5", "9007199254740993.0", "-1.7976931348623157e308"])
element = st.one_of(ints.map(str), floats)
spaces = st.sampled_from(["", " ", "\n", "\t ", "\r\n  "])
#: a change that makes the array text not JSON (orjson's error must come out, unchanged)
breaks = st.sampled_from([None, None, None, ",]", "[,", ",,", "01", "+1", ".5", "1.", "1e", "- 1", "]", "1e+", "-01",
                          "1.2.3", "e5", "00", "-", "1e5e5", "--1", "0x1", "1E400", "\f", "\u00a0"])


def _outcome(parse, body: bytes):
    try:
        doc = parse(body)
    except orjson.JSONDecodeError as exc:
        return ("not json", str(exc))
    out = []
    for i, tensor in enumerate(doc["inputs"]):
        try:
            arr = decode_tensor(tensor, f"inputs[{i}]")
        except GradnetError as exc:
            out.append((type(exc).__name__, str(exc), exc.path))
        else:
            out.append((str(arr.dtype), arr.shape, arr.tobytes()))
    return out, doc.get("network")


def _decodes_as_plain(parts: list[str], network: str) -> None:
    """A body of ``network`` and the input tensors ``parts`` (JSON texts) decodes the same,
    values or errors, through the bulk parser as through orjson."""
    body = ('{"network": ' + network + ', "inputs": [' + ", ".join(parts) + "]}").encode()
    assert _outcome(bulk.loads, body) == _outcome(orjson.loads, body)


def _broken(data, text: str, breaks) -> str:
    """``text`` with one of ``breaks`` drawn (None: unchanged) put in at a drawn place."""
    broken = data.draw(breaks)
    if broken is None:
        return text
    at = data.draw(st.integers(0, len(text)))
    return text[:at] + broken + text[at:]


@pytest.fixture
def tiny(monkeypatch):
    """Every body and array is large enough, and slices are a few numbers long."""
    monkeypatch.setattr(bulk, "MIN_BODY_BYTES", 0)
    monkeypatch.setattr(bulk, "MIN_ARRAY_BYTES", 1)
    monkeypatch.setattr(bulk, "SLICE_BYTES", 7)
    monkeypatch.setattr(bulk, "MIN_B64_BYTES", 1)
    monkeypatch.setattr(bulk, "comma_windows", lambda data, size: [True, False])  # both kinds are looked for


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bulk_numbers_decode_exactly_as_lists(tiny, monkeypatch, data):
    # an array read whole, or in slices of a few numbers (whose kinds, ints or floats, differ)
    monkeypatch.setattr(bulk, "SLICE_BYTES", data.draw(st.sampled_from([7, 1 << 20])))
    n_tensors = data.draw(st.integers(1, 3))
    parts = []
    for _ in range(n_tensors):
        values = data.draw(st.lists(element, min_size=1, max_size=40))
        sep = data.draw(spaces)
        text = "[" + sep + f"{sep},{sep}".join(values) + sep + "]"
        text = _broken(data, text, breaks)
        dtype = data.draw(st.sampled_from(DTYPES))
        shape = data.draw(st.sampled_from([[len(values)], [len(values) + 1], None, [1, len(values)]]))
        head = {"dtype": dtype} if shape is None else {"dtype": dtype, "shape": shape}
        parts.append(orjson.dumps(head)[:-1].decode() + f', "data"{data.draw(spaces)}:{data.draw(spaces)}{text}}}')
    _decodes_as_plain(parts, '{"parameters": [{"name": "w", "value": {"dtype": "float32", "shape": [3], '
                             '"data": [1.5, 2, 3]}}]}')


def test_slices_are_read_by_simdjson_and_what_it_refuses_by_orjson(monkeypatch):
    calls = []

    class CountingOrjson:
        JSONDecodeError = orjson.JSONDecodeError

        @staticmethod
        def loads(text):
            calls.append(text)
            return orjson.loads(text)

    monkeypatch.setattr(bulk, "orjson", CountingOrjson)
    floats = bulk._slice_values(b"[1.5, -2, 1e-3, 9007199254740993]", True)
    assert floats.dtype == np.float64 and floats.tolist() == [1.5, -2.0, 1e-3, 9007199254740992.0]
    ints = bulk._slice_values(b"[1, -0, 9223372036854775807]", False)
    assert ints.dtype == np.int64 and ints.tolist() == [1, 0, 2**63 - 1]
    assert calls == []  # simdjson alone
    assert bulk._slice_values(b"[1, 9223372036854775808]", False) is None  # uint64: NumPy's list reading decides
    assert bulk._slice_values(b"[1.5, 18446744073709551616]", True).tolist() == [1.5, 2.0**64]  # past 64 bits
    with pytest.raises(ValueError, match="not a JSON array"):
        bulk._slice_values(b"[1,,2]", True)
    assert len(calls) == 3
    assert bulk._slice_values(b"[2.5]", True).tolist() == [2.5] and len(calls) == 3  # a fresh parser after a refusal


def test_slices_read_at_once_on_many_threads_each_get_their_own_values():
    """One parser is shared (under a lock); a slice read while it is busy gets one of its own, and
    no slice's values are another's or change after."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal(int(rng.integers(1, 5000))) for _ in range(64)]
    texts = [orjson.dumps(a, option=orjson.OPT_SERIALIZE_NUMPY) for a in arrays]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda text: bulk._slice_values(text, True), texts * 4))
    for i, values in enumerate(got):
        np.testing.assert_array_equal(values, arrays[i % len(arrays)])


def test_the_bulk_path_is_taken_for_call_tensors_only(tiny):
    body = (b'{"network": {"parameters": [{"name": "w", "value": {"dtype": "float32", "shape": [2], "data": [1, 2]}}]},'
            b' "inputs": [{"dtype": "float32", "shape": [3], "data": [0.5, 1, 2]}], "sens": {"dtype": "int32", '
            b'"shape": [2], "data": [7, 8]}, "parameters": {"w": {"dtype": "float32", "shape": [1], "data": [1e3]}},'
            b' "other": {"data": [1, 2]}}')
    doc = bulk.loads(body)
    assert type(doc["inputs"][0]["data"]) is JsonNumbers and doc["inputs"][0]["data"].values.dtype == np.float64
    assert type(doc["sens"]["data"]) is JsonNumbers and doc["sens"]["data"].values.dtype == np.int64
    assert type(doc["parameters"]["w"]["data"]) is JsonNumbers
    # a network's parameters are fingerprinted and stored as JSON: they stay lists, as does anything else
    assert doc["network"]["parameters"][0]["value"]["data"] == [1, 2]
    assert doc["other"] == {"data": [1, 2]}
    assert decode_tensor(doc["inputs"][0]).tolist() == [0.5, 1.0, 2.0]


def test_data_inside_a_string_is_left_alone(tiny):
    body = b'{"inputs": [], "name": "\\"data\\": [1, 2, 3]", "x": "\\\\", "y": {"data": [4, 5]}}'
    assert bulk.loads(body) == orjson.loads(body)


def test_a_placeholder_lookalike_is_a_plain_string(tiny):
    body = b'{"inputs": [{"dtype": "float32", "data": "\\u0000gradserve-numbers-00-0"}, ' \
           b'{"dtype": "float32", "data": [1, 2]}]}'
    doc = bulk.loads(body)
    assert doc["inputs"][0]["data"] == "\0gradserve-numbers-00-0"
    assert type(doc["inputs"][1]["data"]) is JsonNumbers


def test_large_body_defaults():
    """With the module's own thresholds: a 2 MiB array is bulk, a small one in the same body is not."""
    n = 300_000
    body = b'{"inputs": [{"dtype": "float32", "shape": [%d], "data": [' % n + b"0.25, " * (n - 1) + \
        b'0.25]}, {"dtype": "float32", "shape": [2], "data": [1, 2]}]}'
    doc = bulk.loads(body)
    assert type(doc["inputs"][0]["data"]) is JsonNumbers
    assert doc["inputs"][1]["data"] == [1, 2]
    assert decode_tensor(doc["inputs"][0]).sum() == pytest.approx(0.25 * n)
    assert math.isclose(float(decode_tensor(doc["inputs"][0])[-1]), 0.25)


def test_release_drops_the_bulk_values_after_decoding(tiny):
    body = b'{"inputs": [{"dtype": "float32", "shape": [3], "data": [0.5, 1, 2]}], "sens": {"dtype": "float32", ' \
           b'"shape": [1], "data": [4]}}'
    doc = bulk.loads(body)
    arr = decode_tensor(doc["inputs"][0])
    bulk.release(doc)
    assert doc["inputs"][0]["data"].values.size == 0 and doc["sens"]["data"].values.size == 0
    assert arr.tolist() == [0.5, 1.0, 2.0]  # the decoded array is its own


#: a change that makes base64 text something else: not base64, not ASCII, not a valid JSON
#: string, or an escape that orjson reads (the decoder must say what it says of the str)
b64_breaks = st.sampled_from([None, None, None, "\\/", "\\u0041", "\\n", "é", "\x01", " ", "=", "==", "-_",
                              "\\", "\\\\", "A", "\t"])


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bulk_base64_decodes_exactly_as_strings(tiny, data):
    parts = []
    for _ in range(data.draw(st.integers(1, 3))):
        raw = data.draw(st.binary(max_size=40))
        text = base64.b64encode(raw).decode()
        if data.draw(st.booleans()):
            text = text.rstrip("=")
        text = _broken(data, text, b64_breaks)
        dtype = data.draw(st.sampled_from(["uint8", "float32", "int16", "float64"]))
        size = len(raw) // np.dtype(dtype).itemsize
        shape = data.draw(st.sampled_from([[size], [size + 1], [len(raw)]]))
        parts.append(f'{{"dtype": "{dtype}", "shape": {shape}, "b64"{data.draw(spaces)}:{data.draw(spaces)}"{text}"}}')
    _decodes_as_plain(parts, '{"parameters": [{"name": "w", "value": {"dtype": "float32", "shape": [1], '
                             '"b64": "AACAPw=="}}]}')


def test_the_bulk_base64_path_is_taken_for_call_tensors_only(tiny):
    body = (b'{"network": {"parameters": [{"name": "w", "value": {"dtype": "float32", "shape": [1], "b64": "AACAPw=="}}]},'
            b' "inputs": [{"dtype": "float32", "shape": [1], "b64": "AAAAQA=="}], "sens": {"dtype": "float32", '
            b'"shape": [1], "b64": "AABAQA=="}, "other": {"b64": "AACAQA=="}, "bad": "\\"b64\\": \\"AAAA\\""}')
    doc = bulk.loads(body)
    assert type(doc["inputs"][0]["b64"]) is Base64Bytes and type(doc["sens"]["b64"]) is Base64Bytes
    assert decode_tensor(doc["inputs"][0]).tolist() == [2.0] and decode_tensor(doc["sens"]).tolist() == [3.0]
    # a network's parameters are fingerprinted and stored as JSON: they stay strs, as does anything else
    plain = orjson.loads(body)
    assert doc["network"] == plain["network"] and doc["other"] == plain["other"] and doc["bad"] == plain["bad"]


def test_only_the_kinds_a_body_holds_are_looked_for(monkeypatch):
    scans = []
    for name in ("_number_regions", "_b64_regions"):
        scan = getattr(bulk, name)
        monkeypatch.setattr(bulk, name, lambda data, scan=scan, name=name: scans.append(name) or scan(data))
    x = np.random.default_rng(3).standard_normal(40_000).astype(np.float32)
    numbers = orjson.dumps({"inputs": [{"dtype": "float32", "shape": [x.size], "data": x}]},
                           option=orjson.OPT_SERIALIZE_NUMPY)
    b64 = orjson.dumps({"inputs": [{"dtype": "float32", "shape": [x.size], "b64": base64.b64encode(x.tobytes()).decode()}]})
    both = orjson.dumps({"inputs": [orjson.loads(numbers)["inputs"][0], orjson.loads(b64)["inputs"][0]]})
    expected = {numbers: ["_number_regions"], b64: ["_b64_regions"], both: ["_number_regions", "_b64_regions"]}
    for body, looked_for in expected.items():
        assert len(body) >= bulk.MIN_BODY_BYTES
        scans.clear()
        doc = bulk.loads(body)
        assert scans == looked_for
        for tensor in doc["inputs"]:
            assert type(tensor.get("data", tensor.get("b64"))) in (JsonNumbers, Base64Bytes)
            assert np.array_equal(decode_tensor(tensor), x)


def test_large_base64_body_defaults():
    """With the module's own thresholds: the benchmark MLP's 535 KB input string is decoded in bulk,
    the labels' small string in the same body is not."""
    x = np.random.default_rng(0).standard_normal((128, 784)).astype(np.float32)
    body = orjson.dumps({"network_id": "sha256:" + "0" * 64, "inputs": [
        {"dtype": "float32", "shape": [128, 784], "b64": base64.b64encode(x.tobytes()).decode()},
        {"dtype": "float32", "shape": [2], "b64": "AACAPwAAAEA="}]})
    assert len(body) >= bulk.MIN_BODY_BYTES
    doc = bulk.loads(body)
    assert type(doc["inputs"][0]["b64"]) is Base64Bytes and doc["inputs"][1]["b64"] == "AACAPwAAAEA="
    assert np.array_equal(decode_tensor(doc["inputs"][0]), x)
