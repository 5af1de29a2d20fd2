"""The README's example scripts (``examples/*.py``) run against a live server as the README shows
them: the snippet before the ``sh`` block that runs the script is the script's own text, and the
block after it is what the script prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np

from tests.support import ROOT

#: a number as a script prints it
NUMBER = re.compile(r"-?\d+\.?\d*(?:e[+-]?\d+)?")


def run_readme_example(script: str, url: str, key: str, *, snippet_from: int = 0) -> str:
    """Run ``examples/<script>`` against ``url`` (``GRADSERVE_API_KEY=key``) and check it against the
    README: each line of the snippet from line ``snippet_from`` on is a line of the script (a
    snippet whose first line differs, the client's address, says 1), and its output is the shown
    block, word for word but for numbers, the numbers within 1e-5. Returns what it printed."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```(\w+)\n(.*?)^```$", readme, re.MULTILINE | re.DOTALL)
    i = next(i for i, (lang, text) in enumerate(blocks) if lang == "sh"
             and text.startswith(f".venv/bin/python examples/{script}"))
    snippet, shown = blocks[i - 1][1], blocks[i + 1][1]
    text = (ROOT / "examples" / script).read_text()
    for line in snippet.splitlines()[snippet_from:]:
        assert line in text, line
    done = subprocess.run([sys.executable, f"examples/{script}", url], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "GRADSERVE_API_KEY": key})
    assert done.returncode == 0, done.stderr
    assert NUMBER.sub("#", " ".join(done.stdout.split())) == NUMBER.sub("#", " ".join(shown.split()))
    np.testing.assert_allclose([float(x) for x in NUMBER.findall(done.stdout)],
                               [float(x) for x in NUMBER.findall(shown)], rtol=1e-5, atol=1e-6)
    return done.stdout
