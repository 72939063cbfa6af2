"""`tradefleet backfill`: IB historical bars and ticks into TimescaleDB, paced, resumable.

The job is a list of chunks (one symbol-day for 1-minute bars, one symbol-hour for 5-second bars,
the sizes IB's duration table allows; one symbol-session per data type for ticks). Every request
is sent only when the historical pacer says no IB rule would be broken.

- Bars: a chunk is one reqHistoricalData. Its rows and a done-marker commit in one transaction
  (recorder_offsets, consumer ``backfill``, value = rows written).
- Ticks: a chunk is paged with reqHistoricalTicks, at most 1000 ticks a request. IB completes the
  last second of a page, so the next page starts one second later and no tick is asked twice.
  Each page's rows and the chunk's cursor (recorder_offsets value = the next start, epoch
  seconds) commit in one transaction: a job stopped anywhere resumes at the page it was on.

A job stopped anywhere resumes without writing a row twice. 162 "pacing violation" backs off and
retries; 162 "no data" is an empty chunk, done; any other error fails that chunk only, and the
summary says which.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo

import psycopg
from ibapi.client import EClient
from ibapi.contract import Contract

from libs.common.ib.historical import NO_DATA_TEXT, PACING_TEXT, HistoricalPacer
from libs.common.ib.session import IbSession
from libs.common.logging import get_logger
from libs.common.storage.writer import BatchWriter
from proto.market import Bar, Quote, Trade
from services.recorder.core import build_rows

log = get_logger(__name__)
NY = ZoneInfo("America/New_York")
BarSize = Literal["1min", "5s", "ticks"]
IB_BAR = {"1min": ("1 min", "1 D", "1m"), "5s": ("5 secs", "3600 S", "5s")}
TICK_KINDS = ("TRADES", "BID_ASK")
TICKS_PER_REQUEST = 1000  # IB's maximum
CONSUMER = "backfill"
REGULAR_HOURS = (dt.time(9, 30), dt.time(16, 0))


@dataclass(frozen=True)
class Chunk:
    symbol: str
    bar: BarSize
    end: dt.datetime  # New York time: the request's endDateTime
    start: dt.datetime | None = None  # ticks: where paging starts
    what: str = "TRADES"  # ticks: TRADES or BID_ASK

    @property
    def key(self) -> str:
        if self.bar == "ticks":
            return f"backfill:{self.symbol}:ticks-{self.what}:{self.end:%Y%m%d%H%M}"
        return f"backfill:{self.symbol}:{self.bar}:{self.end:%Y%m%d%H%M}"


@dataclass
class _Answer:
    bars: list[Any] = field(default_factory=list)
    error: tuple[int, str] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class BackfillResult:
    chunks: int = 0
    skipped_done: int = 0
    written_bars: int = 0
    empty: int = 0
    retries: int = 0
    written_ticks: int = 0
    requests: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # bad ticks by reason, never written
    failed: dict[str, str] = field(default_factory=dict)


def plan(
    symbols: list[str],
    start: dt.date,
    end: dt.date,
    bar: BarSize,
    hours: tuple[dt.time, dt.time] = REGULAR_HOURS,
) -> list[Chunk]:
    """Weekdays from start to end inclusive; 1min: the day up to 16:00; 5s: each regular hour;
    ticks: trades and quotes of ``hours`` (New York time), one chunk each."""
    chunks = []
    day = start
    while day <= end:
        if day.weekday() < 5:
            for symbol in symbols:
                if bar == "ticks":
                    first = dt.datetime.combine(day, hours[0], NY)
                    last = dt.datetime.combine(day, hours[1], NY)
                    chunks += [Chunk(symbol, bar, last, first, what) for what in TICK_KINDS]
                elif bar == "1min":
                    chunks.append(Chunk(symbol, bar, dt.datetime.combine(day, dt.time(16, 0), NY)))
                else:
                    for hour in range(11, 17):  # hours ending 11:00 .. 16:00 (09:30 is in the first)
                        chunks.append(Chunk(symbol, bar, dt.datetime.combine(day, dt.time(hour, 0), NY)))
        day += dt.timedelta(days=1)
    return chunks


class Backfill:
    def __init__(
        self, session: IbSession, dsn: str, pacer: HistoricalPacer | None = None, timeout_s: float = 60.0
    ) -> None:
        self.ib = session
        self.dsn = dsn
        self.pacer = pacer or HistoricalPacer(time.monotonic)
        self.timeout_s = timeout_s
        self.answers: dict[int, _Answer] = {}
        self._req_ids = iter(range(70_000, 10**9))
        self.max_attempts = 5

    def on_event(self, name: str, args: tuple[Any, ...]) -> None:
        if name in ("historicalData", "historicalTicksBidAsk", "historicalTicksLast", "historicalTicks"):
            answer = self.answers.get(int(args[0]))
            if answer is None:
                return
            if name == "historicalData":
                answer.bars.append(args[1])
            else:  # (reqId, ticks, done): a long answer comes in several messages
                answer.bars.extend(args[1])
                if args[2]:
                    answer.done.set()
        elif name == "historicalDataEnd":
            answer = self.answers.get(int(args[0]))
            if answer is not None:
                answer.done.set()
        elif name == "error":
            answer = self.answers.get(int(args[0]))
            if answer is not None:
                answer.error = (int(args[1]), str(args[2]))
                answer.done.set()

    def progress_by_key(self) -> dict[str, int]:
        """Chunks started: bars -> rows written (done), ticks -> the cursor (next start, epoch s)."""
        with psycopg.connect(self.dsn) as conn:
            rows = conn.execute(
                "SELECT stream, last_seq FROM recorder_offsets"
                " WHERE consumer = %s AND stream LIKE 'backfill:%%'",
                (CONSUMER,),
            ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    async def run(self, chunks: list[Chunk], progress: Callable[[int], None] | None = None) -> BackfillResult:
        result = BackfillResult(chunks=len(chunks))
        started = await asyncio.to_thread(self.progress_by_key)
        writer = BatchWriter(self.dsn)
        try:
            for chunk in chunks:
                mark = started.get(chunk.key)
                if chunk.bar == "ticks":
                    end_s = int(chunk.end.timestamp())
                    if mark is not None and mark >= end_s:
                        result.skipped_done += 1
                    else:
                        await self._ticks(chunk, mark, writer, result)
                elif mark is not None:
                    result.skipped_done += 1
                else:
                    await self._one(chunk, writer, result)
                if progress is not None:
                    progress(1)
        finally:
            writer.close()
        return result

    async def _ask(
        self,
        key: tuple[str, ...],
        contract_key: tuple[str, ...],
        request: Callable[[int], Callable[[EClient], None]],
        chunk_key: str,
        result: BackfillResult,
    ) -> list[Any] | None:
        """One historical request, paced, retried after 162 pacing: its rows ([] for 162 no
        data), or None when it failed (the reason is in ``result.failed``)."""
        for attempt in range(1, self.max_attempts + 1):
            # Waiting for time itself: the pacer says how long until no IB rule would be broken.
            while (wait := self.pacer.delay(key, contract_key)) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait)
            req_id = next(self._req_ids)
            answer = self.answers[req_id] = _Answer()
            self.pacer.record(key, contract_key)
            result.requests += 1
            await self.ib.send(request(req_id))
            try:
                await asyncio.wait_for(answer.done.wait(), self.timeout_s)
            except TimeoutError:
                answer.error = (0, f"no answer in {self.timeout_s:.0f} s")
            finally:
                self.pacer.answered()
                self.answers.pop(req_id, None)
            if answer.error is None:
                return answer.bars
            if NO_DATA_TEXT in answer.error[1]:
                return []
            if PACING_TEXT in answer.error[1]:
                result.retries += 1
                log.warning("historical pacing violation: backing off", chunk=chunk_key, attempt=attempt)
                await asyncio.sleep(self.pacer.backoff(attempt))
                continue
            result.failed[chunk_key] = f"{answer.error[0]} {answer.error[1]}"
            return None
        result.failed[chunk_key] = "pacing: gave up after retries"
        return None

    async def _one(self, chunk: Chunk, writer: BatchWriter, result: BackfillResult) -> None:
        ib_bar, duration, timeframe = IB_BAR[chunk.bar]
        end_text = _ib_time(chunk.end)
        key = (chunk.symbol, end_text, ib_bar, duration, "TRADES")
        raw = await self._ask(
            key,
            (chunk.symbol, "TRADES"),
            lambda req_id: _request(req_id, chunk.symbol, end_text, duration, ib_bar),
            chunk.key,
            result,
        )
        if raw is None:
            return
        rows = [build_rows(b)[0] for b in bar_events(chunk.symbol, timeframe, raw)]
        await asyncio.to_thread(writer.write, {"bars": rows}, {chunk.key: len(rows)}, CONSUMER)
        result.written_bars += len(rows)
        result.empty += not rows

    async def _ticks(
        self, chunk: Chunk, cursor: int | None, writer: BatchWriter, result: BackfillResult
    ) -> None:
        assert chunk.start is not None
        end_s = int(chunk.end.timestamp())
        cursor = max(cursor or 0, int(chunk.start.timestamp()))
        table = "quotes" if chunk.what == "BID_ASK" else "trades"
        written = 0
        while cursor < end_s:
            start_text = _ib_time(dt.datetime.fromtimestamp(cursor, dt.UTC))
            request = functools.partial(
                _ticks_request, symbol=chunk.symbol, start=start_text, what=chunk.what
            )
            key = (chunk.symbol, start_text, chunk.what)
            raw = await self._ask(key, (chunk.symbol, chunk.what), request, chunk.key, result)
            if raw is None:
                return
            inside = [t for t in raw if cursor <= int(t.time) < end_s]
            # IB completed the page's last second, so the next page starts a second later; a
            # short page (or one that reached the end) means the session is done.
            more = len(raw) >= TICKS_PER_REQUEST and int(raw[-1].time) < end_s - 1
            cursor = int(raw[-1].time) + 1 if more else end_s
            events = tick_events(chunk.symbol, chunk.what, inside, result.dropped)
            rows = [build_rows(e)[0] for e in events]
            await asyncio.to_thread(writer.write, {table: rows}, {chunk.key: cursor}, CONSUMER)
            written += len(rows)
            result.written_ticks += len(rows)  # committed: counted even if a later page fails
        result.empty += not written


def _bad_tick(what: str, t: Any) -> str | None:
    if what == "BID_ASK":
        bid, ask = float(t.priceBid), float(t.priceAsk)
        if not (math.isfinite(bid) and math.isfinite(ask)):
            return "non_finite_price"
        if bid <= 0 or ask <= 0:
            return "one_sided_quote"
        if bid > ask:
            return "crossed_quote"
        if int(t.sizeBid) < 0 or int(t.sizeAsk) < 0:
            return "negative_size"
        return None
    price = float(t.price)
    if not math.isfinite(price) or price <= 0:
        return "bad_trade_price"
    if int(t.size) < 0:
        return "negative_size"
    if getattr(t.tickAttribLast, "unreported", False):
        return "unreported_trade"  # not on the tape: the live provider keeps these out too
    return None


def _ib_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y%m%d %H:%M:%S") + " UTC"


def _ticks_request(req_id: int, symbol: str, start: str, what: str) -> Callable[[EClient], None]:
    contract = _contract(symbol)
    # from ``start``, no end, 1000 ticks, regular hours only, sizes wanted (ignoreSize False)
    return lambda c: c.reqHistoricalTicks(req_id, contract, start, "", TICKS_PER_REQUEST, what, 1, False, [])


def _request(req_id: int, symbol: str, end: str, duration: str, bar: str) -> Callable[[EClient], None]:
    contract = _contract(symbol)
    # useRTH 1 (regular hours), formatDate 2 (epoch seconds), no keepUpToDate
    return lambda c: c.reqHistoricalData(req_id, contract, end, duration, bar, "TRADES", 1, 2, False, [])


def _contract(symbol: str) -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, "STK", "SMART", "USD"
    return c


def bar_events(symbol: str, timeframe: str, raw: list[Any]) -> list[Bar]:
    """IB stamps a bar with its start (epoch seconds with formatDate=2); ours with its close."""
    span = {"1m": 60, "5s": 5}[timeframe]
    now = time.time_ns()
    out = []
    for b in raw:
        start = int(b.date)
        out.append(
            Bar(
                ts_event=(start + span) * 1_000_000_000,
                ts_init=now,
                symbol=symbol,
                timeframe=timeframe,
                open=float(b.open),
                high=float(b.high),
                low=float(b.low),
                close=float(b.close),
                volume=int(b.volume),
                trade_count=int(b.barCount),
                vwap=float(b.average),
            )
        )
    return out


def tick_events(symbol: str, what: str, raw: list[Any], dropped: dict[str, int]) -> list[Quote | Trade]:
    """IB's one-second ticks as our events, ordered within their second (each tick a
    microsecond after the one before, the finest the ts column keeps). A tick that could not
    be traded on (non-finite or non-positive price, crossed or one-sided quote, negative
    size, or an unreported trade) is counted by reason and not written."""
    now = time.time_ns()
    out: list[Quote | Trade] = []
    second, index = -1, 0
    for t in raw:
        t_s = int(t.time)
        index = index + 1 if t_s == second else 0
        second = t_s
        ts = t_s * 1_000_000_000 + index * 1_000  # a microsecond apart: the column keeps µs
        reason = _bad_tick(what, t)
        if reason is not None:
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        if what == "BID_ASK":
            out.append(
                Quote(
                    ts_event=ts,
                    ts_init=now,
                    symbol=symbol,
                    bid=float(t.priceBid),
                    ask=float(t.priceAsk),
                    bid_size=int(t.sizeBid),
                    ask_size=int(t.sizeAsk),
                    venue="IB",
                )
            )
        else:
            out.append(
                Trade(
                    ts_event=ts,
                    ts_init=now,
                    symbol=symbol,
                    price=float(t.price),
                    size=int(t.size),
                    venue=str(t.exchange or ""),
                )
            )
    return out
