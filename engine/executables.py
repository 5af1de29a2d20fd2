"""Compiled programs as bytes, so that a restarted or added process runs them without compiling.

JAX's persistent compile cache (``jax_compilation_cache_dir``) saves XLA's compile but not the
tracing and lowering in front of it: with it warm the MLP's first ``/grad`` still cost 29% of a
cold compile (issue 17). An *entry* here is the compiled executable itself, serialized by the
PJRT client (``Client.serialize_executable``), with a JSON header of what it was compiled for;
loading one is ``Client.deserialize_executable``: no tracing, no lowering, no compile.

**Nothing is unpickled.** ``jax.experimental.serialize_executable`` pickles the executable's
Python wrapper, and unpickling runs whatever the bytes say. Here the bytes are XLA's own
serialization and the header is JSON; the call's pytree structures are not stored as pickles but
rebuilt: the inputs from the engine's calling convention (``program(xs, params, extra)``, whose
leaves are flattened as ``jax.jit`` flattens them, every argument kept), the outputs from a JSON
description of the flat program's output tree.

**A stale or damaged entry is a miss.** The header names the jax and jaxlib versions, the platform
and its version, and the device kind; an entry of another is ignored (and recompiled over). The
executable's bytes carry a SHA-256 in the header, checked before XLA sees them (XLA trusts what it
deserializes: damaged bytes could crash the process, not raise).

**A store is trusted.** The checksum catches damage, not an attacker: an executable is machine
code, and whoever can write a store can run code in every process that loads from it (as
``deserialize_and_load``'s own warning says). A store needs the access rules of the registry's
database.

The engine knows nothing of where entries live: a store is any object with ``get(key)``,
``put(key, network_id, data)`` and ``recent(limit)`` (:class:`ExecutableStore`); the service's
are in ``service/registry/executables.py``.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Sequence
from typing import Any, Protocol

import jax
import jaxlib
import orjson

MAGIC = b"GRADSERVE-XLA-1\n"
_LEN = struct.Struct("<I")


class ExecutableStore(Protocol):
    """Where entries live (a directory, a table of the registry's database)."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, network_id: str, data: bytes) -> None: ...

    def recent(self, limit: int) -> list[bytes]: ...


class EntryError(ValueError):
    """An entry that cannot be used here: damaged, or compiled for another jax or device."""


@functools.lru_cache(maxsize=1)
def engine_version() -> str:
    """A digest of the engine's own source: a program built by other code is another program
    (a fixed transform must not be answered by yesterday's executable of the same key)."""
    from pathlib import Path  # noqa: PLC0415

    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def environment(device: Any) -> dict[str, str]:
    """What an executable is bound to besides its program: versions (the engine's code too),
    platform, device kind."""
    client = device.client
    return {
        "engine": engine_version(),
        "jax": jax.__version__,
        "jaxlib": getattr(jaxlib, "__version__", "?"),
        "platform": str(device.platform),
        "platform_version": str(getattr(client, "platform_version", "")),
        "device_kind": str(getattr(device, "device_kind", "")),
    }


def _plain(value: Any) -> Any:
    """A spec or signature as JSON-able data (tuples as lists, dtypes as strings)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _frozen(value: Any) -> Any:
    """:func:`_plain`'s lists back as the tuples they were (specs and signatures hold no lists)."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def program_id(network_id: str, wire_spec: Sequence[Any], inputs: Any, extra: Any, max_elements: Any) -> dict[str, Any]:
    """What a compiled program is for, as JSON-able data (the engine's compile-cache key)."""
    return {"network_id": network_id, "spec": _plain(wire_spec), "inputs": _plain(inputs),
            "extra": _plain(extra), "max_elements": max_elements}


def entry_key(program: dict[str, Any], env: dict[str, str]) -> str:
    """The store's key of a program in an environment: a SHA-256 (hex) of both."""
    return hashlib.sha256(orjson.dumps([program, env], option=orjson.OPT_SORT_KEYS)).hexdigest()


def engine_key(program: dict[str, Any], from_wire: Any) -> tuple[Any, ...]:
    """The engine's in-memory key of a stored program (as :meth:`engine.Engine.run` builds it;
    a batched program's, ``program["batch"]`` rows, as the batches build theirs)."""
    key = (program["network_id"], from_wire(_frozen(program["spec"])), _frozen(program["inputs"]),
           _frozen(program["extra"]))
    if program.get("batch") is not None:
        key = (*key, ("batch", int(program["batch"])))
    return key


# -- the output tree as JSON -----------------------------------------------------------------------


def _tree_json(node: Any) -> Any:
    if node is _LEAF:
        return "*"
    if node is None:
        return None
    if type(node) is tuple:
        return {"t": [_tree_json(n) for n in node]}
    if type(node) is list:
        return [_tree_json(n) for n in node]
    if type(node) is dict and all(isinstance(k, str) for k in node):
        return {"d": [[k, _tree_json(v)] for k, v in node.items()]}
    raise EntryError(f"an output tree node of type {type(node).__name__} is not stored")


def _tree_from_json(node: Any) -> Any:
    if node == "*":
        return _LEAF
    if node is None:
        return None
    if isinstance(node, list):
        return [_tree_from_json(n) for n in node]
    if isinstance(node, dict) and set(node) == {"t"}:
        return tuple(_tree_from_json(n) for n in node["t"])
    if isinstance(node, dict) and set(node) == {"d"}:
        return {k: _tree_from_json(v) for k, v in node["d"]}
    raise EntryError("the output tree is not one this version writes")


class _Leaf:
    """A leaf marker: not a pytree node, so tree_structure counts it as one leaf."""


_LEAF = _Leaf()


def treedef_json(treedef: Any) -> Any:
    return _tree_json(treedef.unflatten([_LEAF] * treedef.num_leaves))


def treedef_from_json(doc: Any) -> Any:
    return jax.tree_util.tree_structure(_tree_from_json(doc), is_leaf=lambda x: x is _LEAF)


# -- one entry -------------------------------------------------------------------------------------


class StoredProgram:
    """A deserialized executable, called as the engine calls a compiled one:
    ``program(xs, params, extra)`` returns the flat list of output arrays."""

    __slots__ = ("executable", "device", "n_in", "n_out", "args")

    def __init__(self, executable: Any, device: Any, n_in: int, n_out: int, args: Any = None) -> None:
        self.executable = executable
        self.device = device
        self.n_in = n_in
        self.n_out = n_out
        self.args = args  # [(shape, dtype)] of the flat arguments

    def warm_up(self) -> None:
        """Run once on zeros: a program's first run costs several times a later one (XLA's
        buffers and threads), which a process starting up can pay instead of its first caller."""
        import numpy as np  # noqa: PLC0415

        if self.args is None:
            return
        zeros = [np.zeros(tuple(shape), np.dtype(dtype)) for shape, dtype in self.args]
        for out in self.executable.execute_sharded(jax.device_put(zeros, self.device)) \
                .disassemble_into_single_device_arrays():
            out[0].block_until_ready()

    def __call__(self, xs: Any, params: Any, extra: Any) -> list[Any]:
        # jax.jit flattens its arguments as tree_leaves does (dict keys sorted); with keep_unused
        # every leaf is a parameter of the executable, in that order
        leaves = jax.tree_util.tree_leaves((xs, params, extra))
        if len(leaves) != self.n_in:
            raise EntryError(f"the stored program takes {self.n_in} arrays, the call has {len(leaves)}")
        results = self.executable.execute_sharded(jax.device_put(leaves, self.device))
        outs = [shards[0] for shards in results.disassemble_into_single_device_arrays()]
        if len(outs) != self.n_out:
            raise EntryError(f"the stored program returned {len(outs)} arrays, {self.n_out} expected")
        return outs


def dump(compiled: Any, treedef: Any, n_in: int, program: dict[str, Any], env: dict[str, str]) -> bytes:
    """The entry of ``compiled`` (a ``jax.stages.Compiled`` of a ``keep_unused`` jit with ``n_in``
    flat arguments); raises :class:`EntryError` if it cannot be stored faithfully."""
    if getattr(getattr(compiled, "_params", None), "const_args", None):
        raise EntryError("the program has hoisted constants as arguments")  # not in our convention
    kept = getattr(getattr(getattr(compiled, "_executable", None), "_unloaded_executable", None), "kept_var_idx", None)
    if kept is not None and set(kept) != set(range(n_in)):
        raise EntryError("the program dropped some of its arguments")
    executable = compiled.runtime_executable()
    payload = bytes(executable.client.serialize_executable(executable))
    args = [[list(a.shape), a.dtype.str] for a in jax.tree_util.tree_leaves(compiled.args_info)]
    if len(args) != n_in:
        raise EntryError(f"the program has {len(args)} arguments, the convention {n_in}")
    header = orjson.dumps({
        "program": program, "env": env, "n_in": n_in, "n_out": treedef.num_leaves, "args": args,
        "out_tree": treedef_json(treedef), "sha256": hashlib.sha256(payload).hexdigest(),
    }, option=orjson.OPT_SORT_KEYS)
    return MAGIC + _LEN.pack(len(header)) + header + payload


def read_header(data: bytes) -> tuple[dict[str, Any], memoryview]:
    """The entry's header and its executable's bytes (checked); :class:`EntryError` if damaged."""
    view = memoryview(data)
    start = len(MAGIC) + _LEN.size
    if len(view) < start or bytes(view[:len(MAGIC)]) != MAGIC:
        raise EntryError("not an entry of this format")
    (size,) = _LEN.unpack(view[len(MAGIC):start])
    try:
        header = orjson.loads(view[start:start + size])
        payload = view[start + size:]
        ok = isinstance(header, dict) and hashlib.sha256(payload).hexdigest() == header["sha256"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise EntryError(f"the entry's header is damaged: {exc}") from None
    if not ok:
        raise EntryError("the entry's bytes do not match their checksum")
    return header, payload


def load(data: bytes, device: Any, *, program: dict[str, Any] | None = None) -> tuple[StoredProgram, Any, dict[str, Any]]:
    """The entry's program on ``device``, its output tree and its header. Raises
    :class:`EntryError` if it is damaged, for another environment, or (with ``program``) for
    another program."""
    header, payload = read_header(data)
    env = environment(device)
    if header.get("env") != env:
        raise EntryError(f"the entry was compiled for {header.get('env')}, this process is {env}")
    if program is not None and header.get("program") != program:
        raise EntryError("the entry is for another program")
    try:
        treedef = treedef_from_json(header["out_tree"])
        n_in, n_out = int(header["n_in"]), int(header["n_out"])
    except (KeyError, TypeError, ValueError) as exc:
        raise EntryError(f"the entry's header is incomplete: {exc}") from None
    if treedef.num_leaves != n_out:
        raise EntryError("the entry's output tree does not match its output count")
    client = device.client
    try:
        executable = client.deserialize_executable(bytes(payload), executable_devices=_device_list(device))
    except TypeError:  # jaxlib before executable_devices
        executable = client.deserialize_executable(bytes(payload))
    except Exception as exc:  # noqa: BLE001 - XLA refused the bytes: a miss, not a failure
        raise EntryError(f"XLA could not load the entry: {exc}") from None
    return StoredProgram(executable, device, n_in, n_out, header.get("args")), treedef, header


def _device_list(device: Any) -> Any:
    from jax._src.lib import xla_client  # noqa: PLC0415 - where DeviceList lives (not public)

    return xla_client.DeviceList((device,))
