"""The tensor codec: wire tensors <-> NumPy arrays, round trips for every dtype, and its errors."""

from __future__ import annotations

import base64
import json
import math
import tracemalloc

import ml_dtypes
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from engine import DTYPES, OIP_DTYPES, TensorError, TooLargeError, decode_tensor, encode_tensor
from engine.errors import GradnetError

FLOATS = ("float16", "bfloat16", "float32", "float64")
INTS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def arrays(name: str) -> st.SearchStrategy[np.ndarray]:
    """Arrays of any value of the dtype, non-finite floats and -0.0 included."""
    if name == "bfloat16":  # hypothesis knows no bfloat16: draw float32 and round
        return hnp.arrays(np.float32, SHAPES).map(lambda a: a.astype(ml_dtypes.bfloat16))
    return hnp.arrays(DTYPES[name], SHAPES)


def _plain(value):
    return value.tolist() if isinstance(value, np.ndarray) else value


def via_json(tensor: dict) -> dict:
    """What a client gets after the stdlib json round trip (NumPy data converted with .tolist())."""
    return json.loads(json.dumps({k: _plain(v) for k, v in tensor.items()}, allow_nan=False))


def via_orjson(tensor: dict) -> dict:
    """What a client gets after orjson serializes the tensor, NumPy data as it is."""
    return orjson.loads(orjson.dumps(tensor, option=orjson.OPT_SERIALIZE_NUMPY))


def assert_same(a: np.ndarray, b: np.ndarray, *, bitwise: bool = False) -> None:
    assert b.dtype == a.dtype
    assert b.shape == a.shape
    if bitwise:
        assert b.tobytes() == a.tobytes()
    elif a.dtype.name in FLOATS:
        wide_a, wide_b = a.astype(np.float64), b.astype(np.float64)
        assert np.array_equal(wide_a, wide_b, equal_nan=True)
        finite = ~np.isnan(wide_a)
        assert np.array_equal(np.signbit(wide_a[finite]), np.signbit(wide_b[finite]))  # -0.0 stays -0.0
    else:
        assert np.array_equal(a, b)


def decode_error(obj, cls=TensorError, *, where="inputs[0]", **kwargs) -> GradnetError:
    with pytest.raises(GradnetError) as info:
        decode_tensor(obj, where, **kwargs)
    err = info.value
    assert type(err) is cls, f"{type(err).__name__}: {err}"
    return err


# -- round trips -----------------------------------------------------------------------------------


def test_every_wire_dtype_is_covered():
    assert set(DTYPES) == set(FLOATS) | set(INTS) | {"bool"}


@pytest.mark.parametrize("name", list(DTYPES))
@PROPERTY
@given(data=st.data())
def test_json_round_trip_stdlib(name, data):
    a = data.draw(arrays(name))
    wire = via_json(encode_tensor(a, "json"))
    assert wire["dtype"] == name and wire["shape"] == list(a.shape)
    assert_same(a, decode_tensor(wire))


@pytest.mark.parametrize("name", list(DTYPES))
@PROPERTY
@given(data=st.data())
def test_json_round_trip_orjson(name, data):
    a = data.draw(arrays(name))
    assert_same(a, decode_tensor(via_orjson(encode_tensor(a, "json"))))


@pytest.mark.parametrize("name", list(DTYPES))
@PROPERTY
@given(data=st.data())
def test_b64_round_trip_is_bitwise(name, data):
    a = data.draw(arrays(name))
    wire = via_json(encode_tensor(a, "b64"))
    assert set(wire) == {"dtype", "shape", "b64"}
    assert base64.b64decode(wire["b64"]) == a.astype(a.dtype.newbyteorder("<")).tobytes()
    assert_same(a, decode_tensor(wire), bitwise=True)  # NaN payloads included


@pytest.mark.parametrize("name", list(DTYPES))
@PROPERTY
@given(data=st.data())
def test_nested_data_equals_flat_data(name, data):
    a = data.draw(arrays(name))
    assume(a.size or a.ndim <= 1)  # [[]] cannot say shape [1, 0, 0]: nested data needs the elements
    flat = via_json(encode_tensor(a, "json"))
    nested_values = np.asarray(flat["data"], dtype=object).reshape(a.shape).tolist() if a.ndim else flat["data"]
    with_shape = decode_tensor({"dtype": name, "shape": list(a.shape), "data": nested_values})
    assert_same(a, with_shape)
    if a.ndim and a.size:  # the shape can be inferred only from a non-empty nested list
        inferred = decode_tensor({"dtype": name, "data": nested_values})
        assert_same(a, inferred)


def test_shape_inferred_from_nested_data():
    a = decode_tensor({"dtype": "float32", "data": [[[1, 2, 3], [4, 5, 6]]]})
    assert a.shape == (1, 2, 3) and a.dtype == np.float32
    assert a.tolist() == [[[1, 2, 3], [4, 5, 6]]]
    assert decode_tensor({"dtype": "int32", "data": []}).shape == (0,)
    assert decode_tensor({"dtype": "bool", "data": [[True], [False]]}).shape == (2, 1)


@pytest.mark.parametrize("data", [2.5, [2.5]])
def test_scalar_shape(data):
    a = decode_tensor({"dtype": "float64", "shape": [], "data": data})
    assert a.shape == () and a.dtype == np.float64 and float(a) == 2.5
    wire = via_json(encode_tensor(np.float32(2.5)))
    assert wire == {"dtype": "float32", "shape": [], "data": [2.5]}
    assert decode_tensor(wire).shape == ()


def test_empty_tensor():
    a = decode_tensor({"dtype": "float32", "shape": [0, 3], "data": []})
    assert a.shape == (0, 3)
    assert decode_tensor({"dtype": "float32", "shape": [0, 3], "b64": ""}).shape == (0, 3)


@pytest.mark.parametrize("oip, name", sorted(OIP_DTYPES.items()))
def test_oip_datatype_spelling(oip, name):
    data = [True, False] if name == "bool" else [1, 2]
    a = decode_tensor({"datatype": oip, "shape": [2], "data": data})
    assert a.dtype == DTYPES[name]
    assert a.tolist() == data
    assert encode_tensor(a)["dtype"] == name  # answers use our spelling


def test_oip_datatype_in_full_request_shape():
    a = decode_tensor({"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]})
    assert a.dtype == np.float32 and a.shape == (2, 2)


@pytest.mark.parametrize("name", FLOATS)
def test_non_finite_values_both_ways(name):
    a = decode_tensor({"dtype": name, "shape": [4], "data": ["NaN", "Infinity", "-Infinity", 1.5]})
    assert a.dtype == DTYPES[name]
    wide = a.astype(np.float64)
    assert math.isnan(wide[0]) and wide[1] == math.inf and wide[2] == -math.inf and wide[3] == 1.5
    wire = via_json(encode_tensor(a))
    assert wire["data"] == ["NaN", "Infinity", "-Infinity", 1.5]
    assert via_orjson(encode_tensor(a))["data"] == ["NaN", "Infinity", "-Infinity", 1.5]
    assert_same(a, decode_tensor(wire))


def test_finite_float32_is_encoded_without_a_python_list():
    # fast path: the array itself goes to orjson
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert isinstance(encode_tensor(a)["data"], np.ndarray)
    assert via_orjson(encode_tensor(a)) == {"dtype": "float32", "shape": [2, 3], "data": [0, 1, 2, 3, 4, 5]}


def test_uint64_and_int64_extremes():
    big = [0, 2**64 - 1, 2**63]
    assert decode_tensor({"dtype": "uint64", "shape": [3], "data": big}).tolist() == big
    extremes = [-(2**63), 2**63 - 1, 0]
    assert decode_tensor({"dtype": "int64", "shape": [3], "data": extremes}).tolist() == extremes


def test_unknown_encoding():
    with pytest.raises(ValueError):
        encode_tensor(np.zeros(2), "xml")


def test_unsupported_array_dtype():
    with pytest.raises(TensorError):
        encode_tensor(np.zeros(2, np.complex64))


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("obj", [[1, 2], "float32", 3, None])
def test_not_an_object(obj):
    err = decode_error(obj)
    assert (err.code, err.path) == ("invalid_tensor", "inputs[0]")


def test_missing_dtype():
    err = decode_error({"shape": [1], "data": [1]})
    assert (err.code, err.path) == ("invalid_tensor", "inputs[0]")


@pytest.mark.parametrize("obj, where", [
    ({"dtype": "float8", "shape": [1], "data": [1]}, "inputs[0].dtype"),
    ({"dtype": "FLOAT32", "shape": [1], "data": [1]}, "inputs[0].dtype"),
    ({"dtype": 32, "shape": [1], "data": [1]}, "inputs[0].dtype"),
    ({"datatype": "FP8", "shape": [1], "data": [1]}, "inputs[0].datatype"),
])
def test_unknown_dtype(obj, where):
    err = decode_error(obj)
    assert (err.code, err.path) == ("invalid_tensor", where)
    assert "float32" in err.message  # says what is expected


@pytest.mark.parametrize("obj", [
    {"dtype": "float32", "shape": [1]},
    {"dtype": "float32", "shape": [1], "data": [1.0], "b64": "AACAPw=="},
])
def test_needs_exactly_one_source(obj):
    err = decode_error(obj)
    assert (err.code, err.path) == ("invalid_tensor", "inputs[0]")


@pytest.mark.parametrize("shape", [[-1], [2.0], [True], "2", {"0": 2}, [[2]]])
def test_bad_shape(shape):
    err = decode_error({"dtype": "float32", "shape": shape, "data": [1.0, 2.0]})
    assert (err.code, err.path) == ("invalid_tensor", "inputs[0].shape")


def test_shape_needed_unless_data_is_a_list():
    err = decode_error({"dtype": "float32", "data": 1.0})
    assert err.path == "inputs[0].shape"
    err = decode_error({"dtype": "float32", "b64": "AACAPw=="})
    assert err.path == "inputs[0].shape"


@pytest.mark.parametrize("name", ["float32", "int32", "bool"])
@pytest.mark.parametrize("shape", [None, [2, 2], [4]])
def test_ragged_nested_data(name, shape):
    value = True if name == "bool" else 1
    obj = {"dtype": name, "data": [[value, value], [value]]}
    if shape is not None:
        obj["shape"] = shape
    err = decode_error(obj)
    assert (err.code, err.path) == ("invalid_tensor", "inputs[0].data")


@pytest.mark.parametrize("shape, data", [([2, 3], [1, 2, 3]), ([2], [1, 2, 3]), ([], [1, 2]), ([0], [1])])
def test_data_length_vs_shape(shape, data):
    err = decode_error({"dtype": "float32", "shape": shape, "data": data})
    assert (err.code, err.path) == ("invalid_tensor", "inputs[0].data")
    assert str(shape) in err.message


@pytest.mark.parametrize("shape", [[3, 2], [6], [1, 2, 3]])
def test_nested_data_contradicting_shape(shape):
    err = decode_error({"dtype": "float32", "shape": shape, "data": [[1, 2, 3], [4, 5, 6]]})
    assert (err.code, err.path) == ("invalid_tensor", "inputs[0].data")


@pytest.mark.parametrize("b64", ["not base64!", "AAAA=A==", "AAA", 12, ["AAAA"]])
def test_bad_base64(b64):
    err = decode_error({"dtype": "float32", "shape": [1], "b64": b64})
    assert (err.code, err.path) == ("invalid_tensor", "inputs[0].b64")


@pytest.mark.parametrize("nbytes", [0, 4, 7, 9, 12])
def test_b64_of_the_wrong_byte_size(nbytes):
    err = decode_error({"dtype": "float32", "shape": [2], "b64": base64.b64encode(b"\0" * nbytes).decode()})
    assert (err.code, err.path) == ("invalid_tensor", "inputs[0].b64")
    assert "expected 8" in err.message


@pytest.mark.parametrize("name, value", [
    ("float16", 1e6), ("float16", -70000.0), ("bfloat16", 1e39), ("float32", 1e39), ("float32", -3.5e38),
])
def test_float_overflow(name, value):
    err = decode_error({"dtype": name, "shape": [2], "data": [1.0, value]})
    assert (err.code, err.path) == ("invalid_tensor", "inputs[0].data")
    assert "out of range" in err.message


def test_float_extremes_that_fit():
    assert decode_tensor({"dtype": "float16", "shape": [2], "data": [65504.0, -65504.0]}).tolist() == [65504.0, -65504.0]
    assert decode_tensor({"dtype": "float16", "shape": [1], "data": [1e-10]}).tolist() == [0.0]  # underflow is fine


@pytest.mark.parametrize("name, value", [
    ("int8", 128), ("int8", -129), ("uint8", 256), ("uint8", -1), ("int16", 2**15), ("uint16", -1),
    ("int32", 2**31), ("int32", -(2**31) - 1), ("uint32", 2**32), ("int64", 2**63), ("int64", -(2**63) - 1),
    ("uint64", 2**64), ("uint64", -1), ("int64", 10**30),
])
def test_ints_out_of_range(name, value):
    err = decode_error({"dtype": name, "shape": [2], "data": [0, value]})
    assert (err.code, err.path) == ("invalid_tensor", "inputs[0].data")
    assert "out of range" in err.message


@pytest.mark.parametrize("name", INTS)
@pytest.mark.parametrize("data", [[1.5], [1.0], ["1"], ["NaN"], [True], [None]])
def test_non_integer_data_for_int_dtype(name, data):
    err = decode_error({"dtype": name, "shape": [1], "data": data})
    assert (err.code, err.path) == ("invalid_tensor", "inputs[0].data")


@pytest.mark.parametrize("data", [[0], [1.0], ["true"], [None]])
def test_non_bool_data_for_bool_dtype(data):
    err = decode_error({"dtype": "bool", "shape": [1], "data": data})
    assert (err.code, err.path) == ("invalid_tensor", "inputs[0].data")


@pytest.mark.parametrize("data", [["nan-ish"], [None], [1.0, None], [[None], ["NaN"]], [{"x": 1}], ["1e400x"]])
def test_non_numeric_data_for_float_dtype(data):
    err = decode_error({"dtype": "float32", "shape": list(np.shape(np.asarray(data, dtype=object))), "data": data})
    assert (err.code, err.path) == ("invalid_tensor", "inputs[0].data")


@pytest.mark.parametrize("source", [{"data": [1.0]}, {"b64": "AACAPw=="}, {"data": []}])
def test_max_elements_is_checked_before_allocating(source):
    tracemalloc.start()
    try:
        err = decode_error({"dtype": "float32", "shape": [10**6, 10**6], **source}, TooLargeError, max_elements=10**6)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (err.code, err.path) == ("too_large", "inputs[0]")
    assert str(10**12) in err.message
    assert peak < 1 << 20


def test_max_elements_applies_to_inferred_shapes():
    err = decode_error({"dtype": "float32", "data": [[0.0] * 10] * 10}, TooLargeError, max_elements=99)
    assert err.code == "too_large"
    assert decode_tensor({"dtype": "float32", "data": [[0.0] * 10] * 10}, max_elements=100).shape == (10, 10)


def test_huge_shape_without_limit_is_still_a_clean_error():
    err = decode_error({"dtype": "float32", "shape": [10**6, 10**6], "data": [1.0]})
    assert (err.code, err.path) == ("invalid_tensor", "inputs[0].data")


@pytest.mark.parametrize("shape", [None, [1], [1] * 64])
@pytest.mark.parametrize("name", ["float32", "int64", "bool"])
def test_deep_nesting_is_a_tensor_error(name, shape):
    deep: list = [True if name == "bool" else 1]
    for _ in range(10_000):
        deep = [deep]
    obj = {"dtype": name, "data": deep}
    if shape is not None:
        obj["shape"] = shape
    err = decode_error(obj)  # not RecursionError
    assert (err.code, err.path) == ("invalid_tensor", "inputs[0].data")


def test_errors_without_a_path_prefix():
    with pytest.raises(TensorError) as info:
        decode_tensor({"dtype": "float32", "shape": [2], "data": [1.0]})
    assert info.value.path == "data"
