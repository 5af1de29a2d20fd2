"""The clients in examples/ (curl, Python, Node.js) run against a live server and reproduce the tutorial."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from engine import decode_tensor
from tests.support import ROOT
from tests.support.servers import KEY_A


def _expected(tutorial: list[dict], name: str):
    return next(c["expected_gradients"] for c in tutorial if c["name"] == name)


def _run(cmd: list[str], url: str) -> str:
    env = {**os.environ, "GRADSERVE_API_KEY": KEY_A}
    done = subprocess.run(cmd + [url], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def test_curl_example_reproduces_the_tutorial(live_server, tutorial):
    assert shutil.which("curl"), "curl is needed for the curl example"
    reply = json.loads(_run(["bash", "examples/curl_tutorial.sh"], live_server.url))
    expected = decode_tensor(_expected(tutorial, "grad-wrt-first-input"))
    got = decode_tensor(reply["gradients"])
    assert reply["gradient_names"] == "x"
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_python_example_reproduces_the_tutorial(live_server, tutorial):
    out = _run([sys.executable, "examples/python_client.py"], live_server.url)
    (dx, dy), (dz,) = (
        [decode_tensor(t) for t in group] for group in _expected(tutorial, "grad-wrt-inputs-and-weights"))
    expected = ["gradient_names: [['x', 'y'], ['z']]"]
    expected += [f"d{n}: {g.dtype} {list(g.shape)}\n{g}" for n, g in (("x", dx), ("y", dy), ("z", dz))]
    assert out == "\n".join(expected) + "\n"


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_node_example_reproduces_the_tutorial(live_server, tutorial):
    reply = json.loads(_run(["node", "examples/node_client.mjs"], live_server.url))
    expected = _expected(tutorial, "grad-wrt-inputs-and-weights")
    assert reply["gradient_names"] == [["x", "y"], ["z"]]
    for got_group, want_group in zip(reply["gradients"], expected, strict=True):
        for got, want in zip(got_group, want_group, strict=True):
            want_arr = decode_tensor(want)
            assert got["shape"] == list(want_arr.shape)
            np.testing.assert_allclose(np.asarray(got["data"], np.float32), want_arr.reshape(-1), rtol=1e-5, atol=1e-6)
