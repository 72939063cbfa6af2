"""Recorder rows/s vs a bare psycopg binary COPY of the same rows, same run.

Rows come from the shipped real day (IBM + BAC, 2013-10-08) cleaned by the md-gateway core:
about 487k quote, trade and bar rows. Each round loads them into a fresh database twice:
- bare: prebuilt row tuples, one transaction per batch, `COPY ... (FORMAT BINARY)` + write_row;
- recorder: the recorder service's own code from events: its handler (event -> rows, batching in
  RecorderCore) and its flush loop (BatchWriter in a worker thread: partition upkeep, binary COPY
  per table, offsets in the same transaction), overlapping as they do in production.
Same batch size for both. Figures are medians over rounds, alternating the order.

Each fresh database takes the storage mode the server offers (``--storage-mode auto``: TimescaleDB
hypertables where the extension is preloaded and licensed, native partitions elsewhere) or the
one asked for; the summary says which.

    python -m bench.recorder [--rounds 3] [--batch 20000] [--storage-mode auto|native|timescaledb]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from typing import Any
from urllib.parse import urlparse

import psycopg

from bench.common import bench_db_url, median, save
from libs.common.bus import Delivery, InProcessBus
from libs.common.clock import LiveClock
from libs.common.config import DbSettings, load_settings
from libs.common.runtime import Runtime
from libs.common.storage.migrate import migrate
from libs.common.storage.schema import TABLES_BY_NAME
from proto.base import Event
from services.md_gateway.core import MarketDataCore
from services.md_gateway.providers.lean import LeanReplay
from services.recorder.core import build_rows, table_of
from services.recorder.runtime import RecorderApp
from tests.conftest import SAMPLE_LEAN


def real_day_events() -> list[Event]:
    replay = LeanReplay(SAMPLE_LEAN, "20131008", ["IBM", "BAC"])
    core = MarketDataCore(LiveClock(), session=replay.session())
    return [e for rec in replay.records() if (e := core.on_record(rec)) is not None]


def fresh_db(server: str, storage_mode: str = "auto") -> tuple[str, str]:
    """A new database, migrated: (its URL, the storage mode it got)."""
    url = urlparse(server)
    name = f"tf_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = url._replace(path=f"/{name}").geturl()
    mode, _ = migrate(dsn, DbSettings(storage_mode=storage_mode))
    return dsn, mode


def drop_db(server: str, dsn: str) -> None:
    name = urlparse(dsn).path.lstrip("/")
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def bare_copy(
    dsn: str, rows_by_table: dict[str, list[tuple[Any, ...]]], batch: int, mode: str = "native"
) -> float:
    with psycopg.connect(dsn) as conn:
        # Native: the day partitions exist beforehand so bare COPY does only the COPY (the
        # recorder makes them once per day too). TimescaleDB makes its chunks inside the COPY,
        # for both variants alike: there is nothing to prepare.
        if mode == "native":
            for table in rows_by_table:
                conn.execute("SELECT tf_ensure_day_partition(%s, date '2013-10-08')", (table,))
        conn.commit()
        start = time.perf_counter()
        for table, rows in rows_by_table.items():
            spec = TABLES_BY_NAME[table]
            sql = f"COPY {table} ({', '.join(spec.column_names)}) FROM STDIN (FORMAT BINARY)"
            for i in range(0, len(rows), batch):
                with conn.transaction(), conn.cursor().copy(sql) as copy:
                    copy.set_types(spec.copy_types)
                    for row in rows[i : i + batch]:
                        copy.write_row(row)
        return time.perf_counter() - start


def recorder_path(dsn: str, events: list[Event], batch: int) -> float:
    """The recorder service's own code: its handler converts events to rows on receipt while its
    flush loop writes the previous batch from a worker thread (what overlaps in production).
    Events are handed to the handler directly: the bus receive cost is measured in md_path."""
    return asyncio.run(_recorder_path(dsn, events, batch))


async def _recorder_path(dsn: str, events: list[Event], batch: int) -> float:
    settings = load_settings(
        None,
        db={"url": dsn},
        http={"port": -1},
        telemetry={"log_level": "WARNING"},
        recorder={
            "batch_rows": batch,
            "flush_interval_ms": 50,
            "buffer_max_rows": 10**8,
            "spill_dir": tempfile.mkdtemp(prefix="bench-spill-"),
        },
    )
    app = RecorderApp(settings, dsn)
    rt = Runtime("recorder", settings, bus=InProcessBus())
    task = asyncio.create_task(rt.run(app, install_signals=False))
    while not rt.ready:  # noqa: ASYNC110 - polling a flag the runtime sets; no event to wait on
        await asyncio.sleep(0.01)
    deliveries = [Delivery(f"md.{type(e).__name__.lower()}.X", e) for e in events]
    on_core = app._on_core
    start = time.perf_counter()
    for i, delivery in enumerate(deliveries):
        await on_core(delivery)
        if i % 2000 == 0:
            await asyncio.sleep(0)  # let the flush loop hand a full batch to its writer thread
    assert app.core is not None
    app._wake.set()
    while sum(app.core.committed_rows.values()) < len(events):  # noqa: ASYNC110 - counter, not an event
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - start
    rt.request_stop()
    await task
    return elapsed


def run(rounds: int = 3, batch: int = 20_000, storage_mode: str = "auto") -> dict[str, Any]:
    server = bench_db_url()
    events = real_day_events()
    rows_by_table: dict[str, list[tuple[Any, ...]]] = {}
    for event in events:
        rows_by_table.setdefault(table_of(event) or "", []).extend(build_rows(event))
    n_rows = sum(len(r) for r in rows_by_table.values())
    runs: dict[str, list[float]] = {"bare": [], "recorder": []}
    modes: set[str] = set()
    for i in range(rounds):
        order = ("bare", "recorder") if i % 2 == 0 else ("recorder", "bare")
        for variant in order:
            dsn, mode = fresh_db(server, storage_mode)
            modes.add(mode)
            try:
                seconds = (
                    bare_copy(dsn, rows_by_table, batch, mode)
                    if variant == "bare"
                    else recorder_path(dsn, events, batch)
                )
                with psycopg.connect(dsn) as conn:
                    stored = sum(
                        conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                        for t in rows_by_table
                    )
                assert stored == n_rows, (variant, stored, n_rows)
            finally:
                drop_db(server, dsn)
            runs[variant].append(n_rows / seconds)
    summary: dict[str, Any] = {
        "rounds": rounds,
        "storage_mode": "/".join(sorted(modes)),
        "rows": n_rows,
        "batch": batch,
        "runs_rows_per_s": runs,
        "bare_rows_per_s": median(runs["bare"]),
        "recorder_rows_per_s": median(runs["recorder"]),
    }
    summary["ratio"] = summary["recorder_rows_per_s"] / summary["bare_rows_per_s"]
    save("recorder", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs_rows_per_s"}, indent=2))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--storage-mode", choices=["auto", "native", "timescaledb"], default="auto")
    ns = parser.parse_args()
    run(ns.rounds, ns.batch, ns.storage_mode)


if __name__ == "__main__":
    main()
