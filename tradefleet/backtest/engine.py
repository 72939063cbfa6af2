"""The backtest: every service of the trading spine in one process, on the in-process bus, on
simulated time.

The services are the fleet's own: each app (its runtime glue and its pure core) is started on a
`Runtime` whose bus is one shared `InProcessBus` and whose clock is one `SimClock`. The driver
below plays the md-gateway's part: it reads the records, cleans them in the md-gateway core with
the clock set to each record's time, and publishes what the core passes. The in-process bus
dispatches each event to every subscriber, and everything that event causes (a bar, a prediction,
an intent, an approval, an order, a fill) settles before the next record is read: the fleet in
lockstep, with no hop taking time. So the same inputs give byte-identical orders and fills, and a
replay of the same day through the fleet in lockstep (tradefleet up --lockstep) gives the same ones.

Sentiment runs its core with the model called inline, one headline at a time (the fleet's
micro-batches are a throughput device; a headline's score does not depend on its batch mates).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from libs.common.bus import Delivery, InProcessBus
from libs.common.calendar import market_calendar
from libs.common.clock import SimClock
from libs.common.config import Settings
from libs.common.logging import get_logger
from libs.common.markettime import ny_day_of, ny_midnight_ns, ny_time_ns
from libs.common.news_file import news_item
from libs.common.runtime import Runtime, ServiceApp
from proto.base import Event
from proto.market import DepthUpdate, FeedStatus, Quote, Trade
from proto.news import NewsItem
from proto.subjects import SERVICES, spec
from services.md_gateway.core import MarketDataCore
from tradefleet.backtest.ledger import Ledger
from tradefleet.backtest.sources import CleanedDay, DaySource, day_news, merge_few, with_news

log = get_logger(__name__)
STATUS, NEWS, SCORE = spec("md.status"), spec("news.raw"), spec("news.sentiment.{symbol}")
SUBJECT_OF = {
    Quote: spec("md.quote.{symbol}"),
    Trade: spec("md.trade.{symbol}"),
    DepthUpdate: spec("md.depth.{symbol}"),
}
# The catalog's spine in its start order, consumers before producers: subscription order is
# delivery order on the in-process bus, so it is part of what makes a run reproducible.
SPINE = tuple(s.name for s in SERVICES if s.spine)
PROGRESS_EVERY = 20_000


class HandlerFailed(RuntimeError):
    pass


class BacktestHooks:
    """The in-process bus's hooks: a handler that raises is counted and kept, and the run then
    fails (a backtest that swallowed an exception has results nobody should trust)."""

    def __init__(self) -> None:
        self.errors: collections.Counter[str] = collections.Counter()
        self.first: dict[str, BaseException] = {}

    def on_received(self, pattern: str, count: int, ts_init: int) -> None:
        pass

    def on_published(self, pattern: str, count: int) -> None:
        pass

    async def on_dropped(self, subject: str, reason: str, detail: str, payload: bytes, headers: Any) -> None:
        self.errors[f"dropped:{reason}"] += 1

    def on_handler_error(self, subject: str, exc: BaseException) -> None:
        key = f"{subject.split('.', maxsplit=1)[0]}:{type(exc).__name__}"
        self.errors[key] += 1
        if key not in self.first:
            self.first[key] = exc
            log.error("handler failed in the backtest", subject=subject, error=repr(exc), exc_info=exc)


class InlineSentiment(ServiceApp):
    """The sentiment core with its model called inline, one headline at a time."""

    name = "sentiment"

    def __init__(self, settings: Settings, scorer: Any) -> None:
        super().__init__()
        self.cfg = settings.sentiment
        self.scorer = scorer
        self.core: Any = None

    async def start(self, rt: Runtime) -> None:
        from services.sentiment.core import Pending, SentimentCore
        from services.sentiment.tagging import Tagger

        self.rt, self.pending_type = rt, Pending
        self.core = SentimentCore(
            rt.clock, Tagger(self.cfg.companies), self.cfg.dedupe_window_s, self.cfg.symbols
        )
        self.core.model_version = self.scorer.version
        await rt.subscribe("news.raw", self._on_news)

    async def _on_news(self, d: Delivery) -> None:
        if not isinstance(d.event, NewsItem):
            return
        admitted = self.core.admit(d.event)
        if not isinstance(admitted, self.pending_type):
            return
        probs, _ = self.scorer.predict([admitted.text])
        for score in self.core.scored(admitted, probs[0].tolist(), 0):
            await self.rt.publish(SCORE.subject(symbol=score.symbol), score)

    def status(self) -> dict[str, Any]:
        return {"version": self.scorer.version, "stats": dict(self.core.stats) if self.core else {}}


def load_sentiment_scorer(settings: Settings) -> tuple[Any, str]:
    """The active sentiment model, or None and why not (the backtest then runs without it)."""
    try:
        from models.sentiment.serving import HfScorer, load_active

        cfg = settings.sentiment
        scorer = (
            HfScorer(cfg.model_path) if cfg.model_path else load_active(cfg.registry, cfg.engine, cfg.cache)
        )
    except Exception as exc:  # the extra not installed, a bad export: said in the report
        return None, repr(exc)
    return scorer, "" if scorer is not None else f"no active sentiment model in {settings.sentiment.registry}"


def backtest_settings(settings: Settings, work: Path) -> Settings:
    """The run's settings: what is wall-clock or external in the fleet is switched off (Redis,
    wall-clock bar closes, model hot reload, IB, the panic file), the journal goes to this run's
    own folder, the SimBroker is the venue, and approvals are signed with a key of the run's own
    unless one is configured."""

    def section(name: str, **changes: Any) -> Any:
        return getattr(settings, name).model_copy(update=changes)

    # The risk gate signs its approvals and execution checks them: a key for this run when none
    # is configured (one without would trade nothing).
    key = {} if settings.signing.key() else {"approval_key": SecretStr(secrets.token_hex(32))}
    return settings.model_copy(
        update={
            "signing": section("signing", **key),
            "features": section("features", redis_url=None, close_on_wall_clock=False),
            "fastlane": section("fastlane", reload_interval_s=1e9),
            "policy": section("policy", reload_interval_s=1e9),
            "sentiment": section("sentiment", webhook_port=None, reload_interval_s=1e9),
            "execution": section("execution", broker="sim", journal=work / "journal.jsonl", panic_file=None),
            "risk": section("risk", broker_what_if=False),
        }
    )


@dataclass
class BacktestResult:
    days: list[str]
    records: int
    events: dict[str, int]
    seconds: float
    ledger: Ledger
    statuses: dict[str, dict[str, Any]]
    bad_ticks: dict[str, int]
    sentiment_error: str = ""

    @property
    def ticks_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


class Backtest:
    """One run over some days. ``apps`` builds the services to run (the spine by default); a
    strategy under test can replace them (bench/backtest_peers.py runs an EMA cross this way)."""

    def __init__(
        self,
        settings: Settings,
        days: list[DaySource],
        news: list[Path] | None = None,
        progress: bool = False,
        apps: Callable[[Settings], list[ServiceApp]] | None = None,
        sentiment: bool = True,
        run_ns: int | None = None,
    ) -> None:
        if not days:
            raise ValueError("no trading day with data in the range asked for")
        self.days = days
        self.news = news or []
        self.progress = progress
        self._work = tempfile.TemporaryDirectory(prefix="tf-backtest-")
        self.settings = backtest_settings(settings, Path(self._work.name))
        self.clock = SimClock()
        self.hooks = BacktestHooks()
        self.bus = InProcessBus(hooks=self.hooks)
        self.ledger = Ledger(self.settings)
        self.sentiment_error = ""
        self.calendar = market_calendar(self.settings.market)
        self.run_ns = run_ns if run_ns is not None else days[0].session_start_ns(self.calendar)
        self.apps = apps(self.settings) if apps is not None else self._spine(sentiment)
        self.runtimes: list[Runtime] = []
        self._status_seq = 0

    def _spine(self, sentiment: bool) -> list[ServiceApp]:
        from tradefleet.services import RUNNABLE

        apps: list[ServiceApp] = []
        for name in SPINE:
            if name == "policy" and self.settings.qos.policy != "on":
                continue
            if name != "sentiment":
                apps.append(RUNNABLE[name](self.settings))
                continue
            if not (sentiment and self.news):
                continue
            scorer, self.sentiment_error = load_sentiment_scorer(self.settings)
            if scorer is None:
                log.error("backtest runs without sentiment", error=self.sentiment_error)
            else:
                apps.append(InlineSentiment(self.settings, scorer))
        return apps

    async def _start(self) -> None:
        for app in self.apps:
            rt = Runtime(app.name, self.settings, bus=self.bus, clock=self.clock)
            rt.started_ns = self.run_ns  # ids are deterministic: the run's namespace is its data
            rt.app = app
            await app.start(rt)
            self.runtimes.append(rt)
        await self.ledger.start(self.bus)

    async def run(self) -> BacktestResult:
        try:
            return await self._run()
        finally:
            self._work.cleanup()

    async def _run(self) -> BacktestResult:
        self.clock.set(ny_midnight_ns(self.days[0].date))
        await self._start()
        started = time.perf_counter()  # the replay's time (models are loaded by now)
        counters: collections.Counter[str] = collections.Counter()
        bad: collections.Counter[str] = collections.Counter()
        n = 0
        await self._publish_status("replay_started", counters, bad, 0)
        with _progress(self.progress) as bar:
            for day in self.days:
                self.ledger.on_day(day.date, day.symbols)
                md = self._md_core(day)
                n += await self._replay_day(day, md, bar)
                counters.update(day.stats if isinstance(day, CleanedDay) else md.stats)
                bad.update(day.bad if isinstance(day, CleanedDay) else md.bad)
            await self._publish_status("replay_finished", counters, bad, n)
        for app in self.apps:
            try:
                await app.stop()
            except Exception as exc:  # stopping is tidying up: said, and the others still stop
                log.warning("app stop failed", app=app.name, error=repr(exc))
        if self.hooks.errors:
            first = next(iter(self.hooks.first.values()), None)
            raise HandlerFailed(f"handlers failed during the backtest: {dict(self.hooks.errors)}") from first
        self.ledger.finish()
        return BacktestResult(
            days=[d.date for d in self.days],
            records=n,
            events={k: counters.get(k, 0) for k in ("quotes", "trades", "depth")}
            | {"news": self.ledger.news},
            seconds=time.perf_counter() - started,
            ledger=self.ledger,
            statuses={app.name: app.status() for app in self.apps},
            bad_ticks=dict(bad),
            sentiment_error=self.sentiment_error,
        )

    def _md_core(self, day: DaySource) -> MarketDataCore:
        return md_core_for(self.settings, day, self.calendar, self.clock)

    async def _replay_day(self, day: DaySource, md: MarketDataCore, bar: Any) -> int:
        """The hot loop: a record in, its consequences settled, the next record. The bus takes
        the day's events as one stream (``publish_all``): it settles each event before it takes
        the next, which is when ``_day_events`` sets the clock to the next record's time."""
        counted = [0]
        await self.bus.publish_all(self._day_events(day, md, bar, counted))
        return counted[0]

    def _day_events(
        self, day: DaySource, md: MarketDataCore, bar: Any, counted: list[int]
    ) -> Iterator[tuple[str, Event]]:
        """The day's events as (subject, event) to publish, each with the clock set to its
        record's time; ``counted[0]``: the records replayed. A CleanedDay's as they are; another
        day's records cleaned by the md-gateway core."""
        if isinstance(day, CleanedDay):
            if day.cleaning != cleaning_of(self.settings):
                raise ValueError(
                    f"{day.date} was cleaned under other md_gateway.cleaning/replay or market "
                    "settings than this run's: clean it again under these (clean_day)"
                )
            return self._cleaned_events(day, bar, counted)
        until_ns = _until_ns(self.settings, day)
        return _cleaned_records(self._records(day), md, self.clock, until_ns, bar, counted)

    def _cleaned_events(self, day: CleanedDay, bar: Any, counted: list[int]) -> Iterator[tuple[str, Event]]:
        """A day cleaned before (``clean_day``), with this run's headlines merged in by time as
        ``_records`` merges them into records (at equal times the tick first), and held to the
        same bounds (the core's plausible times, the replay's ``until``)."""
        clock_set, news_subject = self.clock.set, NEWS.subject()
        news = day_news(self.news, day.date) if self.news else []
        items: Iterator[tuple[Any, ...]] = merge_few(iter(day.events), news) if news else iter(day.events)
        low, high = day.plausible
        until_ns = _until_ns(self.settings, day)
        for item in items:
            ts = item[1]
            if item[0] == "N":
                if not low <= ts <= high:
                    continue
                if ts >= until_ns:
                    break
                clock_set(ts)
                yield news_subject, news_item(item, ts)
                continue
            clock_set(ts)
            yield item[2], item[3]
        counted[0] = day.record_count
        if bar is not None:
            bar.update(day.record_count)

    def _records(self, day: DaySource) -> Iterator[tuple[Any, ...]]:
        return with_news(day.records(), self.news, day.date) if self.news else day.records()

    async def _publish_status(
        self, state: Any, counters: collections.Counter[str], bad: collections.Counter[str], n: int
    ) -> None:
        now = self.clock.now_ns()
        self._status_seq += 1
        status = FeedStatus(
            ts_event=now,
            ts_init=now,
            source=f"backtest:{self.run_ns}",
            state=state,
            seq=self._status_seq,
            detail=f"{n} records",
            counters={**{f"bad.{k}": v for k, v in bad.items()}, **dict(counters)},
        )
        await self.bus.publish(STATUS.subject(), status)


def md_core_for(settings: Settings, day: DaySource, calendar: Any, clock: SimClock) -> MarketDataCore:
    """The md-gateway core a backtest cleans ``day``'s records with."""
    c = settings.md_gateway.cleaning
    return MarketDataCore(
        clock,
        c.max_jump_pct,
        c.drop_suspicious,
        day.session(calendar) if c.session == "regular" else None,
        c.max_clock_skew_s,
        day=ny_day_of(ny_midnight_ns(day.date)),
    )


def cleaning_of(settings: Settings) -> str:
    """What a day's cleaning depends on: the cleaning and replay settings and the market."""
    md = settings.md_gateway
    return f"{md.cleaning.model_dump_json()}|{md.replay.until}|{settings.market.model_dump_json()}"


def _until_ns(settings: Settings, day: DaySource) -> int:
    until = settings.md_gateway.replay.until
    return ny_time_ns(day.date, until) if until else 1 << 62


def _cleaned_records(
    records: Iterator[tuple[Any, ...]],
    md: MarketDataCore,
    clock: SimClock,
    until_ns: int,
    bar: Any,
    counted: list[int],
) -> Iterator[tuple[str, Event]]:
    """Records cleaned by the md-gateway core, as (subject, event) to publish, each with the
    clock set to its record's time; ``counted[0]``: the records replayed."""
    clock_set, on_record = clock.set, md.on_record
    # Within the bounds checked here, the core need not check them again.
    on_plausible = md.on_plausible if md.plausible is not None else on_record
    subjects: dict[type, dict[str, str]] = {kind: {} for kind in SUBJECT_OF}
    news_subject = NEWS.subject()
    n = 0
    # A record stamped outside the day (md drops it as far_timestamp) must not move the
    # simulated clock, which never goes back: one 2100 stamp would end the day's time.
    low, high = md.plausible or (0, 1 << 62)
    for rec in records:
        ts = rec[1]
        if not low <= ts <= high:  # first: a far stamp past `until` must not end the day
            if rec[0] != "N":
                on_record(rec)  # counted as far_timestamp, nothing published
            continue
        if ts >= until_ns:
            break
        clock_set(ts)
        if rec[0] == "N":
            yield news_subject, news_item(rec, ts)
            continue
        event = on_plausible(rec)
        n += 1
        if bar is not None and n % PROGRESS_EVERY == 0:
            bar.update(PROGRESS_EVERY)
        if event is None:
            continue
        by_symbol = subjects.get(type(event))
        if by_symbol is None:
            continue  # a Bar: the replay publishes ticks only
        symbol: str = event.symbol  # type: ignore[attr-defined]
        subject = by_symbol.get(symbol)
        if subject is None:
            subject = by_symbol[symbol] = SUBJECT_OF[type(event)].subject(symbol=symbol)
        yield subject, event
    counted[0] = n
    if bar is not None:
        bar.update(n % PROGRESS_EVERY)


def clean_day(settings: Settings, day: DaySource) -> CleanedDay:
    """``day`` cleaned once by the md-gateway core under ``settings`` (as a backtest would clean
    it), its events kept for any number of runs under the same cleaning settings. Memory: some
    200 bytes an event (the sample day's two symbols: about 100 MB)."""
    if isinstance(day, CleanedDay):
        return day
    clock = SimClock()
    clock.set(ny_midnight_ns(day.date))
    md = md_core_for(settings, day, market_calendar(settings.market), clock)
    counted = [0]
    plausible = md.plausible or (0, 1 << 62)
    cleaned = _cleaned_records(day.records(), md, clock, _until_ns(settings, day), None, counted)
    events = tuple(("E", clock.now_ns(), subject, event) for subject, event in cleaned)
    return CleanedDay(
        day.date,
        day.symbols,
        day.origin,
        day.root,
        events,
        counted[0],
        dict(md.stats),
        dict(md.bad),
        cleaning_of(settings),
        plausible,
    )


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(desc="backtest", unit=" ticks", unit_scale=True, mininterval=0.5)
    try:
        yield bar
    finally:
        bar.close()


def run_backtest(backtest: Backtest) -> BacktestResult:
    return asyncio.run(backtest.run())
