"""The RL environment against the backtest on real data: the shipped day of IBM, recorded
into tapes by the backtest engine's upstream apps, played through the environment with every
proposal entered at full size, gives the same fills as the backtest running the same apps with
the same answers. The tape, the player's quote conflation while the broker is idle, and the
suspended replay change nothing the broker or the risk gate decide."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from libs.common.config import Settings, load_settings
from libs.common.runtime import ServiceApp
from proto.signals import QosScore
from tests.conftest import SAMPLE_LEAN
from tradefleet.backtest.sources import find_days

pytest.importorskip("gymnasium")
DAY = "2013-10-08"


async def always_enter(_obs: np.ndarray, _q: QosScore) -> np.ndarray:
    return np.ones(2, dtype=np.float32)


def test_an_episode_fills_like_the_backtest_with_the_same_answers(tmp_path: Path) -> None:
    from models.policy.env import SymbolDayEnv, episode_settings, record_tapes
    from models.policy.train import play, rules_actor
    from services.policy.runtime import PolicyApp
    from tradefleet.backtest.engine import Backtest
    from tradefleet.services import RUNNABLE

    settings = load_settings(None)
    # One symbol: an episode is one symbol-day, so the backtest it must equal is that symbol-day's
    # (with more symbols, other symbols' ticks move the broker's clock between this one's).
    days = find_days(str(SAMPLE_LEAN), ["IBM"], DAY, DAY)
    tapes = record_tapes(settings, days, news=None, sentiment=False)
    assert [t.name for t in tapes] == ["IBM@20131008"]

    env = SymbolDayEnv(tapes, settings)
    env_fills = []
    try:
        for index in range(len(tapes)):
            assert play(env, rules_actor, [index])[0]["entries"] >= 1
            env_fills += env.last_fills
    finally:
        env.close()

    def apps(s: Settings) -> list[ServiceApp]:
        names = ("execution", "risk", "policy", "qos", "fastlane", "features")
        return [PolicyApp(s, decide=always_enter) if n == "policy" else RUNNABLE[n](s) for n in names]

    proposing = episode_settings(settings, tmp_path)
    result = asyncio.run(Backtest(proposing, days, apps=apps).run())
    backtest_fills = result.ledger.fills

    def key(fills: list) -> list[tuple]:  # type: ignore[type-arg]
        return [(f.ts_event, f.side, f.quantity, f.price, f.commission) for f in fills]

    assert len(env_fills) >= 6 and key(env_fills) == key(backtest_fills)
