"""Locust's web UI against gradserve, with the scenarios of ``gradserve loadtest``.

    .venv/bin/locust -f tests/load/locustfile.py --host http://127.0.0.1:8000
    # then open http://localhost:8089, or headless:
    .venv/bin/locust -f tests/load/locustfile.py --host http://127.0.0.1:8000 \
        --headless -u 16 -r 16 -t 30s TutorialUser

User classes (pick one on the command line, with ``--class-picker`` in the UI, or run all
together for a mixed load): ``TutorialUser`` (the seed tutorial net, get_all) and ``MlpUser``
(the 784-512-512-10 MLP, get_by_list). Environment variables:

- ``GRADSERVE_LOADTEST_SCENARIO``: ``tutorial``, ``mlp`` or the path of a JSON /grad body; when set,
  only ``ScenarioUser`` (that scenario) is defined.
- ``GRADSERVE_LOADTEST_ENCODING``: ``json`` (default), ``b64`` or ``binary``.
- ``GRADSERVE_LOADTEST_NETWORK_ID=1``: register the network once and send ``network_id``.
- ``GRADSERVE_LOADTEST_RATE``: requests/s per user (``constant_throughput``); unset: closed loop.
- ``GRADSERVE_LOADTEST_MLP_FILE``: the MLP request (default ``tests/fixtures/mlp.json``, written
  by ``tools/make_mlp_fixture.py``).
- ``GRADSERVE_LOADTEST_HEADERS``: extra headers, ``Name: value`` separated by ``;`` (API keys).

The bodies are built by :mod:`gradserve_loadtest.scenarios`, the user class is
:class:`gradserve_loadtest.users.GradUser`: this file only wires them up.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from gradserve_loadtest.scenarios import PreparedRequest  # noqa: E402
from gradserve_loadtest.users import GradUser, prepared_for, rate_wait  # noqa: E402

ENCODING = os.environ.get("GRADSERVE_LOADTEST_ENCODING", "json")
NETWORK_ID = os.environ.get("GRADSERVE_LOADTEST_NETWORK_ID", "").lower() in ("1", "true", "yes")
RATE = float(os.environ["GRADSERVE_LOADTEST_RATE"]) if os.environ.get("GRADSERVE_LOADTEST_RATE") else None
MLP_FILE = os.environ.get("GRADSERVE_LOADTEST_MLP_FILE") or None
HEADERS = dict(
    (k.strip(), v.strip())
    for k, v in (h.split(":", 1) for h in os.environ.get("GRADSERVE_LOADTEST_HEADERS", "").split(";") if ":" in h)
)
SCENARIO = os.environ.get("GRADSERVE_LOADTEST_SCENARIO")


class _ScenarioUser(GradUser):
    abstract = True
    scenario = "tutorial"
    wait_time = rate_wait(RATE)
    extra_headers = HEADERS

    def prepared(self) -> PreparedRequest:
        return prepared_for(self.host, self.scenario, ENCODING, NETWORK_ID, MLP_FILE, HEADERS)


if SCENARIO:

    class ScenarioUser(_ScenarioUser):
        scenario = SCENARIO

else:

    class TutorialUser(_ScenarioUser):
        scenario = "tutorial"

    class MlpUser(_ScenarioUser):
        scenario = "mlp"
