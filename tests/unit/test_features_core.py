"""The features core on real ticks: no look-ahead, timeframes, microstructure, versioning."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import pytest
from pydantic import ValidationError

from libs.common.clock import SimClock
from libs.common.config import FeaturesSettings
from proto.base import Event
from proto.features import MICRO_TIMEFRAME, FeatureVector
from proto.market import DepthUpdate, Quote, Trade
from services.md_gateway.core import MarketDataCore
from services.md_gateway.providers.lean import LeanReplay
from tests.kit import cores, stubs
from tests.kit.clocks import OPEN as T0  # 2013-10-08 09:30 New York
from tests.kit.clocks import S

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample" / "lean"
CLOSE = T0 + (6 * 3600 + 1800) * S  # 16:00


@pytest.fixture(scope="module")
def day_events() -> list[Event]:
    """The shipped sample day (IBM and BAC ticks) as the md-gateway core publishes it."""
    provider = LeanReplay(SAMPLE, "20131008", ["IBM", "BAC"], "none")
    md = MarketDataCore(SimClock(), 10.0, True, provider.session())
    return [e for e in map(md.on_record, provider.records()) if e is not None]


def run(events: list[Event], cfg: FeaturesSettings | None = None) -> list[FeatureVector]:
    core = cores.features(**(cfg or FeaturesSettings()).model_dump())
    out: list[FeatureVector] = []
    for e in events:
        out += core.on_event(e)
    return out + core.finish()


def same(a: FeatureVector, b: FeatureVector) -> bool:
    """Equal field by field, NaN equal to NaN (a warm-up NaN is a value like any other)."""
    return msgspec.json.encode(a) == msgspec.json.encode(b)


def test_no_look_ahead(day_events: list[Event]) -> None:
    """Vectors up to t are identical when everything after t is altered: prices moved 5%,
    sizes doubled, and every other tick dropped."""
    cut = T0 + 3 * 3600 * S  # 12:30
    altered: list[Event] = [e for e in day_events if e.ts_event < cut]
    for i, e in enumerate(x for x in day_events if x.ts_event >= cut):
        if i % 2:
            continue
        if isinstance(e, Quote):
            altered.append(
                msgspec.structs.replace(e, bid=e.bid * 1.05, ask=e.ask * 1.05, bid_size=e.bid_size * 2)
            )
        elif isinstance(e, Trade):
            altered.append(msgspec.structs.replace(e, price=e.price * 1.05, size=e.size * 2))
        else:
            altered.append(e)
    original, changed = run(day_events), run(altered)
    before = [v for v in original if v.ts_event <= cut]
    before_changed = [v for v in changed if v.ts_event <= cut]
    assert len(before) > 1000
    assert len(before) == len(before_changed)
    assert all(same(a, b) for a, b in zip(before, before_changed, strict=True))
    # ...and the alteration is visible afterwards, so the comparison could have failed.
    after = [v for v in original if v.ts_event > cut and v.timeframe == "1m"]
    after_changed = [v for v in changed if v.ts_event > cut and v.timeframe == "1m"]
    assert not all(same(a, b) for a, b in zip(after, after_changed, strict=False))


def test_every_timeframe_closes_on_its_grid(day_events: list[Event]) -> None:
    vectors = run(day_events)
    counts: dict[str, int] = {}
    for v in vectors:
        counts[v.timeframe] = counts.get(v.timeframe, 0) + 1
        if v.timeframe != MICRO_TIMEFRAME:
            span = {"1m": 60, "5m": 300, "15m": 900, "30m": 1800, "60m": 3600}[v.timeframe] * S
            assert (v.ts_event - T0) % span == 0 or v.ts_event == CLOSE
            assert T0 < v.ts_event <= CLOSE
    # 390 one-minute bars a symbol in the regular session; the last 60m bar is 15:30-16:00 (the
    # close ends every bar in progress).
    assert counts["1m"] == 2 * 390
    assert counts["5m"] == 2 * 78
    assert counts["60m"] == 2 * 7
    assert counts[MICRO_TIMEFRAME] > 20_000


def test_vectors_carry_their_feature_set_and_layout(day_events: list[Event]) -> None:
    cfg = FeaturesSettings(include_names=True)
    vectors = run(day_events[:50_000], cfg)
    bars = [v for v in vectors if v.timeframe == "1m"]
    assert bars and all(v.feature_set == cfg.feature_set and v.names == list(cfg.names) for v in bars)
    assert all(len(v.values) == len(cfg.names) for v in bars)
    assert FeaturesSettings(timeframes=["1m", "5m"]).feature_set != cfg.feature_set
    late = bars[-1]
    values = dict(zip(cfg.names, late.values, strict=True))
    assert 0 <= values["rsi14"] <= 100 and 0 < values["spread_bps"] < 50
    assert -1 <= values["aggression"] <= 1 and late.price > 0 and "/" in late.regime


def test_bad_timeframes_are_refused() -> None:
    with pytest.raises(ValidationError, match="ascending"):
        FeaturesSettings(timeframes=["5m", "1m"])
    with pytest.raises(ValidationError, match="duration"):
        FeaturesSettings(timeframes=["1x"])


def q(ts: int, bid: float, ask: float, bs: int = 100, asz: int = 100, sym: str = "X") -> Quote:
    return stubs.quote(sym, ts, bid, ask, bs, asz)


def t(ts: int, price: float, size: int = 100, sym: str = "X", aggressor: int = 0) -> Trade:
    return stubs.trade(sym, ts, price, size, aggressor=aggressor)


def test_trade_aggression_lee_ready_then_tick_rule() -> None:
    cfg = FeaturesSettings(timeframes=["1m"], include_names=True)
    core = cores.features(**cfg.model_dump())
    events: list[Event] = [
        t(T0 + 1, 10.00),  # no quote yet: tick rule has nothing before it -> unknown
        t(T0 + 2, 10.01),  # tick rule: up-tick -> buy
        q(T0 + 3, 10.00, 10.02),
        t(T0 + 4, 10.02),  # above the mid -> buy
        t(T0 + 5, 10.00, size=20_000),  # below the mid -> sell, and a block
        t(T0 + 6, 10.01),  # at the mid: tick rule, up from 10.00 -> buy
        t(T0 + 7, 10.01, aggressor=-1),  # an exact flag wins
    ]
    out: list[FeatureVector] = []
    for e in events:
        out += core.on_event(e)
    out += core.on_time(T0 + 61 * S)
    micro = [v for v in out if v.timeframe == MICRO_TIMEFRAME]
    bar = next(v for v in out if v.timeframe == "1m")
    values = dict(zip(cfg.names, bar.values, strict=True))
    # buys: trades 2, 4, 6 (3); sells: 5, 7 (2); unknown: 1
    assert values["aggression"] == pytest.approx((3 - 2) / 6)
    assert values["signed_volume_ratio"] == pytest.approx((300 - 20_100) / 20_500)
    assert values["block_trades"] == 1
    assert micro and micro[0].values[4] == pytest.approx(300 - 20_100)


def test_depth_imbalance_from_level_two() -> None:
    core = cores.features(timeframes=["1m"])

    def d(ts: int, side: str, pos: int, op: str, price: float, size: int) -> DepthUpdate:
        return DepthUpdate(
            ts_event=ts,
            ts_init=ts,
            symbol="X",
            side=side,
            position=pos,
            operation=op,  # type: ignore[arg-type]
            price=price,
            size=size,
        )

    for e in (
        q(T0, 10.0, 10.01),
        d(T0 + 1, "BID", 0, "INSERT", 10.00, 300),
        d(T0 + 2, "BID", 1, "INSERT", 9.99, 100),
        d(T0 + 3, "ASK", 0, "INSERT", 10.01, 100),
        d(T0 + 4, "BID", 1, "DELETE", 0, 0),
        t(T0 + 5, 10.0),
    ):
        core.on_event(e)
    micro = [v for v in core.on_time(T0 + 2 * S) if v.timeframe == MICRO_TIMEFRAME]
    assert micro[0].values[2] == pytest.approx((300 - 100) / 400)


def test_relative_strength_needs_the_index() -> None:
    cfg = FeaturesSettings(timeframes=["1m"], include_names=True)
    events: list[Event] = []
    for m in range(30):
        ts = T0 + m * 60 * S + S
        events += [t(ts, 100 + m * 0.1, sym="SPY"), t(ts + 1, 50 + m * 0.1, sym="X")]
    vectors = run(events, cfg)
    last = {v.symbol: dict(zip(cfg.names, v.values, strict=True)) for v in vectors if v.timeframe == "1m"}
    assert last["SPY"]["rel_strength"] == 0.0
    assert last["X"]["rel_strength"] == pytest.approx(last["X"]["roc10"] - last["SPY"]["roc10"])
    assert last["X"]["rel_strength"] > 0  # the same cents on a lower price are a bigger move
    alone = run([e for e in events if e.symbol == "X"], cfg)
    assert math.isnan(dict(zip(cfg.names, alone[-1].values, strict=True))["rel_strength"])


async def test_redis_outage_never_reaches_the_hot_path() -> None:
    from services.features.runtime import RedisHotState

    hot = RedisHotState("redis://127.0.0.1:1/0", 50, 60, {})  # nothing listens on port 1
    vector = stubs.vector([1.0], symbol="X", feature_set="f", ts=T0)
    hot.put(vector)
    await hot.flush()
    assert hot.errors == 1 and hot.written == 0
    assert list(hot.latest.values()) == [vector]  # kept for the next flush, not lost
    await hot.client.aclose()


def test_a_trade_for_a_closed_bar_is_counted_late_not_lost() -> None:
    core = cores.features(timeframes=["1m"], include_names=True)
    out: list[FeatureVector] = []
    for e in (t(T0 + 1, 10.0), t(T0 + 61 * S, 10.1), t(T0 + 30 * S, 10.2), t(T0 + 125 * S, 10.3)):
        out += core.on_event(e)
    assert core.stats["late_trades"] == 1
    bar = next(v for v in out if v.timeframe == "1m" and v.ts_event == T0 + 120 * S)
    assert bar.values[0] == pytest.approx(math.log(10.2 / 10.0) * 1e4)  # the late trade closed minute 2


def test_a_restarted_service_resumes_its_bars_from_its_checkpoint(
    day_events: list[Event], tmp_path: Path
) -> None:
    """features.checkpoint: the state noted mid-day, loaded by a new process's app, makes exactly
    the vectors the uninterrupted core makes from there (no bars afresh, no VWAP from zero)."""
    from libs.common.config import load_settings
    from services.features.runtime import FeaturesApp

    settings = load_settings(None, features={"checkpoint": str(tmp_path / "features.checkpoint")})
    first = FeaturesApp(settings)
    half = len(day_events) // 2
    for e in day_events[:half]:
        first.core.on_event(e)
    first._noted_at = -1e9  # due now
    first._note(day_events[half - 1].ts_event)
    assert first.checkpoints == 1
    restarted = FeaturesApp(settings)
    restarted._resume()
    assert restarted.resumed_from_ns == day_events[half - 1].ts_event
    rest = day_events[half:]
    want = [v for e in rest for v in first.core.on_event(e)] + first.core.finish()
    got = [v for e in rest for v in restarted.core.on_event(e)] + restarted.core.finish()
    assert len(got) == len(want) > 1000
    unstamped = [
        (msgspec.structs.replace(a, ts_init=0), msgspec.structs.replace(b, ts_init=0))
        for a, b in zip(got, want, strict=True)
    ]
    assert all(same(a, b) for a, b in unstamped)  # ts_init: each core's wall clock
    # a note of another feature set is not taken
    other = load_settings(
        None,
        features={
            "checkpoint": str(tmp_path / "features.checkpoint"),
            "timeframes": ["1m", "5m", "15m", "30m"],
        },
    )
    assert FeaturesApp(other).core.feature_set != first.core.feature_set
    fresh = FeaturesApp(other)
    fresh._resume()
    assert fresh.resumed_from_ns == 0
