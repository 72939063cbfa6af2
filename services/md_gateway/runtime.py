"""md-gateway runtime: pull records from the provider, clean them in the core, publish on md.*.
Replays are pulled (an iterator); live providers (IB) push (an async stream) beside a TWS session
this runtime keeps alive and watches."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import hashlib
import heapq
import itertools
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from libs.common.bus import Delivery
from libs.common.calendar import market_calendar
from libs.common.config import Settings
from libs.common.logging import get_logger
from libs.common.markettime import ny_day_of, ny_midnight_ns, ny_time_ns
from libs.common.nats_bus import NatsBus
from libs.common.news_file import NewsFile, news_item
from libs.common.runtime import Runtime, ServiceApp
from libs.common.telemetry import Enqueue, Publish, TickSampler
from proto.alerts import Alert
from proto.control import Progress, SyncProbe, SyncReply
from proto.execution import TERMINAL_STATUSES, OrderEvent, PositionSnapshot
from proto.market import (
    LAST_SEQ_PREFIX,
    PUBLISHED_PREFIX,
    SEQ_MASK,
    SESSION_MAX,
    Bar,
    DepthUpdate,
    FeedState,
    FeedStatus,
    GapRequest,
    Quote,
    Trade,
)
from proto.subjects import spec, subject_of, subject_token
from proto.units import DAY_NS, MINUTE_NS, SECOND_NS
from services.md_gateway.core import MarketDataCore
from services.md_gateway.providers import Provider
from services.md_gateway.providers.lean import LeanReplay
from services.md_gateway.providers.lobster import LobsterReplay
from services.md_gateway.providers.synthetic import SyntheticFeed

if TYPE_CHECKING:
    from libs.common.ib.session import IbSession
    from services.md_gateway.providers.ib import IbMarketData

log = get_logger(__name__)
SYNC = spec("sync.{service}")
CHECKPOINT_EVERY_S = 0.5  # wall time between notes of how far a replay has published
YIELD_EVERY = 2048  # records between yields to the event loop (lets HTTP and the bus breathe)
PROGRESS_EVERY = 250_000
# A replay paced by tick rate (replay.ticks_per_s) checks its schedule every this much of it (the
# bus's default linger) and yields to the loop each time; it lets the schedule slip (counted)
# rather than burst when it is more than PACE_MAX_BEHIND_S behind.
PACE_SLICE_S = 0.002
PACE_MAX_BEHIND_S = 1.0


RECENT_TICKS_PER_SYMBOL = 50_000  # a live feed's last ticks kept per symbol (minutes of a busy one)


class RecentTicks:
    """A live feed's last published quotes, trades and bars per symbol, by number: what a
    consumer that missed some (a NATS restart, the recorder down) can be sent again."""

    def __init__(self, per_symbol: int) -> None:
        self.per_symbol = per_symbol
        self.by_symbol: dict[str, collections.deque[Quote | Trade | Bar]] = {}

    def add(self, event: Quote | Trade | Bar) -> None:
        kept = self.by_symbol.get(event.symbol)
        if kept is None:
            kept = self.by_symbol[event.symbol] = collections.deque(maxlen=self.per_symbol)
        kept.append(event)

    def get(self, symbol: str, first: int, last: int) -> list[Quote | Trade | Bar]:
        """Numbers ``first``..``last`` of ``symbol`` still held (numbers rise along the deque)."""
        kept = self.by_symbol.get(symbol)
        if not kept:
            return []
        oldest = kept[0].seq & SEQ_MASK
        start = max(first - oldest, 0)
        return [e for e in itertools.islice(kept, start, None) if first <= e.seq & SEQ_MASK <= last]


def new_session() -> int:
    """A tick session (proto.market.make_seq): random, so two runs never share one."""
    return secrets.randbelow(SESSION_MAX) + 1


def make_provider(settings: Settings, start_ns: int) -> Provider:
    md = settings.md_gateway
    if md.provider == "synthetic":
        syn = md.synthetic
        return SyntheticFeed(syn.symbols, syn.rate, start_ns, syn.seed, syn.count, syn.duration_s)
    rp = md.replay
    if rp.format == "lobster":
        return LobsterReplay(rp.root, rp.date, rp.symbols, rp.lobster_level, rp.limit)
    return LeanReplay(rp.root, rp.date, rp.symbols, rp.bars, rp.limit)


class Checkpoint:
    """How far a replay has published, in a small file replaced atomically (a crash leaves the
    last one whole). A restart resumes after it: what was published between the last note and
    the crash is published again (at most CHECKPOINT_EVERY_S of it), nothing is lost."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        self._last = time.monotonic()
        self.session = 0  # the replay's tick session (proto.market.make_seq), kept across restarts

    def position(self) -> int:
        """Where to resume (0: from the start); reads the session too."""
        try:
            note = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return 0
        if note.get("key") != self.key:
            return 0
        self.session = int(note.get("session", 0))
        return int(note.get("position", 0))

    def due(self) -> bool:
        return time.monotonic() - self._last >= CHECKPOINT_EVERY_S

    def save(self, position: int) -> None:
        self._last = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": self.key, "position": position, "session": self.session}))
        os.replace(tmp, self.path)


class MdGatewayApp(ServiceApp):
    name = "md-gateway"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.core: MarketDataCore | None = None
        self.provider: Provider | None = None
        self._task: asyncio.Task[None] | None = None
        self._status_seq = 0
        self.finished = False
        self._stopping = False
        self.started_at: float | None = None
        self.market_ns = 0  # the replay's clock: the last record's market time
        self.quiet_skipped_s = 0.0  # market seconds a fast paced replay did not wait out
        # A replay paced by tick rate or replayed in passes: its rate, pass and schedule slips.
        self.pace: dict[str, Any] = {}
        self._alerts: list[tuple[str, str]] = []
        self.news_published = 0
        self._ib_tasks: list[asyncio.Task[None]] = []
        self.ib_session: IbSession | None = None
        self.ib_provider: IbMarketData | None = None
        self.finished_at: float | None = None
        self.settles = 0
        self.settle_timeouts = 0
        # Lockstep: what is working or held (from execution's events), which decides whether
        # every second of market time matters (protective exits) or only every minute.
        self._working: set[str] = set()
        self._holding = False
        self.sampler: TickSampler | None = None  # tracing on only: which records start a trace
        self._refilling: set[str] = set()  # symbols whose missed ticks are being sent again
        self.recent = RecentTicks(RECENT_TICKS_PER_SYMBOL)  # a live feed's, to send again
        self.gap_stats: collections.Counter[str] = collections.Counter()

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        md = self.settings.md_gateway
        if md.provider == "ib":
            await self._start_ib(rt)
            return
        self.provider = make_provider(self.settings, rt.now_ns())
        self.core = self._replay_core(self.provider)
        self.core.tick_session = new_session()  # a replay with a checkpoint resumes its own (_pump)
        if md.provider == "replay":
            # Ticks a consumer missed are sent again (numbered as before) when it asks.
            await rt.subscribe("gap.request.*", self._on_gap_request, types=GapRequest)
        if md.replay.lockstep:
            await rt.subscribe("exec.order.>", self._on_order, types=OrderEvent)
            await rt.subscribe("exec.position", self._on_position, types=PositionSnapshot)
        self._task = asyncio.create_task(self._pump(), name="md-pump")
        self._task.add_done_callback(self._pump_done)

    def _replay_core(self, provider: Provider) -> MarketDataCore:
        md = self.settings.md_gateway
        calendar = market_calendar(self.settings.market)
        session = provider.session(calendar) if md.cleaning.session == "regular" else None
        # A replay's market clock is the day it replays (rt.clock is the wall clock); live feeds
        # and the synthetic one are stamped by the wall clock, which is then the market clock.
        day = ny_day_of(ny_midnight_ns(md.replay.date)) if md.provider == "replay" else None
        return MarketDataCore(
            self.rt.clock,
            md.cleaning.max_jump_pct,
            md.cleaning.drop_suspicious,
            session,
            md.cleaning.max_clock_skew_s,
            day,
        )

    # -- gaps ------------------------------------------------------------------------------------
    async def _on_gap_request(self, d: Delivery[GapRequest]) -> None:
        """Send again the ticks a consumer missed: the symbol's day is replayed through a core of
        its own (so cleaned and numbered exactly as before), and the asked numbers go out on
        gap.fill.SYMBOL, which only the recorder reads (features or the simulated broker must not
        see the past again). Another session's gap (an earlier run's) cannot be filled here."""
        req, core = d.event, self.core
        why = ""
        if core is None or req.session != core.tick_session:
            why = "another session's ticks"
        elif self.ib_provider is not None:
            await self._send_recent_again(req)
            return
        elif self.settings.md_gateway.replay.limit is not None:
            why = "a replay with a record limit numbers a symbol alone differently"
        elif self.settings.md_gateway.replay.passes > 1:
            why = "a replay in passes moves each pass's ticks to another day"
        elif req.symbol in self._refilling:
            why = "already being sent"
        if why:
            self.gap_stats["requests_not_served"] += 1
            log.info("gap request not served", symbol=req.symbol, first=req.first, last=req.last, why=why)
            return
        assert core is not None
        last = min(req.last, core.numbered[req.symbol])  # not past what this run has published
        self._refilling.add(req.symbol)
        try:
            ticks = await asyncio.to_thread(self._ticks_again, req.symbol, req.first, last)
            subject = f"gap.fill.{subject_token(req.symbol)}"
            for tick in ticks:
                await self.rt.publish(subject, tick)
            await self.rt.bus.flush()
        finally:
            self._refilling.discard(req.symbol)
        self.gap_stats["requests_served"] += 1
        self.gap_stats["ticks_sent_again"] += len(ticks)
        log.warning("ticks sent again", symbol=req.symbol, first=req.first, last=last, sent=len(ticks))

    async def _send_recent_again(self, req: GapRequest) -> None:
        """A live feed cannot be asked again; what it published lately is still here (RecentTicks):
        that much is sent again. Older ticks are lost for good (IB's historical ticks are whole
        seconds, not the ticks that were streamed), and counted so."""
        ticks = self.recent.get(req.symbol, req.first, req.last)
        subject = f"gap.fill.{subject_token(req.symbol)}"
        for tick in ticks:
            await self.rt.publish(subject, tick)
        await self.rt.bus.flush()
        self.gap_stats["requests_served"] += 1
        self.gap_stats["ticks_sent_again"] += len(ticks)
        self.gap_stats["ticks_no_longer_held"] += req.last - req.first + 1 - len(ticks)
        log.warning("ticks sent again", symbol=req.symbol, first=req.first, last=req.last, sent=len(ticks))

    def _ticks_again(self, symbol: str, first: int, last: int) -> list[Quote | Trade | Bar]:
        """Numbers ``first``..``last`` of ``symbol``'s quotes, trades and bars, from its day replayed
        alone (in a worker thread: its own provider and core, nothing shared)."""
        md = self.settings.md_gateway
        alone = md.replay.model_copy(update={"symbols": [symbol], "news": []})
        settings = self.settings.model_copy(update={"md_gateway": md.model_copy(update={"replay": alone})})
        provider = make_provider(settings, 0)
        core = self._replay_core(provider)
        core.tick_session = self.core.tick_session if self.core is not None else 0
        rp = settings.md_gateway.replay
        until = ny_time_ns(rp.date, rp.until) if rp.until else None
        out: list[Quote | Trade | Bar] = []
        for rec in provider.records():
            if until is not None and rec[1] >= until and not core.far(rec[1]):
                break
            if rec[0] == "N":
                continue
            event = core.on_record(rec)
            if isinstance(event, Quote | Trade | Bar):
                n = core.numbered[symbol]
                if n > last:
                    break
                if n >= first:
                    out.append(event)
        return out

    async def _start_ib(self, rt: Runtime) -> None:
        # Imported here: ibapi is the ``ib`` extra, and replays must not need it.
        from libs.common.ib.session import IbSession
        from services.md_gateway.providers.ib import IbMarketData

        ib = self.settings.ib
        self.ib_session = session = IbSession(ib, ib.md_client_id, self._on_ib_event, on_alert=self._ib_alert)
        self.ib_provider = IbMarketData(
            session,
            ib.symbols,
            depth_symbols=ib.depth_symbols,
            news=ib.news,
            depth_rows=ib.depth_rows,
            market_data_type=ib.market_data_type,
            max_lines=ib.max_lines,
            timestamps=ib.timestamps,
            stale_after_s=ib.stale_after_s,
        )
        md = self.settings.md_gateway
        self.core = MarketDataCore(
            rt.clock,
            md.cleaning.max_jump_pct,
            md.cleaning.drop_suspicious,
            None,
            md.cleaning.max_clock_skew_s,
        )
        # A live feed's ticks are numbered afresh per start: a gap is seen and reported (IB's
        # historical ticks could fill it; not built yet), and a restart is a new session.
        self.core.tick_session = new_session()
        self._ib_tasks = [
            asyncio.create_task(session.run(), name="ib-session"),
            asyncio.create_task(self._watch_ib_outages(), name="ib-outages"),
        ]
        self._task = asyncio.create_task(self._pump_live(), name="md-pump-ib")
        self._task.add_done_callback(self._pump_done)

    async def _on_order(self, d: Delivery[OrderEvent]) -> None:
        e = d.event
        if e.status in TERMINAL_STATUSES:
            self._working.discard(e.client_order_id)
        else:
            self._working.add(e.client_order_id)

    async def _on_position(self, d: Delivery[PositionSnapshot]) -> None:
        self._holding = any(p.quantity for p in d.event.positions)

    def _on_ib_event(self, name: str, args: tuple[Any, ...]) -> None:
        assert self.ib_provider is not None
        self.ib_provider.on_event(name, args)

    def _ib_alert(self, title: str, body: str) -> None:
        self._alerts.append((title, body))

    async def _watch_ib_outages(self) -> None:
        """An alert when a disconnect outlasts its reset window (or max_disconnect_s outside one);
        per-symbol staleness checks."""
        from libs.common.ib.windows import expected_until, parse_windows

        ib, session, provider = self.settings.ib, self.ib_session, self.ib_provider
        assert session is not None and provider is not None
        windows = parse_windows(ib.reset_windows)
        outage_start: float | None = None
        alerted = False
        while True:
            await asyncio.sleep(1.0)
            for title, body in self._alerts:
                await self._publish_alert("warning", title, body)
            self._alerts.clear()
            provider.check_stale(time.time_ns())
            if session.connectivity == "up":
                outage_start, alerted = None, False
                continue
            now = time.time()
            outage_start = outage_start or now
            if not alerted and now > expected_until(outage_start, windows, ib.max_disconnect_s):
                alerted = True
                minutes = (now - outage_start) / 60
                await self._publish_alert(
                    "critical",
                    f"IB market data down for {minutes:.0f} min, beyond its reset window",
                    f"TWS {ib.host}:{ib.port} ({session.connectivity}); reconnecting with backoff. "
                    "Trading is DEGRADED (exits only) until the feed is back.",
                )

    async def _publish_alert(
        self, severity: Literal["info", "warning", "critical"], title: str, body: str
    ) -> None:
        now = self.rt.now_ns()
        alert = Alert(
            ts_event=now,
            ts_init=now,
            alert_id=f"md-ib-{now}",
            severity=severity,
            source="md-gateway",
            title=title,
            body=body,
            dedupe=f"md-ib:{title[:40]}",
        )
        await self.rt.emit(alert)

    async def _pump_live(self) -> None:
        """Records as the provider pushes them; its status notes become FeedStatus events."""
        assert self.core is not None and self.ib_provider is not None
        core = self.core
        publish: Publish = self.rt.publish
        sampler = self._sampler()
        if sampler is not None:
            assert isinstance(self.rt.bus, NatsBus)
            publish = sampler.publish(publish, self.rt.bus.publish_traced)
        self.started_at = time.monotonic()
        async for rec in self.ib_provider.stream():
            if rec[0] == "S":
                _, _, state, symbol, detail = rec
                await self._status(state, detail=detail, symbol=symbol)
                continue
            if rec[0] == "N":
                await self._news(rec)
                continue
            event = core.on_record(rec)
            if event is not None:
                await publish(subject_of(event), event)
                if type(event) is not DepthUpdate:
                    self.recent.add(event)  # type: ignore[arg-type]

    def _source_name(self) -> str | None:
        if self.ib_provider is not None:
            return self.ib_provider.name
        return self.provider.name if self.provider is not None else None

    async def _news(self, rec: tuple[Any, ...]) -> None:
        self.news_published += 1
        await self.rt.emit(news_item(rec, self.rt.now_ns()))

    def _with_news(self, records: Iterator[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        """The provider's records with the replayed day's headlines merged in by time."""
        rp = self.settings.md_gateway.replay
        if self.settings.md_gateway.provider != "replay" or not rp.news:
            return records
        start = ny_midnight_ns(rp.date)
        files = []
        for path in rp.news:
            if not path.exists():  # the market data still replays; the missing news is said loudly
                log.error("news file not found: the replay runs without it", path=str(path))
                continue
            files.append(NewsFile(path, start, start + DAY_NS))
        news: list[tuple[Any, ...]] = []
        for f in files:
            found = f.records()
            news += found
            log.info("news file", path=str(f.path), headlines=len(found), skipped=dict(f.skipped))
        news.sort(key=lambda r: r[1])
        return heapq.merge(records, news, key=lambda r: r[1])

    def _pump_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("market-data pump failed", error=repr(task.exception()), exc_info=task.exception())
            self.done.set()

    async def _status(self, state: FeedState, detail: str = "", symbol: str = "") -> None:
        assert self.core is not None
        self._status_seq += 1
        now = self.rt.now_ns()
        counters = {**{f"bad.{k}": v for k, v in self.core.bad.items()}, **dict(self.core.stats)}
        if state == "replay_finished":
            counters.update({f"{PUBLISHED_PREFIX}{s}": n for s, n in self.core.published_by_symbol.items()})
            counters.update({f"{LAST_SEQ_PREFIX}{s}": seq for s, seq in self.core.last_seqs().items()})
        event = FeedStatus(
            ts_event=now,
            ts_init=now,
            source=f"{self._source_name()}:{self.rt.started_ns}",
            state=state,
            seq=self._status_seq,
            symbol=symbol,
            detail=detail,
            counters=counters,
        )
        await self.rt.emit(event)

    async def _pump(self) -> None:
        assert self.core is not None and self.provider is not None
        core, bus = self.core, self.rt.bus
        publish: Publish = self.rt.publish
        replay = self.settings.md_gateway.provider == "replay"
        rp = self.settings.md_gateway.replay
        lockstep = bool(rp.lockstep) and replay
        until = ny_time_ns(rp.date, rp.until) if replay and rp.until else None
        # Micro-batching fast path: a synchronous append per event, a publish per full batch.
        enqueue: Enqueue | None = (
            bus.enqueue if isinstance(bus, NatsBus) and bus.batching and not lockstep else None
        )
        sampler = self._sampler()
        if sampler is not None:  # tracing on: 1 record in N starts a trace (off: no wrapper at all)
            assert isinstance(bus, NatsBus)
            publish = sampler.publish(publish, bus.publish_traced)
            if enqueue is not None:
                enqueue = sampler.enqueue(enqueue, bus.enqueue_traced)
        speed = rp.speed if replay else 1.0
        pace_from = self._pace_from() if replay and speed > 0 else 0
        # Paced by tick rate (ticks_per_s): published events against a steady schedule, checked
        # every PACE_SLICE_S of it; market time plays no part (speed is 0, validated).
        rate = rp.ticks_per_s if replay else 0.0
        passes = rp.passes if replay else 1
        pace_step = max(1, int(rate * PACE_SLICE_S)) if rate > 0 else 0
        paced = 0  # events published under the schedule
        next_check = pace_step
        pace_origin = 0.0  # when the first paced event went out
        if rate > 0 or passes > 1:
            self.pace = {"ticks_per_s": rate, "passes": passes, "pass": 0, "published": 0}
            self.pace.update(behind_s=0.0, behind_max_s=0.0, slipped_s=0.0, slips=0)
        # Above real time, a gap longer than this much wall time is skipped, not waited out.
        max_quiet = rp.max_quiet_s if speed > 1 else float("inf")
        await self._status("replay_started", detail=self.provider.name)
        self.started_at = time.monotonic()
        first_ts: int | None = None
        last_ts = self.market_ns
        origin = self.started_at
        second = minute = 0
        n = 0
        checkpoint = Checkpoint(rp.checkpoint, self._replay_key()) if replay and rp.checkpoint else None
        resume = checkpoint.position() if checkpoint is not None else 0
        if checkpoint is not None:
            # The same session as the run resumed (its ticks keep their numbers), noted before
            # anything is published: a kill before the first note still resumes this session.
            core.tick_session = checkpoint.session = checkpoint.session or core.tick_session
            checkpoint.save(resume)
        if resume:
            log.warning("resuming the replay where an earlier run of it stopped", position=resume)
        position = 0  # records taken from the provider (news included): what a checkpoint says
        base_session = core.tick_session
        for k in range(passes):
            shift = 0
            records: Iterator[tuple[Any, ...]] = self._with_news(self.provider.records())
            if k:
                # Pass k: the day's market data (no headlines) on the k-th next trading day, in a
                # tick session of its own; the core's books, bounds and numbering start afresh,
                # its counters go on. A resumed run takes the same passes, numbered the same.
                shift = self._next_pass(core, k, (base_session - 1 + k) % SESSION_MAX + 1)
                records = ((r[0], r[1] + shift, *r[2:]) for r in self.provider.records())
                self.pace["pass"] = k
                log.info("replay pass", number=k + 1, of=passes, shift_days=round(shift / DAY_NS, 2))
            pass_until = until + shift if until is not None else None
            for rec in records:
                if self._stopping:
                    return
                if pass_until is not None and rec[1] >= pass_until and not core.far(rec[1]):
                    break  # (a far stamp is md's to drop, not the end of the replay)
                position += 1
                if position <= resume:
                    # Published before this restart: the core takes it again (its books, cleaning and
                    # counters are then what they were), nothing is sent again.
                    if rec[0] != "N":
                        core.on_record(rec)
                        n += 1
                        if n % YIELD_EVERY == 0:
                            await asyncio.sleep(0)  # /readyz and the bus answer meanwhile
                    continue
                last_ts = rec[1]  # a local per record; self.market_ns (for /status) at yields and waits
                if speed > 0 and rec[1] >= pace_from:
                    if first_ts is None:
                        first_ts, origin = rec[1], time.monotonic()  # time is kept from here
                    due = origin + (rec[1] - first_ts) / 1e9 / speed
                    wait = due - time.monotonic()
                    if wait > max_quiet:
                        origin -= wait  # a quiet stretch: skipped, later gaps kept as recorded
                        self.quiet_skipped_s += wait * speed
                        wait = 0.0
                    if wait > 0.001:
                        self.market_ns = last_ts
                        await bus.flush()
                        await asyncio.sleep(wait)
                if rec[0] == "N":  # a headline: after every market event before it, on JetStream
                    await bus.flush()
                    if lockstep:
                        await self._settle()
                    await self._news(rec)
                    if lockstep:
                        await self._settle()
                    continue
                event = core.on_record(rec)
                if event is not None:
                    subject = subject_of(event)
                    if enqueue is not None:
                        if enqueue(subject, event):
                            await bus.flush()
                    elif lockstep and type(event) is not Bar and self._decides(rec[1], second, minute):
                        # Bars close on this event and decisions may follow: everything before it
                        # settles first, then everything it causes, as on the backtest's bus.
                        second, minute = rec[1] // SECOND_NS, rec[1] // MINUTE_NS
                        await self._settle()
                        await publish(subject, event)
                        await self._settle()
                    else:
                        await publish(subject, event)
                    if pace_step:
                        if not paced:
                            pace_origin = time.monotonic()  # the schedule starts at the first event
                        paced += 1
                        if paced >= next_check:
                            next_check += pace_step
                            pace_origin = await self._keep_pace(bus, pace_origin, paced, rate)
                n += 1
                if n % YIELD_EVERY == 0:
                    self.market_ns = last_ts
                    if checkpoint is not None and checkpoint.due():
                        await bus.flush()  # what the checkpoint counts has left this process
                        checkpoint.save(position)
                    await asyncio.sleep(0)
                    if n % PROGRESS_EVERY == 0 and not lockstep:
                        await self._status("replay_progress", detail=f"{n} records")
        self.market_ns = last_ts
        await bus.flush()
        if pace_step:
            self.pace["published"] = paced
        if checkpoint is not None:
            checkpoint.save(position)
        if lockstep:
            await self._settle()
        self.finished_at = time.monotonic()
        self.finished = True
        await self._status("replay_finished", detail=f"{n} records")
        log.info("replay finished", **core.counters(), seconds=round(self.finished_at - self.started_at, 3))
        if self.settings.md_gateway.exit_when_done:
            self.done.set()

    async def _keep_pace(self, bus: Any, origin: float, published: int, rate: float) -> float:
        """A replay paced by tick rate: wait (sending what is batched first) until ``published``
        events are due; more than PACE_MAX_BEHIND_S behind, the schedule slips (counted) instead
        of bursting to catch up. Returns the schedule's origin, moved by any slip."""
        pace = self.pace
        pace["published"] = published
        late = time.monotonic() - (origin + published / rate)
        if late > PACE_MAX_BEHIND_S:
            origin += late
            pace["slipped_s"] += late
            pace["slips"] += 1
            late = 0.0
        pace["behind_s"] = max(late, 0.0)
        pace["behind_max_s"] = max(pace["behind_max_s"], late)
        if late < -0.001:  # ahead: what is batched goes out (a slice is the bus's linger), then wait
            await bus.flush()
            await asyncio.sleep(-late)
        else:  # behind: batches fill up (fewer, larger messages), but the loop still gets a turn
            await asyncio.sleep(0)  # (heartbeats, HTTP, the socket's writes wait on nothing else)
        return origin

    def _next_pass(self, core: MarketDataCore, k: int, session: int) -> int:
        """Set the core up for pass ``k`` of a replay in passes: the replayed day's records moved to
        the k-th next trading day (by the distance between the two days' opens: each pass's
        session lines up with that day's, an early close cleans away its tail), tick session
        ``session`` numbered from 1, fresh books (a pass does not go back in time on the last
        one's), bounds and session of the new day. Returns the shift (ns) of its records."""
        rp, md = self.settings.md_gateway.replay, self.settings.md_gateway
        calendar = market_calendar(self.settings.market)
        first = dt.datetime.strptime(rp.date, "%Y%m%d").date().toordinal()
        day, found = first, 0
        while found < k:
            day += 1
            found += calendar.session(day) is not None
        date = dt.date.fromordinal(day).strftime("%Y%m%d")
        was, now = calendar.session(first), calendar.session(day)
        assert now is not None
        if was is not None:
            shift = now.open_ns - was.open_ns
        else:  # a replayed day without a session: whole days
            shift = ny_midnight_ns(date) - ny_midnight_ns(rp.date)
        core.books = {}
        core.day = ny_day_of(ny_midnight_ns(date))
        core.set_session((now.open_ns, now.close_ns) if md.cleaning.session == "regular" else None)
        core.tick_session = session
        core.numbered = collections.Counter()
        self.pace["day"] = date
        return shift

    def _replay_key(self) -> str:
        """What a checkpoint is valid for: this replay's data, day, symbols, news and end."""
        rp = self.settings.md_gateway.replay
        parts = (
            rp.format,
            str(rp.root),
            rp.date,
            ",".join(rp.symbols),
            ",".join(map(str, rp.news)),
            str(rp.until),
        )
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def _sampler(self) -> TickSampler | None:
        """With tracing on, 1 published record in every ``telemetry.trace_sample_every`` starts a
        trace of its own; its micro-batch carries its context to the consumers (NatsBus)."""
        every = self.settings.telemetry.trace_sample_every
        if not (self.rt.tracing.enabled and every > 0 and isinstance(self.rt.bus, NatsBus)):
            return None
        self.sampler = TickSampler(every)
        return self.sampler

    def _pace_from(self) -> int:
        """Where a paced replay starts keeping time: replay.start, or the day's session open
        (the calendar's: a late open is honoured); the first record when the day has no session."""
        rp = self.settings.md_gateway.replay
        if rp.start is not None:
            return ny_time_ns(rp.date, rp.start)
        session = market_calendar(self.settings.market).session_on(rp.date)
        return session.open_ns if session is not None else 0

    def _decides(self, ts: int, second: int, minute: int) -> bool:
        """Does a tick at ``ts`` start a period where a decision can happen? A new minute always
        (entries and exits on 1m bars); a new second while an order works or a position is held
        (protective exits on 1-second mids); never within a second. Vendor bars never do: features
        builds its bars from the ticks."""
        if ts // MINUTE_NS != minute:
            return True
        return ts // SECOND_NS != second and (self._holding or bool(self._working))

    async def _settle(self) -> None:
        """Wait until every lockstep service is quiet in two rounds in a row with nothing handled
        or sent in between (the counters only grow, so equal sums mean nothing moved)."""
        rp = self.settings.md_gateway.replay
        await self.rt.bus.flush()
        deadline = time.monotonic() + rp.lockstep_timeout_s
        previous: int | None = None
        rounds = 0
        while True:
            rounds += 1
            now = self.rt.now_ns()
            probe = SyncProbe(ts_event=now, ts_init=now, round=rounds)
            assert isinstance(self.rt.bus, NatsBus)
            replies = await asyncio.gather(*(self._ask_quiet(self.rt.bus, s, probe) for s in rp.lockstep))
            own, _ = await self.rt.bus.quiet()  # execution's news about orders is in too
            quiet = own and all(r is not None and r.quiet for r in replies)
            total = sum(r.handled + r.sent for r in replies if r is not None) if quiet else None
            if total is not None and total == previous:
                self.settles += 1
                return
            previous = total
            if time.monotonic() > deadline:
                self.settle_timeouts += 1
                busy = {
                    s: (r.detail if r is not None else "no answer")
                    for s, r in zip(rp.lockstep, replies, strict=True)
                    if not (r is not None and r.quiet)
                }
                log.error("lockstep: the fleet did not settle; replaying on", busy=busy)
                return
            if not quiet:
                await asyncio.sleep(0.0005)

    async def _ask_quiet(self, bus: NatsBus, service: str, probe: SyncProbe) -> SyncReply | None:
        """One service's answer; a replicated one's (replay.lockstep_replicas) is every replica's
        together: quiet only when all of them answered quiet (None: one did not answer)."""
        subject = SYNC.subject(service=service)
        replicas = self.settings.md_gateway.replay.lockstep_replicas.get(service, 1)
        if replicas <= 1:
            return await self.rt.request(subject, probe, 5.0, SyncReply)
        answers = [a for a in await bus.gather(subject, probe, replicas, 5.0) if type(a) is SyncReply]
        if len(answers) < replicas:
            return None
        busy = [a.detail for a in answers if not a.quiet]
        return SyncReply(
            ts_event=probe.ts_event,
            ts_init=probe.ts_init,
            service=service,
            quiet=not busy,
            handled=sum(a.handled for a in answers),
            sent=sum(a.sent for a in answers),
            detail="; ".join(busy),
        )

    async def stop(self) -> None:
        self._stopping = True
        if self.ib_session is not None:
            await self.ib_session.stop()
            for t in self._ib_tasks:
                t.cancel()
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

    def progress(self) -> Progress | None:
        """Per subscribed symbol, the market time of its latest record, beside this feed's market
        clock (the replay's time; the wall clock live, so a feed gone quiet shows): the alerts
        service tells a silent symbol from it. Read off the books, nothing per record."""
        if self.ib_provider is not None:
            seen = self.ib_provider.last_seen
            last = {s: seen.get(s, 0) for s in self.settings.ib.symbols}
            return Progress(market_ns=self.rt.now_ns(), last_record_ns=last)
        if self.core is None or not self.market_ns:
            return None
        books = self.core.books
        md = self.settings.md_gateway
        symbols = books if md.provider == "synthetic" else md.replay.symbols
        last = {s: books[s].last_ts if s in books else 0 for s in symbols}
        return Progress(market_ns=self.market_ns, last_record_ns=last)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "finished": self.finished,
            "provider": self._source_name(),
            "news_published": self.news_published,
            "lockstep": {"settles": self.settles, "timeouts": self.settle_timeouts},
            "market_ns": self.market_ns,
            "quiet_skipped_s": round(self.quiet_skipped_s, 1),
        }
        if self.pace:
            out["pace"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in self.pace.items()}
        if self.core is not None:
            out.update(self.core.counters())
            out["tick_session"] = self.core.tick_session
        out["gaps"] = dict(self.gap_stats)
        if self.sampler is not None:
            out["traced_records"] = self.sampler.sampled
        if self.started_at is not None:
            end = self.finished_at or time.monotonic()
            out["elapsed_s"] = round(end - self.started_at, 3)
        return out
