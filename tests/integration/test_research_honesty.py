"""The research machinery tells an edge from noise (tests/kit/synthetic.py): on synthetic days
with a planted signal (each minute's order flow moves the price over the next five), the
walk-forward trains a model that finds it out of fold, the production gate promotes it, the
backtest makes money on it after costs, and ablation says to keep the horizon that carries it; on
the same days without the signal the gate refuses, nothing trades, and ablation says no evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from libs.common.config import load_settings
from tests.kit.synthetic import write_days
from tradefleet.backtest import ablation
from tradefleet.backtest.sources import find_days

DATES = ["2013-10-14", "2013-10-15", "2013-10-16", "2013-10-17", "2013-10-18"]
SYMBOLS = ["AAA", "BBB"]


def ablate(tmp_path: Path, edge_bps: float) -> dict[str, Any]:
    data = tmp_path / "lean"
    write_days(data, DATES, edge_bps)
    # the 5m horizon alone carries the strategy (QOS weighs nothing else, nothing else is trained)
    settings = load_settings(None, qos={"weights": {"5m": 1.0}}, fastlane={"horizons": ["5m"]})
    days = find_days(str(data), SYMBOLS, DATES[0], DATES[-1])
    assert [d.date for d in days] == [d.replace("-", "") for d in DATES]
    # three days trained, the next tested, rolled by one: two folds, two test days
    return ablation.run(
        settings, str(data), SYMBOLS, days, tmp_path / "report", 3, 1, [], "gate", None, 500, 7
    )


def test_a_planted_signal_is_found_traded_and_kept(tmp_path: Path) -> None:
    out = ablate(tmp_path, edge_bps=4.0)
    for fold in out["training"]:
        model = fold["5m"]
        assert model["promotion"]["promoted"] and model["promotion"]["skill"], model["promotion"]
        assert model["cv"]["mean_auc"] > 0.65, model["cv"]  # out of fold
    rows = {r["component"]: r for r in out["rows"]}
    full = rows["full"]
    assert full["trades"] >= 50 and full["pnl"] > 0 and full["pnl_ci"][0] > 0, full  # after costs
    assert full["profit_factor"] > 1.2 and full["cost_bps"] > 0
    assert rows["horizon:5m"]["verdict"] == "keep" and rows["horizon:5m"]["trades"] == 0


def test_no_signal_is_refused_and_says_no_evidence(tmp_path: Path) -> None:
    out = ablate(tmp_path, edge_bps=0.0)
    for fold in out["training"]:
        model = fold["5m"]
        assert not model["promotion"]["promoted"] and not model["promotion"]["skill"], model["promotion"]
        assert model["cv"]["mean_auc"] < 0.58, model["cv"]
    rows = {r["component"]: r for r in out["rows"]}
    assert rows["full"]["trades"] == 0 and out["reproduced"]
    assert rows["horizon:5m"]["verdict"] == "no evidence"


@pytest.mark.parametrize("edge", [4.0, 0.0])
def test_the_synthetic_days_are_plausible_market_data(tmp_path: Path, edge: float) -> None:
    """The md-gateway's checks pass them (nothing crossed, nothing suspicious): the honesty tests
    measure the research machinery, not a data filter."""
    from libs.common.calendar import market_calendar
    from libs.common.clock import SimClock
    from services.md_gateway.core import MarketDataCore

    write_days(tmp_path, DATES[:1], edge)
    (day,) = find_days(str(tmp_path), SYMBOLS, DATES[0], DATES[0])
    md = MarketDataCore(SimClock(), 10.0, True, day.session(market_calendar()))
    kept = sum(md.on_record(r) is not None for r in day.records())
    stats = md.stats
    assert kept > 60_000 and not stats.get("crossed") and not stats.get("suspicious"), stats
