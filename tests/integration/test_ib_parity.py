"""The recorded day through the fake TWS and the real ibapi client gives the same features, the
same predictions and the same intents as the same day through the replay provider."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec

from libs.common.clock import SimClock
from libs.common.config import IbSettings, load_settings
from libs.common.ib.session import IbSession
from models.fastlane.serving import drift_arguments, load_active
from proto.base import Event
from proto.features import FeatureVector
from proto.orders import OrderIntent
from services.fastlane.core import FastlaneCore
from services.md_gateway.core import MarketDataCore
from services.md_gateway.providers.ib import IbMarketData
from services.md_gateway.providers.lean import LeanReplay
from services.qos.core import QosCore
from tests.helpers import REPO, await_until
from tests.kit import cores
from tradefleet.faketws import FakeTws

SAMPLE = REPO / "data" / "sample" / "lean"
SYMBOLS = ["IBM", "BAC"]
# Records of the day (pre-market included): to 10:36, past the morning's first entries and exits.
# The client decodes each message in Python, so every record costs the test time.
LIMIT = 150_000


def replay() -> LeanReplay:
    return LeanReplay(SAMPLE, "20131008", SYMBOLS, "none", limit=LIMIT)


def clean(records: list[tuple[Any, ...]], session: tuple[int, int] | None) -> list[Event]:
    md = MarketDataCore(SimClock(0), 10.0, True, session)
    return [e for e in (md.on_record(r) for r in records) if e is not None]


async def through_fake_tws() -> list[tuple[Any, ...]]:
    fake = await FakeTws(replay().records()).start()
    holder: dict[str, IbMarketData] = {}
    session = IbSession(
        IbSettings(port=fake.port),
        11,
        lambda name, args: holder["md"].on_event(name, args),  # noqa: PLW0108 - md is made after the session
    )
    md = holder["md"] = IbMarketData(session, SYMBOLS, timestamps="exchange")
    got: list[tuple[Any, ...]] = []

    async def collect() -> None:
        async for rec in md.stream():
            got.append(rec)

    tasks = [asyncio.create_task(session.run()), asyncio.create_task(collect())]
    try:
        await await_until(lambda: sum(len(c.mkt) for c in fake.clients) == 4, 10, what="subscribed")
        while fake.play(20_000):  # noqa: ASYNC110 - yields so the socket drains, as a feed would
            await asyncio.sleep(0)
        sent = LIMIT - fake.counters["suspicious_not_sent"]
        # The client decodes every message in Python: on a busy machine the stream takes minutes.
        # What fails the test is a stream that stops, not a slow one.
        previous, idle_since = -1, asyncio.get_running_loop().time()
        while len(got) < sent * 0.9 or previous != len(got):
            if previous != len(got):
                previous, idle_since = len(got), asyncio.get_running_loop().time()
            assert asyncio.get_running_loop().time() - idle_since < 30, f"the stream stopped at {len(got)}"
            await asyncio.sleep(0.5)
    finally:
        await session.stop()
        for t in tasks:
            t.cancel()
        await fake.stop()
    return [r for r in got if r[0] != "S"]


def decide(events: list[Event]) -> tuple[list[FeatureVector], list[Any], list[OrderIntent]]:
    """features -> fast lane -> QOS, in process: the fleet's cores."""
    settings = load_settings(None)
    features = cores.features(SimClock(0))
    cfg = settings.fastlane
    fastlane = FastlaneCore(SimClock(0), list(cfg.horizons), cfg.source_timeframe)
    drift = drift_arguments(cfg)
    for horizon in cfg.horizons:
        model = load_active(REPO / cfg.registry, horizon, "lightgbm", Path("/tmp/tf-parity-cache"), drift)
        assert model is not None
        fastlane.install(model)
    qos = QosCore(settings.qos, SimClock(0), namespace="parity")
    vectors, predictions, intents = [], [], []
    for e in events:
        for v in features.on_event(e):
            vectors.append(v)
            if v.timeframe == cfg.source_timeframe:
                preds, _ = fastlane.on_vector(v)
                predictions += preds
                for p in preds:
                    intents += [x for x in qos.on_prediction(p) if isinstance(x, OrderIntent)]
    return vectors, predictions, intents


def same(a: list[Any], b: list[Any]) -> bool:
    """Equal field by field, wall-clock stamps (ts_init) aside."""

    def bare(x: Any) -> bytes:
        return msgspec.json.encode(msgspec.structs.replace(x, ts_init=0))

    return len(a) == len(b) and all(bare(x) == bare(y) for x, y in zip(a, b, strict=True))


async def test_the_day_through_the_fake_tws_decides_exactly_as_the_replay() -> None:
    provider = replay()
    bounds = provider.session()
    direct = clean(list(provider.records()), bounds)
    via_ib = clean(await through_fake_tws(), bounds)
    assert len(via_ib) == len(direct) > 80_000
    # The same quotes and trades, in the same order; only the timestamps' precision differs
    # (IB's tick-by-tick time is whole seconds: the provider keeps the second, in order).
    assert all(
        type(a) is type(b) and a.ts_event // 10**9 == b.ts_event // 10**9
        for a, b in zip(direct, via_ib, strict=True)
    )
    vectors_a, predictions_a, intents_a = decide(direct)
    vectors_b, predictions_b, intents_b = decide(via_ib)
    bars = [v for v in vectors_a if v.timeframe != "1s"]
    assert len(bars) > 100 and predictions_a and intents_a
    assert same([v for v in vectors_a if v.timeframe != "1s"], [v for v in vectors_b if v.timeframe != "1s"])
    assert same(predictions_a, predictions_b)
    assert same(intents_a, intents_b)
