"""Retention for the native storage mode: drop day partitions older than the retention window.

TimescaleDB mode has retention policies of its own (see schema.render_tables); plain PostgreSQL
needs this job (`tradefleet db prune`, e.g. from cron or a Kubernetes CronJob).
"""

from __future__ import annotations

import datetime as dt
import re

import psycopg
from psycopg import sql

from libs.common.storage.schema import TABLES

PARTITION_NAME = re.compile(r"^(?P<table>[a-z_]+)_p(?P<day>\d{8})$")


def prune(dsn: str, retention_days: int, today: dt.date, dry_run: bool = False) -> list[str]:
    """Drop the day partitions of every time-series table whose whole day is older than
    ``today - retention_days``; returns their names. DEFAULT partitions are never dropped."""
    cutoff = today - dt.timedelta(days=retention_days)
    tables = {t.name for t in TABLES}
    dropped: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        mode = conn.execute("SELECT value FROM tf_meta WHERE key = 'storage_mode'").fetchone()
        if mode is None or mode[0] != "native":
            return []  # timescaledb: its retention policies do this
        rows = conn.execute(
            "SELECT child.relname, parent.relname FROM pg_inherits "
            "JOIN pg_class child ON child.oid = pg_inherits.inhrelid "
            "JOIN pg_class parent ON parent.oid = pg_inherits.inhparent"
        ).fetchall()
        for child, parent in sorted(rows):
            match = PARTITION_NAME.match(child)
            if parent not in tables or match is None or match["table"] != parent:
                continue
            day = dt.datetime.strptime(match["day"], "%Y%m%d").date()
            if day < cutoff:
                if not dry_run:
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(child)))
                dropped.append(child)
    return dropped
