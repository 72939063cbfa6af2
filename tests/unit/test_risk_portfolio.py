"""Portfolio risk in the gate, on the sample day's real minute closes (SPY, IBM, BAC, regular
hours): a rolling correlation limit, value at risk (parametric and historical) with a limit, and
circuit breakers on abnormal moves. Each denies entries with its typed code; exits still pass."""

from __future__ import annotations

import datetime as dt
import math
from functools import cache
from typing import Any

import numpy as np
import pytest

from libs.common.clock import SimClock
from libs.common.markettime import NEW_YORK
from proto.alerts import Alert
from proto.orders import OrderApproved, OrderDenied
from services.md_gateway.providers.lean import bar_records
from services.risk.core import RiskCore
from services.risk.portfolio import MINUTE_NS, MinuteCloses
from tests.conftest import SAMPLE_LEAN
from tests.kit import cores, stubs

DAY = int(dt.datetime(2013, 10, 8, tzinfo=NEW_YORK).timestamp()) * 1_000_000_000
OPEN, CLOSE = DAY + 570 * MINUTE_NS, DAY + 960 * MINUTE_NS
AT_3PM = DAY + 900 * MINUTE_NS
S = 1_000_000_000


@cache
def real_closes() -> tuple[tuple[int, str, float], ...]:
    """(ts, symbol, close) of the day's regular-hours minute bars, in time order."""
    out = []
    for sym in ("spy", "ibm", "bac"):
        path = SAMPLE_LEAN / "equity" / "usa" / "minute" / sym / "20131008_trade.zip"
        for rec in bar_records(path, sym.upper(), DAY, "minute"):
            if OPEN < rec[1] <= CLOSE:
                out.append((rec[1], sym.upper(), rec[7]))
    return tuple(sorted(out))


def closes_until(ts: int) -> dict[str, float]:
    last: dict[str, float] = {}
    for t, sym, close in real_closes():
        if t <= ts:
            last[sym] = close
    return last


def gate_at(ts: int, **limits: Any) -> RiskCore:
    """A gate fed the real closes up to ``ts``, quoted at them, its clock at ``ts``."""
    core = cores.risk(SimClock(ts), **limits)
    for t, sym, close in real_closes():
        if t > ts:
            break
        core.on_minute_close(sym, t, close)
    for sym, close in closes_until(ts).items():
        core.on_event(stubs.quote(sym, ts, round(close - 0.01, 2), round(close + 0.01, 2)))
    return core


def hold(core: RiskCore, sym: str, notional: float, ts: int) -> None:
    price = closes_until(ts)[sym]
    qty = math.floor(abs(notional) / price)
    core.on_event(stubs.fill(sym, "BUY" if notional > 0 else "SELL", qty, price, ts, exec_id=f"f-{sym}-{ts}"))


def decide(core: RiskCore, sym: str, side: str, notional: float, ts: int) -> OrderApproved | OrderDenied:
    qty = math.floor(notional / closes_until(ts)[sym])
    return core.on_intent(stubs.intent(sym, side, qty, ts, intent_id=f"i-{sym}-{side}-{ts}", ts_init=ts))


def test_the_days_statistics_are_what_the_market_did() -> None:
    book = MinuteCloses(window=120, min_samples=30)
    for t, sym, close in real_closes():
        assert book.add(sym, t, close)
    # an index and its members move together; a single name less so
    spy_ibm, spy_bac = book.correlation("SPY", "IBM"), book.correlation("SPY", "BAC")
    assert spy_ibm is not None and spy_bac is not None
    assert spy_ibm > 0.6 and 0.3 < spy_bac < spy_ibm
    # all of a symbol's correlations at once (one numpy pass) are the pairwise ones
    together, pairwise = MinuteCloses(window=120, min_samples=30), MinuteCloses(window=120, min_samples=30)
    for t, sym, close in real_closes():
        together.add(sym, t, close)
        pairwise.add(sym, t, close)
    at_once = together.correlations("SPY", ["IBM", "BAC", "XYZ"])
    assert at_once["XYZ"] is None and at_once["IBM"] == pytest.approx(spy_ibm, rel=1e-9)
    assert at_once["BAC"] == pytest.approx(pairwise.correlation("BAC", "SPY"), rel=1e-9)
    # parametric VaR of one position is z * sigma * notional * sqrt(horizon), by hand
    rets = book.returns_matrix(("SPY",))[:, 0]
    var = book.var({"SPY": 50_000.0}, 0.99, 30)
    assert var is not None
    by_hand = 2.3263478740408408 * float(np.std(rets, ddof=1)) * 50_000 * math.sqrt(30)
    assert var.parametric == pytest.approx(by_hand, rel=1e-9)
    assert 0.5 < var.historical / var.parametric < 2  # the day's own returns say much the same
    # a hedge lowers it, the same direction in three names raises it
    hedged = book.var({"SPY": 50_000.0, "IBM": -50_000.0}, 0.99, 30)
    all_long = book.var({"SPY": 50_000.0, "IBM": 50_000.0, "BAC": 50_000.0}, 0.99, 30)
    assert hedged is not None and all_long is not None
    assert hedged.parametric < var.parametric < all_long.parametric


def test_closes_refuse_bad_prices_and_a_night_is_no_return() -> None:
    book = MinuteCloses(window=10, min_samples=5)
    assert not book.add("IBM", OPEN, math.nan) and not book.add("IBM", OPEN, -1.0)
    assert book.add("IBM", OPEN + MINUTE_NS, 100.0) and book.add("IBM", OPEN + MINUTE_NS + S, 101.0)
    assert len(book.closes["IBM"]) == 1  # the same minute: the later close replaces
    assert not book.add("IBM", OPEN, 100.0)  # older than the last: refused
    book.add("IBM", OPEN + 2 * MINUTE_NS, 102.0)
    book.add("IBM", OPEN + 24 * 60 * MINUTE_NS, 150.0)  # the next day: no return across the night
    assert [round(r, 6) for _, r in book._steps("IBM")] == [round(math.log(102 / 101), 6)]


def test_a_circuit_breaker_halts_entries_on_the_symbol_that_jumped() -> None:
    core = gate_at(AT_3PM, circuit_sigma=6.0, circuit_minutes=5, circuit_halt_s=600)
    hold(core, "IBM", 20_000, AT_3PM)
    # the real day up to 15:00 moved nothing 6 sigma
    assert core.stats["circuit_trips"] == 0 and not core.halted
    # IBM jumps 2% in a minute (about 30 of its one-minute sigmas here)
    jump_at = AT_3PM + MINUTE_NS
    price = closes_until(AT_3PM)["IBM"] * 1.02
    core.on_minute_close("IBM", jump_at, price)
    core.on_event(stubs.quote("IBM", jump_at, round(price - 0.01, 2), round(price + 0.01, 2)))
    spy = closes_until(AT_3PM)["SPY"]
    core.on_event(stubs.quote("SPY", jump_at, round(spy - 0.01, 2), round(spy + 0.01, 2)))
    assert core.stats["circuit_trips"] == 1
    alerts = [a for a in core.take_alerts() if isinstance(a, Alert) and a.dedupe == "risk-circuit:IBM"]
    assert len(alerts) == 1 and "entries on it halted until 15:11:00" in alerts[0].title
    entry = decide(core, "IBM", "BUY", 5_000, jump_at + S)
    assert isinstance(entry, OrderDenied) and entry.code == "CIRCUIT_HALTED", entry
    assert entry.context["until"] == "15:11:00"
    assert isinstance(decide(core, "IBM", "SELL", 5_000, jump_at + 2 * S), OrderApproved)  # an exit passes
    assert isinstance(decide(core, "SPY", "BUY", 5_000, jump_at + 3 * S), OrderApproved)  # others trade
    later = jump_at + 601 * S
    core.on_event(stubs.quote("IBM", later, round(price - 0.01, 2), round(price + 0.01, 2)))
    core.clock.set(later)  # type: ignore[attr-defined]
    assert isinstance(decide(core, "IBM", "BUY", 5_000, later), OrderApproved)  # the halt is over


def test_the_whole_real_day_trips_no_breaker_at_six_sigma() -> None:
    core = gate_at(CLOSE, circuit_sigma=6.0)
    assert core.stats["circuit_trips"] == 0 and not core.halted


def test_correlated_exposure_counts_what_moves_with_the_entry() -> None:
    core = gate_at(AT_3PM, max_correlated_exposure=60_000, correlation_threshold=0.6)
    hold(core, "SPY", 45_000, AT_3PM)
    # IBM moves with SPY (0.66 over the two hours to 15:00, BAC 0.49): buying it adds to the bet
    d = decide(core, "IBM", "BUY", 20_000, AT_3PM + S)
    assert isinstance(d, OrderDenied) and d.code == "EXPOSURE_CORRELATED", d
    assert d.context["with"].startswith("SPY:0.6") and float(d.context["max"]) == 60_000
    # shorting it offsets the bet; BAC is below the threshold
    assert isinstance(decide(core, "IBM", "SELL", 20_000, AT_3PM + 2 * S), OrderApproved)
    assert isinstance(decide(core, "BAC", "BUY", 20_000, AT_3PM + 3 * S), OrderApproved)


def test_a_symbol_without_history_counts_as_fully_correlated() -> None:
    core = gate_at(AT_3PM, max_correlated_exposure=60_000)
    hold(core, "SPY", 45_000, AT_3PM)
    core.on_event(stubs.quote("XYZ", AT_3PM, 49.99, 50.01))
    d = core.on_intent(stubs.intent("XYZ", "SELL", 400, AT_3PM + S, intent_id="x", ts_init=AT_3PM))
    assert isinstance(d, OrderDenied) and d.code == "EXPOSURE_CORRELATED" and d.context["with"] == "SPY"


def test_value_at_risk_denies_an_entry_that_adds_risk_and_passes_a_hedge() -> None:
    core = gate_at(AT_3PM, max_var=300.0, var_confidence=0.99, var_horizon_minutes=30)
    hold(core, "SPY", 45_000, AT_3PM)
    d = decide(core, "IBM", "BUY", 45_000, AT_3PM + S)
    assert isinstance(d, OrderDenied) and d.code == "EXPOSURE_VAR", d
    assert float(d.context["var"]) > 300 and float(d.context["parametric"]) > 0 < float(
        d.context["historical"]
    )
    assert isinstance(decide(core, "IBM", "SELL", 45_000, AT_3PM + 2 * S), OrderApproved)
    core.on_event(stubs.quote("XYZ", AT_3PM, 49.99, 50.01))
    unknown = core.on_intent(stubs.intent("XYZ", "BUY", 10, AT_3PM + 3 * S, intent_id="u", ts_init=AT_3PM))
    assert isinstance(unknown, OrderDenied) and unknown.code == "EXPOSURE_VAR_UNKNOWN"  # fails closed


def test_a_restarted_gate_knows_no_closes_and_fails_closed() -> None:
    """Killed and started again, the gate has no minute closes (they are not in risk.state):
    VaR is unknown and an entry is denied as such (not by an error), a correlation unknown
    counts as one; exits still pass."""
    ts = AT_3PM + S
    core = cores.risk(SimClock(ts), max_var=10_000.0, max_correlated_exposure=30_000.0)
    for sym in ("IBM", "SPY"):
        close = closes_until(AT_3PM)[sym]
        core.on_event(stubs.quote(sym, ts, round(close - 0.01, 2), round(close + 0.01, 2)))
    hold(core, "SPY", 20_000, AT_3PM)
    d = decide(core, "IBM", "BUY", 20_000, ts)
    assert isinstance(d, OrderDenied) and d.code == "EXPOSURE_CORRELATED", d  # 40k, fully correlated
    core.limits = core.limits.model_copy(update={"max_correlated_exposure": None})
    d = decide(core, "IBM", "BUY", 5_000, ts + 1)
    assert isinstance(d, OrderDenied) and d.code == "EXPOSURE_VAR_UNKNOWN", d
    assert isinstance(decide(core, "SPY", "SELL", 10_000, ts + 2), OrderApproved)  # an exit


def test_limits_off_by_default_leave_decisions_alone() -> None:
    core = gate_at(AT_3PM)
    hold(core, "SPY", 45_000, AT_3PM)
    assert isinstance(decide(core, "IBM", "BUY", 45_000, AT_3PM + S), OrderApproved)
    core.on_minute_close("IBM", AT_3PM + MINUTE_NS, closes_until(AT_3PM)["IBM"] * 1.05)
    assert core.stats["circuit_trips"] == 0
