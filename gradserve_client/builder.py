"""Write a gradnet/1 network the way a MindSpore Cell reads, get the document out.

>>> import numpy as np
>>> from gradserve_client import Graph
>>> g = Graph("tutorial-net")
>>> x, y = g.input("x"), g.input("y")
>>> z = g.parameter("z", np.array([1.0], np.float32))
>>> g.output(g.MatMul(g.Mul(x, z, name="xz"), y, name="out"))
>>> doc = g.build()   # {"format": "gradnet/1", "name": "tutorial-net", "inputs": [...], ...}

``g.<Primitive>(*inputs, name=..., **attrs)`` adds a node applying the MindSpore primitive of
that name (API.md section 2; ``GET /ops`` lists them, with their attrs): tensor inputs are
positional, attrs are keywords under MindSpore's own names (``g.ReduceSum(x, axis=[1],
keep_dims=True)``). An input may also be a constant: a Python number (a scalar that takes the
dtype of the node's tensor operand) or a NumPy array (API.md section 6). ``x * z``, ``x + z``,
``x - z``, ``x / z``, ``x @ z``, ``x ** 2`` and ``-x`` add ``Mul``, ``Add``, ``Sub``, ``RealDiv``,
``MatMul``, ``Pow`` and ``Neg`` nodes, as those operators do on Tensors in a Cell's
``construct``. A node with several outputs (``Split``, ``TopK``, ...) is indexed: ``parts[1]``
is ``"name:1"``.

Nothing is checked against the op catalog here: the server checks the network when it is
registered or sent (422 naming the node), so a client needs neither JAX nor the engine's ops.
A node's name is part of the network's id: name the nodes (``name=``) to get the id of a
network written by hand; otherwise they are ``<Op>_<n>``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.tensors import encode_tensor

FORMAT = "gradnet/1"
_PRIMITIVE = re.compile(r"[A-Z][A-Za-z0-9]*\Z")


class Value:
    """A tensor in the graph being built: an input, a parameter, or a node's output."""

    __slots__ = ("graph", "ref")

    def __init__(self, graph: Graph, ref: str) -> None:
        self.graph = graph
        self.ref = ref  # what a node input names: "x", "node", "node:1"

    def __repr__(self) -> str:
        return f"Value({self.ref!r})"

    def __getitem__(self, index: int) -> Value:
        """Output ``index`` of a node with several outputs (``"name:index"``)."""
        if ":" in self.ref or self.ref not in self.graph._node_names:
            raise TypeError(f"{self.ref!r} is not a node output that can be indexed")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise TypeError(f"a node output index is a non-negative int, got {index!r}")
        return Value(self.graph, f"{self.ref}:{index}")

    # Tensor operators in construct() are these primitives in MindSpore.
    def __add__(self, other: Any) -> Value:
        return self.graph.op("Add", self, other)

    def __radd__(self, other: Any) -> Value:
        return self.graph.op("Add", other, self)

    def __sub__(self, other: Any) -> Value:
        return self.graph.op("Sub", self, other)

    def __rsub__(self, other: Any) -> Value:
        return self.graph.op("Sub", other, self)

    def __mul__(self, other: Any) -> Value:
        return self.graph.op("Mul", self, other)

    def __rmul__(self, other: Any) -> Value:
        return self.graph.op("Mul", other, self)

    def __truediv__(self, other: Any) -> Value:
        return self.graph.op("RealDiv", self, other)

    def __rtruediv__(self, other: Any) -> Value:
        return self.graph.op("RealDiv", other, self)

    def __matmul__(self, other: Any) -> Value:
        return self.graph.op("MatMul", self, other)

    def __pow__(self, other: Any) -> Value:
        return self.graph.op("Pow", self, other)

    def __neg__(self) -> Value:
        return self.graph.op("Neg", self)


class Graph:
    """A gradnet/1 network under construction: ``input``, ``parameter``, ops by primitive name,
    ``output``, then :meth:`build`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._inputs: list[dict[str, Any]] = []
        self._parameters: list[dict[str, Any]] = []
        self._nodes: list[dict[str, Any]] = []
        self._outputs: list[str] = []
        self._node_names: set[str] = set()
        self._names: set[str] = set()  # inputs, parameters and nodes share one namespace
        self._counts: dict[str, int] = {}

    # -- what a Cell declares --------------------------------------------------------------------

    def input(self, name: str, dtype: str | None = None, shape: Sequence[int | None] | None = None) -> Value:
        """A positional input of ``construct`` (in the order they are added); ``dtype`` and
        ``shape`` (``None`` for a free size) are optional constraints."""
        self._claim(name)
        spec: dict[str, Any] = {"name": name}
        if dtype is not None:
            spec["dtype"] = str(dtype)
        if shape is not None:
            spec["shape"] = list(shape)
        self._inputs.append(spec)
        return Value(self, name)

    def inputs(self, *names: str) -> tuple[Value, ...]:
        """Several inputs without constraints: ``x, y = g.inputs("x", "y")``."""
        return tuple(self.input(n) for n in names)

    def parameter(self, name: str, value: Any, requires_grad: bool = True) -> Value:
        """A ``Parameter`` of the Cell, with its value (anything ``np.asarray`` takes, its dtype
        kept: pass float32 arrays for float32 weights)."""
        self._claim(name)
        self._parameters.append({"name": name, "value": np.asarray(value), "requires_grad": bool(requires_grad)})
        return Value(self, name)

    def op(self, primitive: str, *inputs: Any, name: str | None = None, **attrs: Any) -> Value:
        """A node applying ``primitive`` to ``inputs`` with ``attrs``; its (first) output."""
        if not isinstance(primitive, str) or not _PRIMITIVE.match(primitive):
            raise ValueError(f"an op is a MindSpore primitive name such as 'MatMul', got {primitive!r}")
        if name is None:
            name = self._fresh(primitive)
        self._claim(name)
        node: dict[str, Any] = {"name": name, "op": primitive, "inputs": [self._operand(v, name) for v in inputs]}
        if attrs:
            node["attrs"] = {k: _attr(v) for k, v in attrs.items()}
        self._nodes.append(node)
        self._node_names.add(name)
        return Value(self, name)

    def __getattr__(self, primitive: str) -> Any:
        """``g.MatMul(a, b, transpose_b=True)`` is ``g.op("MatMul", a, b, transpose_b=True)``."""
        if not _PRIMITIVE.match(primitive):
            raise AttributeError(primitive)

        def apply(*inputs: Any, name: str | None = None, **attrs: Any) -> Value:
            return self.op(primitive, *inputs, name=name, **attrs)

        apply.__name__ = primitive
        return apply

    def output(self, *values: Value) -> None:
        """What ``construct`` returns: one value, or several (a tuple); may be called again to
        append."""
        for v in values:
            self._outputs.append(self._own(v, "an output").ref)

    # -- the document ----------------------------------------------------------------------------

    def build(self, encoding: str = "json") -> dict[str, Any]:
        """The gradnet/1 document; parameter values as wire tensors in ``encoding`` (``json``:
        numbers, ``b64``: base64)."""
        if not self._outputs:
            raise ValueError(f"network {self.name!r} has no outputs: call output(...) first")
        return {
            "format": FORMAT,
            "name": self.name,
            "inputs": [dict(i) for i in self._inputs],
            "parameters": [{"name": p["name"], "value": _tensor(p["value"], encoding),
                            "requires_grad": p["requires_grad"]} for p in self._parameters],
            "nodes": [_copy_node(n, encoding) for n in self._nodes],
            "outputs": list(self._outputs),
        }

    # -- helpers ---------------------------------------------------------------------------------

    def _claim(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a name is a non-empty string, got {name!r}")
        if ":" in name:
            raise ValueError(f"{name!r}: ':' is reserved for node outputs ('node:1')")
        if name in self._names:
            raise ValueError(f"{name!r} is already the name of an input, parameter or node of {self.name!r}")
        self._names.add(name)

    def _fresh(self, primitive: str) -> str:
        while True:
            n = self._counts.get(primitive, 0)
            self._counts[primitive] = n + 1
            name = f"{primitive}_{n}"
            if name not in self._names:
                return name

    def _own(self, value: Any, what: str) -> Value:
        if not isinstance(value, Value):
            raise TypeError(f"{what} must be a value of this graph (an input, parameter or node), got {value!r}")
        if value.graph is not self:
            raise ValueError(f"{what} {value.ref!r} belongs to another graph ({value.graph.name!r})")
        return value

    def _operand(self, value: Any, node: str) -> Any:
        if isinstance(value, Value):
            return self._own(value, f"an input of node {node!r}").ref
        if isinstance(value, (bool, int, float)) and not isinstance(value, (np.ndarray, np.generic)):
            return value  # a Python scalar takes the dtype of the node's tensor operand (API.md section 6)
        if isinstance(value, (np.ndarray, np.generic, list, tuple)):
            return {"const": np.asarray(value)}  # a constant with its own dtype and shape
        raise TypeError(f"an input of node {node!r} is a graph value, a Python number or an array, got {value!r}")


def _attr(value: Any) -> Any:
    """An attr as JSON: NumPy scalars and arrays become Python numbers and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return [_attr(v) for v in value]
    return value


def _tensor(arr: np.ndarray, encoding: str) -> dict[str, Any]:
    doc = encode_tensor(arr, encoding)
    if isinstance(doc.get("data"), np.ndarray):
        doc["data"] = doc["data"].tolist()  # plain JSON, for json.dumps as well as orjson
    return doc


def _copy_node(node: dict[str, Any], encoding: str) -> dict[str, Any]:
    out = dict(node)
    out["inputs"] = [{"const": _tensor(v["const"], encoding)} if isinstance(v, dict) else v for v in node["inputs"]]
    return out


__all__ = ["FORMAT", "Graph", "Value"]
