"""The backtest's metrics on series whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tradefleet.backtest.metrics import NS_PER_MIN, Execution, alpha_beta, episodes, performance

T0 = 1_381_239_000_000_000_000


def test_episodes_are_flat_to_flat_and_a_flip_is_two_trades() -> None:
    fills = [
        Execution(T0, "IBM", 100, 10.0, 1.0),
        Execution(T0 + NS_PER_MIN, "IBM", 100, 11.0, 1.0),  # adds: one episode, peak 200
        Execution(T0 + 3 * NS_PER_MIN, "IBM", -300, 12.0, 3.0),  # closes 200, opens 100 short
        Execution(T0 + 4 * NS_PER_MIN, "IBM", 100, 11.5, 1.0),  # covers
        Execution(T0 + 5 * NS_PER_MIN, "BAC", 50, 14.0, 1.0),  # still open at the end
    ]
    trades = episodes(fills, {"BAC": 14.5}, T0 + 9 * NS_PER_MIN)
    long, short, open_ = trades[0], trades[1], trades[2]
    assert (long.direction, long.quantity, long.entry_price) == (1, 200, 10.5)
    assert long.pnl == pytest.approx(-1000 - 1100 + 2400 - 1 - 1 - 2)  # a third of the flip's fee
    assert long.holding_min == 3
    assert (short.direction, short.quantity) == (-1, 100)
    assert short.pnl == pytest.approx(1200 - 1150 - 1 - 1)
    assert open_.open_at_end and open_.pnl == pytest.approx(-700 + 50 * 14.5 - 1)


def test_performance_on_a_known_curve() -> None:
    ts = np.array([T0 + i * NS_PER_MIN for i in range(1, 5)])
    equity = np.array([101.0, 99.0, 102.0, 100.0])
    fills = [Execution(T0, "X", 1, 10.0, 0.0), Execution(T0 + NS_PER_MIN, "X", -1, 12.0, 0.0)]
    fills += [
        Execution(T0 + 2 * NS_PER_MIN, "X", 1, 10.0, 0.0),
        Execution(T0 + 3 * NS_PER_MIN, "X", -1, 9.0, 0.0),
    ]
    trades = episodes(fills, {}, int(ts[-1]))
    row = performance(ts, equity, 100.0, trades, 1, 5.0, None)
    assert row["total_return"] == 0.0 and row["final_equity"] == 100.0
    assert row["max_drawdown"] == pytest.approx(99 / 101 - 1)
    assert (row["trades"], row["hit_rate"], row["profit_factor"], row["expectancy"]) == (2, 0.5, 2.0, 0.5)
    returns = np.array([0.01, 99 / 101 - 1, 102 / 99 - 1, 100 / 102 - 1])
    expected = returns.mean() / returns.std(ddof=1) * math.sqrt(252 * 390)
    assert row["sharpe"] == pytest.approx(expected, rel=1e-5)
    assert row["turnover"] == pytest.approx(41 / 100) and row["cost_bps"] == 5.0
    assert row["alpha"] is None and row["beta"] is None  # no benchmark: said, not invented


def test_alpha_and_beta_recover_a_known_relation() -> None:
    rng = np.random.default_rng(0)
    minutes = 300
    ts = np.array([T0 + i * NS_PER_MIN for i in range(minutes)])
    market = 100 * np.cumprod(1 + rng.normal(0, 0.001, minutes))
    bench = {int(t): float(p) for t, p in zip(ts, market, strict=True)}
    m = np.diff(market) / market[:-1]
    strategy = 1000 * np.concatenate([[1.0], np.cumprod(1 + 0.5 * m + 1e-5)])
    out = alpha_beta(ts, strategy, bench)
    assert out["beta"] == pytest.approx(0.5, abs=1e-6)
    assert out["alpha"] == pytest.approx(1e-5 * 252 * 390, rel=1e-3)
    assert out["benchmark_minutes"] == minutes - 1
