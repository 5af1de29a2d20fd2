"""The op catalog: one :class:`OpDef` per MindSpore primitive.

An op is a small table entry: its JAX forward, the names of its tensor inputs, and the schema of
its attrs (MindSpore's constructor arguments plus non-tensor call arguments, under MindSpore's
names and defaults). JAX differentiates the forward; where MindSpore's gradient differs from JAX's
(a NaN operand of Maximum, for instance) the entry's forward carries a ``jax.custom_jvp`` next to it
(linear in the tangents, so reverse mode, forward mode and second order all follow MindSpore's rule;
docs/backward-rules.md).
Adding an op means adding one decorated function in one of the modules of this package.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..dtypes import DTYPES, OIP_DTYPES
from ..errors import AttrError, UnknownOpError

REQUIRED = object()

#: attr kind -> (JSON-schema-ish type shown in the catalog, validator)
_KINDS = ("int", "float", "bool", "str", "ints", "int_or_ints", "dtype", "number")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Attr:
    """One attribute of an op: its MindSpore name, kind, default and allowed values."""

    name: str
    kind: str
    default: Any = REQUIRED
    choices: tuple[Any, ...] | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        assert self.kind in _KINDS, self.kind

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def coerce(self, value: Any, path: str) -> Any:
        """Validate ``value`` and return its canonical (hashable) form."""
        ok, out = True, value
        if self.kind == "int":
            ok = _is_int(value)
        elif self.kind == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            out = float(value) if ok else value
        elif self.kind == "number":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif self.kind == "bool":
            ok = isinstance(value, bool)
        elif self.kind == "str":
            ok = isinstance(value, str)
        elif self.kind == "ints":
            if _is_int(value):
                value = [value]
            ok = isinstance(value, (list, tuple)) and all(_is_int(v) for v in value)
            out = tuple(value) if ok else value
        elif self.kind == "int_or_ints":
            if isinstance(value, (list, tuple)):
                ok = all(_is_int(v) for v in value)
                out = tuple(value)
            else:
                ok = _is_int(value)
        elif self.kind == "dtype":
            ok = isinstance(value, str) and (value in DTYPES or value in OIP_DTYPES)
            out = OIP_DTYPES.get(value, value) if ok else value
        if not ok:
            raise AttrError(f"attr '{self.name}' must be {self.describe_kind()}, got {value!r}", path)
        if self.choices is not None and out not in self.choices:
            raise AttrError(
                f"attr '{self.name}' must be one of {', '.join(map(repr, self.choices))}, got {value!r}", path
            )
        return out

    def describe_kind(self) -> str:
        return {
            "int": "an integer",
            "float": "a number",
            "number": "a number",
            "bool": "true or false",
            "str": "a string",
            "ints": "a list of integers",
            "int_or_ints": "an integer or a list of integers",
            "dtype": f"a dtype name ({', '.join(DTYPES)})",
        }[self.kind]

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "type": self.kind, "required": self.required}
        if not self.required:
            entry["default"] = list(self.default) if isinstance(self.default, tuple) else self.default
        if self.choices is not None:
            entry["choices"] = list(self.choices)
        if self.doc:
            entry["doc"] = self.doc
        return entry


@dataclass(frozen=True)
class OpDef:
    """A primitive: ``impl(*tensors, **attrs)`` returns one array, or a tuple of ``outputs``."""

    name: str
    impl: Callable[..., Any]
    inputs: tuple[str, ...]
    attrs: tuple[Attr, ...] = ()
    outputs: int | Callable[[Mapping[str, Any]], int] = 1
    aliases: Mapping[str, str] = field(default_factory=dict)
    doc: str = ""

    @property
    def variadic(self) -> bool:
        return len(self.inputs) == 1 and self.inputs[0].startswith("*")

    def num_outputs(self, attrs: Mapping[str, Any]) -> int:
        return self.outputs(attrs) if callable(self.outputs) else self.outputs

    def bind_attrs(self, given: Any, path: str) -> dict[str, Any]:
        """Check ``given`` against the schema; fill defaults; return canonical values."""
        if given is None:
            given = {}
        if not isinstance(given, Mapping):
            raise AttrError(f"'attrs' of a {self.name} node must be an object", path)
        known = {a.name: a for a in self.attrs}
        bound: dict[str, Any] = {}
        for key, value in given.items():
            name = self.aliases.get(key, key)
            if name not in known:
                hint = difflib.get_close_matches(name, list(known), n=1)
                expected = ", ".join(known) or "none"
                raise AttrError(
                    f"{self.name} has no attr '{key}'"
                    + (f" (did you mean '{hint[0]}'?)" if hint else "")
                    + f"; its attrs are: {expected}",
                    f"{path}.{key}",
                )
            bound[name] = known[name].coerce(value, f"{path}.{key}")
        for attr in self.attrs:
            if attr.name not in bound:
                if attr.required:
                    raise AttrError(f"{self.name} needs attr '{attr.name}' ({attr.describe_kind()})", path)
                bound[attr.name] = attr.default
        return bound

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "aliases": sorted(a for a, target in OP_ALIASES.items() if target == self.name),
            "inputs": list(self.inputs),
            "attrs": [a.to_json() for a in self.attrs],
            "outputs": self.outputs if isinstance(self.outputs, int) else "depends on attrs",
            "doc": self.doc,
        }


OPS: dict[str, OpDef] = {}

#: MindSpore's renamed primitives: the old name, still exported by MindSpore 2.10 as a deprecated
#: class (mindspore/ops/deprecated.py, ``@deprecated("1.1", <new name>)``), -> the catalog op with
#: the same semantics. A node may name either; the network keeps the catalog name, so its
#: canonical form and id are the same whichever name a client wrote, and GET /networks/{id} reads
#: back the catalog name. Checked with MindSpore 2.10 (CPU, PyNative): TensorAdd, Gelu and Pack
#: give Add's, GeLU's and Stack's values and gradients; GatherV2 (params, indices, axis) is Gather
#: with batch_dims 0, though 2.10's own GatherV2 no longer runs ("the inputs number should be 4").
#: Not here: FastGelu -> FastGeLU and Unpack -> Unstack (no such catalog op).
OP_ALIASES: dict[str, str] = {
    "TensorAdd": "Add",
    "Gelu": "GeLU",
    "Pack": "Stack",
    "GatherV2": "Gather",
}


def op(
    name: str,
    inputs: tuple[str, ...] = ("x",),
    attrs: tuple[Attr, ...] = (),
    outputs: int | Callable[[Mapping[str, Any]], int] = 1,
    aliases: Mapping[str, str] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated JAX function as the primitive ``name``."""

    def register(impl: Callable[..., Any]) -> Callable[..., Any]:
        assert name not in OPS, f"op {name} registered twice"
        doc = (impl.__doc__ or "").strip().split("\n")[0]
        OPS[name] = OpDef(name, impl, inputs, attrs, outputs, aliases or {}, doc)
        return impl

    return register


def lookup(name: Any, path: str) -> OpDef:
    """The op named ``name``, a catalog name or one of :data:`OP_ALIASES` (which gives its target)."""
    if isinstance(name, str):
        name = OP_ALIASES.get(name, name)
        if name in OPS:
            return OPS[name]
    hint = difflib.get_close_matches(str(name), list(OPS) + list(OP_ALIASES), n=1) if isinstance(name, str) else []
    raise UnknownOpError(
        f"unknown op {name!r}" + (f" (did you mean '{hint[0]}'?)" if hint else "")
        + "; GET /ops lists the supported MindSpore primitives",
        path,
    )


def catalog() -> list[dict[str, Any]]:
    missing = {a: t for a, t in OP_ALIASES.items() if t not in OPS or a in OPS}
    assert not missing, f"op aliases without a target, or shadowing an op: {missing}"
    return [OPS[name].to_json() for name in sorted(OPS)]
