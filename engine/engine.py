"""The :class:`Engine`: validated network + tensors in, GradOperation gradients out.

One engine owns one device, a bounded cache of compiled executables (one per network id, flags,
weights and input signature) and the network parameters already placed on its device.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from .cache import LRUCache
from .dtypes import dtype_name
from .errors import ArgumentError, DTypeError, SensError, ShapeError
from .grad import GradSpec, make_forward, make_grad_fn
from .network import Network

Array = np.ndarray


@dataclass
class GradResult:
    """Gradients nested as GradOperation returns them, with their names and timings."""

    gradients: Any  # Array | list[Array] | list[list[Array]]
    gradient_names: Any  # str | list[str] | list[list[str]]
    value: list[Array] | None = None
    timing_ms: dict[str, float] = field(default_factory=dict)
    cache_hit: bool = False


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


def signature(arrays: Sequence[Array]) -> tuple[tuple[tuple[int, ...], str], ...]:
    """The shapes and dtypes of bound inputs: with the network id, what a compiled program is for."""
    return tuple((a.shape, a.dtype.str) for a in arrays)


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
        self._hits: LRUCache[tuple[Any, Any, GradSpec]] = LRUCache(cache_size)

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

    def _spec(self, net: Network, get_all: bool, get_by_list: bool, sens_param: bool,
              weights: Sequence[str] | None, return_value: bool) -> GradSpec:
        if weights is not None and not get_by_list:
            raise ArgumentError("'weights' is only used with get_by_list: set get_by_list to true", "weights")
        if weights is None:
            chosen = net.trainable if get_by_list else ()
        else:
            for k, w in enumerate(weights):
                if not isinstance(w, str) or net.parameter(w) is None:
                    raise ArgumentError(
                        f"'{w}' is not a parameter of this network; its parameters are {[p.name for p in net.parameters]}",
                        f"weights[{k}]",
                    )
            chosen = tuple(weights)
        if not (get_all or get_by_list) and not net.inputs:
            raise ArgumentError("GradOperation without flags differentiates w.r.t. the first input, and this network has none", "inputs")
        return GradSpec(bool(get_all), bool(get_by_list), bool(sens_param), chosen, bool(return_value))

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

    def _bind_sens(self, net: Network, inputs: Sequence[Array], sens: Any) -> tuple[Array, ...]:
        avals = self.output_avals(net, inputs)
        if sens is None:
            raise SensError(f"sens_param is set: 'sens' must give one tensor per output ({len(avals)})", "sens")
        many = isinstance(sens, (list, tuple))
        items = list(sens) if many else [sens]
        if len(items) != len(avals):
            raise SensError(
                f"'sens' must hold one tensor per output: the network has {len(avals)} output(s), got "
                f"{len(items) if many else 'a single tensor'}",
                "sens",
            )
        bound = []
        for k, (s, aval) in enumerate(zip(items, avals)):
            s = np.asarray(s)
            at = f"sens[{k}]" if many else "sens"
            if s.shape != tuple(aval.shape):
                raise SensError(f"sens for output {k} must have the output's shape {list(aval.shape)}, got {list(s.shape)}", at)
            if s.dtype != aval.dtype:
                raise SensError(
                    f"sens for output {k} must have the output's dtype {dtype_name(aval.dtype)}, got {dtype_name(s.dtype)}", at
                )
            bound.append(s)
        return tuple(bound)

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
        """Raise what :meth:`grad` would raise for this call (bad inputs, flags, weights, parameters
        or sens; a shape or dtype mismatch at a node; an intermediate over the size limit) without
        compiling or running anything: abstract evaluation only, so no device is needed. Returns
        the bound inputs."""
        xs = self.bind_inputs(net, inputs)
        self._spec(net, get_all, get_by_list, sens_param, weights, return_value)
        self._check_parameters(net, parameters)
        self.output_avals(net, xs)  # shapes and dtypes through the whole graph
        self._check_sens(net, xs, sens_param, sens)
        return xs

    def _check_sens(self, net: Network, xs: Sequence[Array], sens_param: bool, sens: Any) -> tuple[Array, ...] | None:
        if sens_param:
            return self._bind_sens(net, xs, sens)
        if sens is not None:
            raise SensError("'sens' is given but sens_param is false: set sens_param to true", "sens")
        return None

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
        fast = None
        if parameters is None and sens is None and not sens_param and isinstance(inputs, (list, tuple)):
            try:
                fast = (net.id, bool(get_all), bool(get_by_list), None if weights is None else tuple(weights),
                        bool(return_value), tuple((x.shape, x.dtype) for x in inputs))
                hash(fast)
            except (AttributeError, TypeError):  # not arrays, or odd weights: the general path says why
                fast = None
            if fast is not None:
                entry = self._hits.get(fast)
                if entry is not None:
                    self._compiled.stats.hits += 1
                    compiled, params, spec = entry
                    return self._run(net, spec, compiled, inputs, params, None, 0.0, True)

        xs = self.bind_inputs(net, inputs)
        spec = self._spec(net, get_all, get_by_list, sens_param, weights, return_value)
        params = self._device_params(net, parameters)
        sens_values = self._check_sens(net, xs, spec.sens_param, sens)

        key = (net.id, spec, signature(xs))
        compile_s = 0.0

        def compile_now() -> Any:
            nonlocal compile_s
            t0 = time.perf_counter()
            fn = make_grad_fn(net, spec, [x.dtype for x in xs], self.max_elements)
            compiled = jax.jit(fn).lower(xs, params, sens_values).compile()
            compile_s = time.perf_counter() - t0
            self._compiled.stats.compile_seconds += compile_s
            return compiled

        compiled, hit = self._compiled.get_or_create(key, compile_now)
        if fast is not None:
            self._hits.put(fast, (compiled, params, spec))
        return self._run(net, spec, compiled, xs, params, sens_values, compile_s, hit)

    def _run(self, net: Network, spec: GradSpec, compiled: Any, xs: Sequence[Any], params: Mapping[str, Any],
             sens_values: Any, compile_s: float, hit: bool) -> GradResult:
        t0 = time.perf_counter()
        values, g_x, g_w = compiled(xs, params, sens_values)
        # Only what the caller gets comes to the host, in one transfer.
        if spec.get_all and spec.get_by_list:
            wanted, names = [g_x, g_w], [list(net.input_names), list(spec.weights)]
        elif spec.get_all:
            wanted, names = [g_x], list(net.input_names)
        elif spec.get_by_list:
            wanted, names = [g_w], list(spec.weights)
        else:  # GradOperation(): the first input's gradient alone
            wanted, names = [g_x[:1]], net.input_names[0]
        if spec.return_value:
            wanted.append(values)
        fetched = to_host(wanted, self._zero_copy)
        value = fetched.pop() if spec.return_value else None
        compute_s = time.perf_counter() - t0
        if spec.get_all and spec.get_by_list:
            gradients: Any = fetched
        else:
            gradients = fetched[0] if spec.get_all or spec.get_by_list else fetched[0][0]
        return GradResult(
            gradients=gradients,
            gradient_names=names,
            value=value,
            timing_ms={"compile": compile_s * 1e3, "compute": compute_s * 1e3},
            cache_hit=hit,
        )
