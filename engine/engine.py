"""The :class:`Engine`: validated network + tensors in, GradOperation gradients out.

One engine owns one device, a bounded cache of compiled executables (one per network id, flags,
weights and input signature) and the network parameters already placed on its device.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from . import batching
from . import executables as xstore
from .batching import Call
from .cache import LRUCache
from .dtypes import dtype_name
from .errors import ArgumentError, DTypeError, ShapeError
from .grad import is_no_forward_mode, make_forward, no_forward_mode
from .network import Network
from .transforms import TRANSFORMS, GradOperation, Spec, from_wire, to_wire

Array = np.ndarray
log = logging.getLogger("gradserve.engine")


@dataclass
class GradResult:
    """A transform's answer: its fields (tensors nested as MindSpore returns them, and names),
    in the order the response writes them, with timings."""

    fields: dict[str, Any]
    timing_ms: dict[str, float] = field(default_factory=dict)
    cache_hit: bool = False

    @property
    def gradients(self) -> Any:  # Array | list[Array] | list[list[Array]]
        return self.fields.get("gradients")

    @property
    def gradient_names(self) -> Any:
        return self.fields.get("gradient_names")

    @property
    def value(self) -> Any:
        return self.fields.get("value")


def configure_jax(*, compile_cache_dir: str | None = None) -> None:
    """JAX's process-wide settings for gradserve: ``jax_enable_x64`` (float64 tensors stay
    float64; every op keeps float32 as float32 under x64, tested) and, optionally, the persistent
    compile cache. Called by whoever starts JAX in a process, before any :class:`Engine`."""
    jax.config.update("jax_enable_x64", True)
    configure_compile_cache(compile_cache_dir)


def configure_compile_cache(directory: str | None) -> None:
    """Persist XLA executables under ``directory`` so a restarted process does not recompile."""
    if directory:
        jax.config.update("jax_compilation_cache_dir", str(directory))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def to_host(groups: Sequence[Sequence[Any]], zero_copy: bool) -> list[list[Array]]:
    """Each group of device arrays as NumPy arrays on the host. On the CPU, ``np.asarray`` is a
    read-only view of XLA's own buffer: no copy, and a fraction of ``jax.device_get``'s per-call
    cost (its config scope, a ``copy_to_host_async`` and a ``tree_map``). On an accelerator one
    ``jax.device_get`` starts every transfer before it waits for any."""
    if zero_copy:
        return [[np.asarray(a) for a in group] for group in groups]
    return [list(group) for group in jax.device_get(list(groups))]


def _compile(fn: Any, args: tuple[Any, ...], keep_unused: bool = False) -> tuple[Any, Any]:
    """``fn`` compiled for ``args``, returning one flat list (one transfer, no walk per call),
    and the tree to rebuild its answer from that list. ``keep_unused``: every argument stays a
    parameter of the executable (so that a stored one is called without JAX's bookkeeping)."""
    tree: list[Any] = []

    def flat(*a: Any) -> list[Any]:
        leaves, treedef = jax.tree_util.tree_flatten(fn(*a))
        tree.append(treedef)
        return leaves

    try:
        lowered = jax.jit(flat, keep_unused=keep_unused).lower(*args)
    except TypeError as exc:  # forward mode through a backward-only rule: the request's fault
        if not is_no_forward_mode(exc):
            raise
        raise no_forward_mode("this network", "network") from None
    return lowered.compile(), tree[0]


def signature(arrays: Sequence[Array]) -> tuple[tuple[tuple[int, ...], str], ...]:
    """The shapes and dtypes of bound inputs: with the network id, what a compiled program is for."""
    return tuple((a.shape, a.dtype.str) for a in arrays)


@functools.lru_cache(maxsize=1024)
def _grad_operation(*flags: Any) -> GradOperation:
    """The spec of these GradOperation flags, built once (a frozen dataclass costs a microsecond)."""
    return GradOperation(*flags)


class _LazyAvals(Sequence[Any]):
    """The outputs' abstract values, evaluated on first use."""

    def __init__(self, engine: Engine, net: Network, xs: Sequence[Array]) -> None:
        self._args = (engine, net, xs)
        self._avals: tuple[Any, ...] | None = None

    def _get(self) -> tuple[Any, ...]:
        if self._avals is None:
            engine, net, xs = self._args
            self._avals = engine.output_avals(net, xs)
        return self._avals

    def __getitem__(self, index: Any) -> Any:
        return self._get()[index]

    def __len__(self) -> int:
        return len(self._get())


class Engine:
    """Computes gradients of parsed networks on one JAX device.

    >>> engine = Engine(cache_size=64)
    >>> result = engine.grad(net, [x, y], get_all=True)
    """

    def __init__(
        self,
        *,
        cache_size: int = 64,
        device: jax.Device | None = None,
        max_elements: int | None = None,
        compile_cache_dir: str | None = None,
        executables: xstore.ExecutableStore | None = None,
    ) -> None:
        if not jax.config.jax_enable_x64:
            raise RuntimeError("JAX is not configured for gradserve: call engine.configure_jax() first "
                               "(without x64, float64 tensors would silently become float32)")
        configure_compile_cache(compile_cache_dir)
        self.device = device or jax.devices()[0]
        self._zero_copy = getattr(self.device, "platform", None) == "cpu"
        self.max_elements = max_elements
        self._compiled: LRUCache[Any] = LRUCache(cache_size)
        self._out_avals: LRUCache[tuple[Any, ...]] = LRUCache(cache_size * 4)
        self._params: LRUCache[dict[str, jax.Array]] = LRUCache(cache_size)
        # Warm calls of the common form (list inputs, stored parameters, no sens) skip binding
        # and validation: the key holds everything those depend on (see grad()).
        self._hits: LRUCache[tuple[Any, Any]] = LRUCache(cache_size)
        # Compiled programs shared with other processes (engine/executables.py): looked up
        # before compiling, written after; None: every process compiles its own
        self.executables = executables
        self._env = None if executables is None else xstore.environment(self.device)

    @property
    def stats(self) -> dict[str, float]:
        """Compile-cache counters: hits, misses, evictions, compile_seconds, size."""
        return self._compiled.stats.as_dict()

    def forget(self, network_id: str) -> None:
        """Drop everything cached for a network (it was deleted)."""
        for cache in (self._compiled, self._out_avals, self._params, self._hits):
            cache.discard_where(lambda key: key == network_id or (isinstance(key, tuple) and key[0] == network_id))

    # -- argument binding ------------------------------------------------------------------

    def bind_inputs(self, net: Network, inputs: Sequence[Array] | Mapping[str, Array]) -> list[Array]:
        """The inputs as arrays in the network's order, each checked against its declared dtype and shape."""
        if isinstance(inputs, Mapping):
            names = list(net.input_names)
            unknown = [k for k in inputs if k not in names]
            if unknown:
                raise ArgumentError(f"unknown input '{unknown[0]}': this network's inputs are {names}", f"inputs.{unknown[0]}")
            missing = [n for n in names if n not in inputs]
            if missing:
                raise ArgumentError(f"missing input '{missing[0]}': this network's inputs are {names}", "inputs")
            inputs = [inputs[n] for n in names]
        if len(inputs) != len(net.inputs):
            raise ArgumentError(
                f"the network takes {len(net.inputs)} input(s) ({', '.join(net.input_names)}), got {len(inputs)}",
                "inputs",
            )
        bound = []
        for i, (spec, x) in enumerate(zip(net.inputs, inputs)):
            x = np.asarray(x)
            if spec.dtype is not None and dtype_name(x.dtype) != spec.dtype:
                raise DTypeError(f"input '{spec.name}' must be {spec.dtype}, got {dtype_name(x.dtype)}", f"inputs[{i}]")
            if spec.shape is not None and (
                len(spec.shape) != x.ndim or any(d is not None and d != n for d, n in zip(spec.shape, x.shape))
            ):
                want = ["any" if d is None else d for d in spec.shape]
                raise ShapeError(f"input '{spec.name}' must have shape {want}, got {list(x.shape)}", f"inputs[{i}]")
            bound.append(x)
        return bound

    def _device_params(self, net: Network, overrides: Mapping[str, Array] | None) -> dict[str, Any]:
        params, _ = self._params.get_or_create(
            net.id, lambda: {p.name: jax.device_put(p.value, self.device) for p in net.parameters}
        )
        if not overrides:
            return params
        params = dict(params)
        params.update(self._check_parameters(net, overrides))
        return params

    @staticmethod
    def _check_parameters(net: Network, overrides: Mapping[str, Array] | None) -> dict[str, Array]:
        """Per-call parameter values as arrays, each checked against the stored parameter."""
        checked: dict[str, Array] = {}
        for name, value in (overrides or {}).items():
            stored = net.parameter(name)
            if stored is None:
                raise ArgumentError(
                    f"'{name}' is not a parameter of this network; its parameters are {[p.name for p in net.parameters]}",
                    f"parameters.{name}",
                )
            value = np.asarray(value)
            if value.shape != stored.value.shape or value.dtype != stored.value.dtype:
                raise ShapeError(
                    f"parameter '{name}' is {dtype_name(stored.value.dtype)}{list(stored.value.shape)}, "
                    f"got {dtype_name(value.dtype)}{list(value.shape)}",
                    f"parameters.{name}",
                )
            checked[name] = value
        return checked

    def output_avals(self, net: Network, inputs: Sequence[Array]) -> tuple[Any, ...]:
        """Shapes and dtypes of the outputs for these inputs (abstract evaluation, cached)."""
        key = (net.id, signature(inputs))

        def evaluate() -> tuple[Any, ...]:
            params = {p.name: jax.ShapeDtypeStruct(p.value.shape, p.value.dtype) for p in net.parameters}
            xs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in inputs]
            return jax.eval_shape(make_forward(net, self.max_elements), xs, params)

        return self._out_avals.get_or_create(key, evaluate)[0]

    def check(
        self,
        net: Network,
        inputs: Sequence[Array] | Mapping[str, Array],
        *,
        parameters: Mapping[str, Array] | None = None,
        get_all: bool = False,
        get_by_list: bool = False,
        sens_param: bool = False,
        weights: Sequence[str] | None = None,
        sens: Any = None,
        return_value: bool = False,
    ) -> list[Array]:
        """:meth:`check_run` of GradOperation with these flags."""
        spec = GradOperation(bool(get_all), bool(get_by_list), bool(sens_param),
                             None if weights is None else tuple(weights), bool(return_value))
        return self.check_run(net, spec, inputs, parameters=parameters, extra=sens)[0]

    def check_run(self, net: Network, spec: Spec, inputs: Sequence[Array] | Mapping[str, Array], *,
                  parameters: Mapping[str, Array] | None = None, extra: Any = None) -> tuple[list[Array], Any]:
        """Raise what :meth:`run` would raise for this call (bad inputs, positions, weights,
        parameters or per-call vectors; a shape or dtype mismatch at a node; an intermediate over
        the size limit) without compiling or running anything: abstract evaluation only, so no
        device is needed. Returns the bound inputs and the bound vectors."""
        xs = self.bind_inputs(net, inputs)
        self._check_parameters(net, parameters)
        avals = self.output_avals(net, xs)  # shapes and dtypes through the whole graph
        return xs, TRANSFORMS[type(spec)].check(avals, net, spec, xs, extra)

    # -- the call --------------------------------------------------------------------------

    def grad(
        self,
        net: Network,
        inputs: Sequence[Array] | Mapping[str, Array],
        *,
        parameters: Mapping[str, Array] | None = None,
        get_all: bool = False,
        get_by_list: bool = False,
        sens_param: bool = False,
        weights: Sequence[str] | None = None,
        sens: Any = None,
        return_value: bool = False,
    ) -> GradResult:
        """``GradOperation(get_all, get_by_list, sens_param)(net, weights)(*inputs[, sens])``."""
        try:
            spec = _grad_operation(bool(get_all), bool(get_by_list), bool(sens_param),
                                   None if weights is None else tuple(weights), bool(return_value))
        except TypeError:  # odd weights (not hashable): the check says why
            self.check_run(net, GradOperation(get_by_list=True, weights=weights), inputs)  # type: ignore[arg-type]
            raise
        return self.run(net, spec, inputs, parameters=parameters, extra=sens)

    def run(self, net: Network, spec: Spec, inputs: Sequence[Array] | Mapping[str, Array], *,
            parameters: Mapping[str, Array] | None = None, extra: Any = None) -> GradResult:
        """The transform ``spec`` of ``net`` at ``inputs``; ``extra`` holds the call's vectors
        (sens, tangents, cotangents or hvp vectors, per the spec's ``extra_field``)."""
        fast = None
        if parameters is None and extra is None and isinstance(inputs, (list, tuple)):
            # Warm calls of the common form skip binding and validation: the key is everything
            # those depend on (a dict lookup on the hot path).
            try:
                fast = (net.id, spec, tuple((x.shape, x.dtype) for x in inputs))
            except AttributeError:  # not arrays: the general path says why
                fast = None
            if fast is not None:
                entry = self._hits.get(fast)
                if entry is not None:
                    self._compiled.stats.hits += 1
                    compiled, params = entry
                    return self._run(net, spec, compiled, inputs, params, None, 0.0, True)

        # The worker's own checks: the server's validator ran the whole of check_run already, so
        # the outputs' shapes are only evaluated where the spec's vectors need them.
        xs = self.bind_inputs(net, inputs)
        transform = TRANSFORMS[type(spec)]
        bound = transform.check(_LazyAvals(self, net, xs), net, spec, xs, extra)
        params = self._device_params(net, parameters)
        spec = transform.canonical(net, spec)
        key = (net.id, spec, signature(xs), None if bound is None else signature(bound))
        compile_s = 0.0

        def compile_now() -> Any:
            nonlocal compile_s
            t0 = time.perf_counter()
            program = None
            if self.executables is not None:  # another process may have compiled it already
                program = xstore.program_id(net.id, to_wire(spec), key[2], key[3], self.max_elements)
                found = self._load_stored(program, (xs, params, bound))
                if found is not None:
                    compile_s = time.perf_counter() - t0
                    return found
            fn = transform.build(net, spec, [x.dtype for x in xs], self.max_elements)
            compiled = _compile(fn, (xs, params, bound), keep_unused=program is not None)
            compile_s = time.perf_counter() - t0
            self._compiled.stats.compile_seconds += compile_s
            if program is not None:
                self._store(program, compiled, (xs, params, bound))
            return compiled

        compiled, hit = self._compiled.get_or_create(key, compile_now)
        if fast is not None:
            self._hits.put(fast, (compiled, params))
        return self._run(net, spec, compiled, xs, params, bound, compile_s, hit)

    # -- executables shared with other processes (engine/executables.py) --------------------

    def _load_stored(self, program: dict[str, Any], args: tuple[Any, ...]) -> tuple[Any, Any] | None:
        """The stored program for ``program`` if the store has a sound one for this environment."""
        key = xstore.entry_key(program, self._env)  # type: ignore[arg-type]
        try:
            data = self.executables.get(key)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - the store is an optimisation: never a failure
            log.warning("executable store unreadable (%s): compiling", exc)
            return None
        if data is None:
            return None
        try:
            found, treedef, _ = xstore.load(data, self.device, program=program)
        except xstore.EntryError as exc:
            log.warning("stored executable %s ignored: %s", key[:12], exc)
            return None
        if found.n_in != len(jax.tree_util.tree_leaves(args)):
            log.warning("stored executable %s ignored: it takes %d arrays", key[:12], found.n_in)
            return None
        self._compiled.stats.loaded += 1
        return found, treedef

    def _store(self, program: dict[str, Any], compiled: tuple[Any, Any], args: tuple[Any, ...]) -> None:
        try:
            data = xstore.dump(compiled[0], compiled[1], len(jax.tree_util.tree_leaves(args)), program,
                               self._env)  # type: ignore[arg-type]
            self.executables.put(xstore.entry_key(program, self._env), program["network_id"], data)  # type: ignore
        except Exception as exc:  # noqa: BLE001 - not stored: the next process compiles it again
            log.warning("compiled program not stored: %s: %s", type(exc).__name__, exc)

    def preload(self, data: bytes, *, run: bool = True) -> bool:
        """Put a stored entry's program in the compile cache, so that the first call of it here
        does not compile (a new process warming up); ``run``: and run it once on zeros (a first
        run is slow). False if the entry is not usable here (damaged, another environment or
        engine version) or already cached."""
        try:
            found, treedef, header = xstore.load(data, self.device)
            program = header["program"]
            if program.get("max_elements") != self.max_elements:
                return False
            key = xstore.engine_key(program, from_wire)
            if key in self._compiled:
                return False
            if run:
                found.warm_up()
        except Exception as exc:  # noqa: BLE001 - damaged, foreign or failing: it is compiled when called
            log.warning("stored executable not preloaded: %s: %s", type(exc).__name__, exc)
            return False
        self._compiled.put(key, (found, treedef))
        self._compiled.stats.loaded += 1
        return True

    # -- batches (engine/batching.py) --------------------------------------------------------

    def prepare(self, net: Network, spec: Spec, inputs: Sequence[Array] | Mapping[str, Array], *,
                extra: Any = None) -> Call:
        """One call bound and checked as :meth:`run` checks it (raises what it would raise), for
        :meth:`run_batch`. Calls with the same :attr:`~engine.batching.Call.key` batch together.
        (Per-call parameter values are not batched: such a call runs alone.)"""
        xs = self.bind_inputs(net, inputs)
        transform = TRANSFORMS[type(spec)]
        bound = transform.check(_LazyAvals(self, net, xs), net, spec, xs, extra)
        spec = transform.canonical(net, spec)
        bound = None if bound is None else tuple(np.asarray(b) for b in bound)
        key = (net.id, spec, signature(xs), None if bound is None else signature(bound))
        return Call(spec, tuple(xs), bound, key)

    def batch_compiled(self, call: Call, size: int) -> bool:
        """Whether the batched program of ``call``'s key for ``size`` rows is compiled (cached)."""
        return (*call.key, ("batch", size)) in self._compiled

    def compile_batch(self, net: Network, call: Call, size: int) -> float:
        """Compile (and cache) the batched program of ``call``'s key for ``size`` rows, without
        running it; the seconds it took (0 if it was cached). Raises what the compiler raises."""
        return self._batch_program(net, call, size)[1]

    def _batch_program(self, net: Network, call: Call, size: int) -> tuple[Any, float, bool]:
        took = 0.0

        def compile_now() -> Any:
            nonlocal took
            t0 = time.perf_counter()
            spec = call.spec
            xs, extra = batching.stacked_shapes(call, size)  # shapes only: nothing allocated
            args = (xs, self._device_params(net, None), extra)
            program = None
            if self.executables is not None:  # a batched program is shared like any other
                program = {**xstore.program_id(net.id, to_wire(spec), call.key[2], call.key[3], self.max_elements),
                           "batch": size}
                found = self._load_stored(program, args)
                if found is not None:
                    took = time.perf_counter() - t0
                    return found
            fn = TRANSFORMS[type(spec)].build(net, spec, [x.dtype for x in call.xs], self.max_elements)
            compiled = _compile(batching.batched(fn, extra is not None), args, keep_unused=program is not None)
            took = time.perf_counter() - t0
            self._compiled.stats.compile_seconds += took
            if program is not None:
                self._store(program, compiled, args)
            return compiled

        compiled, hit = self._compiled.get_or_create((*call.key, ("batch", size)), compile_now)
        return compiled, took, hit

    def run_batch(self, net: Network, calls: Sequence[Call], size: int) -> list[GradResult]:
        """``calls`` (one key, ``len(calls) <= size``) computed by the batched program for
        ``size`` rows (padded): each result is what :meth:`run` gives that call alone. Compiles
        the program if it is not cached (see :meth:`batch_compiled`, :meth:`compile_batch`)."""
        first = calls[0]
        if not 1 <= len(calls) <= size or any(c.key != first.key for c in calls):
            raise ValueError("a batch holds calls of one key, at most its size")
        (program, treedef), compile_s, hit = self._batch_program(net, first, size)
        # The cache's counters count calls, as :meth:`run` does: the one lookup above served
        # every row, so the other rows are hits (a load test compares hits with requests).
        self._compiled.stats.hits += len(calls) - 1
        t0 = time.perf_counter()
        xs, extra = batching.stack_calls(calls, size)
        # the parameters: the network's, on the device once, shared by every row (in_axes=None)
        leaves = to_host([program(xs, self._device_params(net, None), extra)], self._zero_copy)[0]
        layout = TRANSFORMS[type(first.spec)].layout
        fields = [layout(net, first.spec, treedef.unflatten(row)) for row in batching.rows(leaves, len(calls))]
        compute_ms = (time.perf_counter() - t0) * 1e3
        return [GradResult(f, {"compile": compile_s * 1e3, "compute": compute_ms}, hit) for f in fields]

    def _run(self, net: Network, spec: Spec, compiled: Any, xs: Sequence[Any], params: Mapping[str, Any],
             extra: Any, compile_s: float, hit: bool) -> GradResult:
        t0 = time.perf_counter()
        program, treedef = compiled
        # Everything comes to the host in one transfer (a compiled program returns only what
        # its layout uses).
        outs = treedef.unflatten(to_host([program(xs, params, extra)], self._zero_copy)[0])
        fields = TRANSFORMS[type(spec)].layout(net, spec, outs)
        compute_s = time.perf_counter() - t0
        return GradResult(fields, {"compile": compile_s * 1e3, "compute": compute_s * 1e3}, hit)
