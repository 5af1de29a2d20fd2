"""Make the repository root importable (``import engine``, ``import tests.support``) however pytest
is started, configure JAX for the engine (as every process that starts JAX does), and register
the shared fixtures (real servers: ``tests/support/servers.py``)."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import engine  # noqa: E402

engine.configure_jax()  # x64, before any Engine; it starts no backend (pytest takes no GPU)

# pytest reads pytest_plugins only in this, the top-level conftest
pytest_plugins = ["tests.support.servers", "tests.support.postgres"]


def _jax_sees_a_gpu() -> bool:
    """Ask a short-lived process (as the worker pool does), so pytest itself takes no GPU."""
    import json
    import subprocess

    from service.pool.probe import PROBE_CODE

    try:
        out = subprocess.run([sys.executable, "-c", PROBE_CODE], capture_output=True, text=True, timeout=120)
        return bool(json.loads(out.stdout.strip().splitlines()[-1])["gpus"])
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where JAX sees a GPU; elsewhere they are reported skipped."""
    import pytest

    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items and not _jax_sees_a_gpu():
        skip = pytest.mark.skip(reason="needs a GPU that JAX can see (pip install -e '.[cuda]')")
        for item in gpu_items:
            item.add_marker(skip)
