"""md-gateway runtime: pull records from the provider, clean them in the core, publish on md.*."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from libs.common.config import Settings
from libs.common.logging import get_logger
from libs.common.nats_bus import NatsBus
from libs.common.runtime import Runtime, ServiceApp
from proto.base import Event
from proto.market import Bar, DepthUpdate, FeedState, FeedStatus, Quote, Trade
from proto.subjects import spec
from services.md_gateway.core import MarketDataCore
from services.md_gateway.providers import Provider
from services.md_gateway.providers.lean import LeanReplay
from services.md_gateway.providers.lobster import LobsterReplay
from services.md_gateway.providers.synthetic import SyntheticFeed

log = get_logger(__name__)
STATUS = spec("md.status")
SUBJECT_OF = {
    Quote: spec("md.quote.{symbol}"),
    Trade: spec("md.trade.{symbol}"),
    DepthUpdate: spec("md.depth.{symbol}"),
    Bar: spec("md.bar.{timeframe}.{symbol}"),
}
YIELD_EVERY = 2048  # records between yields to the event loop (lets HTTP and the bus breathe)
PROGRESS_EVERY = 250_000


def make_provider(settings: Settings, start_ns: int) -> Provider:
    md = settings.md_gateway
    if md.provider == "synthetic":
        syn = md.synthetic
        return SyntheticFeed(syn.symbols, syn.rate, start_ns, syn.seed, syn.count, syn.duration_s)
    rp = md.replay
    if rp.format == "lobster":
        return LobsterReplay(rp.root, rp.date, rp.symbols, rp.lobster_level, rp.limit)
    return LeanReplay(rp.root, rp.date, rp.symbols, rp.bars, rp.limit)


class MdGatewayApp(ServiceApp):
    name = "md-gateway"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.core: MarketDataCore | None = None
        self.provider: Provider | None = None
        self._task: asyncio.Task[None] | None = None
        self._subjects: dict[tuple[type, str, str], str] = {}
        self._status_seq = 0
        self.finished = False
        self._stopping = False
        self.started_at: float | None = None
        self.finished_at: float | None = None

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        md = self.settings.md_gateway
        self.provider = make_provider(self.settings, rt.now_ns())
        session = self.provider.session() if md.cleaning.session == "regular" else None
        self.core = MarketDataCore(rt.clock, md.cleaning.max_jump_pct, md.cleaning.drop_suspicious, session)
        self._task = asyncio.create_task(self._pump(), name="md-pump")
        self._task.add_done_callback(self._pump_done)

    def _pump_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("market-data pump failed", error=repr(task.exception()), exc_info=task.exception())
            self.done.set()

    def _subject(self, event: Event) -> str:
        """The catalog's subject for a market-data event, cached per type, symbol and timeframe."""
        kind = type(event)
        symbol: str = event.symbol  # type: ignore[attr-defined]
        timeframe = event.timeframe if kind is Bar else ""  # type: ignore[attr-defined]
        key = (kind, symbol, timeframe)
        subject = self._subjects.get(key)
        if subject is None:
            entry = SUBJECT_OF[kind]
            subject = self._subjects[key] = (
                entry.subject(timeframe=timeframe, symbol=symbol)
                if timeframe
                else entry.subject(symbol=symbol)
            )
        return subject

    async def _status(self, state: FeedState, detail: str = "") -> None:
        assert self.core is not None and self.provider is not None
        self._status_seq += 1
        now = self.rt.now_ns()
        counters = {**{f"bad.{k}": v for k, v in self.core.bad.items()}, **dict(self.core.stats)}
        event = FeedStatus(
            ts_event=now,
            ts_init=now,
            source=f"{self.provider.name}:{self.rt.started_ns}",
            state=state,
            seq=self._status_seq,
            detail=detail,
            counters=counters,
        )
        await self.rt.publish(STATUS.subject(), event)

    async def _pump(self) -> None:
        assert self.core is not None and self.provider is not None
        core, bus, publish = self.core, self.rt.bus, self.rt.publish
        # Micro-batching fast path: a synchronous append per event, a publish per full batch.
        enqueue = bus.enqueue if isinstance(bus, NatsBus) and bus.batching else None
        speed = (
            self.settings.md_gateway.replay.speed if self.settings.md_gateway.provider == "replay" else 1.0
        )
        await self._status("replay_started", detail=self.provider.name)
        self.started_at = time.monotonic()
        first_ts: int | None = None
        n = 0
        for rec in self.provider.records():
            if self._stopping:
                return
            if speed > 0:
                if first_ts is None:
                    first_ts = rec[1]
                due = self.started_at + (rec[1] - first_ts) / 1e9 / speed
                wait = due - time.monotonic()
                if wait > 0.001:
                    await bus.flush()
                    await asyncio.sleep(wait)
            event = core.on_record(rec)
            if event is not None:
                subject = self._subject(event)
                if enqueue is not None:
                    if enqueue(subject, event):
                        await bus.flush()
                else:
                    await publish(subject, event)
            n += 1
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
                if n % PROGRESS_EVERY == 0:
                    await self._status("replay_progress", detail=f"{n} records")
        await bus.flush()
        self.finished_at = time.monotonic()
        self.finished = True
        await self._status("replay_finished", detail=f"{n} records")
        log.info("replay finished", **core.counters(), seconds=round(self.finished_at - self.started_at, 3))
        if self.settings.md_gateway.exit_when_done:
            self.done.set()

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None and not self._task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout=2.0)
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception as exc:
                log.error("market-data pump failed", error=repr(exc))

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "finished": self.finished,
            "provider": self.provider.name if self.provider else None,
        }
        if self.core is not None:
            out.update(self.core.counters())
        if self.started_at is not None:
            end = self.finished_at or time.monotonic()
            out["elapsed_s"] = round(end - self.started_at, 3)
        return out
