"""What every test directory shares, imported as ``tests.support.<module>`` (tests/conftest.py puts
the repository root on ``sys.path`` and registers :mod:`tests.support.servers` as a pytest plugin):

- :mod:`~tests.support.servers`: real ``gradserve serve`` subprocesses and the session fixtures
  ``server_factory`` and ``live_server`` (with its API keys and limits);
- :mod:`~tests.support.api_contract`: the wire format, error shape and metrics of the API contract,
  written from the contract (not from the service's codec), and networks slow to compile;
- :mod:`~tests.support.raw_http`: HTTP/1.1 on a raw socket, for bodies a client library would not
  send (over the limit, lying about their length);
- :mod:`~tests.support.fake_worker`: in-process fake workers for the pool (``FakeLauncher``): the
  pool and the handlers tested without processes;
- :mod:`~tests.support.ipc`: the blocking reader of the server <-> worker framing;
- :mod:`~tests.support.readme_examples`: the README's example scripts run as the README shows them;
- :mod:`~tests.support.networks`: small networks computed by more than one test module;
- :mod:`~tests.support.ray_cluster`: a real multi-node Ray cluster on this machine (the cluster
  tests and ``benchmarks/bench_cluster.py``).

This module: where the repository and its fixtures (``tests/fixtures``, written by the scripts
in ``tools/``, see tools/README.md) are.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
