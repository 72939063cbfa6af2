"""What the tearsheet shows beyond the metrics rows: exposure over time with the events that
changed what the fleet could do (kills, risk mode changes, model quarantines), P&L per symbol and
per day, calendar heatmaps when the span has more than one week or month, rolling Sharpe and
volatility, the worst drawdowns, the trades' wins and losses, and whether the sample is too small
for the annualized figures to mean much. Every time a trader reads is New York time."""

from __future__ import annotations

import collections
import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from libs.common.markettime import ny_datetime, ny_text
from tradefleet.backtest.ledger import Ledger
from tradefleet.backtest.metrics import MINUTES_PER_YEAR, NS_PER_MIN
from tradefleet.backtest.roundtrips import RoundTrip

TRADING_DAYS = 252
# Fewer trading days or trades than this and the annualized figures are extrapolations from a
# small sample: the tearsheet says so beside each of them.
MIN_DAYS = 20
MIN_TRADES = 30
ANNUALIZED = ("annualized_return", "annual_volatility", "sharpe", "sortino", "alpha")
ROLLING_MINUTES = 60
ROLLING_DAYS = 20
WORST_DRAWDOWNS = 5


def ny_time(ts_ns: int, seconds: bool = True) -> str:
    """New York wall time, the market's."""
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return ny_text(ts_ns, fmt)


def ny_date(ts_ns: int) -> dt.date:
    return ny_datetime(ts_ns).date()


def _num(x: float | None, digits: int = 6) -> float | None:
    """A JSON-safe number (NaN and infinities become null)."""
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


# -- sample size ---------------------------------------------------------------------------------
def sample_warning(
    days: int, trades: int, min_days: int = MIN_DAYS, min_trades: int = MIN_TRADES
) -> dict[str, Any]:
    small = days < min_days or trades < min_trades
    why = []
    if days < min_days:
        why.append(f"{days} trading day{'s' if days != 1 else ''} (fewer than {min_days})")
    if trades < min_trades:
        why.append(f"{trades} trade{'s' if trades != 1 else ''} (fewer than {min_trades})")
    message = (
        f"Small sample: {' and '.join(why)}. Annualized figures ({', '.join(ANNUALIZED)}) are "
        f"extrapolated from it and say little about a year."
        if small
        else ""
    )
    return {
        "small_sample": small,
        "days": days,
        "trades": trades,
        "min_days": min_days,
        "min_trades": min_trades,
        "annualized": list(ANNUALIZED),
        "message": message,
    }


# -- the equity curve ------------------------------------------------------------------------------
@dataclass(frozen=True)
class EquityCurve:
    """Minute samples of equity with the capital before the first one (the returns' base)."""

    ts: np.ndarray  # each minute's end, ns
    equity: np.ndarray
    capital: float

    @property
    def values(self) -> np.ndarray:
        return np.concatenate([[self.capital], self.equity])

    @property
    def returns(self) -> np.ndarray:
        v = self.values
        return v[1:] / v[:-1] - 1.0

    @property
    def times(self) -> np.ndarray:
        """A time for each value: the first minute's start for the capital."""
        start = int(self.ts[0]) - NS_PER_MIN if len(self.ts) else 0
        return np.concatenate([[start], self.ts]).astype(np.int64)


def drawdowns(curve: EquityCurve, top: int = WORST_DRAWDOWNS) -> list[dict[str, Any]]:
    """The worst drawdown periods, deepest first: peak, trough, recovery (None while still under
    water at the end), depth as a fraction of the peak, and minutes from peak to recovery."""
    values, times = curve.values, curve.times
    periods: list[tuple[int, int, int | None]] = []
    peak_i, trough_i = 0, 0
    for i in range(1, len(values)):
        if values[i] >= values[peak_i]:
            if trough_i != peak_i:
                periods.append((peak_i, trough_i, i))
            peak_i = trough_i = i
        elif values[i] < values[trough_i]:
            trough_i = i
    if trough_i != peak_i:
        periods.append((peak_i, trough_i, None))
    periods.sort(key=lambda p: values[p[1]] / values[p[0]])
    out = []
    for peak, trough, recovery in periods[:top]:
        end = times[recovery] if recovery is not None else times[-1]
        out.append(
            {
                "peak": ny_time(int(times[peak])),
                "trough": ny_time(int(times[trough])),
                "recovery": ny_time(int(times[recovery])) if recovery is not None else None,
                "depth": _num(values[trough] / values[peak] - 1.0),
                "depth_usd": _num(values[trough] - values[peak], 2),
                "minutes": _num((end - times[peak]) / NS_PER_MIN, 1),
            }
        )
    return out


def daily_equity(curve: EquityCurve) -> list[tuple[dt.date, float, float]]:
    """(New York day, equity at its start, equity at its end), in order."""
    out: list[tuple[dt.date, float, float]] = []
    start = curve.capital
    for ts, equity in zip(curve.ts, curve.equity, strict=True):
        day = ny_date(int(ts))
        if out and out[-1][0] == day:
            out[-1] = (day, out[-1][1], float(equity))
        else:
            if out:
                start = out[-1][2]
            out.append((day, start, float(equity)))
    return out


def pnl_by_day(curve: EquityCurve, trips: list[RoundTrip]) -> list[dict[str, Any]]:
    closed = collections.Counter(ny_date(t.exit_ts) for t in trips)
    return [
        {
            "day": day.isoformat(),
            "pnl": _num(end - start, 2),
            "return": _num(end / start - 1.0),
            "trades": closed.get(day, 0),
        }
        for day, start, end in daily_equity(curve)
    ]


def pnl_by_symbol(trips: list[RoundTrip], symbols: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for symbol in sorted(set(symbols) | {t.symbol for t in trips}):
        mine = [t for t in trips if t.symbol == symbol]
        notional = sum(t.notional for t in mine)
        slips = [t.slippage for t in mine if t.slippage is not None]
        out[symbol] = {
            "trades": len(mine),
            "wins": sum(1 for t in mine if t.pnl > 0),
            "pnl": _num(sum(t.pnl for t in mine), 2),
            "pnl_bps": _num(sum(t.pnl for t in mine) / notional * 1e4, 2) if notional else None,
            "commission": _num(sum(t.commission for t in mine), 2),
            "slippage": _num(sum(slips), 2) if slips else None,
            "shares": _num(sum(t.quantity for t in mine), 4),
        }
    return out


def calendar_returns(daily: list[dict[str, Any]]) -> dict[str, Any]:
    """Daily returns by week (rows) and weekday, when the days span more than one week; monthly
    returns (compounded) by year and month, when they span more than one month."""
    days = [(dt.date.fromisoformat(d["day"]), d["return"] or 0.0) for d in daily]
    weeks = sorted({d.isocalendar()[:2] for d, _ in days})
    months = sorted({(d.year, d.month) for d, _ in days})
    out: dict[str, Any] = {"daily": None, "monthly": None, "notes": []}
    if len(weeks) > 1:
        grid: list[list[float | None]] = [[None] * 5 for _ in weeks]
        for d, r in days:
            if d.weekday() < 5:
                grid[weeks.index(d.isocalendar()[:2])][d.weekday()] = _num(r)
        labels = [dt.date.fromisocalendar(y, w, 1).isoformat() for y, w in weeks]
        out["daily"] = {"weeks": labels, "weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri"], "returns": grid}
    else:
        out["notes"].append("daily returns heatmap: the span is within one week")
    if len(months) > 1:
        growth: dict[tuple[int, int], float] = collections.defaultdict(lambda: 1.0)
        for d, r in days:
            growth[(d.year, d.month)] *= 1.0 + r
        years = sorted({y for y, _ in months})
        months_grid = [
            [_num(growth[(y, m)] - 1.0) if (y, m) in growth else None for m in range(1, 13)] for y in years
        ]
        out["monthly"] = {"years": years, "months": list(range(1, 13)), "returns": months_grid}
    else:
        out["notes"].append("monthly returns heatmap: the span is within one month")
    return out


def rolling(curve: EquityCurve, days: int) -> dict[str, Any]:
    """Rolling annualized Sharpe and volatility: over 20-day windows of daily returns when there
    are at least two windows' worth of days, else over 60-minute windows of minute returns."""
    if days >= 2 * ROLLING_DAYS:
        daily = daily_equity(curve)
        returns = np.array([end / start - 1.0 for _, start, end in daily])
        times = [ny_time(int(t)) for t in _day_ends(curve)]
        window, per_year, label = ROLLING_DAYS, TRADING_DAYS, f"{ROLLING_DAYS} trading days"
    else:
        returns, times = curve.returns, [ny_time(int(t)) for t in curve.ts]
        window, per_year, label = ROLLING_MINUTES, MINUTES_PER_YEAR, f"{ROLLING_MINUTES} minutes"
    out: dict[str, Any] = {"window": label, "time": [], "sharpe": [], "volatility": []}
    if len(returns) < window:
        return out
    windows = np.lib.stride_tricks.sliding_window_view(returns, window)
    mean, std = windows.mean(axis=1), windows.std(axis=1, ddof=1)
    scale = math.sqrt(per_year)
    out["time"] = times[window - 1 :]
    out["sharpe"] = [_num(m / s * scale, 4) if s > 0 else None for m, s in zip(mean, std, strict=True)]
    out["volatility"] = [_num(s * scale) for s in std]
    return out


def _day_ends(curve: EquityCurve) -> list[int]:
    ends: dict[dt.date, int] = {}
    for ts in curve.ts:
        ends[ny_date(int(ts))] = int(ts)
    return list(ends.values())


# -- trades -----------------------------------------------------------------------------------------
def trade_stats(trips: list[RoundTrip]) -> dict[str, Any]:
    wins = [t.pnl for t in trips if t.pnl > 0]
    losses = [t.pnl for t in trips if t.pnl <= 0]
    best = max(trips, key=lambda t: t.pnl, default=None)
    worst = min(trips, key=lambda t: t.pnl, default=None)
    return {
        "round_trips": len(trips),
        "wins": len(wins),
        "losses": len(losses),
        "avg_win": _num(float(np.mean(wins)), 2) if wins else None,
        "avg_loss": _num(float(np.mean(losses)), 2) if losses else None,
        "win_loss_ratio": _num(float(np.mean(wins)) / -float(np.mean(losses)), 4)
        if wins and losses and np.mean(losses) < 0
        else None,
        "best": _trade_ref(best),
        "worst": _trade_ref(worst),
    }


def _trade_ref(t: RoundTrip | None) -> dict[str, Any] | None:
    if t is None:
        return None
    return {"symbol": t.symbol, "side": t.side, "entry": ny_time(t.entry_ts), "pnl": _num(t.pnl, 2)}


def trade_rows(trips: list[RoundTrip]) -> list[dict[str, Any]]:
    """report.json's trade table (the HTML shows the same rows)."""
    return [
        {
            "symbol": t.symbol,
            "side": t.side,
            "quantity": _num(t.quantity, 4),
            "entry": t.entry_ts,
            "exit": t.exit_ts,
            "entry_time": ny_time(t.entry_ts),
            "exit_time": ny_time(t.exit_ts),
            "entry_price": _num(t.entry_price, 4),
            "exit_price": _num(t.exit_price, 4),
            "pnl": _num(t.pnl, 2),
            "pnl_bps": _num(t.pnl_bps, 2) if t.pnl_bps is not None else None,
            "commission": _num(t.commission, 4),
            "holding_min": _num(t.holding_min, 1),
            "entry_reason": t.entry_reason,
            "exit_reason": t.exit_reason,
            "slippage": _num(t.slippage, 4) if t.slippage is not None else None,
            "slippage_bps": _num(t.slippage_bps, 2) if t.slippage_bps is not None else None,
            "open_at_end": t.open_at_end,
        }
        for t in trips
    ]


# -- exposure and the events marked on it ---------------------------------------------------------------
def exposure(ledger: Ledger, symbols: list[str]) -> dict[str, Any]:
    """Signed USD exposure per symbol at each minute's end (position x mid), and the gross."""
    rows = ledger.minutes
    by_symbol = {
        s: [_num(m.positions.get(s, 0.0) * m.mids.get(s, 0.0), 2) or 0.0 for m in rows] for s in symbols
    }
    return {
        "time": [ny_time(m.ts) for m in rows],
        "by_symbol": by_symbol,
        "gross": [_num(m.gross, 2) for m in rows],
    }


def quarantines(ledger: Ledger) -> list[dict[str, Any]]:
    """The fast-lane models the drift monitor quarantined, when (its alert's time)."""
    out = []
    for a in ledger.alerts:
        if a.source == "fastlane" and a.alert_id.startswith("drift-"):
            out.append(
                {
                    "horizon": a.labels.get("horizon", ""),
                    "version": a.labels.get("version", ""),
                    "ts": a.ts_event,
                    "time": ny_time(a.ts_event),
                    "detail": a.title,
                }
            )
    return out


def events(ledger: Ledger) -> list[dict[str, Any]]:
    """Kills, risk mode changes, model quarantines and releases, in time order: the exposure
    plot's marks."""
    out = [
        {"ts": q["ts"], "time": q["time"], "kind": "quarantine", "detail": q["detail"]}
        for q in quarantines(ledger)
    ]
    out += [
        {"ts": a.ts_event, "time": ny_time(a.ts_event), "kind": "release", "detail": a.title}
        for a in ledger.alerts
        if a.source == "fastlane" and a.alert_id.startswith("release-")
    ]
    for c in ledger.controls:
        if c.command in ("kill", "flatten", "resume"):
            out.append(
                {
                    "ts": c.ts_event,
                    "time": ny_time(c.ts_event),
                    "kind": c.command,
                    "detail": f"{c.command} by {c.issued_by}",
                }
            )
    for i, state in enumerate(ledger.mode_changes):
        if i == 0 and state.mode == "LIVE":
            continue  # the gate starting LIVE is not an event
        out.append(
            {
                "ts": state.ts_event,
                "time": ny_time(state.ts_event),
                "kind": "mode",
                "detail": f"risk mode {state.mode}: {state.mode_reason}",
            }
        )
    out.sort(key=lambda e: e["ts"])
    return out
