"""Pairs trading in the backtest: on a synthetic cointegrated pair, the pair opens and closes both
legs through the risk gate, each leg filled by the simulated venue, and the day ends flat."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

from libs.common.config import load_settings
from tests.kit.synthetic import write_pair_day
from tradefleet.backtest.engine import Backtest
from tradefleet.backtest.sources import find_days

DAY = "2013-10-15"


def test_a_cointegrated_pair_opens_and_closes_both_legs_through_the_gate(tmp_path: Path) -> None:
    write_pair_day(tmp_path, DAY, seed=3)
    settings = load_settings(
        None,
        # the pair alone: no other input weighed, and the shipped models (which this made-up
        # market would quarantine, holding the gate in OBSERVE) never judged for drift
        qos={"weights": {}, "pairs": [{"legs": ["LEGA", "LEGB"], "lookback": 60}]},
        fastlane={"drift_psi_limit": 1000, "drift_ks_limit": 1},
    )
    days = find_days(str(tmp_path), ["LEGA", "LEGB"], DAY, DAY)
    result = asyncio.run(Backtest(settings, days, news=[], sentiment=False).run())
    ledger = result.ledger
    pair = result.statuses["qos"]["pairs"]["LEGA/LEGB"]
    assert pair["stats"]["entries"] >= 2 and not ledger.denials, (pair, dict(ledger.denials))
    kinds = collections.Counter((i.symbol, i.intent_id.split("-")[-2]) for i in ledger.intents)
    entries = pair["stats"]["entries"]
    assert kinds == {
        ("LEGA", "enter"): entries,
        ("LEGB", "enter"): entries,
        ("LEGA", "exit"): entries,
        ("LEGB", "exit"): entries,
    }
    # each entry: opposite sides at the same minute, B sized by the hedge ratio
    enters = [i for i in ledger.intents if i.intent_id.endswith(("enter-LEGA", "enter-LEGB"))]
    for a, b in zip(enters[::2], enters[1::2], strict=True):
        assert a.ts_event == b.ts_event and a.side != b.side and abs(a.score) >= 2
        assert a.components["pair_adf_t"] < -3.34 and b.components["pair_beta"] > 0
    filled = collections.Counter(f.symbol for f in ledger.fills)
    assert filled["LEGA"] == filled["LEGB"] == 2 * entries  # every leg, in and out, filled
    assert ledger.approvals == len(ledger.intents) and not any(ledger.positions.values())
