"""The tearsheet's parts on cases whose answers are known by hand: FIFO round trips, drawdown
periods, calendar heatmaps only when the span allows, the small-sample warning, the settings
hash with its secrets masked, and the metrics against empyrical on a synthetic series (the real
day is checked the same way in tests/integration/test_backtest.py)."""

from __future__ import annotations

from pathlib import Path

import empyrical
import numpy as np
import pytest

from libs.common.config import load_settings
from libs.common.secrets import mask_url
from proto.alerts import Alert
from proto.control import Control
from proto.execution import Fill
from proto.orders import RiskState
from tradefleet.backtest.analysis import (
    EquityCurve,
    calendar_returns,
    drawdowns,
    events,
    ny_time,
    quarantines,
    rolling,
    sample_warning,
)
from tradefleet.backtest.ledger import Ledger
from tradefleet.backtest.metrics import MINUTES_PER_YEAR, NS_PER_MIN, alpha_beta, performance
from tradefleet.backtest.provenance import settings_digest
from tradefleet.backtest.roundtrips import OPEN_AT_END, round_trips

T0 = 1_381_239_000_000_000_000  # 2013-10-08 09:30 New York


def _fill(
    minute: int, cid: str, side: str, qty: float, price: float, fee: float, symbol: str = "IBM"
) -> Fill:
    ts = T0 + minute * NS_PER_MIN
    return Fill(
        ts_event=ts,
        ts_init=ts,
        exec_id=f"x{minute}{cid}",
        client_order_id=cid,
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        quantity=qty,
        price=price,
        commission=fee,
    )


def test_round_trips_are_fifo_lots_and_a_partial_close_splits_one() -> None:
    fills = [
        _fill(0, "a", "BUY", 100, 10.0, 1.0),  # lot 1
        _fill(1, "b", "BUY", 100, 11.0, 1.0),  # lot 2
        _fill(3, "c", "SELL", 150, 12.0, 3.0),  # closes lot 1, half of lot 2
        _fill(4, "d", "SELL", 100, 11.5, 2.0),  # closes lot 2's rest, opens 50 short
        _fill(6, "e", "BUY", 50, 11.0, 1.0),  # covers
        _fill(7, "f", "BUY", 40, 14.0, 0.4, "BAC"),  # still open at the end
    ]
    reasons = {c: f"why {c}" for c in "abcdef"}
    arrivals = {"a": 9.99, "c": 12.02}
    trips = round_trips(fills, reasons, arrivals, {"BAC": 14.5}, T0 + 9 * NS_PER_MIN)
    shape = [(t.symbol, t.side, t.quantity, t.entry_price, t.exit_price) for t in trips]
    assert shape == [
        ("IBM", "long", 100, 10.0, 12.0),
        ("IBM", "long", 50, 11.0, 12.0),
        ("IBM", "long", 50, 11.0, 11.5),
        ("IBM", "short", 50, 11.5, 11.0),
        ("BAC", "long", 40, 14.0, 14.5),
    ]
    first, second, third, short, still_open = trips
    # commissions follow the shares: lot 1 pays all of a's and 100/150 of c's
    assert first.commission == pytest.approx(1.0 + 2.0) and first.pnl == pytest.approx(200 - 3.0)
    assert second.commission == pytest.approx(0.5 + 1.0) and third.commission == pytest.approx(0.5 + 1.0)
    assert short.pnl == pytest.approx(25 - 1.0 - 1.0) and short.holding_min == 2
    assert (first.entry_reason, first.exit_reason, short.entry_reason) == ("why a", "why c", "why d")
    assert still_open.open_at_end and still_open.exit_reason == OPEN_AT_END
    assert still_open.pnl == pytest.approx(40 * 0.5 - 0.4)
    # slippage against the arrival mid, both sides known only for the first trip
    assert first.slippage == pytest.approx(100 * 0.01 + 100 * 0.02)
    assert first.slippage_bps == pytest.approx(3.0 / 1000 * 1e4)
    assert second.slippage is None  # lot 2's order had no arrival price
    # the account: cash out and in, every commission, the open lot marked to the mid
    cash = sum((-1 if f.side == "BUY" else 1) * f.quantity * f.price - (f.commission or 0) for f in fills)
    assert sum(t.pnl for t in trips) == pytest.approx(cash + 40 * 14.5)
    assert sum(t.commission for t in trips) == pytest.approx(sum(f.commission or 0 for f in fills))


def test_drawdown_periods_deepest_first_with_their_recovery() -> None:
    ts = np.array([T0 + i * NS_PER_MIN for i in range(1, 8)])
    equity = np.array([110.0, 99.0, 105.0, 111.0, 100.0, 108.0, 109.0])
    worst, second = drawdowns(EquityCurve(ts, equity, 100.0))
    # 110 -> 99 (-10%), recovered by 111 two minutes later; 111 -> 100 (-9.9%), still under water
    assert worst["depth"] == pytest.approx(-0.1, abs=1e-6) and worst["depth_usd"] == -11.0
    assert worst["peak"] == ny_time(T0 + NS_PER_MIN) and worst["trough"] == ny_time(T0 + 2 * NS_PER_MIN)
    assert worst["recovery"] == ny_time(T0 + 4 * NS_PER_MIN) and worst["minutes"] == 3
    assert second["depth"] == pytest.approx(100 / 111 - 1, abs=1e-6) and second["recovery"] is None
    assert second["peak"] == ny_time(T0 + 4 * NS_PER_MIN) and second["minutes"] == 3  # to the end
    curve = np.r_[100.0, equity]
    assert worst["depth"] == pytest.approx(empyrical.max_drawdown(curve[1:] / curve[:-1] - 1), abs=1e-6)


def _days(*dates: str, ret: float = 0.01) -> list[dict[str, object]]:
    return [{"day": d, "pnl": 0.0, "return": ret, "trades": 0} for d in dates]


def test_calendar_heatmaps_only_when_the_span_has_more_than_a_week_or_a_month() -> None:
    one_week = calendar_returns(_days("2013-10-07", "2013-10-08", "2013-10-11"))
    assert one_week["daily"] is None and one_week["monthly"] is None and len(one_week["notes"]) == 2
    two_weeks = calendar_returns(_days("2013-10-10", "2013-10-14"))
    assert two_weeks["daily"]["weeks"] == ["2013-10-07", "2013-10-14"]
    assert two_weeks["daily"]["returns"] == [[None, None, None, 0.01, None], [0.01, None, None, None, None]]
    assert two_weeks["monthly"] is None
    months = calendar_returns(_days("2013-10-30", "2013-10-31", "2013-11-01"))
    october = months["monthly"]["returns"][0][9]
    assert october == pytest.approx(1.01**2 - 1) and months["monthly"]["returns"][0][10] == 0.01


def test_the_small_sample_warning_names_what_is_short() -> None:
    small = sample_warning(1, 5)
    assert small["small_sample"] and "1 trading day" in small["message"] and "5 trades" in small["message"]
    assert "sharpe" in small["annualized"]
    assert sample_warning(25, 12)["small_sample"] and not sample_warning(20, 30)["small_sample"]
    assert sample_warning(20, 30)["message"] == ""


def test_the_settings_hash_masks_secrets_ignores_the_run_folder_and_sees_every_setting() -> None:
    base = load_settings(None, db={"url": "postgresql://trader:hunter2@db:5432/tf"})
    digest, plain = settings_digest(base)
    assert "hunter2" not in str(plain) and plain["db"]["url"] == "postgresql://trader:***@db:5432/tf"
    moved = base.model_copy(
        update={"execution": base.execution.model_copy(update={"journal": Path("/tmp/elsewhere.jsonl")})}
    )
    assert settings_digest(moved)[0] == digest  # the backtest's per-run journal is not configuration
    other_password = load_settings(None, db={"url": "postgresql://trader:other@db:5432/tf"})
    assert settings_digest(other_password)[0] == digest  # a secret never shows through the hash
    tighter = load_settings(
        None, db={"url": "postgresql://trader:hunter2@db:5432/tf"}, qos={"entry_threshold": 0.5}
    )
    assert settings_digest(tighter)[0] != digest
    assert mask_url("nats://a:b@h:4222,nats://h2:4222") == "nats://a:***@h:4222,nats://h2:4222"
    # the forms the report's own masker missed: a libpq password parameter, a NATS token
    assert mask_url("postgresql://db/tf?password=pw") == "postgresql://db/tf?password=***"
    assert mask_url("nats://s3cr3t@h:4222") == "nats://***@h:4222"


def test_metrics_and_rolling_figures_agree_with_empyrical() -> None:
    rng = np.random.default_rng(7)
    minutes = 390
    ts = np.array([T0 + (i + 1) * NS_PER_MIN for i in range(minutes)])
    market = 100 * np.cumprod(1 + rng.normal(0, 0.001, minutes + 1))
    bench = {int(t): float(p) for t, p in zip(ts, market[1:], strict=True)}
    m = np.diff(market) / market[:-1]
    r = 0.3 * m + rng.normal(0.00002, 0.0005, minutes)
    equity = 1e5 * np.cumprod(1 + r)
    row = performance(ts, equity, 1e5, [], 1, None, bench)
    ann = MINUTES_PER_YEAR
    assert row["sharpe"] == pytest.approx(empyrical.sharpe_ratio(r, annualization=ann), rel=1e-5)
    assert row["sortino"] == pytest.approx(empyrical.sortino_ratio(r, annualization=ann), rel=1e-5)
    assert row["annual_volatility"] == pytest.approx(
        empyrical.annual_volatility(r, annualization=ann), rel=1e-5
    )
    assert row["max_drawdown"] == pytest.approx(empyrical.max_drawdown(r), abs=1e-6)
    assert row["total_return"] == pytest.approx(empyrical.cum_returns_final(r), abs=1e-6)
    # one day of minutes: empyrical's periods per year are this day's minutes times 252
    assert row["annualized_return"] == pytest.approx(
        empyrical.annual_return(r, annualization=minutes * 252), rel=1e-5
    )
    out = alpha_beta(ts, equity, bench)
    paired_r, paired_m = r[1:], m[1:]  # the first minute has no benchmark return before it
    assert out["beta"] == pytest.approx(empyrical.beta(paired_r, paired_m), rel=1e-6)
    compounded = empyrical.alpha(paired_r, paired_m, annualization=ann)
    simple = ann * ((1 + compounded) ** (1 / ann) - 1)  # empyrical compounds alpha; ours is simple
    assert out["alpha"] == pytest.approx(simple, rel=1e-4)
    roll = rolling(EquityCurve(ts, equity, 1e5), days=1)
    expected = empyrical.roll_sharpe_ratio(r, window=60, annualization=ann)
    assert roll["window"] == "60 minutes" and len(roll["sharpe"]) == len(expected) == minutes - 59
    assert roll["sharpe"] == pytest.approx(list(expected), rel=1e-4, abs=1e-4)  # kept to 4 decimals
    vol = empyrical.roll_annual_volatility(r, window=60, annualization=ann)
    assert roll["volatility"] == pytest.approx(list(vol), rel=1e-4)


def test_kills_mode_changes_and_quarantines_are_the_timeline_marks() -> None:
    ledger = Ledger(load_settings())
    at = [T0 + k * NS_PER_MIN for k in range(5)]
    ledger.mode_changes += [
        RiskState(ts_event=at[0], ts_init=at[0], instance="r", seq=1, mode="LIVE", mode_reason="initial"),
        RiskState(
            ts_event=at[3], ts_init=at[3], instance="r", seq=9, mode="EMERGENCY", mode_reason="kill by ops"
        ),
    ]
    ledger.controls.append(
        Control(ts_event=at[2], ts_init=at[2], command_id="c1", command="kill", issued_by="ops")
    )
    ledger.controls.append(
        Control(ts_event=at[1], ts_init=at[1], command_id="c0", command="cancel", issued_by="x")
    )
    ledger.alerts += [
        Alert(
            ts_event=at[1],
            ts_init=at[1],
            alert_id="drift-5m-v1",
            severity="warning",
            source="fastlane",
            title="fast-lane model 5m v1 quarantined: input drift",
            labels={"horizon": "5m", "version": "v1"},
        ),
        Alert(ts_event=at[4], ts_init=at[4], alert_id="other", severity="info", source="risk", title="x"),
    ]
    marks = events(ledger)
    # the gate starting LIVE and an order's cancel are not events; the rest in time order
    assert [(e["kind"], e["time"]) for e in marks] == [
        ("quarantine", ny_time(at[1])),
        ("kill", ny_time(at[2])),
        ("mode", ny_time(at[3])),
    ]
    assert marks[2]["detail"] == "risk mode EMERGENCY: kill by ops"
    assert quarantines(ledger) == [
        {
            "horizon": "5m",
            "version": "v1",
            "ts": at[1],
            "time": "2013-10-08 09:31:00",
            "detail": marks[0]["detail"],
        }
    ]


def test_a_lot_open_at_the_end_without_a_mid_is_marked_at_its_last_fill_not_zero() -> None:
    fills = [_fill(0, "a", "BUY", 40, 14.0, 0.4, "BAC"), _fill(2, "b", "BUY", 10, 14.2, 0.1, "BAC")]
    trips = round_trips(fills, {}, {}, {}, T0 + 9 * NS_PER_MIN)  # no quote of BAC seen
    assert [t.exit_price for t in trips] == [14.2, 14.2]
    assert trips[0].pnl == pytest.approx(40 * 0.2 - 0.4)  # not -560 - 0.4
