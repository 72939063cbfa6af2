"""features runtime: md.* in, through the core, feat.TF.SYM out; latest vectors to Redis behind."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any

import msgspec

from libs.common.bus import Delivery
from libs.common.calendar import market_calendar
from libs.common.clock import LiveClock
from libs.common.config import Settings
from libs.common.logging import LogOnce, get_logger
from libs.common.partition import Partitioner
from libs.common.runtime import Runtime, ServiceApp
from proto.features import MICRO_FEATURE_SET, MICRO_VECTOR, FeatureVector
from proto.market import DepthUpdate, FeedStatus, Quote, Trade
from services.features.core import FeatureCore

log = get_logger(__name__)
KIND_OF: dict[type, str] = {Quote: "quotes", Trade: "trades", DepthUpdate: "depth"}
MD_KINDS = tuple(KIND_OF.values())
REDIS_PREFIX = "tradefleet:feat"


class RedisHotState:
    """Write-behind of the latest vector per (symbol, timeframe): a dict updated on the hot path,
    flushed in one pipeline on a timer. Nothing here is ever read back by the service."""

    def __init__(self, url: str, flush_ms: int, ttl_s: int, names: dict[str, list[str]]) -> None:
        import redis.asyncio as redis

        # Dashboards read field names, not the wire's positional arrays: each value is stored as
        # a JSON object with the feature names of its set.
        self.names = names

        self.client = redis.from_url(url)
        self.flush_s = flush_ms / 1000
        self.ttl_s = ttl_s
        self.latest: dict[str, FeatureVector] = {}
        self.written = 0
        self.errors = 0
        self._log_once = LogOnce()
        self._encoder = msgspec.json.Encoder()

    def put(self, vector: FeatureVector) -> None:
        self.latest[f"{REDIS_PREFIX}:{vector.symbol}:{vector.timeframe}"] = vector

    async def flush(self) -> None:
        if not self.latest:
            return
        batch, self.latest = self.latest, {}
        try:
            pipe = self.client.pipeline(transaction=False)
            for key, vector in batch.items():
                record = msgspec.structs.asdict(vector)
                record["names"] = vector.names or self.names.get(vector.feature_set)
                pipe.set(key, self._encoder.encode(record), ex=self.ttl_s)
            await pipe.execute()
            self.written += len(batch)
        except Exception as exc:  # Redis is a convenience: its outage must never stop features
            self.errors += 1
            for key, vector in batch.items():
                self.latest.setdefault(key, vector)
            if self._log_once.first("redis"):
                log.warning("redis hot state unavailable (vectors still published)", error=repr(exc))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush()
        await self.client.aclose()


class FeaturesApp(ServiceApp):
    name = "features"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        # The runtime's clock replaces this one in start(); vectors built before then are none.
        self.core = FeatureCore(settings.features, LiveClock(), market_calendar(settings.market))
        self.received: collections.Counter[str] = collections.Counter()
        self.vectors: collections.Counter[str] = collections.Counter()
        self.redis: RedisHotState | None = None
        self.finished = False
        self._tasks: list[asyncio.Task[None]] = []
        p = settings.partition
        self.owns = Partitioner(p.count, p.owned).owns
        self.index_symbol = settings.features.index_symbol
        self.other_partition = 0

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        self.core.clock = rt.clock
        f = self.settings.features
        if f.redis_url:
            names = {
                self.core.feature_set: list(self.core.names),
                MICRO_FEATURE_SET: list(MICRO_VECTOR),
            }
            self.redis = RedisHotState(f.redis_url, f.redis_flush_ms, f.redis_ttl_s, names)
            self._tasks.append(asyncio.create_task(self.redis.run(), name="redis-hot-state"))
        # One subscription for every md subject: NATS keeps one subscription's messages in the
        # publisher's order, and bars close on event time, so quotes and trades must not be
        # delivered by separate tasks that can overtake each other.
        await rt.subscribe("md.>", self._on_md, types=(Quote, Trade, DepthUpdate, FeedStatus))
        if f.close_on_wall_clock:
            self._tasks.append(asyncio.create_task(self._wall_clock(), name="bar-timer"))

    async def _on_md(self, d: Delivery[Quote | Trade | DepthUpdate | FeedStatus]) -> None:
        e = d.event
        if type(e) is not FeedStatus:
            self.received[KIND_OF[type(e)]] += 1
            symbol = e.symbol
            # Another replica's symbol: skipped, except the index, whose bars every replica needs
            # for relative strength (its vectors are published by its owner only).
            if not self.owns(symbol) and symbol != self.index_symbol:
                self.other_partition += 1
                return
            vectors = self.core.on_event(e)
            if vectors:
                await self._publish(vectors)
        else:
            await self._on_status(e)

    async def _publish(self, vectors: list[FeatureVector]) -> None:
        for v in vectors:
            if not self.owns(v.symbol):
                continue
            await self.rt.emit(v)
            self.vectors[v.timeframe] += 1
            if self.redis is not None:
                self.redis.put(v)

    async def _on_status(self, status: FeedStatus) -> None:
        if status.state != "replay_finished":
            return
        # The gateway flushes its ticks before it says finished, and one subscription keeps that
        # order; the bounded wait below only guards against a lost core message.
        expected = sum(int(status.counters.get(k, 0)) for k in MD_KINDS)
        for _ in range(300):
            if sum(self.received.values()) >= expected:
                break
            await asyncio.sleep(0.05)
        else:
            log.warning(
                "replay finished but ticks are missing",
                expected=expected,
                received=sum(self.received.values()),
            )
        await self._publish(self.core.finish())
        self.finished = True
        log.info("replay features finished", vectors=dict(self.vectors))

    async def _wall_clock(self) -> None:
        grace = self.settings.features.wall_clock_grace_ms * 1_000_000
        while True:
            await asyncio.sleep(0.1)
            vectors = self.core.on_time(self.rt.now_ns() - grace)
            if vectors:
                await self._publish(vectors)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.redis is not None:
            await self.redis.close()

    def status(self) -> dict[str, Any]:
        return {
            "feature_set": self.core.feature_set,
            "received": dict(self.received),
            "vectors": dict(self.vectors),
            "symbols": len(self.core.symbols),
            "other_partition": self.other_partition,
            "owned_symbols": sorted(sym for sym in self.core.symbols if self.owns(sym)),
            "finished": self.finished,
            "core": dict(self.core.stats),
            "redis": None
            if self.redis is None
            else {"written": self.redis.written, "errors": self.redis.errors},
        }
