"""Market data from IB: the historical backfill into the database, and a fake TWS to try it on."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from proto.units import SECOND_NS
from tradefleet.commands.admin import DbUrlOpt, database_errors
from tradefleet.commands.common import ConfigOpt, csv_list, day, fail, load

# tradefleet.backfill.BarSize; not imported from there, because that module needs the ib extra.
Bar = Literal["1min", "5s", "ticks"]


def backfill(
    symbols: Annotated[str, typer.Option(help="comma-separated, e.g. IBM,BAC")],
    start: Annotated[str, typer.Option(help="first day, YYYY-MM-DD or YYYYMMDD")],
    end: Annotated[str, typer.Option(help="last day, YYYY-MM-DD or YYYYMMDD")],
    bar: Annotated[Bar, typer.Option(help="bar size, or every tick")] = "1min",
    hours: Annotated[
        str, typer.Option(help="ticks: the New York hours to fetch, HH:MM-HH:MM")
    ] = "09:30-16:00",
    db_url: DbUrlOpt = None,
    ib_host: Annotated[str | None, typer.Option(help="TWS / IB Gateway host")] = None,
    ib_port: Annotated[int | None, typer.Option(help="TWS / IB Gateway port")] = None,
    config: ConfigOpt = None,
) -> None:
    """IB historical bars or ticks into the database, paced by IB's rules and resumable.

    Done chunks are skipped; a tick chunk resumes at the page it was on."""
    import time

    from libs.common.ib.historical import HistoricalPacer
    from libs.common.ib.session import IbSession
    from libs.common.storage.migrate import migrate
    from tradefleet.backfill import Backfill, plan

    first_day, last_day = (day(start, "--start"), day(end, "--end"))
    days = [dt.datetime.strptime(d, "%Y%m%d").date() for d in (first_day, last_day)]
    try:
        first, last = (dt.time.fromisoformat(x.strip()) for x in hours.split("-"))
    except ValueError as exc:
        fail(f"--hours HH:MM-HH:MM: {exc}")
    settings = load(config)
    dsn = db_url or settings.db.url
    if not dsn:
        fail("no database: pass --db-url or set db.url")
    with database_errors(dsn):
        migrate(dsn, settings.db)
    chunks = plan(csv_list(symbols, upper=True), days[0], days[1], bar, (first, last))
    # Historical data only, nothing trades: a live port needs no ib.allow_live here.
    ib = settings.ib.model_copy(
        update={"host": ib_host or settings.ib.host, "port": ib_port or settings.ib.port}
    )

    async def main() -> None:
        from tqdm import tqdm

        holder: dict[str, Backfill] = {}
        session = IbSession(ib, ib.backfill_client_id, lambda name, args: holder["job"].on_event(name, args))  # noqa: PLW0108
        job = holder["job"] = Backfill(session, dsn, HistoricalPacer(time.monotonic, ib.historical))
        runner = asyncio.create_task(session.run())
        try:
            with tqdm(total=len(chunks), unit="chunk", disable=not sys.stderr.isatty()) as progress:
                result = await job.run(chunks, progress=progress.update)
        finally:
            await session.stop()
            runner.cancel()
        typer.echo(json.dumps(result.__dict__, indent=2, sort_keys=True))
        if result.failed:
            raise typer.Exit(1)

    asyncio.run(main())


def faketws(
    data: Annotated[Path, typer.Option(help="LEAN data root")] = Path("data/sample/lean"),
    date: Annotated[str, typer.Option(help="the recorded day, YYYY-MM-DD or YYYYMMDD")] = "2013-10-08",
    symbols: Annotated[str, typer.Option(help="comma-separated")] = "IBM,BAC",
    port: Annotated[int, typer.Option(help="port to listen on (0: any free one)")] = 7497,
    speed: Annotated[
        float, typer.Option(help="market time per wall second: 1 real time, 60 a minute a second")
    ] = 1.0,
    start: Annotated[
        str, typer.Option(help="New York time to start from, HH:MM (skips the pre-market)")
    ] = "04:00",
    until: Annotated[str | None, typer.Option(help="New York time to stop streaming at, HH:MM")] = None,
    tick_history: Annotated[
        bool, typer.Option(help="also serve the day to reqHistoricalTicks (holds it in memory)")
    ] = False,
) -> None:
    """A fake TWS (server version 157) streaming a recorded day: for trying the IB path without IB."""
    try:  # a typo fails here, not after "listening" was printed
        first = dt.time.fromisoformat(start)
        last = dt.time.fromisoformat(until) if until else None
    except ValueError as exc:
        fail(f"--start/--until HH:MM: {exc}")
    date = day(date)

    from services.md_gateway.providers.lean import LeanReplay, bar_records
    from tradefleet.faketws import FakeTws
    from tradefleet.faketws import tick_history as faketws_ticks

    names = csv_list(symbols, upper=True)
    try:
        replay = LeanReplay(data, date, names, "none")
    except FileNotFoundError as exc:
        fail(f"faketws: {exc}")
    historical = {}
    for name in names:
        path = data / "equity" / "usa" / "minute" / name.lower() / f"{date}_trade.zip"
        if path.exists():
            historical[name] = [
                (r[1] // 1_000_000_000 - 60, r[4], r[5], r[6], r[7], r[8])
                for r in bar_records(path, name, replay.day_ns, "minute")
            ]

    async def main() -> None:
        fake = await FakeTws(replay.records()).start(port=port)
        fake.historical = historical
        if tick_history:
            fake.historical_ticks = faketws_ticks(replay.records())
        typer.echo(f"fake TWS listening on 127.0.0.1:{fake.port} (server version 157)")
        sys.stdout.flush()

        def finished() -> None:
            typer.echo(f"fake TWS: the recorded day {date} has been streamed")
            sys.stdout.flush()

        def at(t: dt.time) -> int:
            return replay.day_ns + (t.hour * 3600 + t.minute * 60) * SECOND_NS

        await fake.autoplay(speed, at(first), finished, at(last) if last else None)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
