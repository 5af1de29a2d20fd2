"""Schema fuzzing and property tests (issue item 1).

- schemathesis: every operation of ``openapi/openapi.json``, positive and negative examples,
  against a live server: no 5xx, and every answer conforms to the schema (status code documented,
  content type, headers, body).
- the network validator: random graphs, and valid graphs mutated in ways that must make them
  invalid (a node deleted, a reference renamed, op names swapped, attrs corrupted, a cycle added, a
  name duplicated). In process (many examples: the engine's parser and the server's validator,
  which is what ``/grad`` runs before any worker) and over HTTP (fewer): every mutation is a 4xx
  whose ``path`` points at the mutated element, and nothing is ever a 5xx or an exception that is
  not a ``GradnetError``.
- the binary framing (``Inference-Header-Content-Length``): random tensors round-trip, and a wrong
  header or a cut/extended body is a 400, never anything else. (The tensor codec's own properties
  are in tests/engine/test_tensors.py.)
"""

from __future__ import annotations

import copy
import re
from typing import Any

import numpy as np
import orjson
import pytest
import schemathesis
from hardening_helpers import FUZZ_KEY, HARD_LIMITS, tutorial_request
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

import engine
from service.errors import BadRequestError
from service.grad.call import GradCall
from service.grad.validator import Validator
from service.http import body as codec
from service.http.errors import status_of
from tests.support import ROOT
from tests.support.api_contract import error_of

OPS = {op["name"]: op for op in engine.catalog()}
#: single-output ops with a fixed number of tensor inputs (a multi-output op changes how it is referenced)
FIXED_ARITY = {name: len(op["inputs"]) for name, op in OPS.items()
               if not op["inputs"][0].startswith("*") and op["outputs"] == 1}
SUPPRESS = list(HealthCheck)

# -- schemathesis -----------------------------------------------------------------------------------

schema = schemathesis.openapi.from_path(str(ROOT / "openapi" / "openapi.json"))
#: positive_data_acceptance (schema-valid data must not be refused) with 422 allowed besides
#: schemathesis' own list: 422 says the request has the documented shape but its network and
#: arguments do not fit together (a reference that names nothing, an input count, shapes: API.md,
#: 400 malformed, 422 invalid), which no JSON Schema can say. Any 400, 405, 413 or 415 for
#: schema-valid data is a disagreement between the document and the server, and fails.
schema.config.checks.positive_data_acceptance.expected_statuses = [
    *schema.config.checks.positive_data_acceptance.expected_statuses, "422"]
#: route groups whose protocol answers 400 for a model that is not registered (UM-Bridge's
#: ModelNotFound: its clients expect exactly that): schema-valid names of models that do not
#: exist are refused there by design, so positive data is not checked on them
PROTOCOL_400_TAGS = {"umbridge"}


def _positive_check_applies(case: Any) -> bool:
    """Whether the schema can say what the server accepts for ``case``: not for the binary
    framing (an ``application/octet-stream`` body, or the ``Inference-Header-Content-Length``
    header on a JSON one), whose header must equal the JSON part's length (the framing has its
    own property tests below), nor for the protocols of :data:`PROTOCOL_400_TAGS`."""
    if PROTOCOL_400_TAGS & set(case.operation.definition.raw.get("tags") or ()):
        return False
    headers = {k.lower() for k in (case.headers or {})}
    return case.media_type != "application/octet-stream" and "inference-header-content-length" not in headers


@pytest.fixture(scope="module")
def fuzz_session(hard_server):
    import requests  # noqa: PLC0415 - schemathesis' own transport

    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {FUZZ_KEY}"
        yield session


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=SUPPRESS, derandomize=True, database=None)
def test_schema_conformance(case, hard_server, fuzz_session, figures):
    """No 5xx; every status, content type, header and body as the schema says; data that the schema
    forbids is refused, and data it allows is not refused as malformed (positive_data_acceptance,
    see :data:`schema`'s expected statuses and :func:`_positive_check_applies`)."""
    positive = _positive_check_applies(case)
    response = case.call_and_validate(base_url=hard_server.url, session=fuzz_session, timeout=60,
                                      excluded_checks=[] if positive else [positive_data_acceptance])
    key = f"schemathesis_{case.operation.method.upper()} {case.operation.path}"
    counts = figures.setdefault(key, {})
    counts[str(response.status_code)] = counts.get(str(response.status_code), 0) + 1
    if positive and case.meta is not None and case.meta.generation.mode.is_positive:
        checked = figures.setdefault("schemathesis_positive_checked", {})
        checked[str(response.status_code)] = checked.get(str(response.status_code), 0) + 1


# -- networks: valid ones, and mutations that must break them --------------------------------------

UNARY = ["Neg", "Sin", "Cos", "Tanh", "Sigmoid", "Square", "Abs", "Exp", "ReLU", "Softplus", "StopGradient"]
BINARY = ["Add", "Sub", "Mul", "Maximum", "Minimum", "SquaredDifference"]
LEAVES = ["x", "y", "w"]
BIG_INTS = st.sampled_from([0, -1, 1, 2, 3, 7, 2**31, 2**63 - 1, -(2**63), 10**12])
SMALL_INTS = st.integers(-4, 4)


@st.composite
def shape_attrs(draw: Any) -> tuple[str, dict[str, Any]]:
    """A shape-changing op with random, maybe wrong, maybe huge, attrs."""
    ints = st.one_of(SMALL_INTS, BIG_INTS)
    op = draw(st.sampled_from(["ReduceSum", "ReduceMean", "Transpose", "Reshape", "ExpandDims", "Tile",
                               "BroadcastTo", "Softmax", "Squeeze", "CumSum", "Slice", "Cast"]))
    if op in ("ReduceSum", "ReduceMean"):
        attrs = {"axis": draw(st.one_of(SMALL_INTS, st.lists(SMALL_INTS, max_size=3))),
                 "keep_dims": draw(st.booleans())}
    elif op == "Transpose":
        attrs = {"input_perm": draw(st.lists(SMALL_INTS, min_size=0, max_size=3))}
    elif op in ("Reshape", "BroadcastTo"):
        attrs = {"shape": draw(st.lists(ints, min_size=0, max_size=3))}
    elif op in ("ExpandDims", "Softmax", "CumSum"):
        attrs = {"axis": draw(SMALL_INTS)}
    elif op == "Tile":
        attrs = {"multiples": draw(st.lists(ints, min_size=0, max_size=3))}
    elif op == "Squeeze":
        attrs = {"axis": draw(st.lists(SMALL_INTS, max_size=2))}
    elif op == "Slice":
        attrs = {"begin": draw(st.lists(ints, min_size=2, max_size=2)),
                 "size": draw(st.lists(ints, min_size=2, max_size=2))}
    else:
        attrs = {"dtype": draw(st.sampled_from(["float32", "float16", "int32", "bool", "float64"]))}
    return op, attrs


@st.composite
def random_networks(draw: Any, attrs: bool = True) -> dict[str, Any]:
    """A random DAG over inputs x, y (float32[2, 3]) and parameter w: always parses; with
    ``attrs``, shape-changing ops with random attrs make many of them fail shape checks."""
    names = list(LEAVES)
    nodes = []
    for i in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["unary", "binary", "shape"] if attrs else ["unary", "binary"]))
        if kind == "unary":
            node = {"op": draw(st.sampled_from(UNARY)), "inputs": [draw(st.sampled_from(names))]}
        elif kind == "binary":
            node = {"op": draw(st.sampled_from(BINARY)),
                    "inputs": [draw(st.sampled_from(names)), draw(st.sampled_from(names))]}
        else:
            op, op_attrs = draw(shape_attrs())
            node = {"op": op, "inputs": [draw(st.sampled_from(names))], "attrs": op_attrs}
        node = {"name": f"n{i}", **node}
        nodes.append(node)
        names.append(node["name"])
    outputs = draw(st.one_of(st.just(names[-1]), st.lists(st.sampled_from(names[3:]), min_size=1, max_size=3,
                                                           unique=True)))
    order = draw(st.permutations(range(len(nodes))))  # nodes may come in any order
    return {
        "format": "gradnet/1",
        "name": "random",
        "inputs": [{"name": "x"}, {"name": "y"}],
        "parameters": [{"name": "w", "value": {"dtype": "float32", "shape": [2, 3], "data": [0.5] * 6}}],
        "nodes": [nodes[i] for i in order],
        "outputs": outputs,
    }


XY = [{"dtype": "float32", "shape": [2, 3], "data": [0.1, -0.2, 0.3, 0.4, -0.5, 0.6]},
      {"dtype": "float32", "shape": [2, 3], "data": [1.0, 2.0, -3.0, 0.0, 0.5, 0.25]}]

# Values of the wrong type for every attr kind (a dict is wrong for all of them).
WRONG = {
    "int": ["1", 1.5, [1], {"a": 1}, True, "__import__('os')"],
    "float": ["1.0", [1.0], {"a": 1}, True],
    "number": ["1", [1], {}, False],
    "bool": ["true", 1, 0, [True], {}],
    "str": [1, ["valid"], {"s": "x"}, True],
    "ints": ["1,2", [1.5], [[1]], {"a": 1}, [True]],
    "int_or_ints": ["1", [[1]], 1.5, {}, [None]],
    "dtype": ["object", "O", "float", 32, {}, ["float32"]],
}


def _referrers(doc: dict[str, Any], name: str) -> list[str]:
    """Paths (without prefix) of every reference to ``name``, in the order the parser checks
    them: node inputs in list order, then outputs."""
    found = [f"nodes[{j}].inputs[{k}]" for j, node in enumerate(doc["nodes"])
             for k, ref in enumerate(node.get("inputs", [])) if ref == name]
    outputs = doc["outputs"]
    if isinstance(outputs, list):
        found += [f"outputs[{k}]" for k, ref in enumerate(outputs) if ref == name]
    elif outputs == name:
        found.append("outputs")
    return found


def _descendants(doc: dict[str, Any], name: str) -> set[str]:
    users: dict[str, list[str]] = {}
    for node in doc["nodes"]:
        for ref in node["inputs"]:
            users.setdefault(ref, []).append(node["name"])
    seen, todo = set(), [name]
    while todo:
        for user in users.get(todo.pop(), []):
            if user not in seen:
                seen.add(user)
                todo.append(user)
    return seen


@st.composite
def mutations(draw: Any, base: st.SearchStrategy[dict[str, Any]]) -> tuple[dict[str, Any], str, str, Any]:
    """(mutated network, kind, a regex of the expected error codes, a regex of the expected path).

    Every mutation is one that must make the network invalid."""
    doc = copy.deepcopy(draw(base))
    nodes = doc["nodes"]
    node_names = [n["name"] for n in nodes]
    leaves = [i["name"] for i in doc["inputs"]] + [p["name"] for p in doc.get("parameters", [])]
    kinds = ["delete_node", "rename_ref", "ref_not_a_string", "unknown_op", "wrong_arity_op", "unknown_attr",
             "wrong_attr", "attrs_not_an_object", "cycle", "duplicate_name", "drop_field"]
    with_attrs = [i for i, n in enumerate(nodes) if OPS[n["op"]]["attrs"]]
    kind = draw(st.sampled_from(kinds + ["wrong_attr"] * 4 if with_attrs
                                else [k for k in kinds if k != "wrong_attr"]))
    if kind == "delete_node":
        referenced = [i for i, n in enumerate(nodes) if _referrers(doc, n["name"])]
        i = draw(st.sampled_from(referenced))
        gone = nodes.pop(i)["name"]
        return doc, kind, "undefined_name", re.escape(_referrers(doc, gone)[0])
    if kind in ("rename_ref", "ref_not_a_string"):
        j = draw(st.sampled_from(range(len(nodes))))
        k = draw(st.sampled_from(range(len(nodes[j]["inputs"]))))
        if kind == "rename_ref":
            ghost = draw(st.one_of(
                st.text(min_size=1, max_size=12).filter(lambda s: s not in node_names + leaves and
                                                        s.rpartition(":")[0] not in node_names + leaves),
                st.sampled_from([f"{nodes[j]['inputs'][k]}:7", "x:1", "__import__", "", "N0"]),
            ))
            nodes[j]["inputs"][k] = ghost
            return doc, kind, "undefined_name|invalid_network", re.escape(f"nodes[{j}].inputs[{k}]")
        # (a number is a constant, API.md section 6: not among them)
        nodes[j]["inputs"][k] = draw(st.sampled_from([None, True, ["x"], {"name": "x"}]))
        return doc, kind, "invalid_network", re.escape(f"nodes[{j}].inputs[{k}]")
    j = draw(st.sampled_from(range(len(nodes))))
    node = nodes[j]
    if kind == "unknown_op":
        node["op"] = draw(st.one_of(
            st.text(max_size=20).filter(lambda s: s not in OPS),
            st.sampled_from([node["op"].lower(), node["op"].upper(), node["op"] + " ", "__import__", "os.system",
                             None, 3, ["Add"], {"op": "Add"}]),
        ))
        return doc, kind, "unknown_op", re.escape(f"nodes[{j}].op")
    if kind == "wrong_arity_op":
        arity = len(node["inputs"])
        node["op"] = draw(st.sampled_from(sorted(n for n, a in FIXED_ARITY.items() if a != arity)))
        node.pop("attrs", None)
        # the op's required attrs are checked first (bad_attr), then its tensor inputs
        return doc, kind, "invalid_network|bad_attr", re.escape(f"nodes[{j}].") + "(inputs|attrs)"
    if kind == "unknown_attr":
        name = draw(st.sampled_from(["keep_dim", "axes", "__class__", "transpose_c", "eval", "shape_"]))
        assume(name not in {a["name"] for a in OPS[node["op"]]["attrs"]})
        node.setdefault("attrs", {})[name] = 1
        return doc, kind, "bad_attr", re.escape(f"nodes[{j}].attrs.{name}")
    if kind == "wrong_attr":
        j = draw(st.sampled_from(with_attrs))
        node = nodes[j]
        attr = draw(st.sampled_from(OPS[node["op"]]["attrs"]))
        node.setdefault("attrs", {})[attr["name"]] = draw(st.sampled_from(WRONG[attr["type"]]))
        return doc, kind, "bad_attr", re.escape(f"nodes[{j}].attrs.{attr['name']}")
    if kind == "attrs_not_an_object":
        node["attrs"] = draw(st.sampled_from([[], "axis=1", 1, True]))
        return doc, kind, "bad_attr", re.escape(f"nodes[{j}].attrs")
    if kind == "cycle":
        # a node takes as an input one of its own descendants (or itself): a cycle through it
        target = draw(st.sampled_from(sorted(_descendants(doc, node["name"]) | {node["name"]})))
        k = draw(st.sampled_from(range(len(node["inputs"]))))
        node["inputs"][k] = target
        return doc, kind, "cycle", r"nodes\[\d+\]"
    if kind == "duplicate_name":
        other = draw(st.sampled_from([n for n in node_names + leaves if n != node["name"]]))
        node["name"] = other
        return doc, kind, "duplicate_name", r"(nodes\[\d+\]|inputs\[\d+\]|parameters\[\d+\])\.name"
    field = draw(st.sampled_from(["op", "inputs", "name"]))
    del node[field]
    code = {"op": "unknown_op", "inputs": "invalid_network", "name": "invalid_network"}[field]
    return doc, f"drop_{field}", code, re.escape(f"nodes[{j}].{field}")


def _tutorial_network() -> dict[str, Any]:
    return tutorial_request()["network"]


def _parses(doc: dict[str, Any]) -> bool:
    try:
        engine.parse_network(doc)
    except engine.GradnetError:
        return False  # a random attr value the op refuses (Slice size -2): not a valid base
    return True


BASES = st.one_of(st.just(_tutorial_network()), random_networks(attrs=False),
                  random_networks(attrs=True).filter(_parses))


def _check_error(exc_or_err: Any, codes: str, path: str, prefix: str) -> None:
    code = exc_or_err["code"] if isinstance(exc_or_err, dict) else exc_or_err.code
    where = exc_or_err["path"] if isinstance(exc_or_err, dict) else exc_or_err.path
    assert re.fullmatch(codes, code), (code, codes, exc_or_err)
    assert where is not None, exc_or_err
    assert re.fullmatch(re.escape(prefix) + path, where), (where, path, exc_or_err)


@settings(max_examples=400, deadline=None, suppress_health_check=SUPPRESS, derandomize=True, database=None)
@given(mutations(BASES))
def test_mutated_networks_in_process(mutation):
    doc, kind, codes, path = mutation
    event(kind)
    with pytest.raises(engine.GradnetError) as info:
        engine.parse_network(doc, max_nodes=HARD_LIMITS["max_nodes"], max_elements=HARD_LIMITS["max_tensor_elements"])
    assert 400 <= status_of(info.value) < 500
    _check_error(info.value, codes, path, "")


@pytest.fixture(scope="module")
def fuzz_client(hard_server):
    with hard_server.client(FUZZ_KEY) as c:
        yield c


@settings(max_examples=120, deadline=None, suppress_health_check=SUPPRESS, derandomize=True, database=None)
@given(mutation=mutations(BASES), route=st.sampled_from(["/grad", "/networks"]))
def test_mutated_networks_over_http(fuzz_client, mutation, route):
    doc, kind, codes, path = mutation
    event(kind)
    if route == "/grad":
        r = fuzz_client.post("/grad", json={"network": doc, "inputs": XY})
        prefix = "network."
    else:
        r = fuzz_client.post("/networks", json=doc)
        prefix = ""
    err = error_of(r, 422)
    _check_error(err, codes, path, prefix)


_validator = Validator(max_elements=HARD_LIMITS["max_tensor_elements"], cache_size=64)


def _call(**flags: Any) -> GradCall:
    return GradCall(engine.GradOperation(**flags), "json", 1000.0)


@settings(max_examples=300, deadline=None, suppress_health_check=SUPPRESS, derandomize=True, database=None)
@given(random_networks(), st.booleans(), st.booleans())
def test_random_networks_in_process(doc, get_all, get_by_list):
    """What /grad runs in the server before a worker: parse, bind, abstract evaluation. A random
    graph with random attrs either validates or fails with a GradnetError that has a path."""
    try:
        net = engine.parse_network(doc, max_nodes=HARD_LIMITS["max_nodes"],
                                   max_elements=HARD_LIMITS["max_tensor_elements"])
        xs = _validator.bind_inputs(net, [engine.decode_tensor(t) for t in XY])
        _validator.validate(net, xs, _call(get_all=get_all, get_by_list=get_by_list))
        event("valid")
    except engine.GradnetError as exc:
        event(f"refused: {exc.code}")
        assert 400 <= status_of(exc) < 500 and exc.path, exc


@settings(max_examples=25, deadline=None, suppress_health_check=SUPPRESS, derandomize=True, database=None)
@given(random_networks(), st.booleans())
def test_random_networks_over_http(fuzz_client, doc, get_all):
    """Random graphs all the way to a worker when they validate: a 200 with finite-or-NaN gradients
    of the inputs' shape, or a 4xx with a path; never a 5xx."""
    r = fuzz_client.post("/grad", json={"network": doc, "inputs": XY, "get_all": get_all})
    event(f"status {r.status_code}")
    if r.status_code == 200:
        grads = r.json()["gradients"]
        for g in grads if get_all else [grads]:
            assert g["shape"] == [2, 3] and g["dtype"] == "float32"
    else:
        err = error_of(r, r.status_code)
        assert r.status_code in (413, 422), err
        assert err["path"], err


@settings(max_examples=200, deadline=None, suppress_health_check=SUPPRESS, derandomize=True, database=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=25,
), st.sampled_from(["network", "nodes", "node", "attrs", "inputs", "outputs", "parameters"]))
def test_arbitrary_json_anywhere_in_a_network(junk, where):
    """Any JSON value in any place of the tutorial network: parsed or refused with a GradnetError
    (with a path), never another exception."""
    doc = _tutorial_network()
    if where == "network":
        doc = junk
    elif where == "node":
        doc["nodes"][0] = junk
    elif where == "attrs":
        doc["nodes"][1]["attrs"] = junk
    else:
        doc[where] = junk
    try:
        engine.parse_network(doc, max_nodes=100, max_elements=10_000, path="network.")
    except engine.GradnetError as exc:
        assert 400 <= status_of(exc) < 500 and exc.path, exc


# -- the binary framing ----------------------------------------------------------------------------

DTYPES = ["float16", "float32", "float64", "int8", "int32", "int64", "uint8", "uint64", "bool", "bfloat16"]


@st.composite
def framed_requests(draw: Any) -> tuple[bytes, int, list[np.ndarray], list[bool]]:
    """A body in the binary framing: some tensors binary, some inline (data/b64), in JSON order."""
    arrays, binary = [], []
    tensors, chunks = [], []
    for _ in range(draw(st.integers(1, 4))):
        dtype = engine.dtypes.parse_dtype(draw(st.sampled_from(DTYPES)))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        raw = draw(st.binary(min_size=int(np.prod(shape)) * dtype.itemsize,
                             max_size=int(np.prod(shape)) * dtype.itemsize))
        array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
        arrays.append(array)
        as_binary = draw(st.booleans())
        binary.append(as_binary)
        if as_binary:
            tensors.append({"dtype": engine.dtypes.dtype_name(dtype), "shape": shape, "binary_data_size": len(raw)})
            chunks.append(raw)
        else:
            tensors.append(engine.encode_tensor(array, "b64"))
    json_part = orjson.dumps({"network_id": "sha256:x", "inputs": tensors})
    return json_part + b"".join(chunks), len(json_part), arrays, binary


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@settings(max_examples=300, deadline=None, suppress_health_check=SUPPRESS, derandomize=True, database=None)
@given(framed_requests())
def test_binary_framing_round_trips(framed):
    body, json_size, arrays, _ = framed
    parsed = codec.parse_body(body, {codec.BINARY_HEADER: str(json_size)})
    got = engine.decode_inputs(parsed.doc["inputs"], tensor=parsed.tensor)
    assert all(_same(g, a) for g, a in zip(got, arrays, strict=True))


@settings(max_examples=400, deadline=None, suppress_health_check=SUPPRESS, derandomize=True, database=None)
@given(framed_requests(), st.data())
def test_binary_framing_corrupted_is_a_400(framed, data):
    """A wrong header, or bytes cut from or added to the binary part, is refused with 400 (or, when
    the damage leaves a consistent framing, a 422 from the tensor codec), never another error."""
    body, json_size, arrays, binary = framed
    how = data.draw(st.sampled_from(["header", "cut", "extend", "garbage_header"]))
    header = str(json_size)
    if how == "header":
        delta = data.draw(st.integers(-json_size, len(body) + 9))
        header = str(json_size + (delta if delta < 0 else delta + 1))  # never the right length
    elif how == "garbage_header":
        header = data.draw(st.sampled_from(["", "-1", "1.5", "0x10", " ", "١٢", str(2**64), "nan"]))
    elif how == "cut":
        assume(len(body) > json_size)
        body = body[:-data.draw(st.integers(1, len(body) - json_size))]
    else:
        body = body + data.draw(st.binary(min_size=1, max_size=16))
    try:
        parsed = codec.parse_body(body, {codec.BINARY_HEADER: header})
        got = engine.decode_inputs(parsed.doc["inputs"], tensor=parsed.tensor)
    except BadRequestError as exc:
        assert status_of(exc) == 400 and exc.path, exc
        return
    except engine.GradnetError as exc:
        assert status_of(exc) == 422 and exc.path, exc
        return
    # accepted: only if the damage happened to leave the very same framing
    assert all(_same(g, a) for g, a in zip(got, arrays, strict=True))


def test_binary_framing_over_http(fuzz_client):
    """A smoke check that the framing the property tests exercise is the server's: one good body, one
    with the header off by one."""
    request = tutorial_request()
    raw = np.asarray(request["inputs"][0]["data"], dtype="<f4").tobytes()
    request["inputs"][0] = {"dtype": "float32", "shape": [2, 3], "binary_data_size": len(raw)}
    json_part = orjson.dumps(request)
    for header, status in ((len(json_part), 200), (len(json_part) + 1, 400)):
        r = fuzz_client.post("/grad", content=json_part + raw,
                             headers={"Inference-Header-Content-Length": str(header),
                                      "Content-Type": "application/octet-stream"})
        assert r.status_code == status, r.text

