"""`tradefleet db prune`: retention where no TimescaleDB policy does it, opt-in per table.

Which tables keep how long is what the last `tradefleet db migrate` recorded from the
configuration in tf_storage_policies (db.tables.NAME.retention_days over the default
db.retention_days; nothing by default); ``days`` (the CLI's --days, or db.retention_days) stands
in for the default. Age counts from when the data was written, never from its event time, so a
replayed 2013 day is kept as long as today's:

- native: a day partition is dropped when it was made (tf_partitions, recorded by
  tf_ensure_day_partition, i.e. when its day was first written) more than N days ago, and its day
  is more than N days past too. Partitions made before migration 6 count from that migration;
  one made some other way counts from the first prune that sees it. DEFAULT partitions stay;
- timescaledb with the Apache license (no policies there): drop_chunks(created_before => ...)
  (TimescaleDB 2.13 and later; an older one is refused rather than pruned by event time);
- timescaledb with the TSL license: the retention policies that `db migrate` set do it; nothing here.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import psycopg
from psycopg import sql

from libs.common.logging import get_logger
from libs.common.storage.migrate import CREATED_TIME_POLICIES_SINCE, version_tuple
from libs.common.storage.schema import TABLES

log = get_logger(__name__)

PARTITION_NAME = re.compile(r"^(?P<table>[a-z_]+)_p(?P<day>\d{8})$")


class RetentionError(RuntimeError):
    pass


def retention_by_table(conn: psycopg.Connection[Any], days: int | None) -> dict[str, int]:
    """Days to keep per time-series table (only those with a retention): its own, recorded by the
    last `db migrate`, else ``days`` when given, else the recorded default."""
    recorded = {
        name: retention
        for name, retention in conn.execute("SELECT table_name, retention_days FROM tf_storage_policies")
    }
    default = days if days is not None else recorded.get("*")
    out: dict[str, int] = {}
    for table in TABLES:
        own = recorded.get(table.name)
        keep = own if own is not None else default
        if keep:
            out[table.name] = keep
    return out


def prune(dsn: str, retention_days: int | None, today: dt.date, dry_run: bool = False) -> list[str]:
    """Drop what is past retention (see the module's docstring); returns the names of the day
    partitions or chunks dropped (or that would be, with ``dry_run``). ``today`` is the day the
    ages count to (from its midnight UTC)."""
    now = dt.datetime.combine(today, dt.time(), dt.UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        mode = conn.execute("SELECT value FROM tf_meta WHERE key = 'storage_mode'").fetchone()
        applied = conn.execute("SELECT to_regclass('tf_storage_policies') IS NOT NULL").fetchone()
        if mode is None or not (applied and applied[0]):
            log.warning("nothing pruned: run `tradefleet db migrate` first (migration 6, storage policies)")
            return []
        retention = retention_by_table(conn, retention_days)
        if not retention:
            return []
        if mode[0] == "native":
            return _prune_native(conn, retention, now, dry_run)
        return _prune_timescaledb(conn, retention, now, dry_run)


def _prune_native(
    conn: psycopg.Connection[Any], retention: dict[str, int], now: dt.datetime, dry_run: bool
) -> list[str]:
    rows = conn.execute(
        "SELECT child.relname, parent.relname, made.created_at FROM pg_inherits "
        "JOIN pg_class child ON child.oid = pg_inherits.inhrelid "
        "JOIN pg_class parent ON parent.oid = pg_inherits.inhparent "
        "LEFT JOIN tf_partitions made ON made.partition_name = child.relname"
    ).fetchall()
    dropped: list[str] = []
    for child, parent, created_at in sorted(rows):
        match = PARTITION_NAME.match(child)
        if parent not in retention or match is None or match["table"] != parent:
            continue
        if created_at is None:  # not made by tf_ensure_day_partition: its age counts from now
            if not dry_run:
                conn.execute(
                    "INSERT INTO tf_partitions (partition_name, parent) VALUES (%s, %s) "
                    "ON CONFLICT (partition_name) DO NOTHING",
                    (child, parent),
                )
            continue
        cutoff = now - dt.timedelta(days=retention[parent])
        day = dt.datetime.strptime(match["day"], "%Y%m%d").date()
        if created_at < cutoff and day < cutoff.date():
            if not dry_run:
                with conn.transaction():
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(child)))
                    conn.execute("DELETE FROM tf_partitions WHERE partition_name = %s", (child,))
            dropped.append(child)
    return dropped


def _prune_timescaledb(
    conn: psycopg.Connection[Any], retention: dict[str, int], now: dt.datetime, dry_run: bool
) -> list[str]:
    license_ = conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()
    if license_ and license_[0] == "timescale":
        log.info("nothing pruned: the TimescaleDB retention policies do it (license timescale)")
        return []
    version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    if version_tuple(version[0] if version else None) < CREATED_TIME_POLICIES_SINCE:
        raise RetentionError(
            f"TimescaleDB {version[0] if version else '?'} cannot drop chunks by creation time (2.13 and "
            "later): refusing to prune by event time, which would drop replayed history"
        )
    dropped: list[str] = []
    for table, days in retention.items():
        cutoff = now - dt.timedelta(days=days)
        query = (
            "SELECT chunk::text FROM show_chunks(%s::regclass, created_before => %s::timestamptz) AS chunk"
            if dry_run
            else "SELECT drop_chunks(%s::regclass, created_before => %s::timestamptz)"
        )
        dropped += [row[0] for row in conn.execute(query, (table, cutoff))]
    return dropped
