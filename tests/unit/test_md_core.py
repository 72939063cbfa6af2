"""md-gateway core on the real sample day (IBM and BAC, 2013-10-08) and on injected bad ticks."""

from __future__ import annotations

import math
import zipfile

import pytest

from libs.common.calendar import market_calendar
from libs.common.clock import SimClock
from proto.market import Quote, Trade
from services.md_gateway.core import MarketDataCore
from services.md_gateway.providers.lean import LeanReplay
from tests.conftest import SAMPLE_LEAN

DAY = "20131008"
OPEN, CLOSE, _ = market_calendar().session_on(DAY)  # type: ignore[misc]


@pytest.fixture(scope="module")
def ibm_day() -> tuple[MarketDataCore, list[object]]:
    replay = LeanReplay(SAMPLE_LEAN, DAY, ["IBM"], bars="minute")
    core = MarketDataCore(SimClock(0), session=replay.session())
    out = [e for rec in replay.records() if (e := core.on_record(rec)) is not None]
    return core, out


def test_regular_session_bounds_are_new_york_time() -> None:
    # 2013-10-08 is daylight time: 09:30 EDT = 13:30 UTC.
    assert OPEN == 1_381_239_000_000_000_000
    assert int(6.5 * 3600 * 1e9) == CLOSE - OPEN


def test_published_quotes_are_never_crossed_or_locked_and_stay_in_session(ibm_day) -> None:  # type: ignore[no-untyped-def]
    _, events = ibm_day
    quotes = [e for e in events if isinstance(e, Quote)]
    assert len(quotes) > 30_000
    assert all(q.bid < q.ask for q in quotes)
    assert all(OPEN <= q.ts_event < CLOSE for q in quotes)
    spreads = sorted(q.ask - q.bid for q in quotes)
    # shared/data/README: latest-bid/latest-ask gives 1-7 cent spreads on IBM that day.
    assert 0.005 < spreads[len(spreads) // 2] < 0.08


def test_trades_match_the_raw_file_count_in_session(ibm_day) -> None:  # type: ignore[no-untyped-def]
    core, events = ibm_day
    trades = [e for e in events if isinstance(e, Trade)]
    with zipfile.ZipFile(SAMPLE_LEAN / "equity/usa/tick/ibm/20131008_trade.zip") as zf:
        rows = zf.read(zf.namelist()[0]).decode().splitlines()
    from libs.common.markettime import ny_midnight_ns

    day0 = ny_midnight_ns(DAY)
    in_session = [r for r in rows if OPEN <= day0 + int(float(r.split(",")[0]) * 1e6) < CLOSE]
    # shared/data/README counts 33,323 trades in the regular session of this day.
    assert len(in_session) == 33_323
    rejected_in_session = len(in_session) - len(trades)
    assert 0 <= rejected_in_session <= core.bad["suspicious"] + core.bad["price_jump"] + core.bad["bad_size"]
    timestamps = [t.ts_event for t in trades]
    assert timestamps == sorted(timestamps)


def test_bars_close_inside_the_session(ibm_day) -> None:  # type: ignore[no-untyped-def]
    _, events = ibm_day
    bars = [e for e in events if getattr(e, "timeframe", None) == "1m"]
    assert 380 <= len(bars) <= 390
    assert all(b.low <= b.open <= b.high for b in bars)  # type: ignore[attr-defined]


def _q(ts: int, bid: float, ask: float, *, suspicious: bool = False) -> tuple[object, ...]:
    return ("Q", ts, "T", bid, 100, ask, 100, "P", suspicious)


def _t(ts: int, price: float, size: int = 100) -> tuple[object, ...]:
    return ("T", ts, "T", price, size, "P", 0, False, 0)


def test_bad_ticks_are_counted_by_reason_never_raised() -> None:
    core = MarketDataCore(SimClock(0), max_jump_pct=10)
    t = 1_000
    good = core.on_record(_q(t, 10.00, 10.02))
    assert isinstance(good, Quote)
    feed = [
        (_q(t + 1, math.nan, 0.0), "nan_price"),
        (_q(t + 2, -10.0, 0.0), "negative_price"),
        (_q(t + 3, 0.0, 0.0), "zero_price"),
        (_q(t + 4, 10.05, 0.0), "crossed"),
        (_q(t + 5, 0.0, 10.07), None),  # uncrosses: valid again
        (_q(t + 6, 10.07, 0.0), "locked"),
        (_q(t + 7, 10.01, 10.02, suspicious=True), "suspicious"),
        (_q(t + 8, 30.0, 30.02), "price_jump"),
        (_q(t, 10.01, 10.03), "out_of_order"),
        (_t(t + 9, 10.02, 0), "bad_size"),
        (_t(t + 10, math.inf), "nan_price"),
        (_t(t + 11, 50.0), "price_jump"),
    ]
    for rec, reason in feed:
        before = dict(core.bad)
        core.on_record(rec)
        if reason is None:
            assert dict(core.bad) == before
        else:
            assert core.bad[reason] == before.get(reason, 0) + 1, reason


def test_a_persistent_new_level_is_accepted_after_the_jump_streak() -> None:
    core = MarketDataCore(SimClock(0), max_jump_pct=10)
    core.on_record(_t(1, 10.0))
    results = [core.on_record(_t(2 + i, 20.0)) for i in range(6)]
    assert results[:4] == [None] * 4
    assert all(isinstance(r, Trade) for r in results[4:])


def test_the_counts_read_as_a_counter_in_the_order_first_counted() -> None:
    # The per-record counts are ints folded into ``stats`` when it is read: the same numbers and
    # the same key order as one Counter incremented in place (what the feed's status carries).
    core = MarketDataCore(SimClock(0), max_jump_pct=10, session=(1_000, 2_000))
    feed = [_q(10, 10.00, 10.02), _t(11, 10.01), _q(1_000, 10.00, 10.02), _q(1_001, 10.00, 10.02)]
    feed += [_t(1_002, 10.01), _q(1_003, 10.01, 10.02), _t(1_004, math.nan)]
    for rec in feed:
        core.on_record(rec)
    assert list(core.stats.items()) == [
        ("records", 7),
        ("quote_records", 4),
        ("outside_session", 2),
        ("trade_records", 3),
        ("quotes", 2),
        ("unchanged", 1),
        ("trades", 1),
    ]
    assert core.stats["depth"] == 0 and core.counters()["stats"] == dict(core.stats)
    # the backtest's entry for records it checked against ``plausible`` itself counts the same
    one, other = (MarketDataCore(SimClock(0), max_jump_pct=10, session=(1_000, 2_000)) for _ in "ab")
    assert [one.on_record(r) for r in feed] == [other.on_plausible(r) for r in feed]
    assert list(other.stats.items()) == list(core.stats.items())


def test_counts_is_a_counter_with_dicts_item_assignment() -> None:
    from collections import Counter

    from libs.common.counts import Counts

    counts: Counts[str] = Counts()
    counts["a"] += 1
    counts["b"] += 2
    counts["a"] += 1
    assert counts == Counter(a=2, b=2) and counts["missing"] == 0 and list(counts) == ["a", "b"]
    assert isinstance(counts, Counter) and counts.most_common(1) == [("a", 2)]
