"""Protective exits on scripted prices: stop-loss, trailing by R, take-profit, session end."""

from __future__ import annotations

from services.qos.exits import ExitManager
from tests.kit import cores, stubs
from tests.kit.clocks import T0 as T  # 10:00 New York
from tests.kit.clocks import S


def manager(side: str = "BUY", price: float = 100.0, atr: float = 0.5) -> ExitManager:
    m = cores.exits(stop_atr=2.0, take_profit_atr=4.0, trail_after_r=1.0, trail_r=1.0)
    m.on_volatility("IBM", atr)  # R = 2 x 0.5 = 1.00
    m.on_fill(stubs.fill(side=side, price=price, exec_id="e1"))
    return m


def test_stop_loss_once() -> None:
    m = manager()
    assert m.on_price("IBM", T + S, 99.5) is None
    exit_ = m.on_price("IBM", T + 2 * S, 98.99)
    assert exit_ is not None and exit_.side == "SELL" and exit_.quantity == 100
    assert exit_.reason.startswith("exit: stop-loss at 99.0") and exit_.urgency == "high"
    assert m.on_price("IBM", T + 3 * S, 98.5) is None  # one exit at a time


def test_the_stop_trails_once_the_price_has_gone_one_r() -> None:
    m = manager()
    assert m.on_price("IBM", T + S, 100.9) is None and m.held["IBM"].stop == 99.0  # not yet 1 R
    assert m.on_price("IBM", T + 2 * S, 101.5) is None and m.held["IBM"].stop == 100.5
    assert m.on_price("IBM", T + 3 * S, 101.0) is None and m.held["IBM"].stop == 100.5  # never back
    exit_ = m.on_price("IBM", T + 4 * S, 100.5)
    assert exit_ is not None and "trailing stop at 100.5" in exit_.reason


def test_take_profit_and_the_short_side() -> None:
    long_ = manager()
    tp = long_.on_price("IBM", T + S, 102.0)  # 4 ATR = 2.00 above; the trail is at 101 by then
    assert tp is not None and "take-profit at 102.0" in tp.reason
    short = manager("SELL")
    assert short.on_price("IBM", T + S, 100.5) is None
    stop = short.on_price("IBM", T + 2 * S, 101.0)
    assert stop is not None and stop.side == "BUY" and "stop-loss at 101.0" in stop.reason


def test_flatten_before_the_close_and_positions_from_fills() -> None:
    m = manager()
    assert m.on_price("IBM", T + (5 * 3600 + 54 * 60) * S, 100.2) is None  # 15:54: 6 minutes left
    exit_ = m.on_price("IBM", T + (5 * 3600 + 56 * 60) * S, 100.2)  # 15:56
    assert exit_ is not None and exit_.reason == "exit: session end"
    m.on_fill(stubs.fill(price=100.0, exec_id="e1"))  # a duplicate: ignored
    assert m.held["IBM"].quantity == 100
    m.on_fill(stubs.fill(side="SELL", price=100.2, exec_id="e2", client_order_id="x"))
    assert "IBM" not in m.held
