"""Hot state in Redis: each service's latest of what people look at (risk state, positions, QOS
scores), written behind, read by the control service for fast snapshots.

A convenience, never a source of truth: a write is a dict store on the service's path, the
flush one pipeline on a timer, and everything held is written again every ``refresh_s``, so a
flushed (or restarted) Redis is whole again within that time. A Redis outage is logged once and
costs nothing else. Values are the events' own msgpack (libs.common.codec), under
``PREFIX:KIND:KEY`` (``hot_state.prefix``, tradefleet:hot by default: one per fleet sharing a
Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from libs.common import codec
from libs.common.logging import LogOnce, get_logger
from proto.base import Event
from proto.execution import PositionSnapshot
from proto.orders import RiskState
from proto.signals import QosScore

log = get_logger(__name__)
PREFIX = "tradefleet:hot"


# What is kept, and under which key: the latest of each (Runtime.emit puts them).
KEYS: dict[type, Any] = {
    RiskState: lambda e: ("risk", e.account or e.instance),
    PositionSnapshot: lambda e: ("positions", e.account),
    QosScore: lambda e: ("qos", e.symbol),
}


class HotState:
    def __init__(
        self,
        url: str,
        flush_ms: int = 250,
        ttl_s: int = 86_400,
        refresh_s: float = 30.0,
        prefix: str = PREFIX,
    ) -> None:
        import redis.asyncio as redis

        self.client: Any = redis.from_url(url)
        self.flush_s = flush_ms / 1000
        self.ttl_s = ttl_s
        self.refresh_s = refresh_s
        self.prefix = prefix
        self.held: dict[str, Event] = {}  # every key's latest: what a refresh writes again
        self.dirty: set[str] = set()
        self.written = 0
        self.errors = 0
        self._refreshed = time.monotonic()
        self._log_once = LogOnce()
        self._task: asyncio.Task[None] | None = None

    def put_event(self, event: Event) -> None:
        """An emitted event: kept when it is one of KEYS' kinds."""
        keyed = KEYS.get(type(event))
        if keyed is not None:
            kind, key = keyed(event)
            self.put(kind, key, event)

    def put(self, kind: str, key: str, event: Event) -> None:
        name = f"{self.prefix}:{kind}:{key}"
        self.held[name] = event
        self.dirty.add(name)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hot-state")

    async def flush(self) -> None:
        if time.monotonic() - self._refreshed >= self.refresh_s:
            self.dirty |= set(self.held)  # all of it again: a flushed Redis fills up
            self._refreshed = time.monotonic()
        if not self.dirty:
            return
        names, self.dirty = self.dirty, set()
        try:
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.set(name, codec.encode(self.held[name]), ex=self.ttl_s)
            await pipe.execute()
            self.written += len(names)
        except Exception as exc:  # Redis is a convenience: its outage must never stop a service
            self.errors += 1
            self.dirty |= names
            if self._log_once.first("redis"):
                log.warning("redis hot state unavailable (events still published)", error=repr(exc))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 2.0)
        with contextlib.suppress(Exception):
            await self.client.aclose()


async def read_all(url: str, prefix: str = PREFIX, timeout_s: float = 2.0) -> list[Event]:
    """Every event held in Redis (any service's), oldest first; empty when Redis is away or the
    values cannot be read (a reader starts from the bus then)."""
    import redis.asyncio as redis

    client: Any = redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        names = [n async for n in client.scan_iter(match=f"{prefix}:*", count=500)]
        values = await client.mget(names) if names else []
    except Exception as exc:
        log.warning("redis hot state not read", error=repr(exc))
        return []
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
    events = []
    for value in values:
        if value is None:
            continue
        with contextlib.suppress(codec.DecodeFailure):
            event = codec.decode(value)
            if isinstance(event, Event):
                events.append(event)
    return sorted(events, key=lambda e: e.ts_event)
