"""MindSpore oracle for the functional-autodiff routes (API.md section 7).

Runs ONLY under the separate MindSpore virtualenv (never a dependency of the project)::

    /work/msvenv/bin/python tools/mindspore_functional_oracle.py          # writes tests/golden/mindspore/functional/
    /work/msvenv/bin/python tools/mindspore_functional_oracle.py --only hvp,jvp

For every case of ``tools/functional_cases.py`` it builds the same interpreter ``nn.Cell`` as
``tools/mindspore_oracle.py`` (CPU, PyNative) and runs the request through MindSpore 2.10's own
functional API:

- ``/grad`` (the functional form): ``mindspore.grad`` / ``mindspore.value_and_grad(fn,
  grad_position, weights, has_aux, return_ids)``; with ``sens_param`` the function differentiated is
  ``sum(sens_i * output_i)`` (mindspore.grad has no sens argument; the result is the same VJP);
  ``per_example_axes``: ``mindspore.vmap(grad_fn, in_axes)`` (``GradOperation`` for that form);
- ``/jvp``: ``ops.jvp(fn, inputs, tangents, has_aux)``;
- ``/vjp``: ``ops.vjp(fn, *inputs, weights=..., has_aux=...)`` and then ``vjp_fn(cotangents)``;
- ``/jacobian``: ``mindspore.jacrev`` / ``mindspore.jacfwd(fn, grad_position)``, and ``value`` = the
  outputs;
- ``/hvp``: ``jacfwd(jacrev(fn, grad_position), grad_position)`` contracted with the vectors (for
  position i, the sum over j of ``tensordot(H_ij, v_j)``);
- ``batched``: K separate MindSpore calls, one per vector, stacked on a leading axis.

Where MindSpore 2.10 disagrees with API.md the contract wins, and the case's note and
``tests/golden/mindspore/UNSUPPORTED.md`` (the section after the functional marker) say so:

- ``return_ids``: MindSpore 2.10 in PyNative pairs each id with row 0 of its gradient; the expected
  answer pairs it with the whole gradient (graph mode's answer, the contract), built from the
  same call with ``return_ids=False``;
- second order through ``SoftmaxCrossEntropyWithLogits`` and ``LogSoftmax``: the expected ``/hvp``
  is computed on the case's ``reference`` network (the same function from ops whose second order
  MindSpore gets right) and checked against a float64 central difference of MindSpore's own
  first-order gradient of the original network.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import functional_cases  # noqa: E402  (pure numpy)
import mindspore_oracle as mo  # noqa: E402  (imports MindSpore, sets PyNative + CPU)

ms, ops, Tensor = mo.ms, mo.ops, mo.Tensor

OUT_DIR = os.path.join(REPO, "tests", "golden", "mindspore", "functional")
UNSUPPORTED = os.path.join(REPO, "tests", "golden", "mindspore", "UNSUPPORTED.md")
MARKER = mo.FUNCTIONAL_MARKER


def conv(obj):
    """MindSpore result -> JSON-able tree: tuples as lists, tensors as wire tensors, ids kept."""
    if isinstance(obj, (tuple, list)):
        return [conv(o) for o in obj]
    if isinstance(obj, (int, str)) and not isinstance(obj, bool):
        return obj
    return mo.encode(np.asarray(obj.asnumpy()))


def to_np(obj):
    if isinstance(obj, (tuple, list)):
        return [to_np(o) for o in obj]
    if isinstance(obj, (int, str)):
        return obj
    return np.asarray(obj.asnumpy())


def stack(trees):
    """K trees of the same structure -> one tree with a leading K axis on every array."""
    first = trees[0]
    if isinstance(first, list):
        return [stack([t[i] for t in trees]) for i in range(len(first))]
    if isinstance(first, (int, str)):
        return first
    return np.stack(trees)


def enc(tree):
    if isinstance(tree, dict):
        return {k: enc(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [enc(t) for t in tree]
    if isinstance(tree, (int, str)):
        return tree
    return mo.encode(np.array(tree, order="C"))  # ascontiguousarray would make a 0-d array 1-d


def decode_list(v):
    return [mo.decode(t) for t in v] if isinstance(v, list) else mo.decode(v)


GEN_DIR = tempfile.mkdtemp(prefix="gradnet-ms-")
sys.path.insert(0, GEN_DIR)
_COUNTER = 0
_INTERP: dict[int, mo.GradNetCell] = {}


class _Compiled(mo.nn.Cell):
    """Base of the generated Cells (see :func:`compile_network`)."""


def compile_network(network: dict) -> mo.nn.Cell:
    """The network as an nn.Cell whose construct is straight-line code over primitive attributes.

    MindSpore 2.10's jvp, jacrev, jacfwd and vmap compile the function in graph mode, which the
    interpreter GradNetCell (a Python loop over kernels) does not survive. The same kernels and
    parameters are used; constants become Tensor attributes, numbers taking the dtype of the
    node's first tensor operand (found by one PyNative run of the interpreter on zero inputs is not
    possible without shapes, so it is found at the first call: see ``bind``)."""
    interp = mo.GradNetCell(network)
    names = interp.input_names
    src = [f"def construct(self, {', '.join(f'i{k}' for k in range(len(names)))}):"]
    var = {n: f"i{k}" for k, n in enumerate(names)}
    for k, (pname, _par) in enumerate(interp.param_by_name.items()):
        var[pname] = f"self.p{k}"
    consts = {}
    for i, kern in enumerate(interp.kernels):
        args = []
        for j, r in enumerate(kern.inputs):
            if isinstance(r, str):
                args.append(var[r] if r in var else var[r])
            else:
                consts[f"c{i}_{j}"] = (r, i)
                args.append(f"self.c{i}_{j}")
        call = f"({', '.join(args)},)" if kern.spec.variadic else ", ".join(args)
        extra = "".join(f", self.a{i}_{j}" for j in range(len(kern.call_args)))
        src.append(f"    v{i} = self.k{i}({call}{extra})")
        n_out = kern.spec.n_out
        var[kern.name] = f"v{i}"
        if n_out != 1:
            count = n_out if n_out > 0 else int(dict(network_node(network, kern.name).get("attrs") or {})
                                               .get("output_num", 1))
            for o in range(count):
                src.append(f"    v{i}_{o} = v{i}[{o}]")
                var[f"{kern.name}:{o}"] = f"v{i}_{o}"
        else:
            var[f"{kern.name}:0"] = f"v{i}"
    outs = [var[o] for o in interp.outputs]
    src.append(f"    return {outs[0]}" if len(outs) == 1 else f"    return ({', '.join(outs)},)")
    # graph mode parses construct's source, so the generated code goes to a real module file
    global _COUNTER
    _COUNTER += 1
    modname = f"gradnet_generated_{_COUNTER}"
    body = "import mindspore_functional_oracle as _f\n\n\nclass Net(_f._Compiled):\n" + "".join(
        "    " + ln + "\n" for ln in src)
    path = os.path.join(GEN_DIR, modname + ".py")
    with open(path, "w") as fh:
        fh.write(body)
    spec = importlib.util.spec_from_file_location(modname, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    spec.loader.exec_module(module)
    cell = module.Net()
    for k, (_pname, par) in enumerate(interp.param_by_name.items()):
        setattr(cell, f"p{k}", par)
    for i, kern in enumerate(interp.kernels):
        setattr(cell, f"k{i}", kern.fn)
        for j, a in enumerate(kern.call_args):
            setattr(cell, f"a{i}_{j}", a)
    cell.param_by_name = interp.param_by_name
    _INTERP[id(cell)] = interp  # not a Cell attribute: that would prefix the parameters' names
    cell.source = "\n".join(src)
    cell.pending_consts = consts
    return cell


def network_node(network, name):
    return next(n for n in network["nodes"] if n["name"] == name)


def bind(cell, xs):
    """Constants as Tensor attributes: {"const": t} as given; a number with the dtype of its node's
    first tensor operand, as seen by one run of the interpreter on these inputs."""
    if not cell.pending_consts:
        return
    env_dtypes = {}
    interp = _INTERP[id(cell)]
    env = dict(zip(interp.input_names, xs))
    env.update(interp.param_by_name)
    for k in interp.kernels:
        vals = interp._operands(env, k.inputs)
        env_dtypes[k.name] = vals
        res = k(*vals)
        if isinstance(res, (tuple, list)):
            for o, r in enumerate(res):
                env[f"{k.name}:{o}"] = r
        else:
            env[k.name] = env[f"{k.name}:0"] = res
    for i, kern in enumerate(interp.kernels):
        vals = env_dtypes[kern.name]
        for j, r in enumerate(kern.inputs):
            if not isinstance(r, str):
                setattr(cell, f"c{i}_{j}", vals[j])
    cell.pending_consts = {}


def setup(req, network=None):
    net = compile_network(network or req["network"])
    for pname, t in (req.get("parameters") or {}).items():
        net.param_by_name[pname].set_data(Tensor(mo.decode(t)))
    xs = [Tensor(mo.decode(t)) for t in req["inputs"]]
    bind(net, xs)
    return net, xs


def positions(gp):
    return tuple(gp) if isinstance(gp, list) else gp


def outputs_tree(out):
    return to_np(list(out) if isinstance(out, tuple) else out)


# ---------------------------------------------------------------------------------------------
# routes


def run_grad(req, notes):
    if "per_example_axes" in req:
        return run_per_example(req, notes)
    if "grad_position" not in req:  # the GradOperation form (API.md section 3), as tools/mindspore_oracle.py runs it
        tree, fwd, _inputs, _names, _net = mo.run_request(req)
        exp = {"gradients": tree}
        if req.get("return_value"):
            exp["value"] = fwd
        return exp
    net, xs = setup(req)
    gp = positions(req.get("grad_position", 0))
    weights = [net.param_by_name[n] for n in req["weights"]] if "weights" in req else None
    has_aux = bool(req.get("has_aux"))
    return_ids = bool(req.get("return_ids"))
    fn = net
    if req.get("sens_param"):
        sens = decode_list(req["sens"])
        sens = [Tensor(s) for s in (sens if isinstance(sens, list) else [sens])]

        def fn(*a):
            out = net(*a)
            out = out if isinstance(out, tuple) else (out,)
            total = 0
            for o, s in zip(out, sens):
                total = total + (o * s).sum()
            return total
    res = ms.value_and_grad(fn, gp, weights, has_aux, False)(*xs)
    value, grads = res
    exp = {"gradients": to_np(grads)}
    if return_ids:
        exp["gradients"] = pair_ids(exp["gradients"], req, notes, fn, gp, weights, has_aux, xs)
    if has_aux:
        # value_and_grad(has_aux) gives (outputs, grads); grad(has_aux) gives (grads, aux)
        g2, aux = ms.grad(fn, gp, weights, True, False)(*xs)
        exp["aux"] = to_np(list(aux))
        same(to_np(g2), to_np(grads), "grad(has_aux) vs value_and_grad(has_aux) gradients")
    if req.get("return_value"):
        exp["value"] = outputs_tree(net(*xs)) if req.get("sens_param") else outputs_tree(value)
        if has_aux:
            assert isinstance(exp["value"], list)
    return exp


def pair_ids(grads, req, notes, fn, gp, weights, has_aux, xs):
    """The contract's [id, whole gradient] pairs, and what MindSpore's PyNative return_ids gave."""
    ids_in = list(gp) if isinstance(gp, tuple) else ([gp] if gp is not None else [])
    names = list(req.get("weights") or [])

    def pair(g, ident):
        return [ident, g]

    if gp is not None and weights:
        in_part = grads[0]
        in_part = [pair(g, i) for g, i in zip(in_part, ids_in)] if isinstance(in_part, list) else pair(in_part, ids_in[0])
        w_part = [pair(g, n) for g, n in zip(grads[1], names)] if isinstance(grads[1], list) else pair(grads[1], names[0])
        expected = [in_part, w_part]
    elif gp is not None:
        expected = [pair(g, i) for g, i in zip(grads, ids_in)] if isinstance(grads, list) else pair(grads, ids_in[0])
    else:
        expected = [pair(g, n) for g, n in zip(grads, names)] if isinstance(grads, list) else pair(grads, names[0])
    got = to_np(ms.grad(fn, gp, weights, has_aux, True)(*xs))
    try:
        same(got, expected, "return_ids")
    except AssertionError:
        notes.append(("return_ids", f"MindSpore 2.10 PyNative return_ids gave {summarize(got)}; the contract's "
                                    f"(graph mode) answer is {summarize(expected)}"))
    return expected


def summarize(tree):
    if isinstance(tree, list):
        return "[" + ", ".join(summarize(t) for t in tree) + "]"
    if isinstance(tree, (int, str)):
        return repr(tree)
    return f"<{tree.dtype}{list(tree.shape)}>"


def run_per_example(req, notes):
    net, xs = setup(req)
    axes = tuple(req["per_example_axes"])
    if "grad_position" in req:
        gp = positions(req["grad_position"])
        weights = [net.param_by_name[n] for n in req["weights"]] if "weights" in req else None
        grad_fn = ms.grad(net, gp, weights)
    else:
        ga, gbl = bool(req.get("get_all")), bool(req.get("get_by_list"))
        weights = mo.ParameterTuple(net.trainable_params()) if gbl else None
        wrap = mo.GradWrap(net, ga, gbl, False, weights)
        grad_fn = wrap
    vm = to_np(ms.vmap(grad_fn, in_axes=axes)(*xs))
    # cross-check: one call per example, stacked
    k = next(x.shape[a] for x, a in zip(xs, axes) if a is not None)
    per = []
    for i in range(k):
        xi = [Tensor(np.take(x.asnumpy(), i, axis=a)) if a is not None else x for x, a in zip(xs, axes)]
        per.append(to_np(grad_fn(*xi)))
    same(vm, stack(per), "vmap vs one call per example")
    return {"gradients": vm}


def run_jvp(req, notes):
    net, xs = setup(req)
    has_aux = bool(req.get("has_aux"))
    tangents = [mo.decode(t) for t in req["tangents"]]
    ks = [None] if not req.get("batched") else list(range(tangents[0].shape[0]))
    results = []
    for k in ks:
        v = tuple(Tensor(t if k is None else t[k]) for t in tangents)
        # one input: a bare tensor (a tuple of one fails to compile with a tuple output in 2.10)
        res = ops.jvp(net, tuple(xs) if len(xs) > 1 else xs[0], v if len(v) > 1 else v[0], has_aux=has_aux)
        results.append(res)
    value = outputs_tree(results[0][0])
    jvps = [outputs_tree(r[1]) for r in results]
    exp = {"value": value, "jvp": jvps[0] if not req.get("batched") else stack(jvps)}
    if has_aux:
        exp["aux"] = outputs_tree(results[0][2])
    return exp


def run_vjp(req, notes):
    net, xs = setup(req)
    has_aux = bool(req.get("has_aux"))
    weights = [net.param_by_name[n] for n in req["weights"]] if "weights" in req else None
    cot = decode_list(req["cotangents"])
    res = ops.vjp(net, *xs, weights=weights, has_aux=has_aux)
    out, vjp_fn = res[0], res[1]
    k_count = (cot[0] if isinstance(cot, list) else cot).shape[0] if req.get("batched") else None
    grads = []
    for k in ([None] if k_count is None else range(k_count)):
        pick = (lambda a: a) if k is None else (lambda a, k=k: a[k])
        v = tuple(Tensor(pick(c)) for c in cot) if isinstance(cot, list) else Tensor(pick(cot))
        grads.append(to_np(vjp_fn(v)))
    exp = {"value": outputs_tree(out), "gradients": grads[0] if k_count is None else stack(grads)}
    if has_aux:
        exp["aux"] = outputs_tree(res[2])
    return exp


def run_jacobian(req, notes):
    net, xs = setup(req)
    gp = positions(req.get("grad_position", 0))
    jac = ms.jacfwd if req.get("mode", "reverse") == "forward" else ms.jacrev
    j = to_np(jac(net, gp)(*xs))
    return {"jacobian": j, "value": outputs_tree(net(*xs))}


def hessian_vector(net, xs, gp, vecs, batched):
    """jacfwd(jacrev(fn, gp), gp) contracted with the vectors; one tensor per position."""
    h = to_np(ms.jacfwd(ms.jacrev(net, gp), gp)(*xs))
    pos = list(gp) if isinstance(gp, tuple) else [gp]
    vlist = vecs if isinstance(vecs, list) else [vecs]
    if not isinstance(gp, tuple):
        h = [[h]]
    n_k = vlist[0].shape[0] if batched else None

    def contract(vs):
        return [sum(np.tensordot(h[i][j], vs[j], axes=vs[j].ndim) for j in range(len(pos))) for i in range(len(pos))]

    if batched:
        out = stack([contract([v[k] for v in vlist]) for k in range(n_k)])
    else:
        out = contract(vlist)
    return out if isinstance(gp, tuple) else out[0], h


def run_hvp(req, notes, case=None):
    gp = positions(req.get("grad_position", 0))
    vecs = decode_list(req["vectors"])
    batched = bool(req.get("batched"))
    net, xs = setup(req)
    own, _ = hessian_vector(net, xs, gp, vecs, batched)
    if case is None or "reference" not in case:
        return {"hvp": own}
    ref_net, _ = setup(req, case["reference"])
    want, _ = hessian_vector(ref_net, xs, gp, vecs, batched)
    # the reference is the same function: same first-order gradient as the original's MindSpore rule
    same(to_np(ms.grad(ref_net, gp)(*xs)), to_np(ms.grad(net, gp)(*xs)), "reference first order", rtol=1e-5)
    fd = fd_hvp(net, xs, gp, vecs)
    same(want, fd, "reference hvp vs central difference of MindSpore's first-order gradient", rtol=2e-3, atol=2e-4)
    notes.append(("second order", f"MindSpore 2.10's jacfwd(jacrev) through this network gives {fmt(own)}; a "
                                  f"central difference of its own first-order gradient gives {fmt(fd)}; expected "
                                  f"(API.md: the true derivative) {fmt(want)}, from the reference network "
                                  f"{'/'.join(n['op'] for n in case['reference']['nodes'])}"))
    return {"hvp": want}


def fd_hvp(net, xs, gp, vecs, eps=1e-2):
    """Central difference of MindSpore's first-order gradient along the vectors (float32 inputs:
    a rough check, good to ~1e-3)."""
    pos = list(gp) if isinstance(gp, tuple) else [gp]
    vlist = vecs if isinstance(vecs, list) else [vecs]

    def g_at(t):
        moved = list(xs)
        for p, v in zip(pos, vlist):
            moved[p] = Tensor((xs[p].asnumpy().astype(np.float64) + t * v).astype(xs[p].asnumpy().dtype))
        return to_np(ms.grad(net, gp)(*moved))

    plus, minus = g_at(eps), g_at(-eps)
    if isinstance(gp, tuple):
        return [(a - b) / (2 * eps) for a, b in zip(plus, minus)]
    return (plus - minus) / (2 * eps)


def fmt(tree):
    if isinstance(tree, list):
        return "[" + ", ".join(fmt(t) for t in tree) + "]"
    return np.array2string(np.asarray(tree, np.float64).reshape(-1)[:6], precision=4, separator=", ")


def same(a, b, what, rtol=1e-5, atol=1e-6):
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{what}: structure differs"
        for x, y in zip(a, b):
            same(x, y, what, rtol, atol)
        return
    if isinstance(a, (int, str)):
        assert a == b, what
        return
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol,
                               err_msg=what)


def as_float64(obj):
    """The request (or case) with every float32 tensor made float64, for the accuracy check."""
    if isinstance(obj, dict):
        if obj.get("dtype") == "float32" and "data" in obj:
            return dict(obj, dtype="float64")
        return {k: as_float64(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [as_float64(v) for v in obj]
    return obj


def float_leaves(tree):
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in float_leaves(tree[k])]
    if isinstance(tree, list):
        return [x for t in tree for x in float_leaves(t)]
    if isinstance(tree, np.ndarray) and tree.dtype.kind == "f":
        return [tree.astype(np.float64)]
    return []


def float32_error(c, exp):
    """How far MindSpore's float32 answer is from its own float64 answer to the same case (its
    float32 CPU kernels, Tanh for one, are less accurate than rtol 1e-5); None if float64 fails."""
    if "reference" in c:  # checked against a central difference instead (run_hvp)
        return None
    c64 = as_float64(c)
    try:
        exp64 = run_case(c64, [])
    except Exception:  # noqa: BLE001
        # jacrev/jacfwd of a float64 network fail to compile in 2.10 ("Type Join Failed: Float32,
        # Float64"): central differences in float64 instead; float32-only kernels (SoftmaxCE) fail
        try:
            exp64 = fd_float64(c64)
        except Exception:  # noqa: BLE001
            return None
        if exp64 is None:
            return None
    a, b = float_leaves(exp), float_leaves(exp64)
    if len(a) != len(b):
        return None
    excess = [np.abs(x - y) - c["rtol"] * np.abs(y) for x, y in zip(a, b) if x.size]
    return max((float(np.nanmax(e)) for e in excess), default=0.0)


def fd_float64(c, eps=1e-6):
    """/jacobian and /hvp of a float64 case by central differences (of the outputs, or of
    MindSpore's first-order gradient), in the expected answer's structure."""
    req = c["request"]
    net, xs = setup(req)
    gp = positions(req.get("grad_position", 0))
    if c["route"] == "/hvp":
        return {"hvp": fd_hvp(net, xs, gp, decode_list(req["vectors"]), eps=1e-5)} if not req.get("batched") else None
    if c["route"] != "/jacobian":
        return None
    pos = list(gp) if isinstance(gp, tuple) else [gp]
    out0 = net(*xs)
    multi = isinstance(out0, tuple)
    outs0 = [o.asnumpy() for o in (out0 if multi else (out0,))]
    jac = [[np.zeros(o.shape + tuple(xs[p].shape)) for p in pos] for o in outs0]
    for pi, p in enumerate(pos):
        base = xs[p].asnumpy()
        for idx in np.ndindex(base.shape):
            res = []
            for sgn in (1, -1):
                moved = list(xs)
                b = base.copy()
                b[idx] += sgn * eps
                moved[p] = Tensor(b)
                o = net(*moved)
                res.append([t.asnumpy() for t in (o if multi else (o,))])
            for oi in range(len(outs0)):
                jac[oi][pi][(Ellipsis,) + idx] = (res[0][oi] - res[1][oi]) / (2 * eps)
    tree = [j if isinstance(gp, tuple) else j[0] for j in jac]
    return {"jacobian": tree if multi else tree[0], "value": outs0 if multi else outs0[0]}


def run_case(c, notes):
    if c["route"] == "/hvp":
        return run_hvp(c["request"], notes, c)
    return RUNNERS[c["route"]](c["request"], notes)


RUNNERS = {"/grad": run_grad, "/jvp": run_jvp, "/vjp": run_vjp, "/jacobian": run_jacobian, "/hvp": run_hvp}


def main(argv=None) -> int:
    os.chdir(GEN_DIR)  # graph mode writes rank_0/ (its IR dumps) into the working directory
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=OUT_DIR)
    ap.add_argument("--only", help="comma-separated group names")
    args = ap.parse_args(argv)
    groups = functional_cases.cases_by_group()
    if args.only:
        groups = {g: groups[g] for g in args.only.split(",")}
    os.makedirs(args.out, exist_ok=True)
    differences: list[tuple[str, str, str]] = []
    failed: list[tuple[str, str]] = []
    for group, cases in groups.items():
        written = []
        for c in cases:
            notes: list[tuple[str, str]] = []
            try:
                exp = run_case(c, notes)
            except Exception as e:  # noqa: BLE001 - recorded, not faked
                failed.append((c["id"], mo._short_error(e)))
                print(f"  FAILED {c['id']}: {mo._short_error(e).splitlines()[0]}")
                continue
            rec = {"id": c["id"], "route": c["route"], "request": c["request"], "expected": enc(exp),
                   "rtol": c["rtol"], "atol": c["atol"]}
            note = c.get("note", "")
            err = float32_error(c, exp)
            if err is not None and err > c["atol"] / 2:
                # wide enough for MindSpore's float32 value and an accurate one (as the other golden files)
                rec["atol"] = float(f"{2 * err:.0e}") if float(f"{2 * err:.0e}") >= 2 * err else float(f"{4 * err:.0e}")
                note = ((note + ". ") if note else "") + (
                    f"atol {rec['atol']:g}: MindSpore's float32 answer differs from its float64 answer to the same "
                    f"case by up to {err:.1e} beyond rtol {c['rtol']:g}")
            for kind, text in notes:
                differences.append((c["id"], kind, text))
            if any(k == "second order" for k, _ in notes):
                note = ((note + ". ") if note else "") + (
                    "API.md: where MindSpore's own second order is wrong the true derivative is the contract; "
                    "expected is MindSpore's jacfwd(jacrev) of a rewritten network with the same function and "
                    "first-order gradient (UNSUPPORTED.md has MindSpore's own answer)")
            if note:
                rec["note"] = note
            written.append(rec)
        doc = {"generator": "tools/functional_cases.py, expected computed by tools/mindspore_functional_oracle.py "
                            f"(MindSpore {ms.__version__}, CPU, PyNative)",
               "mindspore": ms.__version__, "cases": written}
        with open(os.path.join(args.out, f"{group}.json"), "w") as fh:
            json.dump(doc, fh, indent=None, separators=(",", ":"), allow_nan=False)
            fh.write("\n")
        print(f"{group}: {len(written)}/{len(cases)} cases written")
    if not args.only:
        write_unsupported(differences, failed)
    return 1 if failed else 0


KNOWN_LIMITS = [
    "**Graph mode for jvp, jacrev, jacfwd and vmap.** They compile the function, so the oracle runs each "
    "network as a generated Cell with straight-line construct code (`compile_network`); the interpreter Cell "
    "of `tools/mindspore_oracle.py` does not compile.",
    "**Second order through Square** fails: `Bprop \"PowTensorScalar\" encounter a problem: [For "
    "PowTensorScalar, got an invalid 'exponent' type: Float64` (jacfwd(jacrev) on a network with Square). The "
    "cases' networks spell squares as Mul(d, d).",
    "**jacrev/jacfwd of a float64 network** fail to compile (`Type Join Failed: dtype1 = Float32, dtype2 = "
    "Float64`), so the accuracy check of `/jacobian` and `/hvp` cases (MindSpore's float32 answer against an "
    "accurate one, which sets a case's atol) uses float64 central differences.",
    "**jvp with one input**: `ops.jvp(fn, (x,), (v,))` with a tuple output fails (`Type Join Failed: Abstract "
    "type AbstractTuple cannot join with AbstractTensor`); the oracle passes the bare tensors.",
    "**return_ids in PyNative**: API.md says MindSpore pairs an id with row 0 of its gradient there. This "
    "oracle's PyNative calls (`mindspore.grad(cell, grad_position, weights, return_ids=True)`) returned "
    "`[id, whole gradient]`, graph mode's answer, for every return_ids case; the row-0 behaviour was not "
    "reproduced. The expected answers are `[id, whole gradient]` either way.",
    "**Second order through SoftmaxCrossEntropyWithLogits and LogSoftmax**: MindSpore's jacfwd(jacrev) gives "
    "a zero Hessian through both (API.md says a wrong one through LogSoftmax; measured here: zero). The cases "
    "above expect the true derivative.",
    "**float32 accuracy**: MindSpore's float32 CPU answers (the Tanh networks most) differ from its float64 "
    "answers by up to ~4e-5; such cases carry a wider atol and say so in their note.",
]


def write_unsupported(differences, failed):
    text = open(UNSUPPORTED).read() if os.path.exists(UNSUPPORTED) else ""
    head = text.split(MARKER)[0].rstrip("\n")
    lines = [MARKER, "", "## Functional routes (API.md section 7): where the contract overrides MindSpore", "",
             f"Written by `tools/mindspore_functional_oracle.py` (MindSpore {ms.__version__}, CPU, PyNative) for "
             "`tests/golden/mindspore/functional/`. Each case below expects the contract's answer; what "
             "MindSpore itself returned is given here.", ""]
    lines += [f"- `{cid}` ({kind}): {text}" for cid, kind, text in differences] or ["None."]
    lines += ["", "### MindSpore 2.10 limits met while making these cases", ""]
    lines += [f"- {t}" for t in KNOWN_LIMITS]
    lines += ["", "### Functional cases MindSpore could not compute", ""]
    lines += [f"- `{cid}`: {err.splitlines()[0]}" for cid, err in failed] or ["None: every generated case ran."]
    with open(UNSUPPORTED, "w") as fh:
        fh.write(head + "\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
