"""IB's historical pacing rules, on a clock the test moves."""

from __future__ import annotations

import pytest

from libs.common.config import IbHistoricalSettings
from libs.common.ib.historical import HistoricalPacer


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_an_identical_request_waits_15_seconds() -> None:
    clock = Clock()
    p = HistoricalPacer(clock)
    p.record(("IBM", "d1"), ("IBM", "TRADES"))
    clock.t += 4
    assert p.delay(("IBM", "d1"), ("IBM", "TRADES")) == pytest.approx(11.0)
    assert p.delay(("IBM", "d2"), ("IBM", "TRADES")) == 0.0  # another day of the same contract


def test_six_for_one_contract_within_two_seconds_is_never_sent() -> None:
    clock = Clock()
    p = HistoricalPacer(clock)
    for k in range(5):
        p.record(("IBM", f"d{k}"), ("IBM", "TRADES"))
        clock.t += 0.1
    assert p.delay(("IBM", "d5"), ("IBM", "TRADES")) == pytest.approx(2.0 - 0.5)
    assert p.delay(("BAC", "d5"), ("BAC", "TRADES")) == 0.0  # other contracts are free
    clock.t += 1.5
    assert p.delay(("IBM", "d5"), ("IBM", "TRADES")) == 0.0


def test_sixty_in_ten_minutes_then_wait_for_the_oldest_to_age_out() -> None:
    clock = Clock()
    p = HistoricalPacer(clock)
    for k in range(60):
        p.record((f"S{k}", "d"), (f"S{k}", "TRADES"))
        p.answered()
        clock.t += 3
    assert p.delay(("X", "d"), ("X", "TRADES")) == pytest.approx(600 - 180)


def test_fifty_open_requests_at_most_and_backoff_doubles_to_a_cap() -> None:
    clock = Clock()
    p = HistoricalPacer(clock, IbHistoricalSettings(max_per_window=1000))
    for k in range(50):
        p.record((f"S{k}", "d"), (f"S{k}", "TRADES"))
    assert p.delay(("X", "d"), ("X", "TRADES")) > 0
    p.answered()
    assert p.delay(("X", "d"), ("X", "TRADES")) == 0.0
    assert [p.backoff(a) for a in (1, 2, 3, 10)] == [15.0, 30.0, 60.0, 600.0]
