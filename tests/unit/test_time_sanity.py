"""Time sanity at the edge (issue 21): a record stamped far from the market clock is dropped and
counted by the md-gateway before it touches a book; the features core's work per event stays
bounded whatever the time jump; an approval without an expiry is refused like an expired one."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from libs.common.clock import SimClock
from libs.common.markettime import ny_day_of, ny_midnight_ns, ny_time_ns
from proto.base import Event
from proto.execution import OrderEvent
from proto.features import FeatureVector
from proto.market import Quote, Trade
from proto.orders import OrderApproved
from proto.units import DAY_NS, MINUTE_NS, SECOND_NS
from services.features.core import FeatureCore
from services.md_gateway.core import MarketDataCore
from services.md_gateway.providers.lean import LeanReplay
from tests.conftest import SAMPLE_LEAN
from tests.kit import cores, stubs
from tests.kit.clocks import MS, T0

DAY = "20131008"
Y2100 = 4_102_444_800 * SECOND_NS  # 2100-01-01 00:00 UTC: 87 years after the sample day
MORNING_END = ny_time_ns(DAY, "10:30")


@pytest.fixture(scope="module")
def day_records() -> list[tuple[Any, ...]]:
    """The sample day's records: IBM and BAC ticks and minute bars, 04:00 to 20:00."""
    return list(LeanReplay(SAMPLE_LEAN, DAY, ["IBM", "BAC"], bars="minute").records())


@pytest.fixture(scope="module")
def morning(day_records: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Its records to 10:30."""
    return list(itertools.takewhile(lambda r: r[1] < MORNING_END, day_records))


def clean(records: list[tuple[Any, ...]], core: MarketDataCore) -> list[Event]:
    return [e for e in map(core.on_record, records) if e is not None]


def replay_core(**kw: Any) -> MarketDataCore:
    return MarketDataCore(SimClock(0), session=LeanReplay(SAMPLE_LEAN, DAY, ["IBM"]).session(), **kw)


def far_quote(ts: int, like: tuple[Any, ...]) -> tuple[Any, ...]:
    """``like`` (a real IBM quote record) as it would come with a broken timestamp."""
    return ("Q", ts, *like[2:])


# -- md-gateway -------------------------------------------------------------------------------
def test_the_sample_day_loses_no_record_to_the_time_check(day_records: list[tuple[Any, ...]]) -> None:
    core = replay_core()
    published = clean(day_records, core)
    assert "far_timestamp" not in core.bad and core.bad["out_of_order"] == 0
    assert len(published) == 487_361  # every event of the day, as before the check


@pytest.mark.parametrize("stamp", [Y2100, ny_midnight_ns(DAY) - DAY_NS, 0], ids=["2100", "yesterday", "1970"])
def test_a_far_stamped_quote_mid_day_is_dropped_counted_and_poisons_nothing(
    morning: list[tuple[Any, ...]], stamp: int
) -> None:
    at = next(
        i for i, r in enumerate(morning) if r[0] == "Q" and r[2] == "IBM" and r[1] >= ny_time_ns(DAY, "10:00")
    )
    bad = far_quote(stamp, morning[at])
    with_bad = [*morning[:at], bad, *morning[at:]]
    core, reference = replay_core(), replay_core()
    events, expected = clean(with_bad, core), clean(morning, reference)
    assert core.bad["far_timestamp"] == 1 and sum(core.bad.values()) == sum(reference.bad.values()) + 1
    assert core.bad["out_of_order"] == 0  # IBM's later records still pass
    assert core.books["IBM"].last_ts < MORNING_END
    assert core.stats["quote_records"] == reference.stats["quote_records"] + 1  # counted as replayed
    assert events == expected  # nothing of it published, everything after it as without it
    assert (
        sum(1 for e in events if isinstance(e, Quote) and e.symbol == "IBM" and e.ts_event > morning[at][1])
        > 1000
    )


def test_a_replay_day_given_explicitly_bounds_an_extended_session_replay(
    morning: list[tuple[Any, ...]],
) -> None:
    core = MarketDataCore(SimClock(0), session=None, max_clock_skew_s=60, day=ny_day_of(ny_midnight_ns(DAY)))
    day_start, day_end = ny_day_of(ny_midnight_ns(DAY))
    first = morning[0]
    assert core.on_record(far_quote(day_start - 61 * SECOND_NS, first)) is None
    assert core.on_record(far_quote(day_end + 61 * SECOND_NS, first)) is None
    assert core.bad["far_timestamp"] == 2
    published = clean(morning, core)
    assert core.bad["far_timestamp"] == 2 and core.bad["out_of_order"] == 0
    pre_market = [e for e in published if isinstance(e, Trade) and e.ts_event < ny_time_ns(DAY, "09:30")]
    assert pre_market


def test_without_a_day_or_a_clock_the_first_record_names_the_day(morning: list[tuple[Any, ...]]) -> None:
    core = MarketDataCore(SimClock(0))  # what tools without a session build
    published = clean([*morning[:100], far_quote(Y2100, morning[100]), *morning[100:]], core)
    assert core.bad["far_timestamp"] == 1 and core.bad["out_of_order"] == 0
    assert published == clean(morning, MarketDataCore(SimClock(0)))
    beyond_any_calendar = MarketDataCore(SimClock(0))
    assert beyond_any_calendar.on_record(far_quote(2**80, morning[0])) is None  # dropped, no crash
    assert beyond_any_calendar.bad["far_timestamp"] == 1


def test_live_a_record_ahead_of_the_clock_is_far_one_behind_is_only_late() -> None:
    clock = SimClock(T0)
    core = MarketDataCore(clock, max_clock_skew_s=300)  # live: no session, no day
    quote = ("Q", T0, "IBM", 182.05, 300, 182.07, 200, "P", False)
    assert isinstance(core.on_record(quote), Quote)
    assert core.on_record(far_quote(T0 + 301 * SECOND_NS, quote)) is None
    assert core.bad["far_timestamp"] == 1 and core.books["IBM"].last_ts == T0
    assert isinstance(
        core.on_record(
            far_quote(T0 + 299 * SECOND_NS, ("Q", 0, "BAC", 14.50, 9000, 14.51, 9000, "P", False))
        ),
        Quote,
    )
    delayed = ("T", T0 - 15 * MINUTE_NS, "MSFT", 33.1, 100, "Q", 0, False, 0)  # delayed data: late, not far
    assert isinstance(core.on_record(delayed), Trade)
    clock.set(T0 + 10 * MINUTE_NS)  # the clock moves on: so does what is plausible
    moved = ("Q", 0, "IBM", 182.06, 300, 182.08, 200, "P", False)
    assert isinstance(core.on_record(far_quote(T0 + 12 * MINUTE_NS, moved)), Quote)
    assert core.bad["far_timestamp"] == 1


# -- features ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def morning_events(morning: list[tuple[Any, ...]]) -> list[Event]:
    return clean(morning, replay_core())


def counting(core: FeatureCore) -> dict[str, int]:
    """Counts the seconds and base bars the core closes (the work a time jump costs)."""
    calls = {"seconds": 0, "bars": 0}

    def wrap(name: str, key: str) -> None:
        inner: Callable[[int], list[FeatureVector]] = getattr(core, name)

        def counted(boundary: int) -> list[FeatureVector]:
            calls[key] += 1
            return inner(boundary)

        setattr(core, name, counted)

    wrap("_close_second", "seconds")
    wrap("_close_base", "bars")
    return calls


def fed(events: list[Event]) -> FeatureCore:
    core = cores.features()
    for e in events:
        core.on_event(e)
    return core


def encoded(vectors: list[FeatureVector]) -> list[bytes]:
    return [msgspec.json.encode(v) for v in vectors]


def test_a_tick_87_years_ahead_costs_a_bounded_number_of_closes_and_the_core_goes_on(
    morning_events: list[Event],
) -> None:
    core, twin = fed(morning_events), fed(morning_events)
    calls = counting(core)
    last = morning_events[-1]
    assert isinstance(last, Quote)
    jump = msgspec.structs.replace(last, ts_event=Y2100)
    vectors = core.on_event(jump)
    # The bars open at the jump close on their grid (the 60m bar needs 60 one-minute closes);
    # the 46 million empty minutes to 2100 are crossed in one step.
    assert calls["bars"] <= 60 + 2 and calls["seconds"] <= 60 + 3
    assert core.stats["idle_skips"] == 1
    # Exactly what closing the open bars at their natural boundaries gives (the end of data).
    assert encoded(vectors) == encoded(twin.finish())
    assert {v.timeframe for v in vectors} >= {"1m", "5m", "15m", "30m", "60m"}
    # ...and it goes on in 2100: two minutes of trading there close a 1m bar, cheaply.
    after: list[FeatureVector] = []
    for k in range(1, 121):
        ts = Y2100 + k * SECOND_NS
        after += core.on_event(msgspec.structs.replace(jump, ts_event=ts))
        after += core.on_event(stubs.trade(ts=ts, price=jump.bid, size=100, symbol=jump.symbol))
    assert any(v.timeframe == "1m" and v.ts_event > Y2100 and v.symbol == jump.symbol for v in after)
    assert calls["bars"] <= 62 + 3


@pytest.mark.parametrize("timeframes", [["1m", "5m"], ["30s", "2m", "10m"]])
def test_skipping_idle_bars_gives_exactly_what_closing_them_one_by_one_gives(
    morning: list[tuple[Any, ...]], timeframes: list[str]
) -> None:
    """Three days of the sample morning (extended hours: quiet pre-market stretches, a night and
    a weekend between them) through a core that skips and one that closes every empty bar."""
    one = clean(morning, MarketDataCore(SimClock(0), session=None))
    events = [
        msgspec.structs.replace(e, ts_event=e.ts_event + shift * DAY_NS) for shift in (0, 1, 6) for e in one
    ]
    skipping, stepping = cores.features(timeframes=timeframes), cores.features(timeframes=timeframes)
    stepping.settle_ns = 1 << 62  # never settled: every empty second and bar closed in turn
    out: dict[str, list[FeatureVector]] = {"skipping": [], "stepping": []}
    for name, core in (("skipping", skipping), ("stepping", stepping)):
        for e in events:
            out[name] += core.on_event(e)
        out[name] += core.finish()
    assert skipping.stats["idle_skips"] >= 3 and "idle_skips" not in stepping.stats
    assert len(out["skipping"]) > 10_000
    assert encoded(out["skipping"]) == encoded(out["stepping"])
    marks = ("next_second", "next_base", "closed_until", "anchor", "close", "day_start", "day_end")
    assert [getattr(skipping, m) for m in marks] == [getattr(stepping, m) for m in marks]


# -- execution --------------------------------------------------------------------------------
def approval(cid: str, valid_until_ns: int) -> OrderApproved:
    a = OrderApproved(
        ts_event=T0,
        ts_init=T0,
        intent_id=f"i-{cid}",
        client_order_id=cid,
        symbol="IBM",
        side="BUY",
        quantity=100,
        valid_until_ns=valid_until_ns,
    )
    return stubs.sign(a)


@pytest.mark.parametrize(
    ("valid_until_ns", "reason"),
    [(0, "without an expiry"), (T0 - 1, "expired"), (-1, "without an expiry")],
    ids=["unset", "past", "negative"],
)
def test_an_approval_without_a_future_expiry_is_refused(valid_until_ns: int, reason: str) -> None:
    core = cores.execution(SimClock(T0))
    out = core.on_approved(approval("c1", valid_until_ns))
    assert out.actions == []  # nothing journaled, nothing sent
    (event,) = [e for e in out.events if isinstance(e, OrderEvent)]
    assert event.status == "REJECTED" and reason in event.reason
    assert core.stats["refused"] == 1 and core.orders["c1"].status == "REJECTED"
    fine = core.on_approved(approval("c2", T0 + 2_000 * MS))
    assert fine.actions and core.stats["sent"] == 1
