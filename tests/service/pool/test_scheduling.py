"""service.pool.scheduling: the pool's decisions as pure functions."""

from __future__ import annotations

import pytest

from service.pool import scheduling


@pytest.mark.parametrize(("loads", "warm", "expected"), [
    ([0, 0], [False, False], 0),  # nobody has it: the least loaded, lowest slot first
    ([3, 1], [False, False], 1),
    ([1, 0], [True, False], 0),  # the warm one, within the slack
    ([2, 0], [True, False], 0),
    ([3, 0], [True, False], 1),  # more than `slack` over the least loaded: spread
    ([1, 1, 0], [False, True, True], 2),  # the least loaded warm one
    ([4, 0], [True, False], 1),  # the warm one's queue is full
])
def test_pick(loads: list[int], warm: list[bool], expected: int) -> None:
    assert scheduling.pick(loads, warm, queue_size=4, slack=2) == expected


def test_admission() -> None:
    counted: list[int] = []

    def used(n: int):
        def count() -> int:
            counted.append(n)
            return n
        return count

    # 2 workers x 3 places: the cheap bound decides while it is under the room
    assert scheduling.admission_refused(2, used(2), admitted=3, workers=2, queue_size=3) is None
    assert counted == []
    # the bound says maybe full (abandoned jobs count there): the exact count decides
    assert scheduling.admission_refused(6, used(2), admitted=3, workers=2, queue_size=3) is None
    assert scheduling.admission_refused(6, used(3), admitted=3, workers=2, queue_size=3) == 6
    assert counted == [2, 3]


@pytest.mark.parametrize(("service_s", "expected"), [(0.001, 1.0), (2.4, 3.0), (1000.0, 30.0)])
def test_retry_after(service_s: float, expected: float) -> None:
    assert scheduling.retry_after(service_s) == expected


def test_service_time_is_a_moving_average_of_compile_and_compute() -> None:
    assert scheduling.service_time(1.0, {"compile": 500.0, "compute": 500.0, "queue": 9e9}) == pytest.approx(1.0)
    assert scheduling.service_time(1.0, {"compute": 0.0}) == pytest.approx(0.8)


def test_restart_delay_backs_off_to_30_s() -> None:
    assert [scheduling.restart_delay(n) for n in (0, 1, 2, 3, 10)] == [0.0, 0.5, 1.0, 2.0, 30.0]
