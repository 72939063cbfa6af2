"""One market section, read by every session rule: the risk gate's window, the protective exits'
flatten before the close, the features' bar grid and the replay's cleaning all move together,
through YAML or the environment, and the exchange calendar's half days close them all early."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.common.calendar import market_calendar
from libs.common.config import ConfigError, MarketSettings, Settings, load_settings
from libs.common.markettime import ny_time_ns
from proto.features import FeatureVector
from services.features.runtime import FeaturesApp
from services.md_gateway.providers.lean import LeanReplay
from services.qos.runtime import QosApp
from services.risk.runtime import RiskApp
from tests.conftest import SAMPLE_LEAN
from tests.kit import stubs
from tests.kit.clocks import S

HALF_DAY = "20131129"  # the day after Thanksgiving: NYSE closes at 13:00


def at(day: str, hhmm: str, seconds: int = 0) -> int:
    return ny_time_ns(day, hhmm) + seconds * S


def risk_decision(settings: Settings, ts: int) -> str:
    app = RiskApp(settings)
    app.core.clock.now_ns = lambda: ts  # type: ignore[method-assign]
    app.core.on_quote(stubs.quote(ts=ts - S))
    decision = app.core.on_intent(stubs.intent(ts=ts, ts_init=ts))
    return getattr(decision, "code", "APPROVED")


def flatten_time(settings: Settings, day: str, start: str, minutes: int) -> str | None:
    """When the protective exits flatten a long opened at ``start``, watching every second."""
    exits = QosApp(settings).exits
    exits.on_fill(stubs.fill(ts=at(day, start), price=100.0))
    for second in range(minutes * 60):
        intent = exits.on_price("IBM", at(day, start, second), 100.0)
        if intent is not None:
            assert intent.reason == "exit: session end"
            hh, mm = divmod((intent.ts_event - at(day, "00:00")) // S // 60, 60)
            return f"{hh:02d}:{mm:02d}"
    return None


def bar_closes(settings: Settings, day: str, timeframe: str) -> list[str]:
    """The New York times at which ``timeframe`` bars close over a day of ticks, one a minute
    through the session (as the replay's cleaning passes them)."""
    app = FeaturesApp(settings)
    core, session = app.core, app.core.calendar.session_on(day)
    assert session is not None
    out: list[FeatureVector] = []
    for minute in range(390):
        ts = session.open_ns + minute * 60 * S + S
        if ts >= session.close_ns:
            break
        out += core.on_event(stubs.trade(ts=ts, price=100.0 + minute / 100))
    out += core.finish()
    midnight = at(day, "00:00")
    return [
        "{:02d}:{:02d}".format(*divmod((v.ts_event - midnight) // S // 60, 60))
        for v in out
        if v.timeframe == timeframe
    ]


def stop_level(settings: Settings) -> float:
    exits = QosApp(settings).exits
    exits.on_volatility("IBM", 0.5)
    exits.on_fill(stubs.fill(price=100.0))
    return exits.held["IBM"].stop


def test_exits_and_session_rules_move_with_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    day = "20131008"
    default = load_settings()
    assert stop_level(default) == pytest.approx(99.0)  # 2 ATR below
    assert flatten_time(default, day, "15:50", 10) == "15:55"
    assert bar_closes(default, day, "60m")[-2:] == ["15:30", "16:00"]
    assert risk_decision(default, at(day, "15:30")) == "APPROVED"

    monkeypatch.setenv("TRADEFLEET_QOS__EXITS__STOP_ATR", "1.0")
    monkeypatch.setenv("TRADEFLEET_MARKET__SESSION_END", "15:15")
    moved = load_settings()
    assert moved.qos.exits.stop_atr == 1.0 and moved.market.session_end == "15:15"
    assert stop_level(moved) == pytest.approx(99.5)  # 1 ATR below
    assert flatten_time(moved, day, "15:00", 20) == "15:10"
    assert bar_closes(moved, day, "60m")[-2:] == ["14:30", "15:15"]  # the close ends the last bar
    assert bar_closes(moved, day, "30m")[-1] == "15:15"
    assert risk_decision(moved, at(day, "15:30")) == "SESSION_CLOSED"
    assert LeanReplay(SAMPLE_LEAN, day, ["IBM"], "none").session(market_calendar(moved.market)) == (
        at(day, "09:30"),
        at(day, "15:15"),
    )


def test_a_half_day_closes_at_13_for_risk_exits_and_bars_alike() -> None:
    settings = load_settings()
    session = market_calendar(settings.market).session_on(HALF_DAY)
    assert session is not None and session.early_close
    assert (session.open_ns, session.close_ns) == (at(HALF_DAY, "09:30"), at(HALF_DAY, "13:00"))
    assert risk_decision(settings, at(HALF_DAY, "12:59")) == "APPROVED"
    assert risk_decision(settings, at(HALF_DAY, "13:00")) == "SESSION_CLOSED"
    assert flatten_time(settings, HALF_DAY, "12:50", 10) == "12:55"
    assert bar_closes(settings, HALF_DAY, "60m") == ["10:30", "11:30", "12:30", "13:00"]
    minutes = bar_closes(settings, HALF_DAY, "1m")
    assert len(minutes) == 210 and minutes[-1] == "13:00"


def test_holidays_have_no_session_and_a_bad_calendar_is_a_clear_error() -> None:
    calendar = market_calendar(MarketSettings())
    assert calendar.session_on("20131128") is None  # Thanksgiving
    assert calendar.trading_days("20131125", "20131202") == [
        "20131125",
        "20131126",
        "20131127",
        "20131129",
        "20131202",
    ]
    weekdays = market_calendar(MarketSettings(calendar="weekdays"))
    assert weekdays.session_on("20131128") is not None and weekdays.session_on("20131130") is None
    with pytest.raises(ValueError, match="not an exchange-calendars name"):
        market_calendar(MarketSettings(calendar="NOPE"))
    with pytest.raises(ValueError, match="before session_end"):
        MarketSettings(session_start="16:00", session_end="09:30")


def test_wall_times_written_unquoted_in_yaml_are_wall_times(tmp_path: Path) -> None:
    """YAML 1.1 reads 15:15 as the number 915 (base 60): the market hours and the replay's cut
    take it back as 15:15 instead of refusing the file."""
    config = tmp_path / "c.yaml"
    config.write_text("market: {session_end: 15:15}\nmd_gateway: {replay: {until: 10:30}}\n")
    settings = load_settings(config)
    assert settings.market.session_end == "15:15" and settings.md_gateway.replay.until == "10:30"
    config.write_text("market: {session_end: 25:30}\n")
    with pytest.raises(ConfigError, match="session_end"):
        load_settings(config)
