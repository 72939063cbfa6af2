"""The ablation's statistics: a verdict follows the paired difference's interval (keep, remove,
no evidence), identical runs are no evidence, and intervals cover the estimate."""

from __future__ import annotations

import numpy as np

from tradefleet.backtest.ablation import _blocks, _metrics, _Run, _verdict
from tradefleet.backtest.metrics import Trade

MIN = 60_000_000_000


def run(pnl: np.ndarray, record: str = "a", trades: int = 0) -> _Run:
    capital = 100_000.0
    equity = capital + np.concatenate([[0.0], np.cumsum(pnl)])
    made = [
        Trade("IBM", 1, k * MIN, (k + 1) * MIN, 10, 100.0, float(p), 2000.0)
        for k, p in enumerate(pnl[:trades])
    ]
    return _Run(
        minutes=np.arange(len(pnl), dtype=np.int64) * MIN,
        pnl=pnl,
        returns=equity[1:] / equity[:-1] - 1.0,
        trades=made,
        cost=[(2.0, 1000.0), (4.0, 3000.0)],
        record=[record],
        orders={},
    )


def test_a_verdict_follows_the_interval_of_the_paired_difference() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(0, 5, 780)
    better = run(base + 1.0, "better")  # a component worth 1 USD a minute, every minute
    worse = run(base - 1.0, "worse")
    plain = run(base, "plain")
    noisy = run(base + rng.normal(0, 5, 780), "noisy")
    assert _verdict(better, plain, rng, 500)["verdict"] == "keep"
    assert _verdict(worse, plain, rng, 500)["verdict"] == "remove"
    assert _verdict(noisy, plain, rng, 500)["verdict"] == "no evidence"
    same = _verdict(plain, run(base, "plain"), rng, 500)
    assert same["verdict"] == "no evidence" and same["why"] == "identical trades"
    kept = _verdict(better, plain, rng, 500)
    assert kept["delta_pnl"] == 780.0 and kept["delta_pnl_ci"][0] <= 780.0 <= kept["delta_pnl_ci"][1]


def test_metrics_and_their_intervals() -> None:
    rng = np.random.default_rng(2)
    pnl = rng.normal(1, 5, 390)
    row = _metrics(run(pnl, trades=40), rng, 400)
    assert row["pnl"] == round(float(pnl.sum()), 2) and row["pnl_ci"][0] <= row["pnl"] <= row["pnl_ci"][1]
    assert row["trades"] == 40 and row["hit_rate_ci"][0] <= row["hit_rate"] <= row["hit_rate_ci"][1]
    assert row["profit_factor_ci"][0] <= row["profit_factor"] <= row["profit_factor_ci"][1]
    assert row["cost_bps"] == 3.5  # notional-weighted: (2 x 1000 + 4 x 3000) / 4000
    empty = _metrics(run(np.zeros(390)), rng, 100)
    assert empty["trades"] == 0 and empty["profit_factor"] is None and empty["sharpe"] is None


def test_blocks_keep_minutes_together() -> None:
    idx = _blocks(100, np.random.default_rng(3), 50)
    assert idx.shape == (50, 100) and idx.min() >= 0 and idx.max() < 100
    assert (np.diff(idx[:, :30], axis=1) == 1).all()  # the first block is 30 consecutive minutes
