"""Pairs trading (services/qos/pairs.py): the spread's z-score opens both legs, its return closes
both; a leg the gate refuses leaves the pair flat and the other leg's fill is unwound a minute
later; a refused exit is asked again; nothing is unwound that was not filled."""

from __future__ import annotations

import math

import numpy as np
import pytest

from libs.common.clock import SimClock
from libs.common.config import PairSettings
from proto.orders import OrderIntent
from services.qos.pairs import MINUTE_NS, PairTrader
from tests.kit.clocks import OPEN

NOW = OPEN + 7_000_000_000_000  # the runtime's clock: wall time in the fleet, market time in a backtest
BUMP = 0.0015  # about three of the spread's standard deviations
CFG = PairSettings(legs=("AAA", "BBB"), lookback=60, entry_z=2.0, exit_z=0.5, notional=10_000)


def feed(trader: PairTrader, minute: int, a: float, b: float) -> list[OrderIntent]:
    ts = OPEN + minute * MINUTE_NS
    return trader.on_price("AAA", ts, a) + trader.on_price("BBB", ts, b)


def warmed(seed: int = 1) -> tuple[PairTrader, int, float]:
    """60 minutes of a cointegrated pair (A = 1.5 x B in logs, plus a small stationary spread)."""
    rng = np.random.default_rng(seed)
    trader = PairTrader(CFG, namespace="t", clock=SimClock(NOW))
    log_b, spread = math.log(40.0), 0.0
    for m in range(60):
        log_b += rng.normal(0, 0.002)
        spread = 0.3 * spread + rng.normal(0, 0.0005)
        assert feed(trader, m, math.exp(1.5 * log_b + spread), math.exp(log_b)) == []
    return trader, 60, log_b


def fill(trader: PairTrader, intent: OrderIntent, exec_id: str) -> None:
    trader.on_fill(exec_id, intent.symbol, intent.quantity if intent.side == "BUY" else -intent.quantity)


def test_a_rich_spread_opens_both_legs_and_its_return_closes_them() -> None:
    trader, m, log_b = warmed()
    legs = feed(trader, m, math.exp(1.5 * log_b + BUMP), math.exp(log_b))  # A rich by 15 bps
    assert trader.last is not None and trader.last.cointegrated and trader.last.z > 2
    assert [(i.symbol, i.side) for i in legs] == [("AAA", "SELL"), ("BBB", "BUY")]
    assert all(i.ts_init == NOW for i in legs)  # made now (the gate judges an intent's age by it)
    a, b = legs
    assert a.quantity == math.floor(10_000 / math.exp(1.5 * log_b + BUMP))
    assert b.quantity * math.exp(log_b) == pytest.approx(trader.last.beta * 10_000, rel=0.02)
    fill(trader, a, "f1")
    fill(trader, b, "f2")
    assert feed(trader, m + 1, math.exp(1.5 * log_b + 0.8 * BUMP), math.exp(log_b)) == []  # still rich
    exits = feed(trader, m + 2, math.exp(1.5 * log_b), math.exp(log_b))  # back to the mean
    assert [(i.symbol, i.side, i.quantity) for i in exits] == [
        ("AAA", "BUY", a.quantity),
        ("BBB", "SELL", b.quantity),
    ]
    assert all("reverted" in i.reason and i.target_position == 0 for i in exits)


def test_a_refused_leg_unwinds_the_other_a_minute_later_and_only_what_filled() -> None:
    trader, m, log_b = warmed()
    a, b = feed(trader, m, math.exp(1.5 * log_b + BUMP), math.exp(log_b))
    trader.on_denied(a.intent_id)  # the gate refused A; B was approved and filled
    fill(trader, b, "f2")
    assert trader.direction == 0
    (unwind,) = feed(trader, m + 1, math.exp(1.5 * log_b + BUMP), math.exp(log_b))
    assert unwind.symbol == "BBB" and unwind.side == "SELL" and unwind.quantity == b.quantity
    assert "unwind" in unwind.reason
    assert feed(trader, m + 2, math.exp(1.5 * log_b + BUMP), math.exp(log_b)) == []  # in flight
    trader.on_denied(unwind.intent_id)  # refused: asked again at the next minute
    (again,) = feed(trader, m + 3, math.exp(1.5 * log_b + BUMP), math.exp(log_b))
    assert again.symbol == "BBB" and again.quantity == b.quantity
    fill(trader, again, "f3")
    assert trader.legs[1].filled == 0 and not trader.legs[1].pending


def test_both_legs_refused_unwind_nothing() -> None:
    trader, m, log_b = warmed()
    a, b = feed(trader, m, math.exp(1.5 * log_b + BUMP), math.exp(log_b))
    trader.on_denied(a.intent_id)
    trader.on_denied(b.intent_id)
    assert feed(trader, m + 1, math.exp(1.5 * log_b), math.exp(log_b)) == []  # nothing filled
    assert trader.stats["legs_denied"] == 1


def test_no_entry_without_cointegration() -> None:
    rng = np.random.default_rng(3)
    trader = PairTrader(CFG, namespace="t")
    la, lb = math.log(60.0), math.log(40.0)
    out = []
    for m in range(120):  # two independent random walks
        la += rng.normal(0, 0.003)
        lb += rng.normal(0, 0.003)
        out += feed(trader, m, math.exp(la), math.exp(lb))
    assert trader.last is not None and not trader.last.cointegrated and out == []
