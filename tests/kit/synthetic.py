"""Synthetic trading days in LEAN's tick format, with a planted edge or none: the research
machinery's honesty tests train, backtest and ablate on them exactly as on recorded days.

Each symbol's mid is a random walk (quotes about every second, one cent wide, trades about every
two seconds). With ``edge_bps`` > 0 the symbols carry a planted signal: each minute has an order
flow, buyers or sellers (``FLOW_SHARE`` of that minute's trades lift the ask or hit the bid), and
the minute's flow moves the mid by ``edge_bps`` per minute over the next ``EDGE_MINUTES``
minutes. The features see the flow (aggression, signed volume) a minute before the move it
causes: a model can learn it, a backtest can earn it after costs. With ``edge_bps`` = 0 the flow
predicts nothing.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

EDGE_MINUTES = 5
FLOW_SHARE = 0.85
OPEN_MS, CLOSE_MS = 9 * 3_600_000 + 1_800_000, 16 * 3_600_000


def _write_zip(path: Path, name: str, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, "\n".join(lines) + "\n")


def write_day(
    root: Path,
    date: str,
    symbol: str,
    seed: int,
    edge_bps: float,
    start_price: float = 50.0,
    noise_bps_per_min: float = 3.0,
) -> None:
    """One symbol's quotes and trades of one regular session under ``root``/equity/usa/tick."""
    rng = np.random.default_rng(seed)
    minutes = (CLOSE_MS - OPEN_MS) // 60_000
    flows = rng.choice([-1, 1], size=minutes)
    # the mid at each second: noise, plus each minute's flow pushing the next EDGE_MINUTES minutes
    per_second = np.zeros(minutes * 60)
    noise = rng.normal(0, noise_bps_per_min / math.sqrt(60), size=minutes * 60)
    for m, flow in enumerate(flows):
        for k in range(1, EDGE_MINUTES + 1):
            if m + k < minutes:
                per_second[(m + k) * 60 : (m + k + 1) * 60] += flow * edge_bps / 60
    log_mid = math.log(start_price) + np.cumsum((per_second + noise) / 1e4)
    _write_ticks(root, date, symbol, np.exp(log_mid), flows, rng)


def _write_ticks(
    root: Path, date: str, symbol: str, mids: np.ndarray, flows: np.ndarray, rng: np.random.Generator
) -> None:
    """Quotes a cent wide around each second's mid; a trade every other second, lifting the ask
    or hitting the bid as that minute's flow says (FLOW_SHARE of them)."""
    quotes, trades = [], []
    for s, mid in enumerate(mids):
        ms = OPEN_MS + s * 1000 + int(rng.integers(0, 900))
        bid = math.floor(mid * 100) / 100
        ask = round(bid + 0.01, 2)
        size_b, size_a = int(rng.integers(1, 20)) * 100, int(rng.integers(1, 20)) * 100
        quotes.append(f"{ms},{round(bid * 10000)},{size_b},{round(ask * 10000)},{size_a},P,0,0")
        if s % 2 == 0:
            flow = flows[s // 60]
            buy = rng.random() < (FLOW_SHARE if flow > 0 else 1 - FLOW_SHARE)
            price = ask if buy else bid
            size = int(rng.integers(1, 10)) * 100
            trades.append(f"{ms + 50},{round(price * 10000)},{size},D,0,0")
    day = f"{date.replace('-', '')}"
    base = root / "equity" / "usa" / "tick" / symbol.lower()
    _write_zip(base / f"{day}_quote.zip", f"{day}_{symbol.lower()}_Tick_Quote.csv", quotes)
    _write_zip(base / f"{day}_trade.zip", f"{day}_{symbol.lower()}_Tick_Trade.csv", trades)


def write_pair_day(
    root: Path,
    date: str,
    seed: int,
    beta: float = 1.0,
    half_life_min: float = 5.0,
    spread_bps: float = 15.0,
    walk_bps_per_min: float = 10.0,
) -> None:
    """A cointegrated pair: LEGB's log price is a random walk, LEGA's is beta times it plus a
    mean-reverting spread (an Ornstein-Uhlenbeck process of ``half_life_min`` and stationary
    standard deviation ``spread_bps``). The order flow predicts nothing."""
    rng = np.random.default_rng(seed)
    seconds = (CLOSE_MS - OPEN_MS) // 1000
    log_b = math.log(40.0) + np.cumsum(rng.normal(0, walk_bps_per_min / math.sqrt(60), size=seconds) / 1e4)
    theta = math.log(2) / (half_life_min * 60)  # per second
    sigma = spread_bps / 1e4 * math.sqrt(2 * theta)
    u = np.zeros(seconds)
    for t in range(1, seconds):
        u[t] = u[t - 1] * (1 - theta) + sigma * rng.normal()
    log_a = math.log(60.0) - beta * math.log(40.0) + beta * log_b + u
    flows = rng.choice([-1, 1], size=seconds // 60 + 1)
    _write_ticks(root, date, "LEGA", np.exp(log_a), flows, rng)
    _write_ticks(root, date, "LEGB", np.exp(log_b), flows, rng)


def write_days(root: Path, dates: list[str], edge_bps: float, seed: int = 1) -> None:
    """Two symbols a day (AAA about 50 USD, BBB about 30), both carrying the planted signal if any."""
    for k, date in enumerate(dates):
        write_day(root, date, "AAA", seed * 1000 + k, edge_bps)
        write_day(root, date, "BBB", seed * 1000 + 500 + k, edge_bps, start_price=30.0)
