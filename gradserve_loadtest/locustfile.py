"""The locustfile that ``gradserve loadtest --backend locust`` runs headless, once per level.

It is configured by the JSON file named in ``GRADSERVE_LOADTEST_SPEC`` (written by the CLI):
the body bytes to post (already encoded, see :mod:`gradserve_loadtest.scenarios`), the headers,
the rate per user (absent: closed loop) and where to write the per-request samples and progress.
For interactive use (Locust's web UI) see ``tests/load/locustfile.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gradserve_loadtest.scenarios import PreparedRequest
from gradserve_loadtest.users import GradUser, Recorder, rate_wait

_SPEC = json.loads(Path(os.environ["GRADSERVE_LOADTEST_SPEC"]).read_text())
_PREPARED = PreparedRequest(
    body=Path(_SPEC["body_file"]).read_bytes(),
    headers=dict(_SPEC["headers"]),
    path=_SPEC.get("path", "/grad"),
)
_RECORDER = Recorder(_SPEC["samples"], _SPEC.get("progress"), duration=_SPEC.get("duration"))


class SweepUser(GradUser):
    wait_time = rate_wait(_SPEC.get("rate_per_user"))

    def prepared(self) -> PreparedRequest:
        return _PREPARED
