"""Versioned, idempotent migrations: each runs once, in a transaction, under an advisory lock,
and is recorded with a checksum so an edited migration is caught instead of silently skipped.

After the migrations, retention and compression are reconciled with the configuration (not a
migration: changing db.retention_days, db.compress_after_days or db.tables and running
`tradefleet db migrate` again changes them). Both are opt-in and count from when data was
written, never from its event time:

- timescaledb with the TSL license (timescaledb.license = 'timescale'): one
  add_retention_policy(drop_created_before => ...) and one
  add_compression_policy(compress_created_before => ...) per table that asks for it (TimescaleDB
  2.13 and later; an older one is refused when a table asks, rather than given event-time
  policies), and every other policy on the fleet's tables is removed: the configuration owns them;
- timescaledb with the Apache license: no policies (they are TSL); retention is
  `tradefleet db prune` (drop_chunks(created_before => ...), Apache), compression is refused;
- native: `tradefleet db prune` drops day partitions by when they were made; no compression.
The policy as configured is recorded in tf_storage_policies (for `db prune` and for people).

``storage_mode: auto`` takes TimescaleDB only when it can serve: the extension installed on the
server, its library in shared_preload_libraries (else CREATE EXTENSION fails with 'extension
"timescaledb" must be preloaded') and the TSL license; else native, with the reason logged.
``storage_mode: timescaledb`` fails with that reason instead. The mode is chosen once per
database and recorded in tf_meta.

Before migration 6, migrations 1, 3 and 4 also switched compression on and added event-time
policies (90 and 2 days by default) for every table in timescaledb mode, which dropped a replayed
2013 day seconds after it was written. They no longer do; a database migrated then has its old
checksums recognised (Migration.legacy: the old rendering with the parameters it was made with,
which are then noted in tf_meta) and kept, and the reconcile step removes the policies no table
asks for. Native statements never changed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import psycopg

from libs.common.config import DbSettings
from libs.common.logging import get_logger
from libs.common.storage.schema import (
    AUDIT_INDEXES,
    AUDIT_TABLES,
    FIRST_TABLES,
    LATER_INDEXES,
    LATER_TABLES,
    MODE_CHANGES_VIEW,
    OFFSETS_TABLE,
    PARTITION_FUNCTION_RECORDING,
    PARTITIONS_TABLE,
    SEQUENCES_TABLE,
    STORAGE_POLICIES_TABLE,
    TABLES,
    compression_settings_sql,
    partitions_backfill_sql,
    render_tables,
)

log = get_logger(__name__)

MIGRATION_LOCK_ID = 0x7466_6C74  # "tflt": one migrator at a time
# drop_created_before / compress_created_before / drop_chunks(created_before => ...) came in 2.13.0.
CREATED_TIME_POLICIES_SINCE = (2, 13)
# What migrations 1, 3 and 4 rendered their policies with before migration 6, unless configured.
LEGACY_RETENTION_DAYS = 90
LEGACY_COMPRESS_AFTER_DAYS = 2


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: Callable[[str, DbSettings], list[str]]
    # An earlier rendering of this migration, for (mode, (retention_days, compress_after_days)): a
    # database whose checksum matches it for some parameters applied this migration.
    legacy: Callable[[str, tuple[int, int]], list[str]] | None = None


def _storage_policies(mode: str, db: DbSettings) -> list[str]:
    statements = [STORAGE_POLICIES_TABLE]
    if mode == "native":
        statements += [PARTITIONS_TABLE, partitions_backfill_sql(TABLES), PARTITION_FUNCTION_RECORDING]
    return statements


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "time-series tables",
        lambda mode, db: render_tables(mode),
        lambda mode, old: render_tables(mode, legacy_policies=old),
    ),
    Migration(2, "recorder offsets", lambda mode, db: [OFFSETS_TABLE]),
    Migration(
        3,
        "feature store",
        lambda mode, db: render_tables(mode, LATER_TABLES, LATER_INDEXES),
        lambda mode, old: render_tables(mode, LATER_TABLES, LATER_INDEXES, legacy_policies=old),
    ),
    Migration(
        4,
        "audit trail",
        lambda mode, db: [*render_tables(mode, AUDIT_TABLES, AUDIT_INDEXES), MODE_CHANGES_VIEW],
        lambda mode, old: [
            *render_tables(mode, AUDIT_TABLES, AUDIT_INDEXES, legacy_policies=old),
            MODE_CHANGES_VIEW,
        ],
    ),
    Migration(5, "market-data sequences", lambda mode, db: [SEQUENCES_TABLE]),
    Migration(6, "storage policies", _storage_policies),
)
assert FIRST_TABLES + LATER_TABLES + AUDIT_TABLES == TABLES


class MigrationError(RuntimeError):
    pass


def checksum(statements: list[str]) -> str:
    return hashlib.sha256("\n;\n".join(statements).encode()).hexdigest()


# -- what the server offers ----------------------------------------------------------------------
def version_tuple(version: str | None) -> tuple[int, ...]:
    """'2.13.1' -> (2, 13, 1); '2.14.0-dev' -> (2, 14, 0); None or garbage -> ()."""
    match = re.match(r"^(\d+(?:\.\d+)*)", version or "")
    return tuple(int(p) for p in match[1].split(".")) if match else ()


def preloads_timescaledb(shared_preload_libraries: str) -> bool:
    """Whether a shared_preload_libraries value names the timescaledb loader (by name or path)."""
    for entry in shared_preload_libraries.split(","):
        name = entry.strip().strip('"').rsplit("/", 1)[-1]
        if name.removesuffix(".so") == "timescaledb":
            return True
    return False


@dataclass(frozen=True)
class TimescaleInfo:
    """What the server's TimescaleDB can do for this database."""

    available: bool  # installable: in pg_available_extensions
    preloaded: bool | None = None  # its library in shared_preload_libraries; None: not visible to us
    version: str | None = None  # the version in use (or the one CREATE EXTENSION installs)
    license: str | None = None  # timescaledb.license: 'timescale' (TSL) or 'apache'
    error: str | None = None  # why CREATE EXTENSION failed, when it did for another reason

    @property
    def tsl(self) -> bool:
        """Compression and background policies (retention, compression) are TSL features."""
        return self.license == "timescale"

    @property
    def created_time_policies(self) -> bool:
        return version_tuple(self.version) >= CREATED_TIME_POLICIES_SINCE

    def unusable(self) -> str | None:
        """Why hypertables cannot be had at all, or None."""
        if not self.available:
            return "the timescaledb extension is not installed on the server"
        if self.preloaded is False:
            return (
                "the timescaledb library is not in shared_preload_libraries, so CREATE EXTENSION fails "
                "with 'extension \"timescaledb\" must be preloaded' (add timescaledb to "
                "shared_preload_libraries in postgresql.conf and restart the server)"
            )
        if self.error:
            return f"CREATE EXTENSION timescaledb failed: {self.error}"
        return None


def probe_timescaledb(
    conn: psycopg.Connection[Any], connect: Callable[[], AbstractContextManager[Any]]
) -> TimescaleInfo:
    """Reads the catalog, then creates the extension in a transaction that is rolled back on a
    connection of its own (``connect``): that gives the version and license it would run with
    without keeping anything, and a library that is not preloaded answers CREATE EXTENSION with
    FATAL, which ends that session and not the migrator's."""
    row = conn.execute(
        "SELECT default_version, installed_version FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    if row is None:
        return TimescaleInfo(available=False)
    default_version, installed_version = row
    setting = conn.execute(
        "SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'"
    ).fetchone()  # no row: the role may not read it (pg_read_all_settings); the attempt below tells
    preloaded = None if setting is None else preloads_timescaledb(setting[0] or "")
    if preloaded is False:
        return TimescaleInfo(True, False, installed_version or default_version)
    try:
        with connect() as probe:
            probe.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            version = probe.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
            ).fetchone()
            license_ = probe.execute("SELECT current_setting('timescaledb.license', true)").fetchone()
            probe.rollback()
    except psycopg.Error as exc:
        message = " ".join(str(exc).split())
        if "must be preloaded" in message:
            return TimescaleInfo(True, False, installed_version or default_version)
        return TimescaleInfo(True, preloaded, installed_version or default_version, error=message[:300])
    return TimescaleInfo(
        True,
        True,
        version[0] if version else installed_version or default_version,
        license_[0] if license_ else None,
    )


def wants_policies(db: DbSettings) -> bool:
    return any(db.retention_for(t.name) or db.compression_for(t.name) for t in TABLES)


def choose_mode(wanted: str, info: TimescaleInfo, db: DbSettings) -> tuple[str, str]:
    """(storage mode, why) for a database that has none yet; MigrationError where
    storage_mode=timescaledb cannot be had."""
    if wanted == "native":
        return "native", "storage_mode=native"
    problem = info.unusable()
    if wanted == "timescaledb":
        if problem:
            raise MigrationError(f"storage_mode=timescaledb but {problem}")
        return "timescaledb", f"storage_mode=timescaledb (TimescaleDB {info.version}, license {info.license})"
    if problem is None and not info.tsl:
        problem = (
            f"timescaledb.license is {info.license or 'unset'!r}: compression and retention policies "
            "need 'timescale' (set storage_mode=timescaledb for Apache hypertables, pruned by "
            "`tradefleet db prune`)"
        )
    if problem is None and wants_policies(db) and not info.created_time_policies:
        problem = (
            f"TimescaleDB {info.version} has no creation-time policies (2.13 and later) and retention "
            "or compression is configured"
        )
    if problem:
        return "native", f"storage_mode=auto: {problem}; using native partitioning"
    return "timescaledb", f"storage_mode=auto: TimescaleDB {info.version}, preloaded, license timescale"


def detect_mode(
    conn: psycopg.Connection[Any],
    wanted: str = "auto",
    connect: Callable[[], AbstractContextManager[Any]] | None = None,
    db: DbSettings | None = None,
) -> tuple[str, str, TimescaleInfo | None]:
    """Choose the mode of a new database (installing the extension when it is timescaledb):
    (mode, why, what TimescaleDB offers; None when not asked)."""
    db = db or DbSettings()
    if wanted == "native":
        return "native", "storage_mode=native", None
    info = probe_timescaledb(conn, connect or _no_second_connection)
    mode, why = choose_mode(wanted, info, db)
    if mode == "timescaledb":
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    return mode, why, info


def _no_second_connection() -> AbstractContextManager[Any]:
    raise MigrationError("probing TimescaleDB needs a connection of its own (pass connect=)")


def current_mode(conn: psycopg.Connection[Any]) -> str | None:
    row = (
        conn.execute("SELECT value FROM tf_meta WHERE key = 'storage_mode'").fetchone()
        if _has_table(conn, "tf_meta")
        else None
    )
    return row[0] if row else None


def _has_table(conn: psycopg.Connection[Any], name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]  # type: ignore[index]


# -- migrations ----------------------------------------------------------------------------------
def migrate(dsn: str, db: DbSettings) -> tuple[str, list[int]]:
    """Apply what is missing, then reconcile retention and compression with ``db``; returns
    (storage mode, versions applied now)."""
    applied_now: list[int] = []

    def connect() -> AbstractContextManager[Any]:
        return psycopg.connect(dsn, connect_timeout=db.connect_timeout_s)

    with psycopg.connect(dsn, autocommit=True, connect_timeout=db.connect_timeout_s) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text NOT NULL, "
                "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.execute("CREATE TABLE IF NOT EXISTS tf_meta (key text PRIMARY KEY, value text NOT NULL)")
            mode = current_mode(conn)
            info: TimescaleInfo | None = None
            if mode is None:
                mode, why, info = detect_mode(conn, db.storage_mode, connect, db)
                conn.execute(
                    "INSERT INTO tf_meta VALUES ('storage_mode', %s) ON CONFLICT (key) DO NOTHING", (mode,)
                )
                # A fallback from a TimescaleDB that is there but cannot serve is worth a warning.
                fell_back = mode == "native" and info is not None and info.available
                (log.warning if fell_back else log.info)("storage mode chosen", storage_mode=mode, reason=why)
            else:
                if db.storage_mode not in ("auto", mode):
                    log.warning(
                        "storage_mode differs from this database's; keeping the database's",
                        configured=db.storage_mode,
                        storage_mode=mode,
                    )
                if mode == "timescaledb":
                    info = probe_timescaledb(conn, connect)
                    problem = info.unusable()
                    if problem:
                        raise MigrationError(f"this database is in timescaledb mode (tf_meta) but {problem}")
            applied_now = _apply_migrations(conn, mode, db)
            actions = reconcile_storage_policies(conn, mode, db, info)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    log.info(
        "storage migrated",
        storage_mode=mode,
        applied=applied_now,
        policies=actions,
        note="native declarative partitioning" if mode == "native" else "timescaledb hypertables",
    )
    return mode, applied_now


def _apply_migrations(conn: psycopg.Connection[Any], mode: str, db: DbSettings) -> list[int]:
    applied_now: list[int] = []
    done = {v: c for v, c in conn.execute("SELECT version, checksum FROM schema_migrations")}
    legacy_params: list[tuple[int, int]] | None = None
    for migration in MIGRATIONS:
        statements = migration.statements(mode, db)
        new = checksum(statements)
        if migration.version in done:
            if done[migration.version] == new:
                continue
            if migration.legacy is not None:
                if legacy_params is None:
                    legacy_params = _legacy_policy_params(conn, mode, db)
                matched = next(
                    (
                        params
                        for params in legacy_params
                        if checksum(migration.legacy(mode, params)) == done[migration.version]
                    ),
                    None,
                )
                if matched is not None:
                    _note_legacy(conn, migration, matched)
                    continue
            raise MigrationError(
                f"migration {migration.version} ({migration.name}) changed after it was applied; "
                "add a new migration instead of editing an applied one"
            )
        with conn.transaction():
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, new),
            )
        applied_now.append(migration.version)
    return applied_now


def _legacy_key(migration: Migration) -> str:
    return f"migration_{migration.version}_legacy_policies"


def _legacy_policy_params(conn: psycopg.Connection[Any], mode: str, db: DbSettings) -> list[tuple[int, int]]:
    """The (retention_days, compress_after_days) a database may have rendered migrations 1, 3 and 4
    with before migration 6, most likely first: those noted in tf_meta when a run recognised them,
    the old defaults, what is configured now, and the intervals of the event-time policies it
    still has (the old rendering added them; the reconcile step removes them, hence the note)."""
    noted = [
        (int(r), int(c))
        for (value,) in conn.execute("SELECT value FROM tf_meta WHERE key LIKE 'migration%legacy_policies'")
        for r, c in [value.split(",")]
    ]
    retention = {LEGACY_RETENTION_DAYS, *(d for d in (db.retention_days,) if d)}
    compress = {LEGACY_COMPRESS_AFTER_DAYS, *(d for d in (db.compress_after_days,) if d)}
    if mode == "timescaledb":
        for job in policy_jobs(conn):
            if job.after is not None and job.after.seconds == 0 and job.after.microseconds == 0:
                (retention if job.proc == "policy_retention" else compress).add(job.after.days)
    guessed = [(r, c) for r in sorted(retention) for c in sorted(compress)]
    return list(dict.fromkeys(noted + guessed))


def _note_legacy(conn: psycopg.Connection[Any], migration: Migration, params: tuple[int, int]) -> None:
    """A migration applied with its pre-6 rendering is that migration: its checksum stays what was
    applied (an older tradefleet still recognises it), and the parameters it was rendered with are
    noted so later runs recognise it once its policies are gone."""
    value = f"{params[0]},{params[1]}"
    row = conn.execute("SELECT value FROM tf_meta WHERE key = %s", (_legacy_key(migration),)).fetchone()
    if row is not None and row[0] == value:
        return
    conn.execute(
        "INSERT INTO tf_meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        (_legacy_key(migration), value),
    )
    log.warning(
        "migration applied with its pre-6 rendering: accepted",
        migration=migration.version,
        name=migration.name,
        retention_days=params[0],
        compress_after_days=params[1],
        note="its event-time retention and compression policies are reconciled with the configuration",
    )


# -- retention and compression -------------------------------------------------------------------
@dataclass(frozen=True)
class PolicyJob:
    """A TimescaleDB retention or compression policy on one of the fleet's tables."""

    table: str
    proc: str  # policy_retention | policy_compression
    after: dt.timedelta | None  # drop_after / compress_after: event time
    created_before: dt.timedelta | None  # drop_created_before / compress_created_before: write time


def policy_jobs(conn: psycopg.Connection[Any]) -> list[PolicyJob]:
    rows = conn.execute(
        "SELECT hypertable_name, proc_name, "
        "COALESCE(config->>'drop_after', config->>'compress_after')::interval, "
        "COALESCE(config->>'drop_created_before', config->>'compress_created_before')::interval "
        "FROM timescaledb_information.jobs "
        "WHERE proc_name IN ('policy_retention', 'policy_compression') "
        "AND hypertable_schema::text = current_schema() AND hypertable_name::text = ANY(%s) "
        "ORDER BY hypertable_name, proc_name, job_id",
        ([t.name for t in TABLES],),
    ).fetchall()
    return [PolicyJob(*row) for row in rows]


def reconcile_storage_policies(
    conn: psycopg.Connection[Any], mode: str, db: DbSettings, info: TimescaleInfo | None
) -> list[str]:
    """Make the database's retention and compression what ``db`` says; returns what it did."""
    _record_policies(conn, db)
    compressed = [t.name for t in TABLES if db.compression_for(t.name)]
    retained = [t.name for t in TABLES if db.retention_for(t.name)]
    if mode == "native":
        if compressed:
            log.warning(
                "compression is a TimescaleDB feature: native mode keeps these tables uncompressed",
                tables=compressed,
            )
        return [f"retention by `tradefleet db prune`: {', '.join(retained)}"] if retained else []
    if info is None:
        raise MigrationError("timescaledb mode needs what the server offers (probe_timescaledb)")
    if (compressed or retained) and not info.created_time_policies:
        raise MigrationError(
            f"TimescaleDB {info.version} only has event-time policies (drop_after, compress_after), "
            "which would drop or compress replayed history as soon as it is written; creation-time "
            "ones (drop_created_before, compress_created_before) need 2.13 or later: update the "
            "extension (ALTER EXTENSION timescaledb UPDATE) or unset retention and compression for "
            f"{', '.join(sorted(set(compressed + retained)))}"
        )
    if compressed and not info.tsl:
        raise MigrationError(
            f"compression is configured for {', '.join(compressed)} but timescaledb.license is "
            f"{info.license or 'unset'!r}: compression is a TSL feature (timescaledb.license = "
            "'timescale'); unset db.compress_after_days / db.tables.*.compress_after_days"
        )
    jobs = policy_jobs(conn)
    if not info.tsl:
        if jobs:
            log.warning(
                "policies exist but timescaledb.license is not 'timescale': they cannot run or be removed",
                tables=sorted({j.table for j in jobs}),
            )
        return (
            [f"retention by `tradefleet db prune` (drop_chunks, Apache): {', '.join(retained)}"]
            if retained
            else []
        )
    actions: list[str] = []
    for table in TABLES:
        for kind, days in (
            ("retention", db.retention_for(table.name)),
            ("compression", db.compression_for(table.name)),
        ):
            proc = f"policy_{kind}"
            have = [j for j in jobs if j.table == table.name and j.proc == proc]
            if _policy_matches(have, days):
                continue
            with conn.transaction():
                if have:
                    conn.execute(
                        f"SELECT remove_{kind}_policy(%s::regclass, if_exists => true)", (table.name,)
                    )
                    actions.append(f"{table.name}: {kind} policy removed")
                if days and kind == "retention":
                    conn.execute(
                        "SELECT add_retention_policy(%s::regclass, "
                        "drop_created_before => make_interval(days => %s::int))",
                        (table.name, days),
                    )
                elif days:
                    if not _compression_enabled(conn, table.name):
                        conn.execute(compression_settings_sql(table))
                    conn.execute(
                        "SELECT add_compression_policy(%s::regclass, "
                        "compress_created_before => make_interval(days => %s::int))",
                        (table.name, days),
                    )
                if days:
                    actions.append(f"{table.name}: {kind} after {days} days from write time")
    return actions


def _policy_matches(have: Iterable[PolicyJob], days: int | None) -> bool:
    have = list(have)
    if days is None:
        return not have
    return len(have) == 1 and have[0].after is None and have[0].created_before == dt.timedelta(days=days)


def _compression_enabled(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute(
        "SELECT compression_enabled FROM timescaledb_information.hypertables "
        "WHERE hypertable_schema::text = current_schema() AND hypertable_name::text = %s",
        (table,),
    ).fetchone()
    return bool(row and row[0])


def _record_policies(conn: psycopg.Connection[Any], db: DbSettings) -> None:
    """tf_storage_policies := the configuration (as written: NULL not set, 0 off; '*' the defaults).
    Skipped where migration 6 is not there (a test's shortened MIGRATIONS)."""
    if not _has_table(conn, "tf_storage_policies"):
        return
    rows = [("*", db.retention_days, db.compress_after_days)] + [
        (name, t.retention_days, t.compress_after_days) for name, t in sorted(db.tables.items())
    ]
    with conn.transaction():
        conn.execute(
            "DELETE FROM tf_storage_policies WHERE table_name <> ALL(%s)", ([name for name, _, _ in rows],)
        )
        for row in rows:
            conn.execute(
                "INSERT INTO tf_storage_policies (table_name, retention_days, compress_after_days) "
                "VALUES (%s, %s, %s) ON CONFLICT (table_name) DO UPDATE SET "
                "retention_days = EXCLUDED.retention_days, "
                "compress_after_days = EXCLUDED.compress_after_days, "
                "updated_at = now() WHERE (tf_storage_policies.retention_days, "
                "tf_storage_policies.compress_after_days) IS DISTINCT FROM "
                "(EXCLUDED.retention_days, EXCLUDED.compress_after_days)",
                row,
            )
