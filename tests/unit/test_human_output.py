"""What a person reads: taps in New York time with rounded values, the live view of `up` and its
closing summary, from real event samples and a real run's summary shape."""

from __future__ import annotations

import datetime as dt
import io
import json

from rich.console import Console

from libs.common import codec
from libs.common.markettime import ny_time_ns
from proto.signals import Prediction
from tradefleet.human import fleet_summary_lines, live_view, split_drops
from tradefleet.tap import parse_since, render

OPEN_NS = ny_time_ns("20131008", "09:30")


def prediction(**fields: object) -> dict[str, object]:
    event = Prediction(
        ts_event=OPEN_NS + 60_000_000_123,
        ts_init=OPEN_NS + 60_000_900_000,
        symbol="IBM",
        horizon="5m",
        model_version="v1",
        probability=0.5312345678901234,
        expected_return=0.000123456789,
        signal=0.31234567,
        price=185.123456,
        **fields,  # type: ignore[arg-type]
    )
    return codec.to_builtins(event)


def test_a_tap_line_reads_in_new_york_time_with_rounded_values() -> None:
    line = render("sig.fast.5m.IBM", prediction(), as_json=False)
    assert line.startswith("2013-10-08 09:31:00.000  sig.fast.5m.IBM")
    assert "probability=0.5312 " in line and "expected_return=0.0001235 " in line
    assert "signal=0.3123 " in line and "price=185.1235 " in line
    assert "ts_init" not in line  # when this process made it: only with --raw


def test_raw_keeps_exact_integers_and_floats() -> None:
    line = render("sig.fast.5m.IBM", prediction(), as_json=False, raw=True)
    assert line.startswith(f"{OPEN_NS + 60_000_000_123}  ")
    assert "probability=0.5312345678901234" in line and f"ts_init={OPEN_NS + 60_000_900_000}" in line


def test_json_is_readable_by_default_and_exact_with_raw() -> None:
    readable = json.loads(render("sig.fast.5m.IBM", prediction(), as_json=True))
    assert readable["ts_event"] == "2013-10-08 09:31:00.000" and readable["probability"] == 0.5312
    exact = json.loads(render("sig.fast.5m.IBM", prediction(), as_json=True, raw=True))
    assert exact["ts_event"] == OPEN_NS + 60_000_000_123 and exact["probability"] == 0.5312345678901234


def test_since_without_a_zone_is_new_york_time() -> None:
    start = parse_since("2013-10-08T09:30")
    assert start.astimezone(dt.UTC) == dt.datetime(2013, 10, 8, 13, 30, tzinfo=dt.UTC)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert parse_since("-5m", now) == now - dt.timedelta(minutes=5)


# A status snapshot shaped as the services' /status bodies are.
STATUSES = {
    "md-gateway": {
        "ready": True,
        "app": {
            "market_ns": ny_time_ns("20131008", "10:15"),
            "bad_ticks": {"locked": 20484, "crossed": 60, "suspicious": 20},
            "stats": {"records": 1000, "quotes": 900},
        },
    },
    "risk": {
        "ready": True,
        "app": {
            "mode": "DEGRADED",
            "mode_reason": "feed stale: ib",
            "day_pnl": -12.5,
            "approved": 3,
            "denied": 1,
            "book": {
                "IBM": {
                    "quantity": 55,
                    "avg_price": 185.1,
                    "mark": 185.3,
                    "realized": -1.0,
                    "unrealized": 11.0,
                }
            },
        },
    },
    "execution": {"ready": True, "app": {"orders_by_symbol": {"IBM": 2, "BAC": 2}, "fills": 3, "orders": 8}},
    "fastlane": {
        "ready": True,
        "app": {"models": {"5m": {"quarantined": False}, "60m": {"quarantined": True}}},
    },
}


def test_the_live_view_shows_the_market_the_book_the_mode_and_why_ticks_were_dropped() -> None:
    out = io.StringIO()
    Console(file=out, width=200).print(live_view(STATUSES, {n: 100 + i for i, n in enumerate(STATUSES)}))
    text = out.getvalue()
    assert "market 2013-10-08 10:15:00 ET" in text
    assert "risk DEGRADED (feed stale: ib)" in text and "day P&L -12.50" in text
    assert "5m:ok 60m:QUARANTINED" in text
    assert "feed dropped: locked 20,484 (ordinary); bad data: crossed 60, suspicious 20" in text
    ibm = next(line for line in text.splitlines() if "IBM" in line and "+55" in line)
    assert "185.10" in ibm and "185.30" in ibm and "+11.00" in ibm
    assert any("BAC" in line for line in text.splitlines())  # orders, no position


def test_locked_quotes_are_ordinary_drops_not_bad_data() -> None:
    ordinary, bad = split_drops({"locked": 5, "crossed": 2, "nan_price": 0})
    assert ordinary == {"locked": 5} and bad == {"crossed": 2}


def summary(**changes: object) -> dict[str, object]:
    s: dict[str, object] = {
        "ok": True,
        "error": None,
        "ended": "finished",
        "elapsed_s": 38.6,
        "replay": {"date": "20131008", "symbols": ["IBM", "BAC"]},
        "market_time_end": "2013-10-08 16:00:00 ET",
        "ticks_replayed": 861099,
        "md_rows_lost": 0,
        "dropped_messages": {"qos": {}, "risk": {"malformed": 2}},
        "bad_ticks": {"locked": 20484, "crossed": 80},
        "alerts": {
            "count": 1,
            "by_severity": {"warning": 1},
            "first": ["warning: fastlane: 60m quarantined"],
        },
        "signals": {
            "models": {
                "5m": {"engine": "lleaves", "quarantined": False},
                "60m": {"engine": "lleaves", "quarantined": True},
            }
        },
        "trading": {
            "realized_pnl": -12.34,
            "day_pnl": -10.5,
            "fills": 10,
            "orders_sent": 10,
            "approved": 10,
            "denied": 2,
            "denials_by_code": {"MAX_POSITION": 2},
            "positions_at_end": {"IBM": 0.0, "BAC": 0.0},
            "risk_mode": "LIVE",
            "tca_reports": 10,
            "cost_bps_all_in": 4.85,
            "slippage_alerts": 0,
        },
    }
    s.update(changes)
    return s


def test_the_closing_summary_is_a_few_lines_a_trader_reads() -> None:
    lines = fleet_summary_lines(summary(), None)
    text = "\n".join(lines)
    assert lines[0] == (
        "tradefleet up: OK: 2013-10-08 (IBM, BAC) finished after 38.6 s, market time 2013-10-08 16:00:00 ET"
    )
    assert (
        "P&L -10.50 USD (realized -12.34); 10 fills of 10 orders; risk approved 10, denied 2 (MAX_POSITION 2)"
        in text
    )
    assert "positions flat at the end; risk mode LIVE" in text
    assert "4.85 bps all-in per order over 10 orders" in text
    assert "quarantined: 60m" in text and "warning: fastlane: 60m quarantined" in text
    assert "861,099 ticks; 0 market-data rows lost; 2 messages dropped by services" in text
    assert "dropped locked 20,484 (ordinary); bad data: crossed 80" in text
    assert len(lines) <= 14


def test_a_failed_run_says_why_first() -> None:
    lines = fleet_summary_lines(
        summary(ok=False, ended="error", error="risk exited with -9; see var/logs/risk.log"), None
    )
    assert (
        lines[0].startswith("tradefleet up: FAILED:")
        and lines[1] == "  error     risk exited with -9; see var/logs/risk.log"
    )


def test_the_backtest_summary_puts_the_small_sample_warning_before_the_figures() -> None:
    from tradefleet.human import backtest_summary_lines

    lines = backtest_summary_lines(
        {
            "report": "var/backtest/report.html",
            "days": ["20131008"],
            "ticks_per_s": 102637,
            "orders": {"intents": 10, "approved": 10, "denied": {}, "fills": 10, "commissions": 33.24},
            "strategy": {
                "total_return": -0.000682,
                "sharpe": -29.35,
                "max_drawdown": -0.000682,
                "trades": 5,
                "hit_rate": 0.0,
            },
            "warning": "Small sample: 1 trading day (fewer than 20) and 5 trades (fewer than 30).",
        }
    )
    assert lines[0] == "backtest: 2013-10-08, 102,637 ticks/s"
    assert lines[1].startswith("  WARNING   Small sample: 1 trading day")
    assert lines[2].startswith(
        "  strategy  total return -0.068%, max drawdown -0.068%, 5 trades, hit rate 0%"
    )
    assert lines[2].endswith("Sharpe -29.35 (annualized)")
    assert "10 fills, commissions 33.24 USD" in lines[3]


def test_undefined_figures_print_as_a_dash() -> None:
    from tradefleet.human import backtest_summary_lines

    lines = backtest_summary_lines(
        {
            "days": ["20131008"],
            "strategy": {
                "total_return": None,
                "sharpe": None,
                "max_drawdown": None,
                "trades": 0,
                "hit_rate": None,
            },
        }
    )
    assert "total return -, max drawdown -, 0 trades, hit rate -, Sharpe - (annualized)" in lines[1]
