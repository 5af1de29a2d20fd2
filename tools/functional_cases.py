"""Deterministic generator of the functional-autodiff golden cases (API.md section 7).

Pure numpy + stdlib: this module never imports MindSpore. ``tools/mindspore_functional_oracle.py``
(run under /work/msvenv) runs every case through MindSpore 2.10's functional API
(``mindspore.grad``, ``value_and_grad``, ``ops.jvp``, ``ops.vjp``, ``jacrev``, ``jacfwd``,
``vmap``) and writes ``tests/golden/mindspore/functional/<group>.json``.

A case here is ``{"id", "route", "request", "rtol", "atol", "note"?, "reference"?}``:
``request`` is the full HTTP JSON body of ``route`` (API.md section 7, tensors as
``{"dtype", "shape", "data"}``); the oracle adds ``expected``. ``reference`` (never written to the
golden file) is a rewritten network with the same first-order rules whose second derivative
MindSpore gets right: the oracle computes the expected answer on it where MindSpore's own second
order is wrong (API.md: the true derivative is the contract there), and says so in the note.

Random data is drawn per case from ``np.random.default_rng([SEED, crc32(case id)])``.

Usage::

    python tools/functional_cases.py            # cases per group and per route
"""

from __future__ import annotations

import sys
import zlib
from collections import Counter
from typing import Any

import numpy as np
from conformance_cases import tensor  # noqa: E402  (same wire encoding as the other golden files)

SEED = 20261201
RTOL, ATOL = 1e-5, 1e-6


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng([SEED, zlib.crc32(name.encode("utf-8"))])


def uni(r, shape, lo=-1.5, hi=1.5, dtype="float32") -> np.ndarray:
    return r.uniform(lo, hi, size=shape).astype(dtype)


def node(name: str, op: str, inputs: list, **attrs) -> dict:
    d = {"name": name, "op": op, "inputs": list(inputs)}
    if attrs:
        d["attrs"] = attrs
    return d


def network(name: str, inputs: list[str], nodes: list[dict], outputs, params=()) -> dict:
    return {"format": "gradnet/1", "name": name, "inputs": [{"name": n} for n in inputs],
            "parameters": [{"name": p, "value": tensor(v), "requires_grad": True} for p, v in params],
            "nodes": nodes, "outputs": outputs if isinstance(outputs, list) else [outputs]}


# ---------------------------------------------------------------------------------------------
# networks


def mlp(r, outputs=("loss",)) -> tuple[dict, list[np.ndarray]]:
    """A scalar regression loss: mean((tanh(x @ w + b) - y) ** 2); x [3, 4], y [3, 2]. Squares are
    Mul(d, d): MindSpore 2.10 cannot take Square's second derivative (UNSUPPORTED.md)."""
    nodes = [node("mm", "MatMul", ["x", "w"]), node("z", "Add", ["mm", "b"]), node("t", "Tanh", ["z"]),
             node("d", "Sub", ["t", "y"]), node("sq", "Mul", ["d", "d"]),
             node("loss", "ReduceMean", ["sq"], axis=[], keep_dims=False)]
    net = network("mlp", ["x", "y"], nodes, list(outputs), [("w", uni(r, (4, 2))), ("b", uni(r, (2,), -0.5, 0.5))])
    return net, [uni(r, (3, 4)), uni(r, (3, 2), -0.9, 0.9)]


def two_out(r) -> tuple[dict, list[np.ndarray]]:
    """Two outputs: sin(x) * (y + p) [2, 3] and sum(exp(x * y), axis 1) [2]; x [2, 3], y [3]."""
    nodes = [node("s", "Sin", ["x"]), node("yp", "Add", ["y", "p"]), node("o0", "Mul", ["s", "yp"]),
             node("xy", "Mul", ["x", "y"]), node("e", "Exp", ["xy"]),
             node("o1", "ReduceSum", ["e"], axis=[1], keep_dims=False)]
    net = network("two-out", ["x", "y"], nodes, ["o0", "o1"], [("p", uni(r, (3,)))])
    return net, [uni(r, (2, 3)), uni(r, (3,))]


def scalar_xy(r) -> tuple[dict, list[np.ndarray]]:
    """A scalar of two inputs with cross terms: sum(sin(x * y) * x) + sum(y ** 2 * x); x, y [3]."""
    nodes = [node("xy", "Mul", ["x", "y"]), node("s", "Sin", ["xy"]), node("sx", "Mul", ["s", "x"]),
             node("r1", "ReduceSum", ["sx"], axis=[], keep_dims=False), node("y2", "Mul", ["y", "y"]),
             node("yx", "Mul", ["y2", "x"]), node("r2", "ReduceSum", ["yx"], axis=[], keep_dims=False),
             node("f", "Add", ["r1", "r2"])]
    return network("scalar-xy", ["x", "y"], nodes, "f"), [uni(r, (3,)), uni(r, (3,))]


def matvec(r) -> tuple[dict, list[np.ndarray]]:
    """out = tanh(x @ w) [1, 2] and x * x [1, 3]; x [1, 3], w a parameter [3, 2]."""
    nodes = [node("mm", "MatMul", ["x", "w"]), node("o0", "Tanh", ["mm"]), node("o1", "Mul", ["x", "x"])]
    return network("matvec", ["x"], nodes, ["o0", "o1"], [("w", uni(r, (3, 2)))]), [uni(r, (1, 3))]


def softmax_ce(r) -> tuple[dict, dict, list[np.ndarray]]:
    """mean(SoftmaxCrossEntropyWithLogits(x @ w, labels)); labels rows sum to 1. And its reference:
    the same loss as logsumexp(z) - labels . z per row (equal when the rows sum to 1)."""
    lab = r.uniform(0.1, 1.0, size=(2, 4))
    lab = (lab / lab.sum(axis=1, keepdims=True)).astype("float32")
    w = uni(r, (3, 4))
    nodes = [node("z", "MatMul", ["x", "w"]), node("sce", "SoftmaxCrossEntropyWithLogits", ["z", "labels"]),
             node("loss", "ReduceMean", ["sce:0"], axis=[], keep_dims=False)]
    ref = [node("z", "MatMul", ["x", "w"]), node("e", "Exp", ["z"]),
           node("se", "ReduceSum", ["e"], axis=[1], keep_dims=False), node("lse", "Log", ["se"]),
           node("lz", "Mul", ["labels", "z"]), node("dot", "ReduceSum", ["lz"], axis=[1], keep_dims=False),
           node("row", "Sub", ["lse", "dot"]), node("loss", "ReduceMean", ["row"], axis=[], keep_dims=False)]
    return (network("softmax-ce", ["x", "labels"], nodes, "loss", [("w", w)]),
            network("softmax-ce-reference", ["x", "labels"], ref, "loss", [("w", w)]),
            [uni(r, (2, 3)), lab])


def log_softmax(r) -> tuple[dict, dict, list[np.ndarray]]:
    """sum(LogSoftmax(x) * c); its reference spells LogSoftmax as x - log(sum(exp(x)))."""
    nodes = [node("ls", "LogSoftmax", ["x"], axis=-1), node("m", "Mul", ["ls", "c"]),
             node("f", "ReduceSum", ["m"], axis=[], keep_dims=False)]
    ref = [node("e", "Exp", ["x"]), node("se", "ReduceSum", ["e"], axis=[1], keep_dims=True),
           node("lse", "Log", ["se"]), node("ls", "Sub", ["x", "lse"]), node("m", "Mul", ["ls", "c"]),
           node("f", "ReduceSum", ["m"], axis=[], keep_dims=False)]
    return (network("log-softmax", ["x", "c"], nodes, "f"), network("log-softmax-reference", ["x", "c"], ref, "f"),
            [uni(r, (2, 3)), uni(r, (2, 3), 0.2, 1.0)])


def softmax_ce_rule() -> tuple[dict, list[np.ndarray]]:
    """SoftmaxCrossEntropyWithLogits with label rows that do not sum to 1: its backward (and so
    its forward-mode rule) is MindSpore's (softmax - labels) * dloss, not the loss's derivative."""
    nodes = [node("sce", "SoftmaxCrossEntropyWithLogits", ["logits", "labels"])]
    return (network("softmax-ce-rule", ["logits", "labels"], nodes, "sce:0"),
            [np.array([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]], np.float32),
             np.array([[0.5, 0.5, 0.5], [0.2, 0.0, 0.0]], np.float32)])


def constants(r) -> tuple[dict, list[np.ndarray]]:
    """Constants as node inputs (API.md section 6): numbers take the tensor operand's dtype."""
    c = uni(r, (3,))
    nodes = [node("a", "Mul", ["x", 2.0]), node("b", "Add", ["a", {"const": tensor(c)}]),
             node("p", "Pow", ["b", 2]), node("q", "Sub", [3.0, "p"]), node("m", "Mul", ["q", "y"]),
             node("f", "ReduceSum", ["m"], axis=[], keep_dims=False)]
    return network("constants", ["x", "y"], nodes, "f"), [uni(r, (2, 3)), uni(r, (2, 3))]


def per_example(r) -> tuple[dict, list[np.ndarray]]:
    """One example: x [3], y []: (tanh(sum(x * w)) - y) ** 2 with w a parameter [3]."""
    nodes = [node("xw", "Mul", ["x", "w"]), node("s", "ReduceSum", ["xw"], axis=[], keep_dims=False),
             node("t", "Tanh", ["s"]), node("d", "Sub", ["t", "y"]), node("loss", "Square", ["d"])]
    return network("per-example", ["x", "y"], nodes, "loss", [("w", uni(r, (3,)))]), [uni(r, (4, 3)), uni(r, (4,))]


# ---------------------------------------------------------------------------------------------
# cases


def case(cid: str, route: str, net: dict, inputs: list[np.ndarray], note: str | None = None, **fields) -> dict:
    req: dict[str, Any] = {"network": net, "inputs": [tensor(a) for a in inputs]}
    for k, v in fields.items():
        if k in ("tangents", "cotangents", "vectors", "sens"):
            v = [tensor(a) for a in v] if isinstance(v, (list, tuple)) else tensor(v)
        req[k] = v
    c = {"id": cid, "route": route, "request": req, "rtol": RTOL, "atol": ATOL}
    if note:
        c["note"] = note
    return c


def group_grad() -> list[dict]:
    """POST /grad in the mindspore.grad / value_and_grad form."""
    out = []

    def mk(cid, outputs=("loss",), note=None, **f):
        net, xs = mlp(rng_for("mlp"), outputs)
        out.append(case(cid, "/grad", net, xs, note, **f))

    mk("grad-position-0", grad_position=0)
    mk("grad-position-list", grad_position=[0, 1])
    mk("grad-position-one-element-list", grad_position=[1],
       note="a one-element grad_position list gives a bare tensor, not a list of one")
    mk("grad-weights-only", grad_position=None, weights=["w", "b"])
    mk("grad-one-weight", grad_position=None, weights=["b"])
    mk("grad-position-and-weights", grad_position=0, weights=["w", "b"])
    mk("grad-position-list-and-weights", grad_position=[0, 1], weights=["b"])
    mk("grad-return-value", grad_position=0, return_value=True)
    mk("grad-return-value-weights", grad_position=[0, 1], weights=["w"], return_value=True)
    mk("grad-has-aux", outputs=("loss", "t"), grad_position=0, has_aux=True)
    mk("grad-has-aux-two", outputs=("loss", "t", "z"), grad_position=[0], weights=["w"], has_aux=True)
    mk("grad-has-aux-return-value", outputs=("loss", "t"), grad_position=[0, 1], has_aux=True, return_value=True)
    ids_note = ("return_ids: each gradient is [id, gradient], the input position or the parameter name. "
                "API.md: graph mode's [id, whole gradient] is the contract; MindSpore 2.10 in PyNative pairs the "
                "id with row 0 of the gradient (recorded in UNSUPPORTED.md), so this is graph mode's answer")
    mk("grad-return-ids", grad_position=[0, 1], weights=["w", "b"], return_ids=True, note=ids_note)
    mk("grad-return-ids-int", grad_position=0, return_ids=True, note=ids_note)
    mk("grad-return-ids-weights", grad_position=None, weights=["w"], return_ids=True, note=ids_note)
    r = rng_for("grad-sens")
    mk("grad-sens", grad_position=[0, 1], sens_param=True, sens=np.array(2.5, np.float32))
    net, xs = two_out(rng_for("two-out"))
    out.append(case("grad-multi-output", "/grad", net, xs, "every output gets a cotangent of ones; their "
                    "gradients add up", grad_position=[0, 1], return_value=True))
    out.append(case("grad-multi-output-weights", "/grad", net, xs, None, grad_position=None, weights=["p"]))
    out.append(case("grad-multi-output-sens", "/grad", net, xs, None, grad_position=0, sens_param=True,
                    sens=[uni(r, (2, 3)), uni(r, (2,))], return_value=True))
    return out


def group_jvp() -> list[dict]:
    out = []
    net, xs = two_out(rng_for("two-out"))
    r = rng_for("jvp")
    t2 = [uni(r, (2, 3)), uni(r, (3,))]
    out.append(case("jvp-multi-output", "/jvp", net, xs, None, tangents=t2))
    netm, xm = mlp(rng_for("mlp"))
    out.append(case("jvp-scalar", "/jvp", netm, xm, "one output: jvp is a tensor",
                    tangents=[uni(r, (3, 4)), uni(r, (3, 2))]))
    neta, xa = mlp(rng_for("mlp"), ("loss", "t"))
    out.append(case("jvp-has-aux", "/jvp", neta, xa, "has_aux: only the first output is differentiated",
                    tangents=[uni(r, (3, 4)), uni(r, (3, 2))], has_aux=True))
    netv, xv = matvec(rng_for("matvec"))
    out.append(case("jvp-one-input", "/jvp", netv, xv, "tangents is a list, one per input, also for one input",
                    tangents=[uni(r, (1, 3))]))
    nets, xss = softmax_ce_rule()
    out.append(case("jvp-softmax-cross-entropy-rule", "/jvp", nets, xss, "forward mode follows MindSpore's backward "
                    "rule: the loss's tangent is sum((softmax - labels) * t_logits) whatever the labels sum to, "
                    "and the labels' tangent is ignored", tangents=[uni(r, (2, 3)), uni(r, (2, 3))]))
    out.append(case("jvp-batched", "/jvp", net, xs, "batched: K = 3 tangents per input; jvp gains a leading K "
                    "axis, value stays unbatched (expected: K separate MindSpore calls stacked)",
                    tangents=[uni(r, (3, 2, 3)), uni(r, (3, 3))], batched=True))
    return out


def group_vjp() -> list[dict]:
    out = []
    r = rng_for("vjp")
    net, xs = two_out(rng_for("two-out"))
    c2 = [uni(r, (2, 3)), uni(r, (2,))]
    out.append(case("vjp-multi-output", "/vjp", net, xs, None, cotangents=c2))
    out.append(case("vjp-weights", "/vjp", net, xs, "with weights: [inputs part, weights part]", cotangents=c2,
                    weights=["p"]))
    netm, xm = mlp(rng_for("mlp"))
    out.append(case("vjp-scalar", "/vjp", netm, xm, "one output: cotangents is a tensor",
                    cotangents=np.array(1.5, np.float32)))
    out.append(case("vjp-scalar-weights", "/vjp", netm, xm, None, cotangents=np.array(-0.5, np.float32),
                    weights=["w", "b"]))
    neta, xa = mlp(rng_for("mlp"), ("loss", "t"))
    out.append(case("vjp-has-aux", "/vjp", neta, xa, "has_aux: only the first output is differentiated",
                    cotangents=np.array(2.0, np.float32), has_aux=True))
    out.append(case("vjp-has-aux-weights", "/vjp", neta, xa, None, cotangents=np.array(0.5, np.float32),
                    weights=["b"], has_aux=True))
    netv, xv = matvec(rng_for("matvec"))
    out.append(case("vjp-one-input", "/vjp", netv, xv, None, cotangents=[uni(r, (1, 2)), uni(r, (1, 3))]))
    out.append(case("vjp-batched", "/vjp", net, xs, "batched: K = 2 cotangents per output; gradients gain a "
                    "leading K axis, value stays unbatched (expected: K separate MindSpore calls stacked)",
                    cotangents=[uni(r, (2, 2, 3)), uni(r, (2, 2))], batched=True))
    out.append(case("vjp-batched-weights", "/vjp", net, xs, None,
                    cotangents=[uni(r, (2, 2, 3)), uni(r, (2, 2))], weights=["p"], batched=True))
    return out


def group_jacobian() -> list[dict]:
    out = []
    for mode in ("reverse", "forward"):
        net, xs = two_out(rng_for("two-out"))
        out.append(case(f"jacobian-{mode}-multi-output", "/jacobian", net, xs,
                        "several outputs: a list per output", grad_position=0, mode=mode))
        out.append(case(f"jacobian-{mode}-positions", "/jacobian", net, xs,
                        "a list per output, each a list per position", grad_position=[0, 1], mode=mode))
        out.append(case(f"jacobian-{mode}-one-element-list", "/jacobian", net, xs,
                        "a one-element grad_position list counts as an int", grad_position=[1], mode=mode))
        netm, xm = mlp(rng_for("mlp"))
        out.append(case(f"jacobian-{mode}-scalar", "/jacobian", netm, xm, "a scalar output: the gradient's shape",
                        grad_position=[0, 1], mode=mode))
        netv, xv = matvec(rng_for("matvec"))
        out.append(case(f"jacobian-{mode}-matvec", "/jacobian", netv, xv, "shape: output shape + input shape",
                        mode=mode))
    nets, xss = softmax_ce_rule()
    for mode in ("reverse", "forward"):
        out.append(case(f"jacobian-{mode}-softmax-cross-entropy-rule", "/jacobian", nets, xss,
                        "rows of labels summing to 1.5 and 0.2: d loss / d logits is MindSpore's softmax - labels",
                        grad_position=0, mode=mode))
    netm, xm = mlp(rng_for("mlp"))
    out.append(case("jacobian-default", "/jacobian", netm, xm, "grad_position 0 and mode reverse by default"))
    return out


def group_hvp() -> list[dict]:
    out = []
    r = rng_for("hvp")
    net, xs = scalar_xy(rng_for("scalar-xy"))
    out.append(case("hvp-int-position", "/hvp", net, xs, "an int position takes and answers one tensor",
                    grad_position=0, vectors=uni(r, (3,))))
    out.append(case("hvp-positions", "/hvp", net, xs, "for position i: sum over j of H_ij v_j",
                    grad_position=[0, 1], vectors=[uni(r, (3,)), uni(r, (3,))]))
    out.append(case("hvp-position-1", "/hvp", net, xs, None, grad_position=1, vectors=uni(r, (3,))))
    netm, xm = mlp(rng_for("mlp"))
    out.append(case("hvp-mlp", "/hvp", netm, xm, None, grad_position=[0, 1],
                    vectors=[uni(r, (3, 4)), uni(r, (3, 2))]))
    out.append(case("hvp-default-position", "/hvp", netm, xm, "grad_position 0 by default",
                    vectors=uni(r, (3, 4))))
    out.append(case("hvp-batched", "/hvp", net, xs, "batched: K = 3 vectors per position; hvp gains a leading "
                    "K axis (expected: K separate contractions stacked)", grad_position=[0, 1],
                    vectors=[uni(r, (3, 3)), uni(r, (3, 3))], batched=True))
    net, ref, xs = softmax_ce(rng_for("softmax-ce"))
    c = case("hvp-softmax-cross-entropy", "/hvp", net, xs, None, grad_position=0, vectors=uni(r, (2, 3)))
    c["reference"] = ref
    out.append(c)
    net, ref, xs = log_softmax(rng_for("log-softmax"))
    c = case("hvp-log-softmax", "/hvp", net, xs, None, grad_position=0, vectors=uni(r, (2, 3)))
    c["reference"] = ref
    out.append(c)
    return out


def group_per_example() -> list[dict]:
    out = []
    net, xs = per_example(rng_for("per-example"))
    note = "mindspore.vmap(grad_fn, in_axes) over 4 examples: each example's gradient, stacked on a new axis"
    out.append(case("per-example-position-0", "/grad", net, xs, note, grad_position=0, per_example_axes=[0, 0]))
    out.append(case("per-example-weights", "/grad", net, xs, note, grad_position=[0, 1], weights=["w"],
                    per_example_axes=[0, 0]))
    shared = [xs[0], np.array(0.3, np.float32)]
    out.append(case("per-example-shared-input", "/grad", net, shared, "per_example_axes null: y is shared by "
                    "every example; its gradient is still one per example", grad_position=[0, 1],
                    per_example_axes=[0, None]))
    out.append(case("per-example-gradoperation", "/grad", net, xs, "the GradOperation form: get_by_list, per "
                    "example", get_by_list=True, per_example_axes=[0, 0]))
    out.append(case("per-example-gradoperation-get-all", "/grad", net, xs, None, get_all=True,
                    per_example_axes=[0, 0]))
    return out


def group_constants() -> list[dict]:
    out = []
    r = rng_for("constants-vectors")
    net, xs = constants(rng_for("constants"))
    note = ("constants as node inputs (API.md section 6): 2.0, 2 and 3.0 take the float32 of the tensor operand, "
            "{\"const\": tensor} has its own dtype; constants get no gradient")
    out.append(case("constants-grad", "/grad", net, xs, note, grad_position=[0, 1], return_value=True))
    out.append(case("constants-grad-gradoperation", "/grad", net, xs, note, get_all=True))
    out.append(case("constants-jvp", "/jvp", net, xs, note, tangents=[uni(r, (2, 3)), uni(r, (2, 3))]))
    out.append(case("constants-vjp", "/vjp", net, xs, note, cotangents=np.array(0.75, np.float32)))
    out.append(case("constants-jacobian-forward", "/jacobian", net, xs, note, grad_position=[0, 1],
                    mode="forward"))
    out.append(case("constants-hvp", "/hvp", net, xs, note, grad_position=[0, 1],
                    vectors=[uni(r, (2, 3)), uni(r, (2, 3))]))
    return out


GROUPS = {
    "grad": group_grad,
    "jvp": group_jvp,
    "vjp": group_vjp,
    "jacobian": group_jacobian,
    "hvp": group_hvp,
    "per_example": group_per_example,
    "constants": group_constants,
}

ROUTES = ("/grad", "/jvp", "/vjp", "/jacobian", "/hvp")


def cases_by_group() -> dict[str, list[dict]]:
    out = {g: f() for g, f in GROUPS.items()}
    ids = [c["id"] for cs in out.values() for c in cs]
    dup = [n for n, k in Counter(ids).items() if k > 1]
    if dup:
        raise AssertionError(f"duplicate case ids: {dup}")
    return out


def main() -> int:
    groups = cases_by_group()
    routes: Counter = Counter()
    for g, cs in groups.items():
        print(f"{g}: {len(cs)} cases")
        routes.update(c["route"] for c in cs)
    print("per route:", ", ".join(f"{r} {routes[r]}" for r in ROUTES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
