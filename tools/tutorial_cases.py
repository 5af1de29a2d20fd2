"""The seed tutorial's cases: MindSpore's automatic-differentiation tutorial (r1.5) as /grad requests.

Pure numpy (no MindSpore). ``tools/mindspore_oracle.py`` runs these requests through MindSpore's
``ops.GradOperation``, checks its results against what the tutorial notebook printed
(``notebook_printed``, copied here from the notebook's output cells), and writes
``tests/fixtures/tutorial.json`` with MindSpore's ``expected_gradients``.

The notebook's network is ``out = MatMul(x * z, y)`` with the parameter ``z = [1.0]``; its cases
are GradOperation() (the first input), get_all, get_by_list, get_all with get_by_list, a frozen
``z`` (``requires_grad=False``), sens_param with the notebook's sensitivity, and the
``stop_gradient`` example with and without the StopGradient node. The notebook prints five of
them; the other three are described in its text.
"""

from __future__ import annotations

import numpy as np
from conformance_cases import make_case, node

# The notebook's tensors (mstype.float32).
X = np.array([[0.8, 0.6, 0.2], [1.8, 1.3, 1.1]], np.float32)
Y = np.array([[0.11, 3.3, 1.1], [1.1, 0.2, 1.4], [1.1, 2.2, 0.3]], np.float32)
Z = np.array([1.0], np.float32)
SENS = np.array([[0.1, 0.6, 0.2], [0.8, 1.3, 1.1]], np.float32)  # self.grad_wrt_output

SOURCE = ("the seed tutorial (MindSpore automatic differentiation, r1.5); expected_gradients computed by "
          "MindSpore {version} on CPU, PyNative mode, by tools/mindspore_oracle.py; compare with rtol 1e-5, "
          "atol 1e-6")

# The notebook's output cells, verbatim (whitespace folded to one line).
PRINTED = {
    "grad-wrt-first-input": "[[4.5099998 2.7 3.6000001] [4.5099998 2.7 3.6000001]]",
    "grad-wrt-weights": "(Tensor(shape=[1], dtype=Float32, value= [ 2.15359993e+01]),)",
    "sens-param": "[[2.211 0.51 1.49 ] [5.588 2.68 4.07 ]]",
    "stop-gradient": "[[4.5 2.7 3.6] [4.5 2.7 3.6]]",
    "no-stop-gradient": "[[9.0 5.4 7.2] [9.0 5.4 7.2]]",
}


def _tutorial_net(name: str, **flags) -> dict:
    frozen = name == "grad-wrt-weights-frozen"
    return make_case(
        name,
        [node("xz", "Mul", ["x", "z"]), node("out", "MatMul", ["xz", "y"])],
        "out",
        [("x", X), ("y", Y)],
        [("z", Z, not frozen)],
        net_name="tutorial-net-frozen-z" if frozen else "tutorial-net",
        note="requires_grad=false leaves no trainable parameter: an empty list" if frozen else None,
        **flags,
    )


def _stop_gradient_net(name: str, stop: bool) -> dict:
    nodes = [node("out1", "MatMul", ["x", "y"]), node("out2", "MatMul", ["x", "y"])]
    if stop:
        nodes += [node("out2s", "StopGradient", ["out2"]), node("out", "Add", ["out1", "out2s"])]
    else:
        nodes += [node("out", "Add", ["out1", "out2"])]
    return make_case(name, nodes, "out", [("x", X), ("y", Y)], net_name=f"{name}-net")


def tutorial_cases() -> list[dict]:
    """The 8 cases, in the notebook's order: ``{"name", "request", "note"?}`` (no expectations)."""
    return [
        _tutorial_net("grad-wrt-first-input"),
        _tutorial_net("grad-wrt-all-inputs", get_all=True),
        _tutorial_net("grad-wrt-weights", get_by_list=True),
        _tutorial_net("grad-wrt-inputs-and-weights", get_all=True, get_by_list=True),
        _tutorial_net("grad-wrt-weights-frozen", get_by_list=True),
        _tutorial_net("sens-param", sens_param=True, sens=SENS),
        _stop_gradient_net("stop-gradient", stop=True),
        _stop_gradient_net("no-stop-gradient", stop=False),
    ]
