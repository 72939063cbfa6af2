"""Storage on real PostgreSQL: idempotent migrations, native partitioning, binary COPY round trip."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from libs.common.config import DbSettings
from libs.common.storage.migrate import MIGRATIONS, Migration, MigrationError, migrate
from libs.common.storage.retention import prune
from libs.common.storage.schema import TABLES, pg_time
from libs.common.storage.writer import BatchWriter
from proto.execution import Fill
from services.recorder.core import SINGLE_ROW, build_rows, table_of
from tests.kit.samples import T0, sample_events


def test_migrations_are_idempotent_and_say_their_mode(pg_dsn: str) -> None:
    mode, applied = migrate(pg_dsn, DbSettings())
    assert mode == "native"  # no timescaledb extension on this machine
    assert applied == [m.version for m in MIGRATIONS]
    assert migrate(pg_dsn, DbSettings()) == ("native", [])
    with psycopg.connect(pg_dsn) as conn:
        for table in TABLES:
            kind = conn.execute("SELECT relkind FROM pg_class WHERE relname = %s", (table.name,)).fetchone()
            assert kind == ("p",), f"{table.name} is not a partitioned table"


def test_an_edited_migration_is_refused(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    migrate(pg_dsn, DbSettings())
    edited = (MIGRATIONS[0], Migration(2, "recorder offsets", lambda mode, db: ["SELECT 1"]))
    monkeypatch.setattr("libs.common.storage.migrate.MIGRATIONS", edited)
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(pg_dsn, DbSettings())


def test_copy_round_trip_keeps_values_and_exact_timestamps(pg_dsn: str) -> None:
    migrate(pg_dsn, DbSettings())
    rows: dict[str, list[tuple[object, ...]]] = {}
    for event in sample_events():
        table = table_of(event)
        if table is not None:
            rows.setdefault(table, []).extend(build_rows(event))
    writer = BatchWriter(pg_dsn)
    writer.write(rows, {"EXEC": 41}, "recorder")
    writer.write({}, {"EXEC": 40}, "recorder")  # offsets never move backwards
    assert writer.load_offsets("recorder") == {"EXEC": 41}
    with psycopg.connect(pg_dsn) as conn:
        ts, price, commission = conn.execute("SELECT ts, price, commission FROM fills").fetchone()  # type: ignore[misc]
        ctx = conn.execute("SELECT context FROM order_denials").fetchone()
        part = conn.execute("SELECT count(*) FROM quotes_p20131008").fetchone()
    expected = dt.datetime.fromtimestamp(T0 / 1e9, dt.UTC)
    assert ts == expected and price == 182.07 and commission == 0.35
    assert ctx == ({"max": "500"},)
    assert part == (1,)  # landed in its day partition, not in DEFAULT
    writer.close()


def test_sub_microsecond_times_truncate_not_round(pg_dsn: str) -> None:
    migrate(pg_dsn, DbSettings())
    fill = Fill(
        ts_event=T0 + 1999,
        ts_init=T0,
        exec_id="e",
        client_order_id="c",
        symbol="X",
        side="SELL",
        quantity=1,
        price=1.0,
    )
    writer = BatchWriter(pg_dsn)
    writer.write({"fills": [SINGLE_ROW[Fill][1](fill)]}, {}, "recorder")
    with psycopg.connect(pg_dsn) as conn:
        ts = conn.execute("SELECT ts FROM fills").fetchone()[0]  # type: ignore[index]
    assert ts.microsecond == (T0 // 1000 + 1) % 1_000_000
    assert pg_time(T0 + 1999) == pg_time(T0) + 1
    writer.close()


def test_prune_drops_only_day_partitions_past_retention(pg_dsn: str) -> None:
    migrate(pg_dsn, DbSettings())
    writer = BatchWriter(pg_dsn)
    day_ns = 86_400 * 10**9
    fills = [
        Fill(
            ts_event=T0 + d * day_ns,
            ts_init=T0,
            exec_id=f"e{d}",
            client_order_id="c",
            symbol="X",
            side="BUY",
            quantity=1,
            price=1.0,
        )
        for d in (0, 1, 5)
    ]
    writer.write({"fills": [SINGLE_ROW[Fill][1](f) for f in fills]}, {}, "recorder")
    writer.close()
    today = dt.date(2013, 10, 13)  # the rows fall on 10-08, 10-09 and 10-13
    assert prune(pg_dsn, 3, today, dry_run=True) == ["fills_p20131008", "fills_p20131009"]
    assert prune(pg_dsn, 3, today) == ["fills_p20131008", "fills_p20131009"]
    assert prune(pg_dsn, 3, today) == []
    with psycopg.connect(pg_dsn) as conn:
        kept = conn.execute("SELECT exec_id FROM fills").fetchall()
        default_exists = conn.execute("SELECT to_regclass('fills_default') IS NOT NULL").fetchone()
    assert kept == [("e5",)] and default_exists == (True,)
