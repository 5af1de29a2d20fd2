"""The README's examples, run against a live server: each answer is the one the README shows.

The README pastes real answers; these tests keep them true. ``timing_ms`` differs on every call
and is not compared; numbers are compared with rtol 1e-5 (another CPU may round the last float32
bit differently), everything else (network ids, names, dtypes, shapes, text) exactly.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.support import ROOT
from tests.support.servers import KEY_A

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```$", README, re.MULTILINE | re.DOTALL)
NUMBER = re.compile(r"-?\d+\.?\d*(?:e[+-]?\d+)?")


def _after(command: str, count: int = 1) -> list[str]:
    """The ``count`` code blocks that follow the ``sh`` block starting with ``command``."""
    for i, (lang, text) in enumerate(BLOCKS):
        if lang == "sh" and text.startswith(command):
            return [t for _, t in BLOCKS[i + 1:i + 1 + count]]
    raise AssertionError(f"README has no sh block starting with {command!r}")


def _same_answer(got: dict, shown: dict) -> None:
    got, shown = dict(got), dict(shown)
    got.pop("timing_ms"), shown.pop("timing_ms")
    assert _skeleton(got) == _skeleton(shown)
    np.testing.assert_allclose(_numbers(got), _numbers(shown), rtol=1e-5, atol=1e-6)


def _skeleton(doc):
    """Everything but the tensor data."""
    if isinstance(doc, dict):
        return {k: ("<data>" if k == "data" else _skeleton(v)) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_skeleton(v) for v in doc]
    return doc


def _numbers(doc) -> list[float]:
    if isinstance(doc, dict):
        return [x for k, v in doc.items() for x in (np.ravel(v).tolist() if k == "data" else _numbers(v))]
    if isinstance(doc, list):
        return [x for v in doc for x in _numbers(v)]
    return []


def _run(cmd: list[str], url: str) -> str:
    env = {**os.environ, "GRADSERVE_API_KEY": KEY_A}
    done = subprocess.run(cmd + [url], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


CURL = "curl -s http://127.0.0.1:8000/grad -H 'Content-Type: application/json' -d '"
CURL_BLOCKS = [text for lang, text in BLOCKS if lang == "sh" and text.startswith(CURL)]


def test_readme_has_the_examples():
    names = [json.loads(text[len(CURL):text.rindex("'")])["network"]["name"] for text in CURL_BLOCKS]
    bodies = [json.loads(text[len(CURL):text.rindex("'")]) for text in CURL_BLOCKS]
    assert any(b.get("sens_param") for b in bodies), names  # a sens example
    assert any(":" in i for b in bodies for n in b["network"]["nodes"] for i in n["inputs"]), names  # name:i


@pytest.mark.parametrize("block", CURL_BLOCKS, ids=lambda b: json.loads(b[len(CURL):b.rindex("'")])["network"]["name"])
def test_readme_curl_examples_answer_as_shown(client, block):
    body = json.loads(block[len(CURL):block.rindex("'")])
    (answer,) = _after(block)
    response = client.post("/grad", json=body)
    assert response.status_code == 200, response.text
    _same_answer(response.json(), json.loads(answer))


def test_readme_tutorial_script_sends_and_answers_as_shown(live_server):
    body, answer = _after("examples/curl_tutorial.sh", 2)
    script = (ROOT / "examples" / "curl_tutorial.sh").read_text()
    heredoc = script.split("<<'JSON'\n", 1)[1].split("\nJSON\n", 1)[0]
    assert json.loads(heredoc) == json.loads(body)  # the body the README shows is the script's
    _same_answer(json.loads(_run(["bash", "examples/curl_tutorial.sh"], live_server.url)), json.loads(answer))


def test_readme_python_client_prints_as_shown(live_server):
    (shown,) = _after(".venv/bin/python examples/python_client.py")
    got = _run([sys.executable, "examples/python_client.py"], live_server.url)
    assert NUMBER.sub("#", " ".join(got.split())) == NUMBER.sub("#", " ".join(shown.split()))
    np.testing.assert_allclose([float(x) for x in NUMBER.findall(got)], [float(x) for x in NUMBER.findall(shown)],
                               rtol=1e-5, atol=1e-6)


ROUTE_CURL = re.compile(r"curl -s http://127\.0\.0\.1:8000/(jvp|vjp|jacobian|hvp) -H 'Content-Type: application/json' -d '")
ROUTE_BLOCKS = [(m.group(1), text) for lang, text in BLOCKS if lang == "sh" and (m := ROUTE_CURL.match(text))]


def test_readme_has_a_curl_example_of_every_functional_route():
    assert sorted(route for route, _ in ROUTE_BLOCKS) == ["hvp", "jacobian", "jvp", "vjp"]
    bodies = [json.loads(text[len(CURL):text.rindex("'")]) for text in CURL_BLOCKS]
    assert any("grad_position" in b for b in bodies)  # the mindspore.grad form of /grad


@pytest.mark.parametrize(("route", "block"), ROUTE_BLOCKS, ids=[r for r, _ in ROUTE_BLOCKS])
def test_readme_functional_curl_examples_answer_as_shown(client, route, block):
    body = json.loads(block[ROUTE_CURL.match(block).end():block.rindex("'")])
    (answer,) = _after(block)
    response = client.post(f"/{route}", json=body)
    assert response.status_code == 200, response.text
    _same_answer(response.json(), json.loads(answer))
