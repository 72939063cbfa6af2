"""`tradefleet backfill`: IB historical bars into TimescaleDB, paced, resumable.

The job is a list of chunks (one symbol-day for 1-minute bars, one symbol-hour for 5-second bars,
the sizes IB's duration table allows). Each chunk is one reqHistoricalData, sent only when the
historical pacer says no rule would be broken; its rows and a done-marker for it commit in one
transaction (recorder_offsets, consumer ``backfill``), so a job stopped anywhere resumes from the
first chunk not done and never writes a bar twice. 162 "pacing violation" backs off and retries;
162 "no data" is an empty chunk, done; any other error fails that chunk only, and the summary
says which.
"""

from __future__ import annotations

import asyncio
import datetime as dt
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
from proto.market import Bar
from services.recorder.core import build_rows

log = get_logger(__name__)
NY = ZoneInfo("America/New_York")
BarSize = Literal["1min", "5s"]
IB_BAR = {"1min": ("1 min", "1 D", "1m"), "5s": ("5 secs", "3600 S", "5s")}
CONSUMER = "backfill"


@dataclass(frozen=True)
class Chunk:
    symbol: str
    bar: BarSize
    end: dt.datetime  # New York time: the request's endDateTime

    @property
    def key(self) -> str:
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
    failed: dict[str, str] = field(default_factory=dict)


def plan(symbols: list[str], start: dt.date, end: dt.date, bar: BarSize) -> list[Chunk]:
    """Weekdays from start to end inclusive; 1min: the day up to 16:00; 5s: each regular hour."""
    chunks = []
    day = start
    while day <= end:
        if day.weekday() < 5:
            for symbol in symbols:
                if bar == "1min":
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
        if name == "historicalData":
            answer = self.answers.get(int(args[0]))
            if answer is not None:
                answer.bars.append(args[1])
        elif name == "historicalDataEnd":
            answer = self.answers.get(int(args[0]))
            if answer is not None:
                answer.done.set()
        elif name == "error":
            answer = self.answers.get(int(args[0]))
            if answer is not None:
                answer.error = (int(args[1]), str(args[2]))
                answer.done.set()

    def done_keys(self) -> set[str]:
        with psycopg.connect(self.dsn) as conn:
            rows = conn.execute(
                "SELECT stream FROM recorder_offsets WHERE consumer = %s AND stream LIKE 'backfill:%%'",
                (CONSUMER,),
            ).fetchall()
        return {r[0] for r in rows}

    async def run(self, chunks: list[Chunk], progress: Callable[[int], None] | None = None) -> BackfillResult:
        result = BackfillResult(chunks=len(chunks))
        done = await asyncio.to_thread(self.done_keys)
        writer = BatchWriter(self.dsn)
        try:
            for chunk in chunks:
                if chunk.key in done:
                    result.skipped_done += 1
                else:
                    await self._one(chunk, writer, result)
                if progress is not None:
                    progress(1)
        finally:
            writer.close()
        return result

    async def _one(self, chunk: Chunk, writer: BatchWriter, result: BackfillResult) -> None:
        ib_bar, duration, timeframe = IB_BAR[chunk.bar]
        end_text = chunk.end.astimezone(dt.UTC).strftime("%Y%m%d %H:%M:%S") + " UTC"
        key = (chunk.symbol, end_text, ib_bar, duration, "TRADES")
        contract_key = (chunk.symbol, "TRADES")
        for attempt in range(1, self.max_attempts + 1):
            # Waiting for time itself: the pacer says how long until no IB rule would be broken.
            while (wait := self.pacer.delay(key, contract_key)) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait)
            req_id = next(self._req_ids)
            answer = self.answers[req_id] = _Answer()
            self.pacer.record(key, contract_key)
            await self.ib.send(_request(req_id, chunk.symbol, end_text, duration, ib_bar))
            try:
                await asyncio.wait_for(answer.done.wait(), self.timeout_s)
            except TimeoutError:
                answer.error = (0, f"no answer in {self.timeout_s:.0f} s")
            finally:
                self.pacer.answered()
                self.answers.pop(req_id, None)
            if answer.error is None or NO_DATA_TEXT in answer.error[1]:
                rows = [build_rows(b)[0] for b in self._bars(chunk.symbol, timeframe, answer.bars)]
                await asyncio.to_thread(writer.write, {"bars": rows}, {chunk.key: len(rows)}, CONSUMER)
                result.written_bars += len(rows)
                result.empty += not rows
                return
            if PACING_TEXT in answer.error[1]:
                result.retries += 1
                log.warning("historical pacing violation: backing off", chunk=chunk.key, attempt=attempt)
                await asyncio.sleep(self.pacer.backoff(attempt))
                continue
            result.failed[chunk.key] = f"{answer.error[0]} {answer.error[1]}"
            return
        result.failed[chunk.key] = "pacing: gave up after retries"

    def _bars(self, symbol: str, timeframe: str, raw: list[Any]) -> list[Bar]:
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


def _request(req_id: int, symbol: str, end: str, duration: str, bar: str) -> Callable[[EClient], None]:
    contract = _contract(symbol)
    # useRTH 1 (regular hours), formatDate 2 (epoch seconds), no keepUpToDate
    return lambda c: c.reqHistoricalData(req_id, contract, end, duration, bar, "TRADES", 1, 2, False, [])


def _contract(symbol: str) -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, "STK", "SMART", "USD"
    return c
