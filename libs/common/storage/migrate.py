"""Versioned, idempotent migrations: each runs once, in a transaction, under an advisory lock,
and is recorded with a checksum so an edited migration is caught instead of silently skipped."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from libs.common.config import DbSettings
from libs.common.logging import get_logger
from libs.common.storage.schema import (
    AUDIT_INDEXES,
    AUDIT_TABLES,
    LATER_INDEXES,
    LATER_TABLES,
    MODE_CHANGES_VIEW,
    OFFSETS_TABLE,
    render_tables,
)

log = get_logger(__name__)

MIGRATION_LOCK_ID = 0x7466_6C74  # "tflt": one migrator at a time


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: Callable[[str, DbSettings], list[str]]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "time-series tables",
        lambda mode, db: render_tables(mode, db.retention_days, db.compress_after_days),
    ),
    Migration(2, "recorder offsets", lambda mode, db: [OFFSETS_TABLE]),
    Migration(
        3,
        "feature store",
        lambda mode, db: render_tables(
            mode, db.retention_days, db.compress_after_days, LATER_TABLES, LATER_INDEXES
        ),
    ),
    Migration(
        4,
        "audit trail",
        lambda mode, db: [
            *render_tables(mode, db.retention_days, db.compress_after_days, AUDIT_TABLES, AUDIT_INDEXES),
            MODE_CHANGES_VIEW,
        ],
    ),
)


class MigrationError(RuntimeError):
    pass


def detect_mode(conn: psycopg.Connection, wanted: str = "auto") -> str:
    """timescaledb when the extension can be had (installing it if needed), else native."""
    available = (
        conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
        is not None
    )
    if wanted == "native" or (wanted == "auto" and not available):
        return "native"
    if not available:
        raise MigrationError("storage_mode=timescaledb but the timescaledb extension is not installed")
    conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    return "timescaledb"


def current_mode(conn: psycopg.Connection) -> str | None:
    row = (
        conn.execute("SELECT value FROM tf_meta WHERE key = 'storage_mode'").fetchone()
        if _has_table(conn, "tf_meta")
        else None
    )
    return row[0] if row else None


def _has_table(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]  # type: ignore[index]


def migrate(dsn: str, db: DbSettings) -> tuple[str, list[int]]:
    """Apply what is missing; returns (storage mode, versions applied now)."""
    applied_now: list[int] = []
    with psycopg.connect(dsn, autocommit=True, connect_timeout=db.connect_timeout_s) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text NOT NULL, "
                "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.execute("CREATE TABLE IF NOT EXISTS tf_meta (key text PRIMARY KEY, value text NOT NULL)")
            mode = current_mode(conn) or detect_mode(conn, db.storage_mode)
            conn.execute(
                "INSERT INTO tf_meta VALUES ('storage_mode', %s) ON CONFLICT (key) DO NOTHING", (mode,)
            )
            done = {v: c for v, c in conn.execute("SELECT version, checksum FROM schema_migrations")}
            for migration in MIGRATIONS:
                statements = migration.statements(mode, db)
                checksum = hashlib.sha256("\n;\n".join(statements).encode()).hexdigest()
                if migration.version in done:
                    if done[migration.version] != checksum:
                        raise MigrationError(
                            f"migration {migration.version} ({migration.name}) changed after it was applied; "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                with conn.transaction():
                    for statement in statements:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, checksum),
                    )
                applied_now.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    log.info(
        "storage migrated",
        storage_mode=mode,
        applied=applied_now,
        note="native declarative partitioning (no timescaledb extension)"
        if mode == "native"
        else "timescaledb hypertables",
    )
    return mode, applied_now
