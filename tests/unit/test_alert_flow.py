"""Is the work flowing? A silent symbol in an open session, a features service that makes no
vector, a recorder falling behind, and regime flips: each an alert once, then its recovery."""

from __future__ import annotations

from libs.common.calendar import market_calendar
from libs.common.clock import SimClock
from libs.common.config import AlertsSettings, Settings
from libs.common.markettime import ny_time_ns
from proto.control import Heartbeat, Progress
from proto.features import FeatureVector
from proto.units import MINUTE_NS, SECOND_NS
from services.alerts.flow import FlowWatch
from services.md_gateway.providers.lean import LeanReplay

DAY = "20131008"
OPEN = ny_time_ns(DAY, "09:30")
WALL0 = 1_764_000_000_000_000_000


def watch(clock: SimClock | None = None, **cfg: object) -> FlowWatch:
    settings = Settings()
    alerts = AlertsSettings(**cfg)  # type: ignore[arg-type]
    return FlowWatch(alerts, market_calendar(settings.market), MINUTE_NS, clock or SimClock(WALL0))


def beat(service: str, progress: Progress, replica: str = "", seq: int = 1) -> Heartbeat:
    return Heartbeat(
        ts_event=WALL0,
        ts_init=WALL0,
        service=service,
        instance=1,
        seq=seq,
        replica=replica,
        progress=progress,
    )


def md(market_ns: int, **last: int) -> Heartbeat:
    return beat("md-gateway", Progress(market_ns=market_ns, last_record_ns=last))


def test_the_sample_day_with_ibm_cut_for_three_minutes_gives_one_silence_and_its_recovery() -> None:
    """The real day's records, heart-beaten every 10 s of market time, IBM's dropped 11:00-11:03:
    its real gaps (22 s at most) say nothing; the cut is one warning, its end one recovery."""
    flow = watch()
    settings = Settings()
    rp = settings.md_gateway.replay
    cut = (ny_time_ns(DAY, "11:00"), ny_time_ns(DAY, "11:03"))
    last: dict[str, int] = {s: 0 for s in rp.symbols}
    alerts = []
    next_beat = 0
    for rec in LeanReplay(rp.root, DAY, rp.symbols, "none", None).records():
        ts, symbol = rec[1], rec[2]
        if rec[0] not in "QT" or (symbol == "IBM" and cut[0] <= ts < cut[1]):
            continue
        if ts >= next_beat:
            alerts += flow.on_heartbeat(md(ts, **last))
            next_beat = ts + 10 * SECOND_NS
        last[symbol] = ts
    silent, back = alerts
    assert silent.dedupe == "md-silent:IBM" and silent.severity == "warning"
    assert (
        silent.title.startswith("no market data for IBM since 10:59:")
        and "into an open session" in silent.title
    )
    assert back.dedupe == "recovered:md-silent:IBM"
    assert back.title.startswith("market data for IBM is back after 18") and "(11:03:" in back.title


def test_silence_counts_only_while_the_session_is_open_and_from_its_open() -> None:
    flow = watch(market_silence_s=60)
    before_open = ny_time_ns(DAY, "08:00")
    # Pre-market quiet is no alarm, nor is the first minute of the session.
    assert flow.on_heartbeat(md(ny_time_ns(DAY, "09:29"), IBM=before_open)) == []
    assert flow.on_heartbeat(md(OPEN + 60 * SECOND_NS, IBM=before_open)) == []
    (silent,) = flow.on_heartbeat(md(OPEN + 61 * SECOND_NS, IBM=before_open))
    assert "since 09:30:00 ET" in silent.title
    # After the close nothing is judged; a holiday has no session at all.
    late = watch(market_silence_s=60)
    assert late.on_heartbeat(md(ny_time_ns(DAY, "17:00"), IBM=OPEN)) == []
    christmas = ny_time_ns("20131225", "11:00")
    assert late.on_heartbeat(md(christmas, IBM=christmas - 3600 * SECOND_NS)) == []


def test_a_symbol_that_never_printed_is_silent_and_a_new_day_judges_afresh() -> None:
    flow = watch(market_silence_s=60)
    (silent,) = flow.on_heartbeat(md(OPEN + 2 * MINUTE_NS, IBM=OPEN + 110 * SECOND_NS, BAC=0))
    assert silent.labels["symbol"] == "BAC"
    assert flow.on_heartbeat(md(OPEN + 5 * MINUTE_NS, IBM=OPEN + 299 * SECOND_NS, BAC=0)) == []  # once
    next_open = ny_time_ns("20131009", "09:30")
    (again,) = flow.on_heartbeat(md(next_open + 2 * MINUTE_NS, IBM=next_open + 110 * SECOND_NS, BAC=0))
    assert again.labels["symbol"] == "BAC"  # a new session: still silent, said again


def test_no_vector_after_the_first_bar_waits_a_wall_grace_then_recovers() -> None:
    clock = SimClock(WALL0)
    flow = watch(clock, vectors_grace_s=30)
    features = beat("features", Progress(last_vector_ns=0), replica="0/2")
    assert flow.on_heartbeat(features) == []  # no market clock yet
    flow.on_heartbeat(md(OPEN + 30 * SECOND_NS, IBM=OPEN + 29 * SECOND_NS))
    assert flow.on_heartbeat(features) == []  # the first bar has not closed
    flow.on_heartbeat(md(OPEN + 20 * MINUTE_NS, IBM=OPEN + 20 * MINUTE_NS))
    assert flow.on_heartbeat(features) == []  # due: the wall grace starts now
    clock.advance(30 * SECOND_NS)
    assert flow.on_heartbeat(features) == []
    clock.advance(SECOND_NS)
    (none,) = flow.on_heartbeat(features)
    assert none.dedupe == "no-vectors:features[0/2]"
    assert none.title == "features[0/2] made no feature vector: the session's first bar closed at 09:31 ET"
    assert flow.on_heartbeat(features) == []
    made = beat("features", Progress(last_vector_ns=OPEN + 21 * MINUTE_NS), replica="0/2")
    (back,) = flow.on_heartbeat(made)
    assert back.dedupe == "recovered:no-vectors:features[0/2]" and "09:51 ET" in back.title
    # A features service that made its vectors on time is never named.
    fine = beat("features", Progress(last_vector_ns=OPEN + MINUTE_NS), replica="1/2")
    clock.advance(60 * SECOND_NS)
    assert flow.on_heartbeat(fine) == []


def test_a_recorder_behind_past_the_limit_is_said_once_and_caught_up_below_half_of_it() -> None:
    flow = watch(recorder_lag_s=30)
    rec = lambda lag, rows=0: beat("recorder", Progress(lag_s=lag, unwritten_rows=rows))  # noqa: E731
    assert flow.on_heartbeat(rec(0.4)) == []
    (behind,) = flow.on_heartbeat(rec(31.0, 120_000))
    assert behind.title == "recorder is 31 s behind: 120000 rows held unwritten (database down or slow?)"
    assert flow.on_heartbeat(rec(60.0, 200_000)) == []
    assert flow.on_heartbeat(rec(20.0)) == []  # under the limit, not yet under half of it
    (caught,) = flow.on_heartbeat(rec(0.3))
    assert caught.dedupe == "recovered:recorder-lag:recorder"


def vector(symbol: str, regime: str, minute: int) -> FeatureVector:
    ts = OPEN + minute * MINUTE_NS
    return FeatureVector(
        ts_event=ts, ts_init=ts, symbol=symbol, timeframe="30m", feature_set="x", values=[], regime=regime
    )


def test_a_regime_flip_is_up_to_down_or_back_whatever_lies_between() -> None:
    flow = watch()
    said = []
    for minute, regime in enumerate(
        ["unknown/mid", "up/low", "range/low", "up/high", "range/mid", "down/mid"]
    ):
        said += flow.on_vector(vector("IBM", regime, 30 * (minute + 1)))
    (flip,) = said
    assert flip.severity == "info" and flip.dedupe == "regime:IBM"
    assert flip.title == "IBM regime flip on 30m: up -> down (down/mid at 12:30 ET)"
    assert flow.on_vector(vector("BAC", "down/low", 30)) == []  # each symbol on its own
