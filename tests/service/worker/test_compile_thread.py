"""The worker's compile thread yields to the warm path (issue 12.2): a short GIL switch
interval, and the lowest CPU priority for that thread alone (benchmarks/compile_gil.py measures
what it buys: the warm call's worst latency while a 1000-node chain compiles)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from service.worker.main import COMPILE_SWITCH_S, _CompileBudget, _yield_to_the_warm_path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is Linux's")
def test_the_compile_thread_runs_at_nice_19_with_a_short_switch_interval():
    before = sys.getswitchinterval()
    main_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: dict[str, int] = {}

    def compile_thread() -> None:
        _yield_to_the_warm_path()
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    thread = threading.Thread(target=compile_thread)
    thread.start()
    thread.join()
    try:
        assert seen["nice"] == 19
        assert sys.getswitchinterval() <= COMPILE_SWITCH_S < 0.005
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_nice  # that thread only
    finally:
        sys.setswitchinterval(before)


def test_the_compile_loop_yields_first(monkeypatch):
    calls = []
    monkeypatch.setattr("service.worker.main._yield_to_the_warm_path", lambda: calls.append(1))

    class Stop(Exception):
        pass

    class Queue:
        def get(self):
            raise Stop

    budget = _CompileBudget(worker=None, timeout_s=None)  # type: ignore[arg-type]
    budget.queue = Queue()
    with pytest.raises(Stop):
        budget._compile_loop()
    assert calls == [1]
