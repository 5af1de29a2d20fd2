"""The functional-autodiff golden files themselves (tests/golden/mindspore/functional/*.json):
their structure, and that they are what tools/functional_cases.py generates now.

The files are written by tools/mindspore_functional_oracle.py (MindSpore 2.10; see tools/README.md);
the test that runs them against the service lives with the routes. No engine or server here.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONAL = ROOT / "tests" / "golden" / "mindspore" / "functional"

DTYPES = {"float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
          "uint32", "uint64", "bool"}
NON_FINITE = {"NaN", "Infinity", "-Infinity"}
CASE_KEYS = {"id", "route", "request", "expected", "rtol", "atol"}
# route -> (request fields it must have, answer fields expected must have, answer fields it may have)
ROUTES = {
    "/grad": (set(), {"gradients"}, {"value", "aux"}),
    "/jvp": ({"tangents"}, {"value", "jvp"}, {"aux"}),
    "/vjp": ({"cotangents"}, {"value", "gradients"}, {"aux"}),
    "/jacobian": (set(), {"jacobian", "value"}, {"aux"}),
    "/hvp": ({"vectors"}, {"hvp"}, set()),
}


def _files() -> list[Path]:
    return sorted(FUNCTIONAL.glob("*.json"))


def _cases() -> list[tuple[str, dict]]:
    return [(p.stem, c) for p in _files() for c in json.loads(p.read_text())["cases"]]


def _is_tensor(obj) -> bool:
    return isinstance(obj, dict) and "dtype" in obj


def check_tensor(t: dict, where: str) -> None:
    assert set(t) == {"dtype", "shape", "data"}, f"{where}: tensor keys {sorted(t)}"
    assert t["dtype"] in DTYPES, f"{where}: dtype {t['dtype']!r}"
    shape = t["shape"]
    assert isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape), f"{where}: shape {shape}"
    data = t["data"]
    assert isinstance(data, list), f"{where}: data must be a flat list"
    assert len(data) == math.prod(shape), f"{where}: {len(data)} values for shape {shape}"
    for v in data:
        if t["dtype"] == "bool":
            assert isinstance(v, bool), f"{where}: {v!r} in a bool tensor"
        elif t["dtype"].startswith(("int", "uint")):
            assert isinstance(v, int) and not isinstance(v, bool), f"{where}: {v!r} in an integer tensor"
        else:
            assert (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)) or v in NON_FINITE, \
                f"{where}: {v!r} in a float tensor"


def tensors(tree, where: str):
    """Every tensor in an answer tree, with its path; ids (int or str) allowed only as [id, tensor]."""
    if _is_tensor(tree):
        check_tensor(tree, where)
        yield where, tree
    elif isinstance(tree, list):
        if len(tree) == 2 and isinstance(tree[0], (int, str)) and not isinstance(tree[0], bool):
            yield from tensors(tree[1], f"{where}[1]")  # a return_ids pair
        else:
            assert tree, f"{where}: empty list"
            for i, t in enumerate(tree):
                yield from tensors(t, f"{where}[{i}]")
    else:
        raise AssertionError(f"{where}: {type(tree).__name__} is neither a tensor nor a list")


def shape_of(tree):
    if _is_tensor(tree):
        return tuple(tree["shape"])
    return [shape_of(t) for t in tree]


def test_files_present_and_headed():
    files = _files()
    assert files, f"no golden files in {FUNCTIONAL}: run tools/mindspore_functional_oracle.py (tools/README.md)"
    for p in files:
        doc = json.loads(p.read_text())
        assert set(doc) == {"generator", "mindspore", "cases"}, f"{p.name}: keys {sorted(doc)}"
        assert doc["mindspore"] == "2.10.0", p.name
        assert doc["cases"], f"{p.name}: no cases"


def test_ids_unique():
    ids = [c["id"] for _, c in _cases()]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    assert not dup, f"duplicate ids: {dup}"


@pytest.mark.parametrize("group,case", _cases(), ids=[c["id"] for _, c in _cases()])
def test_case_structure(group, case):
    assert CASE_KEYS <= set(case) <= CASE_KEYS | {"note"}, sorted(case)
    assert case["route"] in ROUTES, case["route"]
    assert isinstance(case["rtol"], float) and isinstance(case["atol"], float) and case["rtol"] >= 0 < case["atol"]
    need_req, need_exp, may_exp = ROUTES[case["route"]]
    req, exp = case["request"], case["expected"]
    net = req["network"]
    assert net["format"] == "gradnet/1" and net["nodes"] and net["outputs"], "request.network"
    assert isinstance(req["inputs"], list) and len(req["inputs"]) == len(net["inputs"]), "request.inputs"
    for i, t in enumerate(req["inputs"]):
        check_tensor(t, f"request.inputs[{i}]")
    for p in net.get("parameters", []):
        check_tensor(p["value"], f"parameter {p['name']}")
    assert need_req <= set(req), f"request lacks {sorted(need_req - set(req))}"
    if "grad_position" in req:
        assert not (req.get("get_all") or req.get("get_by_list")), "mixes the GradOperation and grad forms"
    names = {p["name"] for p in net.get("parameters", [])}
    assert set(req.get("weights", [])) <= names, "weights name unknown parameters"
    for field in ("tangents", "cotangents", "vectors", "sens"):
        if field in req:
            list(tensors(req[field], f"request.{field}"))
    assert need_exp <= set(exp) <= need_exp | may_exp, f"expected keys {sorted(exp)}"
    assert "network_id" not in exp and "timing_ms" not in exp
    for key, tree in exp.items():
        assert list(tensors(tree, f"expected.{key}")), f"expected.{key} holds no tensor"
    if req.get("has_aux"):
        assert "aux" in exp, "has_aux without aux"


@pytest.mark.parametrize("group,case", [gc for gc in _cases() if gc[1]["route"] in ("/jvp", "/hvp", "/jacobian")],
                         ids=[c["id"] for _, c in _cases() if c["route"] in ("/jvp", "/hvp", "/jacobian")])
def test_answer_shapes_follow_the_inputs(group, case):
    """jvp has the outputs' shapes, hvp the positions' inputs' shapes (each with K in front when
    batched), a jacobian output shape + input shape."""
    req, exp = case["request"], case["expected"]
    ins = [tuple(t["shape"]) for t in req["inputs"]]
    value = shape_of(exp["value"]) if "value" in exp else None
    if case["route"] == "/jvp":
        k = (req["tangents"][0]["shape"][0],) if req.get("batched") else ()
        outs = value if isinstance(value, list) else [value]
        jvps = shape_of(exp["jvp"])
        jvps = jvps if isinstance(jvps, list) else [jvps]
        assert len(jvps) == len(outs) and all(j == k + o for j, o in zip(jvps, outs)), (jvps, outs)
    elif case["route"] == "/hvp":
        gp = req.get("grad_position", 0)
        pos = gp if isinstance(gp, list) else [gp]
        vecs = req["vectors"] if isinstance(req["vectors"], list) else [req["vectors"]]
        k = (vecs[0]["shape"][0],) if req.get("batched") else ()
        got = shape_of(exp["hvp"])
        got = got if isinstance(gp, list) else [got]
        assert got == [k + ins[p] for p in pos]
    else:
        gp = req.get("grad_position", 0)
        pos = gp if isinstance(gp, list) and len(gp) > 1 else [gp[0] if isinstance(gp, list) else gp]
        outs = value if isinstance(value, list) else [value]
        jac = shape_of(exp["jacobian"])
        jac = jac if isinstance(value, list) else [jac]
        for o, per_out in zip(outs, jac):
            per_pos = per_out if len(pos) > 1 else [per_out]
            assert per_pos == [o + ins[p] for p in pos], (per_pos, o)


def test_files_match_generator():
    """The golden requests are what tools/functional_cases.py generates now (else regenerate)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import functional_cases
    finally:
        sys.path.pop(0)
    generated = {g: {c["id"]: (c["route"], c["request"]) for c in cs}
                 for g, cs in functional_cases.cases_by_group().items()}
    golden = {p.stem: {c["id"]: (c["route"], c["request"]) for c in json.loads(p.read_text())["cases"]}
              for p in _files()}
    assert sorted(golden) == sorted(generated), "golden files and generator groups differ"
    for g in generated:
        missing = sorted(set(generated[g]) - set(golden[g]))
        stale = sorted(i for i in golden[g] if golden[g][i] != generated[g].get(i))
        assert not missing and not stale, f"{g}: regenerate (tools/README.md): missing {missing}, stale {stale}"


def _grad_layout(req: dict, ins: list, params: dict):
    """The shapes /grad's `gradients` must have (API.md sections 3 and 7), as a tree; with
    return_ids each tensor is [id, tensor]."""
    ids = bool(req.get("return_ids"))

    def leaf(shape, ident):
        return [ident, shape] if ids else shape

    if "grad_position" not in req:  # GradOperation form
        trainable = [p["name"] for p in req["network"].get("parameters", []) if p.get("requires_grad", True)]
        weights = [leaf(params[n], n) for n in req.get("weights", trainable)]
        inputs = [leaf(s, i) for i, s in enumerate(ins)]
        ga, gbl = bool(req.get("get_all")), bool(req.get("get_by_list"))
        if ga and gbl:
            return [inputs, weights]
        return inputs if ga else weights if gbl else inputs[0]
    gp = req["grad_position"]
    if isinstance(gp, list) and len(gp) == 1:
        gp = gp[0]
    part = None
    if isinstance(gp, int):
        part = leaf(ins[gp], gp)
    elif isinstance(gp, list):
        part = [leaf(ins[p], p) for p in gp]
    if "weights" not in req:
        return part
    weights = [leaf(params[n], n) for n in req["weights"]]
    return weights if part is None else [part, weights]


def _ids_and_shapes(tree):
    if _is_tensor(tree):
        return tuple(tree["shape"])
    if len(tree) == 2 and isinstance(tree[0], (int, str)):
        return [tree[0], _ids_and_shapes(tree[1])]
    return [_ids_and_shapes(t) for t in tree]


def _drop_axis(tree, k):
    """Per-example layout: each gradient gains the examples' count K in front."""
    if isinstance(tree, tuple):
        return (k,) + tree
    if len(tree) == 2 and isinstance(tree[0], (int, str)):
        return [tree[0], _drop_axis(tree[1], k)]
    return [_drop_axis(t, k) for t in tree]


@pytest.mark.parametrize("group,case", [gc for gc in _cases() if gc[1]["route"] == "/grad"],
                         ids=[c["id"] for _, c in _cases() if c["route"] == "/grad"])
def test_grad_layout_follows_the_arguments(group, case):
    req = case["request"]
    ins = [tuple(t["shape"]) for t in req["inputs"]]
    params = {p["name"]: tuple(p["value"]["shape"]) for p in req["network"].get("parameters", [])}
    axes = req.get("per_example_axes")
    if axes is not None:
        k = next(s[a] for s, a in zip(ins, axes) if a is not None)
        one = [s[:a] + s[a + 1:] if a is not None else s for s, a in zip(ins, axes)]
        want = _drop_axis(_grad_layout(req, one, params), k)
    else:
        want = _grad_layout(req, ins, params)
    assert _ids_and_shapes(case["expected"]["gradients"]) == want
