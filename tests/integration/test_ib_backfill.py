"""`tradefleet backfill` against the fake TWS into a real PostgreSQL: paced (no 162 when the pacer
knows the rules; retried when IB says 162 anyway), 162 "no data" as an empty day, resumable; tick
backfill paged by whole seconds, resumed at the page it was cut off on, every tick exactly once."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import psycopg

from libs.common.config import DbSettings, IbHistoricalSettings, IbSettings
from libs.common.ib.historical import HistoricalPacer
from libs.common.ib.session import IbSession
from libs.common.markettime import ny_midnight_ns
from libs.common.storage.migrate import migrate
from services.md_gateway.providers.lean import LeanReplay, bar_records
from tradefleet.backfill import Backfill, BackfillResult, Chunk, plan
from tradefleet.faketws import FakeTws, tick_history

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "lean" / "equity" / "usa" / "minute"


CLOSE_S = ny_midnight_ns("20131008") // 1_000_000_000 + 16 * 3600  # the 1-minute chunk ends at 16:00


def in_chunk(symbol: str) -> int:
    """Bars IB would return for the day's chunk (one day up to 16:00: no after-hours)."""
    return sum(1 for b in minute_bars(symbol) if b[0] < CLOSE_S)


def minute_bars(symbol: str) -> list[tuple[int, float, float, float, float, float]]:
    path = SAMPLE / symbol.lower() / "20131008_trade.zip"
    out = []
    for rec in bar_records(path, symbol, ny_midnight_ns("20131008"), "minute"):
        _, close_ns, _, _, o, h, low, c, v = rec
        out.append((close_ns // 1_000_000_000 - 60, o, h, low, c, v))
    return out


async def run_backfill(
    fake: FakeTws, dsn: str, pacer: HistoricalPacer, chunks: list[Chunk] | None = None
) -> tuple[Backfill, BackfillResult]:
    holder: dict[str, Backfill] = {}
    session = IbSession(IbSettings(port=fake.port), 13, lambda n, a: holder["b"].on_event(n, a))  # noqa: PLW0108
    job = holder["b"] = Backfill(session, dsn, pacer, timeout_s=10)
    task = asyncio.create_task(session.run())
    try:
        chunks = chunks or plan(["IBM", "BAC"], dt.date(2013, 10, 7), dt.date(2013, 10, 8), "1min")
        result = await job.run(chunks)
    finally:
        await session.stop()
        task.cancel()
    return job, result


def stored(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT symbol, count(*) FROM bars WHERE timeframe = '1m' GROUP BY symbol"
        ).fetchall()
    return dict(rows)


async def test_backfill_is_paced_retries_162_and_resumes_without_duplicates(pg_dsn: str) -> None:
    await asyncio.to_thread(migrate, pg_dsn, DbSettings())
    fake = await FakeTws().start()
    fake.historical = {s: minute_bars(s) for s in ("IBM", "BAC")}
    # The fake enforces 2 requests per 0.5 s; a pacer that knows it never breaks the rule.
    fake.faults.pacing_limit, fake.faults.pacing_window_s = 2, 0.5
    strict = HistoricalPacer(time.monotonic, IbHistoricalSettings(max_per_window=2, window_s=0.6))
    _, result = await run_backfill(fake, pg_dsn, strict)
    assert result.chunks == 4 and result.failed == {} and result.retries == 0
    assert result.empty == 2  # 2013-10-07 is not in the fake: 162 "no data" is an empty day
    expected = {s: in_chunk(s) for s in ("IBM", "BAC")}
    assert stored(pg_dsn) == expected and result.written_bars == sum(expected.values())
    assert fake.counters["error_162"] == 2  # the two "no data" answers, no pacing violation

    # Resumed: nothing is asked again, nothing is written twice.
    _, again = await run_backfill(fake, pg_dsn, strict)
    assert again.skipped_done == 4 and again.written_bars == 0 and stored(pg_dsn) == expected
    await fake.stop()


async def test_a_pacing_violation_backs_off_and_retries(pg_dsn: str) -> None:
    await asyncio.to_thread(migrate, pg_dsn, DbSettings())
    fake = await FakeTws().start()
    fake.historical = {s: minute_bars(s) for s in ("IBM", "BAC")}
    fake.faults.pacing_limit, fake.faults.pacing_window_s = 1, 0.5
    fake.faults.identical_gap_s = 0.2  # IB's is 15 s; the pacer below knows this fake's
    lax = HistoricalPacer(
        time.monotonic,
        IbHistoricalSettings(
            max_per_window=1000, identical_gap_s=0.25, backoff_initial_s=0.3, backoff_max_s=1.0
        ),
    )
    _, result = await run_backfill(fake, pg_dsn, lax)
    assert result.retries >= 1 and result.failed == {}
    assert stored(pg_dsn) == {s: in_chunk(s) for s in ("IBM", "BAC")}
    await fake.stop()


WINDOW = (dt.time(9, 30), dt.time(9, 50))  # New York: the busy first twenty minutes


def window_ticks(history: dict[tuple[str, str], list[tuple]], symbol: str, what: str) -> list[tuple]:
    first = ny_midnight_ns("20131008") // 1_000_000_000 + 9 * 3600 + 30 * 60
    return [t for t in history.get((symbol, what), []) if first <= t[0] < first + 20 * 60]


def stored_ticks(dsn: str, table: str) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*), count(DISTINCT (symbol, ts)) FROM {table}").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def test_tick_backfill_pages_by_whole_seconds_and_resumes_mid_chunk(pg_dsn: str) -> None:
    await asyncio.to_thread(migrate, pg_dsn, DbSettings())
    history = tick_history(LeanReplay(SAMPLE.parents[2], "20131008", ["IBM"], "none").records())
    quotes, trades = window_ticks(history, "IBM", "BID_ASK"), window_ticks(history, "IBM", "TRADES")
    assert len(quotes) > 2_500 and len(trades) > 500  # several pages of each
    crossed = sum(1 for q in quotes if q[2] > q[3])  # the real day has some: never written
    fake = await FakeTws().start()
    fake.historical_ticks = history
    fake.faults.historical_error_after = 2  # the job is cut off in its third request
    pacer = HistoricalPacer(time.monotonic, IbHistoricalSettings(max_per_window=1000, per_contract=1000))
    chunks = plan(["IBM"], dt.date(2013, 10, 8), dt.date(2013, 10, 8), "ticks", WINDOW)
    assert [c.what for c in chunks] == ["TRADES", "BID_ASK"]

    _, cut = await run_backfill(fake, pg_dsn, pacer, chunks)
    assert set(cut.failed) == {c.key for c in chunks} and "322" in next(iter(cut.failed.values()))
    assert cut.requests == 3 + 1  # two answered pages, the failing third, then BID_ASK's first
    assert 0 < stored_ticks(pg_dsn, "trades")[0] < len(trades)

    fake.faults.historical_error_after = None
    _, resumed = await run_backfill(fake, pg_dsn, pacer, chunks)
    assert resumed.failed == {} and resumed.dropped == {"crossed_quote": crossed} and crossed > 0
    # Every tick of the window exactly once, in order within its second (a microsecond apart).
    good = len(quotes) - crossed
    assert stored_ticks(pg_dsn, "quotes") == (good, good)
    assert stored_ticks(pg_dsn, "trades") == (len(trades), len(trades))
    pages = -(-len(quotes) // 1000) + -(-len(trades) // 1000)
    assert resumed.requests <= pages  # the two trade pages already stored were not asked again

    _, again = await run_backfill(fake, pg_dsn, pacer, chunks)
    assert again.skipped_done == 2 and again.requests == 0
    await fake.stop()
