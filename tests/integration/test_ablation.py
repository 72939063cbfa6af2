"""`tradefleet ablate` on recorded days: the table's shape (a row for the full system, one for
removing nothing, one per component asked for), removing nothing reproduces the full run, and
removing a component the full run used changes the trades."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from libs.common.config import load_settings
from tests.conftest import SHARED_DATA
from tests.helpers import run_cli
from tradefleet.backtest import ablation
from tradefleet.backtest.sources import find_days

SHARED_LEAN = SHARED_DATA / "market" / "lean"
COLUMNS = {"pnl", "profit_factor", "sharpe", "hit_rate", "trades", "cost_bps"}


@pytest.mark.skipif(
    not (SHARED_LEAN / "equity/usa/tick/ibm/20131008_trade.zip").exists(),
    reason="needs the recorded days in ../shared/data (not shipped with the project)",
)
def test_the_table_has_a_row_per_component_and_nothing_removed_is_the_full_run(tmp_path: Path) -> None:
    settings = load_settings(None)
    days = find_days(str(SHARED_LEAN), ["IBM"], "2013-10-07", "2013-10-08")
    out = ablation.run(
        settings, str(SHARED_LEAN), ["IBM"], days, tmp_path, 1, 1, [], "force", ["horizon:5m"], 200, 7
    )
    rows = {r["component"]: r for r in out["rows"]}
    assert list(rows) == ["full", "nothing", "horizon:5m"]
    for row in rows.values():
        assert COLUMNS | {f"{c}_ci" for c in COLUMNS - {"trades"}} <= set(row)
    full, nothing, without = rows["full"], rows["nothing"], rows["horizon:5m"]
    assert out["reproduced"] is True and nothing["verdict"] == "reproduces the full run"
    same = ("pnl", "pnl_ci", "sharpe", "trades", "profit_factor", "hit_rate", "cost_bps", "orders")
    assert {k: nothing[k] for k in same} == {k: full[k] for k in same}
    assert full["trades"] > 0 and full["pnl_ci"][0] <= full["pnl"] <= full["pnl_ci"][1]
    # the 5m model was trained and served (force): without it QOS weighs other inputs
    assert out["training"][0]["5m"]["version"]
    assert without["verdict"] in {"keep", "remove", "no evidence"} and "delta_pnl_ci" in without
    assert (without["orders"], without["pnl"]) != (full["orders"], full["pnl"])
    saved = json.loads((tmp_path / "report.json").read_text())
    assert [r["component"] for r in saved["rows"]] == list(rows)
    page = (tmp_path / "report.html").read_text()
    assert page.count("<tr>") == 1 + len(rows) and "horizon:5m" in page and "reproduces the full run" in page


def test_an_unknown_component_is_refused_with_the_ones_there_are() -> None:
    done = run_cli("ablate", "--components", "horizon:7m,sentiment")
    assert done.returncode == 2, done.stdout + done.stderr
    said = done.stdout + done.stderr
    assert "not components of this configuration: horizon:7m" in said and "horizon:5m" in said
