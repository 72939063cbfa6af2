"""Performance of an equity curve and its trades, the same way for the strategy and for the
baselines beside it.

Conventions (stated in the report too):
- returns are per minute of the regular session, on equity marked to the mid; annualizing uses
  252 days x 390 minutes (volatility, Sharpe and Sortino from sample statistics, ddof 1 for the
  standard deviation, as empyrical computes them: a test checks them against it);
- a trade is a position episode per symbol, from flat to flat (an intraday strategy's round
  trip); its P&L is net of commissions; one still open at the end is marked to the last mid;
- cost in bps is commissions plus slippage against the arrival mid, over the traded notional;
- alpha and beta come from an OLS of the strategy's minute returns on SPY's (alpha annualized).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

MINUTES_PER_YEAR = 252 * 390
NS_PER_MIN = 60_000_000_000


@dataclass(frozen=True)
class Trade:
    symbol: str
    direction: int  # +1 long, -1 short
    entry_ts: int
    exit_ts: int
    quantity: float  # the largest absolute position of the episode
    entry_price: float  # volume-weighted price of the opening fills
    pnl: float  # net of commissions
    notional: float  # traded in and out
    open_at_end: bool = False

    @property
    def holding_min(self) -> float:
        return (self.exit_ts - self.entry_ts) / NS_PER_MIN


@dataclass(frozen=True)
class Execution:
    """One fill as the metrics see it (strategy fills, or a baseline's simulated ones)."""

    ts: int
    symbol: str
    signed_qty: float
    price: float
    commission: float


def episodes(fills: list[Execution], last_mid: dict[str, float], end_ts: int) -> list[Trade]:
    """Position episodes from fills in time order. A fill that goes through flat (long to short)
    ends one episode and starts the next, its commission split by quantity."""
    trades: list[Trade] = []
    state: dict[str, dict[str, Any]] = {}
    for fill in fills:
        for f in _split_at_flat(fill, state.get(fill.symbol, {}).get("pos", 0.0)):
            s = state.setdefault(f.symbol, {"pos": 0.0})
            if s["pos"] == 0.0:
                s.update(cash=0.0, fees=0.0, start=f.ts, peak=0.0, dir=1 if f.signed_qty > 0 else -1)
                s.update(notional=0.0, open_qty=0.0, open_value=0.0)
            s["cash"] -= f.signed_qty * f.price
            s["fees"] += f.commission
            s["notional"] += abs(f.signed_qty) * f.price
            if (f.signed_qty > 0) == (s["dir"] > 0):
                s["open_qty"] += abs(f.signed_qty)
                s["open_value"] += abs(f.signed_qty) * f.price
            s["pos"] = round(s["pos"] + f.signed_qty, 9)
            s["peak"] = max(s["peak"], abs(s["pos"]))
            if s["pos"] == 0.0:
                trades.append(_trade(f.symbol, s, f.ts, 0.0, False))
    for symbol, s in state.items():
        if s["pos"]:
            mark = last_mid.get(symbol, 0.0)
            trades.append(_trade(symbol, s, end_ts, s["pos"] * mark, True))
    trades.sort(key=lambda t: (t.entry_ts, t.symbol))
    return trades


def _split_at_flat(f: Execution, position: float) -> list[Execution]:
    after = position + f.signed_qty
    if position == 0.0 or after == 0.0 or (after > 0) == (position > 0):
        return [f]
    closing = -position
    share = abs(closing) / abs(f.signed_qty)
    return [
        Execution(f.ts, f.symbol, closing, f.price, f.commission * share),
        Execution(f.ts, f.symbol, after, f.price, f.commission * (1.0 - share)),
    ]


def _trade(symbol: str, s: dict[str, Any], end: int, open_value: float, still_open: bool) -> Trade:
    return Trade(
        symbol=symbol,
        direction=s["dir"],
        entry_ts=s["start"],
        exit_ts=end,
        quantity=s["peak"],
        entry_price=s["open_value"] / s["open_qty"] if s["open_qty"] else 0.0,
        pnl=s["cash"] + open_value - s["fees"],
        notional=s["notional"],
        open_at_end=still_open,
    )


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def performance(
    ts: np.ndarray,
    equity: np.ndarray,
    capital: float,
    trades: list[Trade],
    days: int,
    cost_bps: float | None,
    benchmark: dict[int, float] | None,
) -> dict[str, Any]:
    """The metrics row of one equity curve (minute samples) and its trades."""
    curve = np.concatenate([[capital], equity]) if len(equity) else np.array([capital])
    returns = curve[1:] / curve[:-1] - 1.0 if len(curve) > 1 else np.zeros(0)
    total = float(curve[-1] / capital - 1.0)
    mean = float(returns.mean()) if len(returns) else 0.0
    std = float(returns.std(ddof=1)) if len(returns) > 1 else 0.0
    downside = float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2))) if len(returns) else 0.0
    peak = np.maximum.accumulate(curve)
    drawdown = curve / peak - 1.0
    wins = [t.pnl for t in trades if t.pnl > 0]
    losses = [t.pnl for t in trades if t.pnl <= 0]
    traded = sum(t.notional for t in trades)
    row: dict[str, Any] = {
        "final_equity": _finite(curve[-1]),
        "total_return": _finite(total),
        "annualized_return": _finite((1.0 + total) ** (252.0 / max(days, 1)) - 1.0) if total > -1 else -1.0,
        "annual_volatility": _finite(std * math.sqrt(MINUTES_PER_YEAR)),
        "sharpe": _finite(mean / std * math.sqrt(MINUTES_PER_YEAR)) if std > 0 else None,
        "sortino": _finite(mean / downside * math.sqrt(MINUTES_PER_YEAR)) if downside > 0 else None,
        "max_drawdown": _finite(float(drawdown.min())),
        "trades": len(trades),
        "hit_rate": _finite(len(wins) / len(trades)) if trades else None,
        "expectancy": _finite(sum(t.pnl for t in trades) / len(trades)) if trades else None,
        "expectancy_bps": _finite(sum(t.pnl for t in trades) / traded * 2e4) if traded else None,
        "profit_factor": _finite(sum(wins) / -sum(losses)) if losses and sum(losses) < 0 else None,
        "turnover": _finite(traded / capital / max(days, 1)),
        "avg_holding_min": _finite(float(np.mean([t.holding_min for t in trades]))) if trades else None,
        "cost_bps": _finite(cost_bps) if cost_bps is not None else None,
    }
    row.update(alpha_beta(ts, curve[1:], benchmark))
    return row


def alpha_beta(ts: np.ndarray, equity: np.ndarray, benchmark: dict[int, float] | None) -> dict[str, Any]:
    """OLS of the strategy's minute returns on the benchmark's, over minutes both have."""
    none = {"alpha": None, "beta": None, "benchmark_minutes": 0}
    if not benchmark or len(equity) < 3:
        return none
    pairs = [(t, e, benchmark[int(t)]) for t, e in zip(ts, equity, strict=True) if int(t) in benchmark]
    if len(pairs) < 3:
        return none
    arr = np.array([(e, b) for _, e, b in pairs], dtype=float)
    gaps = np.diff(np.array([t for t, _, _ in pairs])) == NS_PER_MIN  # consecutive minutes only
    r = (arr[1:, 0] / arr[:-1, 0] - 1.0)[gaps]
    m = (arr[1:, 1] / arr[:-1, 1] - 1.0)[gaps]
    if len(m) < 3 or float(m.var()) == 0.0:
        return none
    beta = float(np.cov(r, m, ddof=1)[0, 1] / m.var(ddof=1))
    alpha = float((r - beta * m).mean() * MINUTES_PER_YEAR)
    return {"alpha": _finite(alpha), "beta": _finite(beta), "benchmark_minutes": len(m)}
