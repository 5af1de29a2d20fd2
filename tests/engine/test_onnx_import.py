"""engine.onnx.import_model: the contract of API.md section 8 and its errors.

Inputs are the non-initializer graph inputs in order, parameters the initializers under their
own names (floating ones trainable), outputs the graph outputs in order; free dimensions stay
free; bad bytes, unconvertible ops, external data and over-size models raise the engine's errors
with their codes (the service maps them to statuses).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import engine
import engine.onnx
from engine.onnx import (
    InvalidOnnxError,
    OnnxExternalDataError,
    UnsupportedOnnxModelError,
    UnsupportedOnnxOpError,
)

RNG = np.random.default_rng(0)


def model_bytes(nodes, inputs, outputs, inits=(), opset=17, ir_version=8, extra_inputs=()):
    graph = helper.make_graph(nodes, "g", list(inputs) + list(extra_inputs), outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version).SerializeToString()


def vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def linear(batch="N"):
    w = RNG.normal(size=(4, 3)).astype(np.float32)
    b = RNG.normal(size=4).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "layer.0/weight:0", "layer.0/bias"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["y"])]
    return model_bytes(nodes, [vi("x", [batch, 3])], [vi("y", [batch, 4])],
                       [numpy_helper.from_array(w, "layer.0/weight:0"), numpy_helper.from_array(b, "layer.0/bias")]), w, b


# -- the document --------------------------------------------------------------------------------------


def test_names_order_and_trainability():
    idx = numpy_helper.from_array(np.asarray([2, 0], np.int64), "onnx::Gather_idx")
    w = numpy_helper.from_array(RNG.normal(size=(3, 2)).astype(np.float32), "emb.weight")
    nodes = [helper.make_node("Gather", ["emb.weight", "onnx::Gather_idx"], ["g"]),
             helper.make_node("Mul", ["g", "scale"], ["out0"]),
             helper.make_node("Neg", ["out0"], ["out1"])]
    data = model_bytes(nodes, [vi("scale", [2, 2])], [vi("out1", [2, 2]), vi("out0", [2, 2])], [w, idx])
    doc = engine.onnx.import_model(data)
    json.dumps(doc, allow_nan=False)  # plain JSON
    assert doc["format"] == "gradnet/1"
    assert [i["name"] for i in doc["inputs"]] == ["scale"]
    params = {p["name"]: p for p in doc["parameters"]}
    assert [p["name"] for p in doc["parameters"]][:2] == ["emb.weight", "onnx::Gather_idx"]
    assert params["emb.weight"]["requires_grad"] is True
    assert params["onnx::Gather_idx"]["requires_grad"] is False
    net = engine.parse_network(doc)
    assert net.trainable == ("emb.weight",)
    assert [str(o) for o in net.outputs] == ["out1", "out0"]  # the graph outputs, in order
    x = np.full((2, 2), 2.0, np.float32)
    result = engine.Engine().grad(net, [x], get_by_list=True, return_value=True)
    table = numpy_helper.to_array(w)
    np.testing.assert_allclose(result.value[1], table[[2, 0]] * 2)
    np.testing.assert_allclose(result.value[0], -table[[2, 0]] * 2)
    # d(sum(out1) + sum(out0))/d(emb.weight) = (-2 + 2) at the gathered rows: zero
    np.testing.assert_allclose(result.gradients[0], np.zeros((3, 2)))


def test_free_dimensions_stay_free():
    data, w, b = linear()
    doc = engine.onnx.import_model(data)
    assert doc["inputs"] == [{"name": "x", "dtype": "float32", "shape": [None, 3]}]
    net = engine.parse_network(doc)
    eng = engine.Engine()
    for batch in (1, 5):
        x = RNG.normal(size=(batch, 3)).astype(np.float32)
        result = eng.grad(net, [x], get_all=True, get_by_list=True, return_value=True)
        np.testing.assert_allclose(result.value[0], np.maximum(x @ w.T + b, 0), rtol=1e-6)
        assert result.gradient_names == [["x"], ["layer.0/weight:0", "layer.0/bias"]]
        active = (x @ w.T + b > 0).astype(np.float32)
        np.testing.assert_allclose(result.gradients[1][1], active.sum(0), rtol=1e-6)


def test_the_same_model_gives_the_same_network_id():
    data, _, _ = linear()
    ids = {engine.parse_network(engine.onnx.import_model(data)).id for _ in range(2)}
    assert len(ids) == 1


def test_initializers_listed_among_the_inputs_are_not_inputs():
    data, _, _ = linear()
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "layer.0/weight:0")
    b = numpy_helper.from_array(np.ones(4, np.float32), "layer.0/bias")
    nodes = [helper.make_node("Gemm", ["x", "layer.0/weight:0", "layer.0/bias"], ["y"], transB=1)]
    data = model_bytes(nodes, [vi("x", [2, 3])], [vi("y", [2, 4])], [w, b], ir_version=3,
                       extra_inputs=[vi("layer.0/weight:0", [4, 3]), vi("layer.0/bias", [4])])
    doc = engine.onnx.import_model(data)
    assert [i["name"] for i in doc["inputs"]] == ["x"]


def test_an_output_that_is_an_input():
    data = model_bytes([helper.make_node("Identity", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])])
    net = engine.parse_network(engine.onnx.import_model(data))
    result = engine.Engine().grad(net, [np.ones(2, np.float32)], return_value=True)
    np.testing.assert_allclose(result.gradients, np.ones(2))


def test_shape_arithmetic_is_folded_into_attrs():
    # Reshape(x, Concat(Shape(x)[0:1], [-1])): what exporters emit for flatten
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "zero", "one"], ["s0"]),
             helper.make_node("Concat", ["s0", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    inits = [numpy_helper.from_array(np.asarray([v], np.int64), n) for n, v in (("zero", 0), ("one", 1), ("minus1", -1))]
    doc = engine.onnx.import_model(model_bytes(nodes, [vi("x", [2, 3, 4])], [vi("y", [2, 12])], inits))
    assert [n["op"] for n in doc["nodes"]] == ["Reshape"]
    assert doc["nodes"][0]["attrs"] == {"shape": [2, 12]}


def test_supported_ops_is_a_sorted_tuple_of_onnx_names():
    ops = engine.onnx.SUPPORTED_OPS
    assert isinstance(ops, tuple) and list(ops) == sorted(ops) and "Conv" in ops and "LSTM" in ops
    assert not set(ops) & set(engine.onnx.CONSTANT_ONLY_OPS)


# -- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"not an onnx model", b'{"format": "gradnet/1"}', bytes(range(256)) * 4])
def test_not_onnx_is_invalid_onnx(data):
    with pytest.raises(InvalidOnnxError) as info:
        engine.onnx.import_model(data)
    assert info.value.code == "invalid_onnx"  # 400: tests/service/http/test_errors.py
    assert "ONNX" in info.value.message


def test_a_model_the_checker_refuses_is_invalid_onnx():
    data = model_bytes([helper.make_node("Relu", ["missing"], ["y"])], [vi("x", [2])], [vi("y", [2])])
    with pytest.raises(InvalidOnnxError, match="checker"):
        engine.onnx.import_model(data)


def test_not_bytes_is_invalid_onnx():
    with pytest.raises(InvalidOnnxError, match="bytes"):
        engine.onnx.import_model("a string")


def test_an_unconvertible_op_names_node_op_type_and_opset():
    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Hardmax", ["h"], ["y"], name="the_hardmax")]
    data = model_bytes(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])], opset=16)
    with pytest.raises(UnsupportedOnnxOpError) as info:
        engine.onnx.import_model(data)
    err = info.value
    assert err.code == "unsupported_onnx_op"
    assert (err.node, err.op_type, err.opset, err.domain) == ("the_hardmax", "Hardmax", 16, "")
    assert "the_hardmax" in err.message and "Hardmax" in err.message and "opset 16" in err.message
    assert err.path == "graph.node[1]"
    assert err.to_dict()["code"] == "unsupported_onnx_op"


def test_an_op_of_another_domain_is_unsupported():
    node = helper.make_node("FusedGemm", ["x"], ["y"], domain="com.microsoft", name="fused")
    graph = helper.make_graph([node], "g", [vi("x", [2])], [vi("y", [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(UnsupportedOnnxOpError, match="com.microsoft") as info:
        engine.onnx.import_model(model.SerializeToString())
    assert info.value.op_type == "FusedGemm" and info.value.domain == "com.microsoft" and info.value.opset == 1


def test_opsets_outside_the_range_are_refused_by_name():
    data = model_bytes([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])], opset=9)
    with pytest.raises(UnsupportedOnnxOpError, match="opsets 11 to"):
        engine.onnx.import_model(data)


def test_control_flow_is_not_converted_and_not_run():
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [], [vi("t", [2])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [vi("e", [2])])
    node = helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other, name="branch")
    data = model_bytes([node], [vi("c", [], TensorProto.BOOL), vi("x", [2])], [vi("y", [2])])
    with pytest.raises(UnsupportedOnnxOpError, match="If"):
        engine.onnx.import_model(data)


def _split_heads(dims):
    """Reshape x [*dims, 8] to [*dims, 2, 4] through Shape(x)[:-1] (what exporters write)."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "zero", "minus1"], ["lead"]),
             helper.make_node("Concat", ["lead", "heads"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    inits = [numpy_helper.from_array(np.asarray(v, np.int64), n)
             for n, v in (("zero", [0]), ("minus1", [-1]), ("heads", [2, 4]))]
    return model_bytes(nodes, [vi("x", [*dims, 8])], [vi("y", [*dims, 2, 4])], inits)


def test_a_shape_of_one_free_dimension_becomes_minus_one():
    doc = engine.onnx.import_model(_split_heads(["batch", 3]))
    assert doc["inputs"][0]["shape"] == [None, 3, 8]
    assert [(n["op"], n["attrs"]) for n in doc["nodes"]] == [("Reshape", {"shape": [-1, 3, 2, 4]})]
    net = engine.parse_network(doc)
    x = RNG.normal(size=(5, 3, 8)).astype(np.float32)
    result = engine.Engine().grad(net, [x], return_value=True)
    np.testing.assert_array_equal(result.value[0], x.reshape(5, 3, 2, 4))


def test_two_free_sizes_in_one_reshape_are_refused_with_the_reason():
    with pytest.raises(UnsupportedOnnxOpError, match="2 dimensions to infer") as info:
        engine.onnx.import_model(_split_heads(["batch", "seq"]))
    assert info.value.op_type == "Reshape"


def test_a_free_size_used_as_a_tensor_is_refused_with_the_reason():
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Cast", ["s"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["x", "f"], ["y"])]
    data = model_bytes(nodes, [vi("x", ["batch", 1])], [vi("y", ["batch", 2])])
    with pytest.raises(UnsupportedOnnxOpError, match="free dimensions, as a tensor") as info:
        engine.onnx.import_model(data)
    assert info.value.op_type == "Mul"


def test_external_data_is_refused_without_reading_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.bin").write_bytes(np.ones(12, np.float32).tobytes())
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 3], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", "48")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    data = model_bytes([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [2, 4])], [vi("y", [2, 3])], [w])
    with pytest.raises(OnnxExternalDataError, match="weights.bin") as info:
        engine.onnx.import_model(data)
    assert info.value.code == "onnx_external_data"
    assert "save_as_external_data=False" in info.value.message


def test_over_the_size_limit_is_too_large():
    data, _, _ = linear()
    with pytest.raises(engine.TooLargeError) as info:
        engine.onnx.import_model(data, max_bytes=len(data) - 1)
    assert info.value.code == "too_large" and str(len(data)) in info.value.message
    engine.onnx.import_model(data, max_bytes=len(data))


def test_a_sequence_input_is_refused():
    seq = helper.make_tensor_sequence_value_info("xs", TensorProto.FLOAT, [2])
    node = helper.make_node("SequenceAt", ["xs", "i"], ["y"])
    data = model_bytes([node], [seq, vi("i", [], TensorProto.INT64)], [vi("y", [2])])
    with pytest.raises((UnsupportedOnnxModelError, UnsupportedOnnxOpError)):
        engine.onnx.import_model(data)


def test_training_mode_batch_norm_is_refused():
    inits = [numpy_helper.from_array(np.ones(3, np.float32), n) for n in ("s", "b", "m", "v")]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], training_mode=1)
    data = model_bytes([node], [vi("x", [2, 3])], [vi("y", [2, 3])], inits, opset=15)
    with pytest.raises(UnsupportedOnnxOpError, match="training_mode"):
        engine.onnx.import_model(data)


def test_a_conversion_that_contradicts_onnx_shape_inference_is_refused():
    # a graph output declared [2, 5] for a Relu of [2, 3]: ONNX's inference keeps the declaration
    data = model_bytes([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2, 3])], [vi("y", [2, 5])])
    with pytest.raises((UnsupportedOnnxOpError, InvalidOnnxError), match="shape"):
        engine.onnx.import_model(data)


def test_a_huge_constant_is_refused_before_it_is_built():
    shape = numpy_helper.from_array(np.asarray([10**6, 10**6], np.int64), "shape")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["zeros"]), helper.make_node("Add", ["x", "zeros"], ["y"])]
    data = model_bytes(nodes, [vi("x", [1])], [vi("y", [10**6, 10**6])], [shape])
    with pytest.raises(engine.TooLargeError, match="1000000000000 elements") as info:
        engine.onnx.import_model(data)
    assert info.value.code == "too_large"
    small = numpy_helper.from_array(np.asarray([4, 4], np.int64), "shape")
    data = model_bytes(nodes, [vi("x", [1])], [vi("y", [4, 4])], [small])
    with pytest.raises(engine.TooLargeError, match="limit of 15"):
        engine.onnx.import_model(data, max_elements=15)
    engine.onnx.import_model(data, max_elements=16)


def test_the_node_limit_counts_the_converted_network():
    h, i, seq = 2, 2, 40
    inits = [numpy_helper.from_array(RNG.normal(size=s).astype(np.float32), n)
             for n, s in (("w", (1, 4 * h, i)), ("r", (1, 4 * h, h)))]
    node = helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=h)
    data = model_bytes([node], [vi("x", [seq, 1, i])], [vi("y", [seq, 1, 1, h])], inits, opset=14)
    with pytest.raises(engine.TooLargeError, match="more than 100 nodes"):
        engine.onnx.import_model(data, max_nodes=100)
    assert len(engine.onnx.import_model(data)["nodes"]) > 100  # unrolled over the 40 steps


def test_corrupted_models_give_the_engine_s_errors_or_a_valid_network():
    """Random byte changes to real exported models: every outcome is a GradnetError with a code,
    or a document that parse_network accepts (never another exception)."""
    import random
    from pathlib import Path

    fixtures = Path(__file__).resolve().parent.parent / "fixtures" / "onnx"
    models = [(fixtures / f"{m}.onnx").read_bytes()
              for m in ("mlp.torchscript", "cnn.dynamo", "lstm.torchscript", "embedding.dynamo_noopt")]
    rng = random.Random(0)
    outcomes: dict[str, int] = {}
    for _ in range(200):
        data = bytearray(rng.choice(models))
        for _ in range(rng.choice([1, 2, 5])):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            engine.parse_network(engine.onnx.import_model(bytes(data)))
            code = "ok"
        except engine.GradnetError as exc:
            code = exc.code
        outcomes[code] = outcomes.get(code, 0) + 1
    assert outcomes.get("ok", 0) and outcomes.get("invalid_onnx", 0), outcomes
    assert set(outcomes) <= {"ok", "invalid_onnx", "unsupported_onnx_op", "unsupported_onnx_model",
                             "onnx_external_data", "too_large"}, outcomes


def test_a_name_that_is_not_utf8_is_invalid_onnx():
    data = model_bytes([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])])
    broken = data.replace(b"\n\x01y", b"\n\x01\xff", 1)  # the output's name: one byte, not UTF-8
    assert broken != data
    with pytest.raises(InvalidOnnxError):
        engine.onnx.import_model(broken)
