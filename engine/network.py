"""Parse and validate a ``gradnet/1`` network into an immutable, topologically ordered graph.

Validation happens once, when a network is parsed: field types, unique names, references that
resolve, op names and attrs against the catalog, tensor arity, acyclicity. Shapes and dtypes are
checked later, per call, by abstract evaluation (see :mod:`engine.grad`), because they depend on
the inputs. A network's id is the SHA-256 of its canonical form, so key order, whitespace,
node order and tensor encoding don't change it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from .dtypes import dtype_name, parse_dtype
from .errors import CycleError, DuplicateNameError, NetworkError, TooLargeError, UndefinedNameError
from .ops import OpDef, lookup
from .tensors import decode_tensor, encode_tensor

FORMAT = "gradnet/1"
#: the longest name (of a network, input, parameter or node), in characters: names are kept in
#: caches, the registry and every listing, so a 100 MB name must not be (API.md, the schema)
MAX_NAME_CHARS = 256
_TOP_LEVEL = ("format", "name", "inputs", "parameters", "nodes", "outputs")


@dataclass(frozen=True)
class Ref:
    """A reference to a value: an input, a parameter, a node, or output ``index`` of a node."""

    name: str
    index: int | None = None

    def __str__(self) -> str:
        return self.name if self.index is None else f"{self.name}:{self.index}"


@dataclass(frozen=True, eq=False)
class Const:
    """A constant node input (API.md §6): a JSON number (``value`` a Python int or float, which
    takes the dtype of the node's tensor operand) or ``{"const": <tensor>}`` (``value`` an array
    of its own dtype and shape). It carries no gradient and is part of the network's id."""

    value: Any
    name: str = ""  # never a name of the network: a constant depends on nothing

    @property
    def scalar(self) -> bool:
        return not isinstance(self.value, np.ndarray)

    def document(self, encoding: str = "b64") -> Any:
        return self.value if self.scalar else {"const": encode_tensor(self.value, encoding)}

    def __str__(self) -> str:
        return repr(self.value) if self.scalar else f"const {dtype_name(self.value.dtype)}{list(self.value.shape)}"


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str | None = None
    shape: tuple[int | None, ...] | None = None


@dataclass(frozen=True, eq=False)
class Parameter:
    name: str
    value: np.ndarray
    requires_grad: bool = True


@dataclass(frozen=True)
class Node:
    name: str
    op: OpDef
    inputs: tuple[Ref | Const, ...]
    attrs: Mapping[str, Any]
    position: int  # index in the client's "nodes" list, for error paths

    @property
    def path(self) -> str:
        """``nodes[i]``, relative to the network document (see :meth:`Network.node_path`)."""
        return f"nodes[{self.position}]"


@dataclass(frozen=True, eq=False)
class Network:
    """A validated network. ``nodes`` are in a topological order.

    ``path`` is the prefix it was parsed with (``"network."`` for a network inline in a request,
    ``""`` for a registered one): errors found later, per call, at a node (shape and dtype
    mismatches, intermediates over the size limit) carry ``path + "nodes[i]"``, the same prefix
    as the parse errors. It is not part of the network's identity (``id``).
    """

    id: str
    name: str
    inputs: tuple[InputSpec, ...]
    parameters: tuple[Parameter, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[Ref, ...]
    path: str = ""

    @functools.cached_property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    def node_path(self, node: Node) -> str:
        """The error path of ``node`` in the request: ``network.nodes[3]`` or ``nodes[3]``."""
        return f"{self.path}{node.path}"

    def with_path(self, path: str) -> Network:
        """The same network (same id, nodes and parameter arrays) with another error-path prefix:
        a network parsed once and shared between inline requests (``"network."``) and
        ``network_id`` requests (``""``) reports each call's errors with that call's prefix."""
        return self if path == self.path else dataclasses.replace(self, path=path)

    @property
    def tuple_output(self) -> bool:
        """Several outputs: the Cell returns a tuple (a list of one name is a single output)."""
        return len(self.outputs) > 1

    @property
    def trainable(self) -> tuple[str, ...]:
        """``net.trainable_params()``: the parameters with requires_grad, in declaration order."""
        return tuple(p.name for p in self.parameters if p.requires_grad)

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    def signature(self) -> dict[str, Any]:
        """What a client needs to call the network (returned when it is registered)."""
        return {
            "network_id": self.id,
            "name": self.name,
            "inputs": [{"name": i.name, "dtype": i.dtype, "shape": _shape_json(i.shape)} for i in self.inputs],
            "parameters": [
                {
                    "name": p.name,
                    "dtype": dtype_name(p.value.dtype),
                    "shape": list(p.value.shape),
                    "requires_grad": p.requires_grad,
                }
                for p in self.parameters
            ],
            "outputs": [str(r) for r in self.outputs],
        }

    def to_json(self, encoding: str = "b64") -> dict[str, Any]:
        """The network as a ``gradnet/1`` document (parameters in ``encoding``)."""
        return _document(self, lambda p: encode_tensor(p.value, encoding))


def _shape_json(shape: tuple[int | None, ...] | None) -> list[int | None] | None:
    return None if shape is None else list(shape)


def _document(net: Network, tensor: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "name": net.name,
        "inputs": [{"name": i.name, "dtype": i.dtype, "shape": _shape_json(i.shape)} for i in net.inputs],
        "parameters": [
            {"name": p.name, "value": tensor(p), "requires_grad": p.requires_grad} for p in net.parameters
        ],
        "nodes": [
            {
                "name": n.name,
                "op": n.op.name,
                "inputs": [r.document() if isinstance(r, Const) else str(r) for r in n.inputs],
                "attrs": {k: list(v) if isinstance(v, tuple) else v for k, v in n.attrs.items()},
            }
            for n in sorted(net.nodes, key=lambda n: n.name)
        ],
        "outputs": [str(r) for r in net.outputs],
    }


def _canonical_id(net: Network) -> str:
    # Parameter values enter by digest, so hashing a large network costs one pass over its bytes.
    def digest(p: Parameter) -> dict[str, Any]:
        data = np.ascontiguousarray(p.value, dtype=p.value.dtype.newbyteorder("<")).tobytes()
        return {"dtype": dtype_name(p.value.dtype), "shape": list(p.value.shape), "sha256": hashlib.sha256(data).hexdigest()}

    text = json.dumps(_document(net, digest), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _expect(cond: bool, message: str, path: str) -> None:
    if not cond:
        raise NetworkError(message, path)


def _list_field(obj: Mapping[str, Any], key: str, path: str, required: bool = True) -> list[Any]:
    value = obj.get(key)
    if value is None and not required:
        return []
    _expect(isinstance(value, list), f"'{key}' must be a list", f"{path}{key}" if path else key)
    return value


def _name(obj: Any, path: str, what: str) -> str:
    _expect(isinstance(obj, Mapping), f"each {what} must be an object with a 'name'", path)
    name = obj.get("name")
    _expect(isinstance(name, str) and name != "", f"a {what} needs a non-empty string 'name'", f"{path}.name")
    _expect(len(name) <= MAX_NAME_CHARS, f"a {what}'s 'name' is {len(name)} characters, over the limit of "
            f"{MAX_NAME_CHARS}", f"{path}.name")
    return name


def _input_spec(obj: Any, path: str) -> InputSpec:
    name = _name(obj, path, "input")
    dtype = obj.get("dtype")
    if dtype is not None:
        dtype = dtype_name(parse_dtype(dtype, f"{path}.dtype"))
    shape = obj.get("shape")
    if shape is not None:
        _expect(
            isinstance(shape, list)
            and all(d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in shape),
            "an input's 'shape' must be a list of non-negative integers or null (any size)",
            f"{path}.shape",
        )
        shape = tuple(shape)
    return InputSpec(name, dtype, shape)


def _parameter(obj: Any, path: str, max_elements: int | None) -> Parameter:
    name = _name(obj, path, "parameter")
    _expect("value" in obj, f"parameter '{name}' needs a 'value' tensor", f"{path}.value")
    value = decode_tensor(obj["value"], f"{path}.value", max_elements=max_elements)
    value.flags.writeable = False
    requires_grad = obj.get("requires_grad", True)
    _expect(isinstance(requires_grad, bool), "'requires_grad' must be true or false", f"{path}.requires_grad")
    return Parameter(name, value, requires_grad)


def _parse_input(obj: Any, path: str, defined: Mapping[str, int], max_elements: int | None) -> Ref | Const:
    """A node input: a reference (:func:`_parse_ref`) or a constant (a JSON number, or
    ``{"const": <tensor>}``)."""
    if isinstance(obj, bool):
        raise NetworkError(f"a constant input must be a number or {{\"const\": <tensor>}}, got {obj!r}", path)
    if isinstance(obj, (int, float)):
        if isinstance(obj, float) and not np.isfinite(obj):
            raise NetworkError(f"a constant input must be finite, got {obj!r}", path)
        return Const(obj)
    if isinstance(obj, Mapping):
        _expect(set(obj) == {"const"}, "a constant input is {\"const\": <tensor>} and nothing else", path)
        return Const(decode_tensor(obj["const"], f"{path}.const", max_elements=max_elements))
    return _parse_ref(obj, path, defined)


def _parse_ref(text: Any, path: str, defined: Mapping[str, int]) -> Ref:
    """Resolve ``"name"`` or ``"name:i"``; ``defined`` maps a name to its output count (0 = a leaf)."""
    _expect(isinstance(text, str), f"a reference must be a string naming an input, parameter or node, got {text!r}", path)
    if text in defined:
        ref = Ref(text)
    else:
        base, _, index = text.rpartition(":")
        if base in defined and index.isdigit():
            ref = Ref(base, int(index))
        else:
            raise UndefinedNameError(f"'{text}' is not an input, parameter or node of this network", path)
    outputs = defined[ref.name]
    if ref.index is None and outputs > 1:
        raise UndefinedNameError(
            f"'{text}' has {outputs} outputs: reference one of them as '{text}:0' … '{text}:{outputs - 1}'", path
        )
    if ref.index is not None and ref.index >= outputs:
        raise UndefinedNameError(f"'{text}' has no output {ref.index}", path)
    if ref.index is not None and outputs == 1:
        return Ref(ref.name)  # "n:0" of a one-output node is the node itself
    return ref


def parse_network(
    doc: Any, *, max_nodes: int | None = None, max_elements: int | None = None, path: str = ""
) -> Network:
    """Validate a ``gradnet/1`` document and build its :class:`Network`.

    ``path`` prefixes every error path (the service passes ``"network."`` for a network inline in
    a request). The network keeps it (``Network.path``), so the shape and dtype errors found
    per call, at a node, carry the same prefix.
    """
    _expect(isinstance(doc, Mapping), "a network must be a gradnet/1 object", path.rstrip(".") or "network")
    _expect(doc.get("format") == FORMAT, f"'format' must be \"{FORMAT}\", got {doc.get('format')!r}", f"{path}format")
    for key in doc:
        _expect(key in _TOP_LEVEL, f"unknown field '{key}': a gradnet/1 network has {', '.join(_TOP_LEVEL)}", f"{path}{key}")
    name = doc.get("name", "")
    _expect(isinstance(name, str), "'name' must be a string", f"{path}name")
    _expect(len(name) <= MAX_NAME_CHARS, f"the network's 'name' is {len(name)} characters, over the limit of "
            f"{MAX_NAME_CHARS}", f"{path}name")

    raw_nodes = _list_field(doc, "nodes", path)
    if max_nodes is not None and len(raw_nodes) > max_nodes:
        raise TooLargeError(f"the network has {len(raw_nodes)} nodes, over the limit of {max_nodes}", f"{path}nodes")

    defined: dict[str, int] = {}
    where: dict[str, str] = {}

    def define(name: str, outputs: int, at: str) -> None:
        if name in defined:
            raise DuplicateNameError(f"the name '{name}' is defined twice (first at {where[name]})", f"{at}.name")
        defined[name] = outputs
        where[name] = at

    inputs = []
    for i, obj in enumerate(_list_field(doc, "inputs", path)):
        spec = _input_spec(obj, f"{path}inputs[{i}]")
        define(spec.name, 0, f"{path}inputs[{i}]")
        inputs.append(spec)
    parameters = []
    for i, obj in enumerate(_list_field(doc, "parameters", path, required=False)):
        param = _parameter(obj, f"{path}parameters[{i}]", max_elements)
        define(param.name, 0, f"{path}parameters[{i}]")
        parameters.append(param)

    # First pass: names, ops and attrs (so references can point forward).
    staged = []
    for i, obj in enumerate(raw_nodes):
        at = f"{path}nodes[{i}]"
        node_name = _name(obj, at, "node")
        opdef = lookup(obj.get("op"), f"{at}.op")
        attrs = opdef.bind_attrs(obj.get("attrs"), f"{at}.attrs")
        define(node_name, opdef.num_outputs(attrs), at)
        staged.append((i, node_name, opdef, attrs, obj))

    nodes: dict[str, Node] = {}
    for i, node_name, opdef, attrs, obj in staged:
        at = f"{path}nodes[{i}]"
        raw_inputs = _list_field(obj, "inputs", f"{at}.")
        refs = tuple(_parse_input(r, f"{at}.inputs[{k}]", defined, max_elements) for k, r in enumerate(raw_inputs))
        if opdef.variadic:
            _expect(len(refs) >= 1, f"{opdef.name} needs at least one tensor input", f"{at}.inputs")
        elif len(refs) != len(opdef.inputs):
            raise NetworkError(
                f"{opdef.name} takes {len(opdef.inputs)} tensor input(s) ({', '.join(opdef.inputs)}), got {len(refs)}",
                f"{at}.inputs",
            )
        nodes[node_name] = Node(node_name, opdef, refs, MappingProxyType(attrs), i)

    raw_outputs = doc.get("outputs")
    listed = isinstance(raw_outputs, list)
    out_list = raw_outputs if listed else [raw_outputs]
    _expect(bool(out_list) and raw_outputs is not None, "'outputs' must name one value or a non-empty list", f"{path}outputs")
    outputs = tuple(
        _parse_ref(r, f"{path}outputs" + (f"[{k}]" if listed else ""), defined) for k, r in enumerate(out_list)
    )

    net = Network(
        id="",
        name=name,
        inputs=tuple(inputs),
        parameters=tuple(parameters),
        nodes=_topological(nodes, path),
        outputs=outputs,
        path=path,
    )
    object.__setattr__(net, "id", _canonical_id(net))
    return net


def _topological(nodes: Mapping[str, Node], path: str) -> tuple[Node, ...]:
    """Kahn's algorithm (iterative, so a million-node chain cannot overflow the stack)."""
    pending = {name: 0 for name in nodes}
    users: dict[str, list[str]] = {name: [] for name in nodes}
    for node in nodes.values():
        for ref in node.inputs:
            if not isinstance(ref, Const) and ref.name in nodes:
                pending[node.name] += 1
                users[ref.name].append(node.name)
    # Seed in the client's order so the result is deterministic.
    ready = deque(n.name for n in sorted(nodes.values(), key=lambda n: n.position) if pending[n.name] == 0)
    order = []
    while ready:
        name = ready.popleft()
        order.append(nodes[name])
        for user in users[name]:
            pending[user] -= 1
            if pending[user] == 0:
                ready.append(user)
    if len(order) != len(nodes):
        # Every stuck node has a stuck input (else it would have become ready), so walking back
        # through stuck inputs must revisit a node: the walk from there on is a cycle. Nodes that
        # are merely downstream of the cycle are stuck too, but are not named.
        stuck = {name for name, count in pending.items() if count > 0}
        seen: dict[str, int] = {}
        name = min(stuck, key=lambda n: nodes[n].position)
        while name not in seen:
            seen[name] = len(seen)
            name = next(r.name for r in nodes[name].inputs if r.name in stuck)
        cycle = sorted((nodes[n] for n in list(seen)[seen[name]:]), key=lambda n: n.position)
        raise CycleError(
            "the graph has a cycle through the nodes " + ", ".join(f"'{n.name}'" for n in cycle[:10])
            + ("…" if len(cycle) > 10 else ""),
            f"{path}nodes[{cycle[0].position}]",
        )
    return tuple(order)
