"""Redis as hot state: the latest of each kind written behind, read back whole, rebuilt after a
flush of Redis, and a Redis that is away costs nothing but a count."""

from __future__ import annotations

import uuid

import redis.asyncio as redis

from libs.common.hotstate import HotState, read_all
from tests.helpers import await_until
from tests.kit import samples

URL = "redis://127.0.0.1:6379/0"


async def test_latest_of_each_kind_is_written_behind_read_back_and_rebuilt_after_a_flush() -> None:
    prefix = f"test-hot-{uuid.uuid4().hex[:8]}"
    hot = HotState(URL, flush_ms=20, refresh_s=0.3, prefix=prefix)
    events = {type(e).__name__: e for e in samples.sample_events()}
    risk, positions, score = events["RiskState"], events["PositionSnapshot"], events["QosScore"]
    hot.start()
    client = redis.from_url(URL)
    try:
        for event in (risk, positions, score, events["Quote"]):  # a quote is not hot state
            hot.put_event(event)
        await await_until(lambda: hot.written >= 3, 5, what="written")
        back = await read_all(URL, prefix)
        assert sorted(type(e).__name__ for e in back) == ["PositionSnapshot", "QosScore", "RiskState"]
        assert risk in back and score in back
        # Someone flushes Redis: the next refresh writes everything held again.
        await client.delete(*[k async for k in client.scan_iter(match=f"{prefix}:*")])
        assert await read_all(URL, prefix) == []

        async def rebuilt() -> bool:
            return len(await read_all(URL, prefix)) == 3

        await await_until(rebuilt, 5, what="rebuilt after the flush")
    finally:
        await hot.close()
        await client.delete(*[k async for k in client.scan_iter(match=f"{prefix}:*")] or ["none"])
        await client.aclose()


async def test_a_redis_that_is_away_costs_a_count_and_nothing_else() -> None:
    hot = HotState("redis://127.0.0.1:1/0", flush_ms=10)
    hot.put_event(next(e for e in samples.sample_events() if type(e).__name__ == "RiskState"))
    await hot.flush()
    assert hot.errors == 1 and hot.dirty  # kept for the next try
    assert await read_all("redis://127.0.0.1:1/0", timeout_s=0.5) == []
    await hot.close()
