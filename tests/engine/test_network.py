"""``gradnet/1`` parsing: every validation error (class, code, path) and the canonical network id."""

from __future__ import annotations

import base64
import builtins
import copy
import json
import random
import time

import numpy as np
import pytest

from engine import (
    AttrError,
    CycleError,
    DuplicateNameError,
    NetworkError,
    TensorError,
    TooLargeError,
    UndefinedNameError,
    UnknownOpError,
    parse_network,
)
from engine.errors import GradnetError


def tutorial(**overrides):
    """The seed tutorial's network (x * z) @ y, as a fresh dict."""
    doc = {
        "format": "gradnet/1",
        "name": "tutorial-net",
        "inputs": [{"name": "x"}, {"name": "y"}],
        "parameters": [
            {"name": "z", "value": {"dtype": "float32", "shape": [1], "data": [1.0]}, "requires_grad": True}
        ],
        "nodes": [
            {"name": "xz", "op": "Mul", "inputs": ["x", "z"]},
            {"name": "out", "op": "MatMul", "inputs": ["xz", "y"]},
        ],
        "outputs": ["out"],
    }
    doc.update(overrides)
    return doc


def with_nodes(*nodes, outputs=("out",), **overrides):
    return tutorial(nodes=list(nodes), outputs=list(outputs), **overrides)


def raises(cls, doc, code, where, *, match=None, **kwargs) -> GradnetError:
    """Parse ``doc``; assert the exact error class, its code and path; return the error."""
    with pytest.raises(GradnetError) as info:
        parse_network(doc, **kwargs)
    err = info.value
    assert type(err) is cls, f"{type(err).__name__}: {err}"
    assert err.code == code
    assert err.path == where, str(err)
    assert err.to_dict() == {"code": code, "message": err.message, "path": where}
    if match is not None:
        assert match in err.message, err.message
    return err


# -- the document and its top-level fields ---------------------------------------------------


@pytest.mark.parametrize("doc", [None, [], "gradnet/1", 3, True])
def test_not_an_object(doc):
    raises(NetworkError, doc, "invalid_network", "network")


def test_not_an_object_with_service_prefix():
    raises(NetworkError, [], "invalid_network", "network", path="network.")


def test_missing_format():
    doc = tutorial()
    del doc["format"]
    raises(NetworkError, doc, "invalid_network", "format", match="gradnet/1")


@pytest.mark.parametrize("fmt", ["gradnet/2", "GRADNET/1", "", 1, None])
def test_wrong_format(fmt):
    raises(NetworkError, tutorial(format=fmt), "invalid_network", "format")


def test_unknown_top_level_field():
    raises(NetworkError, tutorial(extra=1), "invalid_network", "extra", match="unknown field 'extra'")


def test_error_paths_take_the_service_prefix():
    raises(NetworkError, tutorial(extra=1), "invalid_network", "network.extra", path="network.")
    doc = tutorial()
    doc["nodes"][0]["op"] = "Matmul"
    raises(UnknownOpError, doc, "unknown_op", "network.nodes[0].op", path="network.")


def test_name_must_be_a_string():
    raises(NetworkError, tutorial(name=5), "invalid_network", "name")


# -- inputs ------------------------------------------------------------------------------------


def test_missing_inputs():
    doc = tutorial()
    del doc["inputs"]
    raises(NetworkError, doc, "invalid_network", "inputs")


@pytest.mark.parametrize("value", ["x", {"name": "x"}, 1])
def test_inputs_not_a_list(value):
    raises(NetworkError, tutorial(inputs=value), "invalid_network", "inputs")


def test_input_not_an_object():
    raises(NetworkError, tutorial(inputs=[{"name": "x"}, "y"]), "invalid_network", "inputs[1]")


@pytest.mark.parametrize("entry", [{}, {"name": ""}, {"name": 3}, {"dtype": "float32"}])
def test_input_without_a_name(entry):
    raises(NetworkError, tutorial(inputs=[{"name": "x"}, entry]), "invalid_network", "inputs[1].name")


def test_input_with_unknown_dtype():
    raises(TensorError, tutorial(inputs=[{"name": "x", "dtype": "float8"}, {"name": "y"}]), "invalid_tensor", "inputs[0].dtype")


@pytest.mark.parametrize("shape", ["2x3", [2, -1], [2, 1.5], [True], 3])
def test_input_with_bad_shape(shape):
    raises(NetworkError, tutorial(inputs=[{"name": "x", "shape": shape}, {"name": "y"}]), "invalid_network", "inputs[0].shape")


def test_input_constraints_are_kept():
    net = parse_network(tutorial(inputs=[{"name": "x", "dtype": "FP32", "shape": [None, 3]}, {"name": "y"}]))
    assert net.inputs[0].dtype == "float32"
    assert net.inputs[0].shape == (None, 3)
    assert net.signature()["inputs"][0] == {"name": "x", "dtype": "float32", "shape": [None, 3]}


# -- parameters --------------------------------------------------------------------------------


def test_parameters_are_optional():
    doc = with_nodes({"name": "out", "op": "MatMul", "inputs": ["x", "y"]})
    del doc["parameters"]
    assert parse_network(doc).parameters == ()


@pytest.mark.parametrize("value", [{"name": "z"}, "z", 1])
def test_parameters_not_a_list(value):
    raises(NetworkError, tutorial(parameters=value), "invalid_network", "parameters")


def test_parameter_not_an_object():
    raises(NetworkError, tutorial(parameters=["z"]), "invalid_network", "parameters[0]")


def test_parameter_without_a_name():
    raises(NetworkError, tutorial(parameters=[{"value": {"dtype": "float32", "shape": [1], "data": [1]}}]),
           "invalid_network", "parameters[0].name")


def test_parameter_without_a_value():
    raises(NetworkError, tutorial(parameters=[{"name": "z"}]), "invalid_network", "parameters[0].value")


def test_parameter_requires_grad_must_be_bool():
    doc = tutorial()
    doc["parameters"][0]["requires_grad"] = "yes"
    raises(NetworkError, doc, "invalid_network", "parameters[0].requires_grad")


@pytest.mark.parametrize(
    "value, path",
    [
        ({"dtype": "float32", "shape": [2], "data": [1.0]}, "parameters[0].value.data"),
        ({"dtype": "float8", "shape": [1], "data": [1.0]}, "parameters[0].value.dtype"),
        ({"shape": [1], "data": [1.0]}, "parameters[0].value"),
        ({"dtype": "float32", "shape": [2], "b64": "not base64!"}, "parameters[0].value.b64"),
        ({"dtype": "float32", "shape": [-1], "data": []}, "parameters[0].value.shape"),
        ([1.0], "parameters[0].value"),
    ],
)
def test_parameter_with_malformed_tensor(value, path):
    doc = tutorial()
    doc["parameters"][0]["value"] = value
    raises(TensorError, doc, "invalid_tensor", path)


def test_parameter_over_max_elements():
    doc = tutorial()
    doc["parameters"][0]["value"] = {"dtype": "float32", "shape": [1000, 1000], "data": [0.0]}
    err = raises(TooLargeError, doc, "too_large", "parameters[0].value", max_elements=1000)
    assert err.code == "too_large"


def test_parameter_values_are_read_only():
    net = parse_network(tutorial())
    with pytest.raises(ValueError):
        net.parameters[0].value[0] = 2.0


# -- nodes -------------------------------------------------------------------------------------


def test_missing_nodes():
    doc = tutorial()
    del doc["nodes"]
    raises(NetworkError, doc, "invalid_network", "nodes")


@pytest.mark.parametrize("value", [{"name": "out"}, "out", None])
def test_nodes_not_a_list(value):
    raises(NetworkError, tutorial(nodes=value), "invalid_network", "nodes")


def test_node_not_an_object():
    raises(NetworkError, with_nodes({"name": "xz", "op": "Mul", "inputs": ["x", "z"]}, "out"),
           "invalid_network", "nodes[1]")


def test_node_without_a_name():
    raises(NetworkError, with_nodes({"op": "Mul", "inputs": ["x", "z"]}), "invalid_network", "nodes[0].name")


def test_node_without_inputs():
    raises(NetworkError, with_nodes({"name": "out", "op": "Neg"}), "invalid_network", "nodes[0].inputs")


def test_node_inputs_not_a_list():
    raises(NetworkError, with_nodes({"name": "out", "op": "Neg", "inputs": "x"}), "invalid_network", "nodes[0].inputs")


def test_reference_not_a_string():
    # (a number is a constant, API.md section 6; null is neither)
    raises(NetworkError, with_nodes({"name": "out", "op": "Neg", "inputs": [None]}), "invalid_network", "nodes[0].inputs[0]")


# -- outputs -----------------------------------------------------------------------------------


def test_missing_outputs():
    doc = tutorial()
    del doc["outputs"]
    raises(NetworkError, doc, "invalid_network", "outputs")


def test_empty_outputs():
    raises(NetworkError, tutorial(outputs=[]), "invalid_network", "outputs")


def test_output_not_a_string():
    raises(NetworkError, tutorial(outputs=[3]), "invalid_network", "outputs[0]")
    raises(NetworkError, tutorial(outputs={"out": 1}), "invalid_network", "outputs")


def test_undefined_output():
    raises(UndefinedNameError, tutorial(outputs=["out", "nope"]), "undefined_name", "outputs[1]", match="'nope'")
    raises(UndefinedNameError, tutorial(outputs="nope"), "undefined_name", "outputs")


# -- names and references ----------------------------------------------------------------------


def test_duplicate_input_and_node():
    err = raises(
        DuplicateNameError,
        with_nodes({"name": "x", "op": "Neg", "inputs": ["y"]}, outputs=["x"]),
        "duplicate_name",
        "nodes[0].name",
    )
    assert "inputs[0]" in err.message  # where it was first defined


def test_duplicate_node_and_node():
    raises(
        DuplicateNameError,
        with_nodes({"name": "a", "op": "Neg", "inputs": ["x"]}, {"name": "a", "op": "Neg", "inputs": ["y"]}, outputs=["a"]),
        "duplicate_name",
        "nodes[1].name",
    )


def test_duplicate_input_and_input():
    raises(DuplicateNameError, tutorial(inputs=[{"name": "x"}, {"name": "x"}]), "duplicate_name", "inputs[1].name")


def test_duplicate_input_and_parameter():
    doc = tutorial()
    doc["parameters"][0]["name"] = "x"
    raises(DuplicateNameError, doc, "duplicate_name", "parameters[0].name")


def test_duplicate_parameter_and_node():
    raises(DuplicateNameError, with_nodes({"name": "z", "op": "Neg", "inputs": ["x"]}, outputs=["z"]),
           "duplicate_name", "nodes[0].name")


def test_undefined_reference():
    raises(
        UndefinedNameError,
        with_nodes({"name": "xz", "op": "Mul", "inputs": ["x", "z"]}, {"name": "out", "op": "MatMul", "inputs": ["xz", "w"]}),
        "undefined_name",
        "nodes[1].inputs[1]",
        match="'w'",
    )


def _cross_entropy(*nodes, outputs=("loss",)):
    return tutorial(
        inputs=[{"name": "logits"}, {"name": "labels"}],
        parameters=[],
        nodes=[{"name": "ce", "op": "SoftmaxCrossEntropyWithLogits", "inputs": ["logits", "labels"]}, *nodes],
        outputs=list(outputs),
    )


def test_indexed_reference_to_multi_output_node():
    net = parse_network(_cross_entropy({"name": "loss", "op": "ReduceMean", "inputs": ["ce:0"]}))
    assert str(net.nodes[-1].inputs[0]) == "ce:0"
    net = parse_network(_cross_entropy(outputs=["ce:0", "ce:1"]))
    assert net.tuple_output


def test_bare_reference_to_multi_output_node():
    raises(
        UndefinedNameError,
        _cross_entropy({"name": "loss", "op": "ReduceMean", "inputs": ["ce"]}),
        "undefined_name",
        "nodes[1].inputs[0]",
        match="'ce:0'",
    )
    raises(UndefinedNameError, _cross_entropy(outputs=["ce"]), "undefined_name", "outputs[0]")


def test_output_index_out_of_range():
    raises(
        UndefinedNameError,
        _cross_entropy({"name": "loss", "op": "ReduceMean", "inputs": ["ce:3"]}),
        "undefined_name",
        "nodes[1].inputs[0]",
        match="no output 3",
    )
    # a single-output node and a leaf have no "name:1"
    raises(UndefinedNameError, tutorial(outputs=["out:1"]), "undefined_name", "outputs[0]")
    raises(UndefinedNameError, with_nodes({"name": "out", "op": "Neg", "inputs": ["x:0"]}), "undefined_name", "nodes[0].inputs[0]")


# -- ops and attrs -----------------------------------------------------------------------------


def test_unknown_op_suggests_the_closest():
    err = raises(UnknownOpError, with_nodes({"name": "out", "op": "Matmul", "inputs": ["x", "y"]}),
                 "unknown_op", "nodes[0].op")
    assert "did you mean 'MatMul'" in err.message


@pytest.mark.parametrize("name", ["__import__", "eval", "os.system", "jax.numpy.sin", "__class__", "", None, 3, ["Neg"]])
def test_unknown_op_is_never_resolved_as_python(name, monkeypatch):
    called = []
    monkeypatch.setattr(builtins, "__import__", lambda *a, **k: called.append(a) or pytest.fail("imported"))
    try:
        with pytest.raises(UnknownOpError) as info:
            parse_network(with_nodes({"name": "out", "op": name, "inputs": ["x"]}))
    finally:
        monkeypatch.undo()
    assert info.value.code == "unknown_op"
    assert info.value.path == "nodes[0].op"
    assert called == []


def test_unknown_attr_suggests_the_closest():
    err = raises(
        AttrError,
        with_nodes({"name": "out", "op": "ReduceSum", "inputs": ["x"], "attrs": {"keepdims": True}}),
        "bad_attr",
        "nodes[0].attrs.keepdims",
    )
    assert "did you mean 'keep_dims'" in err.message


def test_attrs_not_an_object():
    raises(AttrError, with_nodes({"name": "out", "op": "ReduceSum", "inputs": ["x"], "attrs": [1]}), "bad_attr", "nodes[0].attrs")


@pytest.mark.parametrize(
    "op, inputs, attrs, key",
    [
        ("MatMul", ["x", "y"], {"transpose_b": "yes"}, "transpose_b"),
        ("MatMul", ["x", "y"], {"transpose_a": 1}, "transpose_a"),
        ("ReduceSum", ["x"], {"axis": 1.5}, "axis"),
        ("ReduceSum", ["x"], {"axis": [0, "1"]}, "axis"),
        ("ReduceSum", ["x"], {"keep_dims": None}, "keep_dims"),
        ("CumSum", ["x"], {"axis": True}, "axis"),
        ("Cast", ["x"], {"dtype": "float8"}, "dtype"),
        ("Cast", ["x"], {"dtype": 32}, "dtype"),
        ("BiasAdd", ["x", "y"], {"data_format": "NCDHW"}, "data_format"),
    ],
)
def test_attr_of_the_wrong_type(op, inputs, attrs, key):
    raises(AttrError, with_nodes({"name": "out", "op": op, "inputs": inputs, "attrs": attrs}), "bad_attr", f"nodes[0].attrs.{key}")


def test_missing_required_attr():
    raises(AttrError, with_nodes({"name": "out", "op": "Cast", "inputs": ["x"]}), "bad_attr", "nodes[0].attrs", match="'dtype'")


def test_attrs_get_defaults_and_canonical_values():
    net = parse_network(with_nodes(
        {"name": "s", "op": "ReduceSum", "inputs": ["x"], "attrs": {"axis": [1]}},
        {"name": "out", "op": "Cast", "inputs": ["s"], "attrs": {"dtype": "FP16"}},
    ))
    nodes = {n.name: n for n in net.nodes}
    assert dict(nodes["s"].attrs) == {"axis": (1,), "keep_dims": False}
    assert dict(nodes["out"].attrs) == {"dtype": "float16"}


@pytest.mark.parametrize(
    "op, inputs, path",
    [
        ("MatMul", ["x"], "nodes[0].inputs"),
        ("MatMul", ["x", "y", "z"], "nodes[0].inputs"),
        ("Neg", [], "nodes[0].inputs"),
        ("Select", ["x", "y"], "nodes[0].inputs"),
    ],
)
def test_wrong_number_of_tensor_inputs(op, inputs, path):
    err = raises(NetworkError, with_nodes({"name": "out", "op": op, "inputs": inputs}), "invalid_network", path)
    assert op in err.message


# -- graph structure ---------------------------------------------------------------------------


def test_cycle():
    doc = with_nodes(
        {"name": "a", "op": "Add", "inputs": ["x", "b"]},
        {"name": "b", "op": "Neg", "inputs": ["a"]},
        {"name": "out", "op": "Neg", "inputs": ["b"]},
    )
    err = raises(CycleError, doc, "cycle", "nodes[0]")
    assert "'a'" in err.message and "'b'" in err.message


def test_cycle_path_names_a_node_in_the_cycle():
    # "out" comes first and is stuck behind the cycle, but is not part of it.
    doc = with_nodes(
        {"name": "out", "op": "Neg", "inputs": ["c"]},
        {"name": "pre", "op": "Neg", "inputs": ["x"]},
        {"name": "b", "op": "Add", "inputs": ["pre", "c"]},
        {"name": "c", "op": "Neg", "inputs": ["b"]},
    )
    err = raises(CycleError, doc, "cycle", "nodes[2]")
    assert "'out'" not in err.message and "'pre'" not in err.message


def test_self_loop():
    raises(CycleError, with_nodes({"name": "out", "op": "Add", "inputs": ["x", "out"]}), "cycle", "nodes[0]")


def test_too_many_nodes():
    err = raises(TooLargeError, tutorial(), "too_large", "nodes", max_nodes=1)
    assert err.code == "too_large"
    assert parse_network(tutorial(), max_nodes=2).nodes  # exactly at the limit is fine


# -- node order and the canonical id -----------------------------------------------------------


def _diamond():
    return tutorial(
        parameters=[
            {"name": "w", "value": {"dtype": "float32", "shape": [3, 3], "data": list(np.arange(9.0))}},
            {"name": "b", "value": {"dtype": "float32", "shape": [3], "data": [0.5, -1.0, 2.0]}, "requires_grad": False},
        ],
        nodes=[
            {"name": "h", "op": "MatMul", "inputs": ["x", "w"], "attrs": {"transpose_b": True}},
            {"name": "hb", "op": "BiasAdd", "inputs": ["h", "b"]},
            {"name": "r", "op": "ReLU", "inputs": ["hb"]},
            {"name": "t", "op": "Tanh", "inputs": ["hb"]},
            {"name": "m", "op": "Mul", "inputs": ["r", "t"]},
            {"name": "s", "op": "ReduceSum", "inputs": ["m"], "attrs": {"axis": [1], "keep_dims": True}},
            {"name": "out", "op": "Add", "inputs": ["s", "y"]},
        ],
        outputs=["out", "t"],
    )


def _is_topological(net) -> bool:
    seen = {i.name for i in net.inputs} | {p.name for p in net.parameters}
    for node in net.nodes:
        if any(ref.name not in seen for ref in node.inputs):
            return False
        seen.add(node.name)
    return True


def test_node_order_does_not_matter():
    base = parse_network(_diamond())
    assert _is_topological(base)
    rng = random.Random(0)
    for _ in range(20):
        doc = _diamond()
        rng.shuffle(doc["nodes"])
        net = parse_network(doc)
        assert _is_topological(net)
        assert net.id == base.id
        assert [n.name for n in net.nodes] != [] and {n.name for n in net.nodes} == {n.name for n in base.nodes}


def test_id_format():
    net = parse_network(_diamond())
    assert net.id.startswith("sha256:") and len(net.id) == len("sha256:") + 64
    assert int(net.id[7:], 16) >= 0
    assert net.id == parse_network(_diamond()).id


def _reorder_keys(obj):
    if isinstance(obj, dict):
        return {k: _reorder_keys(obj[k]) for k in reversed(list(obj))}
    if isinstance(obj, list):
        return [_reorder_keys(v) for v in obj]
    return obj


def test_id_ignores_key_order_and_whitespace():
    base = parse_network(_diamond()).id
    text = json.dumps(_reorder_keys(_diamond()), indent=7, sort_keys=False)
    assert parse_network(json.loads(text)).id == base
    assert parse_network(json.loads(json.dumps(_diamond(), separators=(",", ":"), sort_keys=True))).id == base


def _encode_params(doc, how):
    doc = copy.deepcopy(doc)
    for p in doc["parameters"]:
        v = p["value"]
        arr = np.asarray(v["data"], dtype=np.float32).reshape(v["shape"])
        if how == "b64":
            p["value"] = {"dtype": "float32", "shape": v["shape"], "b64": base64.b64encode(arr.astype("<f4").tobytes()).decode()}
        elif how == "nested":
            p["value"] = {"dtype": "float32", "data": arr.tolist()}
        elif how == "oip":
            p["value"] = {"datatype": "FP32", "shape": v["shape"], "data": arr.reshape(-1).tolist()}
        elif how == "ints":  # whole numbers written as JSON integers where possible
            p["value"] = {"dtype": "float32", "shape": v["shape"], "data": [int(x) if x == int(x) else x for x in v["data"]]}
    return doc


@pytest.mark.parametrize("how", ["b64", "nested", "oip", "ints"])
def test_id_ignores_tensor_encoding(how):
    assert parse_network(_encode_params(_diamond(), how)).id == parse_network(_diamond()).id


def test_id_same_for_single_output_as_string_or_list():
    one = parse_network(tutorial(outputs="out"))
    listed = parse_network(tutorial(outputs=["out"]))
    assert one.id == listed.id
    assert not one.tuple_output and not listed.tuple_output


def test_id_same_for_explicit_default_attrs():
    doc = tutorial()
    doc["nodes"][1]["attrs"] = {"transpose_a": False, "transpose_b": False}
    assert parse_network(doc).id == parse_network(tutorial()).id


def test_id_survives_to_json_round_trip():
    net = parse_network(_diamond())
    for encoding in ("b64", "json"):
        doc = json.loads(json.dumps(net.to_json(encoding), default=lambda a: a.tolist()))
        assert parse_network(doc).id == net.id


def _variant(change):
    doc = _diamond()
    change(doc)
    return parse_network(doc).id


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["parameters"][1]["value"]["data"].__setitem__(0, 0.25),            # a value
        lambda d: d["parameters"][1]["value"].__setitem__("dtype", "float64"),         # a dtype
        lambda d: d["parameters"][1].__setitem__("requires_grad", True),               # trainability
        lambda d: d["nodes"][0]["attrs"].__setitem__("transpose_b", False),            # an attr
        lambda d: d["nodes"][5]["attrs"].__setitem__("axis", [0]),                     # another attr
        lambda d: d["nodes"][3].__setitem__("op", "Sigmoid"),                          # an op
        lambda d: d["nodes"][4].__setitem__("inputs", ["t", "r"]),                     # input order
        lambda d: d.__setitem__("outputs", ["t", "out"]),                              # output order
        lambda d: d.__setitem__("outputs", ["out"]),                                   # output count
        lambda d: d["inputs"][0].__setitem__("dtype", "float32"),                      # a constraint
        lambda d: d.__setitem__("inputs", [d["inputs"][1], d["inputs"][0]]),           # input order
        lambda d: d.__setitem__("parameters", [d["parameters"][1], d["parameters"][0]]),  # param order
    ],
)
def test_id_changes_with_content(change):
    assert _variant(change) != parse_network(_diamond()).id


# -- scale ---------------------------------------------------------------------------------------


def test_100k_node_chain_parses_iteratively():
    n = 100_000
    nodes = [{"name": f"n{i}", "op": "Neg", "inputs": [f"n{i - 1}" if i else "x"]} for i in range(n)]
    nodes.reverse()  # worst order for a naive resolver: every reference points forward
    doc = {"format": "gradnet/1", "inputs": [{"name": "x"}], "nodes": nodes, "outputs": [f"n{n - 1}"]}
    t0 = time.perf_counter()
    net = parse_network(doc, max_nodes=n)
    elapsed = time.perf_counter() - t0
    assert len(net.nodes) == n
    assert net.nodes[0].name == "n0" and net.nodes[-1].name == f"n{n - 1}"
    assert _is_topological(net)
    assert elapsed < 30, f"parsing a {n}-node chain took {elapsed:.1f}s"
    with pytest.raises(TooLargeError):
        parse_network(doc, max_nodes=n - 1)
