"""Which devices the workers get: the GPU probe and the plan of worker slots.

The server never initialises a JAX backend itself (it would take a GPU): a short-lived probe
process (:data:`PROBE_CODE`) counts the GPUs that JAX sees. :func:`cpu_plan` and
:func:`gpu_plan` turn the settings and the GPUs found into one ``(label, environment)`` per
worker slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys

from ..settings import Settings

#: a slot's device label ("cpu" or "gpu:<n>") and the environment its process starts with
Plan = list[tuple[str, dict[str, str]]]

PROBE_CODE = """
import json
try:
    import jax
    try:
        gpus = [str(d) for d in jax.devices("gpu")]
    except Exception:
        gpus = []
    print(json.dumps({"gpus": gpus, "jax": jax.__version__}))
except Exception as exc:
    print(json.dumps({"gpus": [], "error": f"{type(exc).__name__}: {exc}"}))
"""
"""Run as ``python -c PROBE_CODE``: how many GPUs JAX sees, without the server process itself
initialising a backend (which would take a GPU)."""


def may_have_gpu() -> bool:
    """Cheap pre-check before probing: a GPU needs a device node, and JAX_PLATFORMS may rule it out."""
    platforms = os.environ.get("JAX_PLATFORMS", "").lower()
    if platforms and not any(p in platforms for p in ("cuda", "gpu", "rocm")):
        return False
    if any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")):
        return True
    with contextlib.suppress(OSError):
        return any(name.startswith("nvidia") for name in os.listdir("/dev"))
    return False


async def probe(timeout_s: float) -> tuple[list[str], str]:
    """The GPUs JAX sees, from a short-lived process, and a reason when there are none."""
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", TF_CPP_MIN_LOG_LEVEL="3")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PROBE_CODE, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        return [], f"the probe could not start: {exc}"
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return [], f"the probe took over {timeout_s:.0f} s"
    except asyncio.CancelledError:  # drained while probing
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        found = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = err.decode(errors="replace").strip().splitlines()[-1:]
        return [], f"the probe failed (exit code {proc.returncode}): {' '.join(tail)}"
    gpus = list(found.get("gpus") or [])
    return gpus, found.get("error") or ("no GPU device" if not gpus else "")


def cpu_plan(settings: Settings) -> Plan:
    """``settings.workers`` (default one) CPU workers."""
    return [("cpu", {"JAX_PLATFORMS": "cpu"})] * (settings.workers or 1)


def gpu_plan(settings: Settings, gpus: list[str]) -> Plan:
    """``settings.workers`` (default one per GPU) GPU workers, round-robin over the GPUs, each
    seeing only its own."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if len(visible) < len(gpus):
        visible = [str(i) for i in range(len(gpus))]
    plan = []
    for i in range(settings.workers or len(gpus)):
        g = i % len(gpus)
        plan.append((f"gpu:{g}", {"CUDA_VISIBLE_DEVICES": visible[g], "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}))
    return plan
