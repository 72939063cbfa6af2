"""What the strategy must beat, on the same minutes, prices and costs: buy-and-hold, and a naive
momentum rule. Both trade at the touch (the mid plus or minus half the spread of that minute, as a
market order crosses it) and pay the execution gateway's commission model."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from proto.units import BPS
from services.execution.commissions import CommissionModel
from tradefleet.backtest.ledger import MinuteRow
from tradefleet.backtest.metrics import Execution

NS_PER_DAY_SESSION_GAP = 3_600_000_000_000  # minutes farther apart than this start a new day


@dataclass
class Curve:
    name: str
    ts: np.ndarray
    equity: np.ndarray
    executions: list[Execution]
    last_mid: dict[str, float]

    def cost_bps(self, spreads_paid: float) -> float | None:
        notional = sum(abs(e.signed_qty) * e.price for e in self.executions)
        fees = sum(e.commission for e in self.executions)
        return (fees + spreads_paid) / notional * BPS if notional else None


class _Book:
    """Cash and positions, trading at the touch with commissions."""

    def __init__(self, capital: float, commissions: CommissionModel) -> None:
        self.cash = capital
        self.positions: dict[str, float] = {}
        self.commissions = commissions
        self.executions: list[Execution] = []
        self.spread_paid = 0.0

    def trade(self, ts: int, symbol: str, qty: float, mid: float, spread: float) -> None:
        if qty == 0:
            return
        price = mid + math.copysign(spread / 2, qty)
        fee = self.commissions.commission("BUY" if qty > 0 else "SELL", abs(qty), price, "REMOVE")
        self.cash -= qty * price + fee
        self.spread_paid += abs(qty) * spread / 2
        self.positions[symbol] = self.positions.get(symbol, 0.0) + qty
        self.executions.append(Execution(ts, symbol, qty, price, fee))

    def value(self, mids: dict[str, float]) -> float:
        return self.cash + sum(q * mids.get(s, 0.0) for s, q in self.positions.items())


def _day_breaks(minutes: list[MinuteRow]) -> list[bool]:
    """True where a minute is the last one of its day."""
    last = [False] * len(minutes)
    for i in range(len(minutes)):
        last[i] = i == len(minutes) - 1 or minutes[i + 1].ts - minutes[i].ts > NS_PER_DAY_SESSION_GAP
    return last


def buy_and_hold(
    minutes: list[MinuteRow], symbols: list[str], capital: float, commissions: CommissionModel
) -> tuple[Curve, float]:
    """Equal dollars in each symbol at its first minute, sold at the last one."""
    book = _Book(capital, commissions)
    budget = capital / max(len(symbols), 1)
    equity = []
    for i, row in enumerate(minutes):
        for s in symbols:
            mid = row.mids.get(s)
            if mid and s not in book.positions:
                book.trade(row.ts, s, math.floor(budget / mid), mid, row.spreads.get(s, 0.0))
        if i == len(minutes) - 1:
            for s, q in list(book.positions.items()):
                book.trade(row.ts, s, -q, row.mids.get(s, 0.0), row.spreads.get(s, 0.0))
        equity.append(book.value(row.mids))
    ts = np.array([m.ts for m in minutes], dtype=np.int64)
    last = minutes[-1].mids if minutes else {}
    return Curve("buy_and_hold", ts, np.array(equity), book.executions, dict(last)), book.spread_paid


def naive_momentum(
    minutes: list[MinuteRow],
    symbols: list[str],
    capital: float,
    commissions: CommissionModel,
    lookback: int = 30,
    every: int = 15,
) -> tuple[Curve, float]:
    """Every ``every`` minutes: long a symbol whose mid rose over the last ``lookback`` minutes,
    flat otherwise; flat at each day's last minute. No model, no risk gate, same costs."""
    book = _Book(capital, commissions)
    budget = capital / max(len(symbols), 1)
    history: dict[str, list[float]] = {s: [] for s in symbols}
    day_end = _day_breaks(minutes)
    equity = []
    minute_of_day = 0
    for i, row in enumerate(minutes):
        for s in symbols:
            if row.mids.get(s):
                history[s].append(row.mids[s])
        for s in symbols:
            mid, held = row.mids.get(s), book.positions.get(s, 0.0)
            if not mid:
                continue
            spread = row.spreads.get(s, 0.0)
            if day_end[i]:
                book.trade(row.ts, s, -held, mid, spread)
            elif minute_of_day % every == 0 and len(history[s]) > lookback:
                rising = history[s][-1] > history[s][-1 - lookback]
                target = math.floor(budget / mid) if rising else 0.0
                if (target > 0) != (held > 0):
                    book.trade(row.ts, s, target - held, mid, spread)
        equity.append(book.value(row.mids))
        minute_of_day = 0 if day_end[i] else minute_of_day + 1
        if day_end[i]:
            history = {s: [] for s in symbols}
    ts = np.array([m.ts for m in minutes], dtype=np.int64)
    last = minutes[-1].mids if minutes else {}
    return Curve("naive_momentum", ts, np.array(equity), book.executions, dict(last)), book.spread_paid
