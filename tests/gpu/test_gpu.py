"""On a GPU host: the service puts its workers on the GPUs and computes what the CPU computes.

Marked ``gpu``: skipped (not passed) where JAX sees no GPU; run with ``make test PYTEST_ARGS="-m gpu"``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import pytest

import engine
from tests.support import FIXTURES
from tests.support.servers import start_server

pytestmark = pytest.mark.gpu


def _gpu_count() -> int:
    code = "import jax; print(len(jax.devices('gpu')))"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("gpu"), device="gpu", workers=_gpu_count())
    yield server
    server.stop()


def test_one_worker_per_gpu(gpu_server):
    """One engine per GPU: worker processes of the one HTTP process (``process``), or one HTTP
    process per GPU under the supervisor (``inprocess``, the default), each listing its one worker
    in its own /metrics."""
    count = _gpu_count()
    assert len(gpu_server.engine_pids()) == count
    metrics = httpx.get(gpu_server.url + "/metrics").text
    workers = [line for line in metrics.splitlines() if line.startswith("gradserve_worker_queue_depth{")]
    assert len(workers) == (count if gpu_server.worker_pids() else 1), metrics


def test_tutorial_on_the_gpu(gpu_server):
    case = json.loads((FIXTURES / "tutorial.json").read_text())["cases"][1]
    reply = httpx.post(gpu_server.url + "/grad", json=case["request"], timeout=120).json()
    for got, want in zip(reply["gradients"], case["expected_gradients"], strict=True):
        np.testing.assert_allclose(engine.decode_tensor(got), engine.decode_tensor(want), rtol=1e-5, atol=1e-6)


def test_mlp_on_the_gpu_matches_the_cpu_engine(gpu_server):
    request = json.loads((FIXTURES / "mlp.json").read_text())
    reply = httpx.post(gpu_server.url + "/grad", json=request | {"output_encoding": "b64"}, timeout=300).json()
    import jax  # noqa: PLC0415

    cpu = engine.Engine(device=jax.devices("cpu")[0])
    expected = engine.run_request(request, engine=cpu).gradients
    for got, want in zip(reply["gradients"], expected, strict=True):
        np.testing.assert_allclose(engine.decode_tensor(got), want, rtol=1e-3, atol=1e-4)
