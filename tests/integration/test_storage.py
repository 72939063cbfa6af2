"""Storage on real PostgreSQL, in each mode the server offers: idempotent migrations, the binary
COPY round trip, and retention / compression that are opt-in per table and count from write time.

Every test that is about behaviour common to both modes runs once per mode: ``native`` always,
``timescaledb`` where the server has the extension preloaded (skipped, saying why, where not).
So `make test` exercises TimescaleDB on a server that has it (TRADEFLEET_TEST_DB_URL).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from libs.common.config import DbSettings
from libs.common.storage import migrate as migrate_module
from libs.common.storage import retention
from libs.common.storage.migrate import (
    MIGRATIONS,
    Migration,
    MigrationError,
    TimescaleInfo,
    checksum,
    migrate,
    policy_jobs,
    probe_timescaledb,
)
from libs.common.storage.retention import prune, retention_by_table
from libs.common.storage.schema import OFFSETS_TABLE, TABLES, pg_time
from libs.common.storage.writer import BatchWriter
from proto.execution import Fill
from services.recorder.core import SINGLE_ROW, build_rows, table_of
from tests.kit.samples import T0, sample_events

DAY_NS = 86_400 * 10**9
TODAY = dt.datetime.now(dt.UTC).date()


@pytest.fixture(scope="session")
def server_timescaledb(pg_server: str) -> TimescaleInfo:
    """What the test server's TimescaleDB offers (the probe's CREATE EXTENSION is rolled back)."""
    with psycopg.connect(pg_server, autocommit=True) as conn:
        return probe_timescaledb(conn, lambda: psycopg.connect(pg_server))


@pytest.fixture
def retention_mode(mode: str, server_timescaledb: TimescaleInfo) -> str:
    """``mode``, for a test that configures retention: TimescaleDB before 2.13 refuses it
    (no creation-time policies; see tests/unit/test_storage_policies.py)."""
    if mode == "timescaledb" and not server_timescaledb.created_time_policies:
        pytest.skip(f"TimescaleDB {server_timescaledb.version} has no creation-time retention")
    return mode


@pytest.fixture(params=["native", "timescaledb"])
def mode(request: pytest.FixtureRequest, server_timescaledb: TimescaleInfo) -> str:
    if request.param == "timescaledb":
        problem = server_timescaledb.unusable()
        if problem:
            pytest.skip(f"timescaledb mode not offered by the test server: {problem}")
    return str(request.param)


def settings(mode: str, **kwargs: Any) -> DbSettings:
    return DbSettings(storage_mode=mode, **kwargs)


def fill(exec_id: str, ts: int) -> tuple[Any, ...]:
    event = Fill(
        ts_event=ts,
        ts_init=T0,
        exec_id=exec_id,
        client_order_id="c",
        symbol="X",
        side="BUY",
        quantity=1,
        price=1.0,
    )
    return SINGLE_ROW[Fill][1](event)


def write_replayed_fills(dsn: str) -> None:
    """Three fills of a replayed 2013 week, written now: 10-08, 10-09 and 10-13."""
    writer = BatchWriter(dsn)
    writer.write({"fills": [fill(f"e{d}", T0 + d * DAY_NS) for d in (0, 1, 5)]}, {}, "recorder")
    writer.close()


def exec_ids(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT exec_id FROM fills ORDER BY exec_id")]


def license_of(dsn: str) -> str | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()
    return row[0] if row else None


# -- migrations ----------------------------------------------------------------------------------
def test_migrations_are_idempotent_and_say_their_mode(pg_dsn: str, mode: str) -> None:
    assert migrate(pg_dsn, settings(mode)) == (mode, [m.version for m in MIGRATIONS])
    assert migrate(pg_dsn, settings(mode)) == (mode, [])
    assert migrate(pg_dsn, DbSettings()) == (mode, [])  # the database's mode, whatever auto would say
    with psycopg.connect(pg_dsn) as conn:
        for table in TABLES:
            if mode == "native":
                kind = conn.execute(
                    "SELECT relkind FROM pg_class WHERE relname = %s", (table.name,)
                ).fetchone()
                assert kind == ("p",), f"{table.name} is not a partitioned table"
            else:
                row = conn.execute(
                    "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = %s",
                    (table.name,),
                ).fetchone()
                assert row is not None, f"{table.name} is not a hypertable"


def test_auto_takes_what_the_server_offers(pg_dsn: str, server_timescaledb: TimescaleInfo) -> None:
    expected = (
        "timescaledb"
        if server_timescaledb.unusable() is None and server_timescaledb.tsl
        else "native"  # no extension, not preloaded, or the Apache license: logged, not an error
    )
    assert migrate(pg_dsn, DbSettings())[0] == expected


def test_storage_mode_timescaledb_is_refused_naming_why(
    pg_dsn: str, server_timescaledb: TimescaleInfo
) -> None:
    problem = server_timescaledb.unusable()
    if problem is None:
        pytest.skip("the test server offers TimescaleDB")
    with pytest.raises(MigrationError, match="storage_mode=timescaledb but ") as raised:
        migrate(pg_dsn, DbSettings(storage_mode="timescaledb"))
    assert problem in str(raised.value)
    with psycopg.connect(pg_dsn) as conn:  # nothing recorded: a later run may still choose
        assert conn.execute("SELECT count(*) FROM tf_meta").fetchone() == (0,)


def test_an_edited_migration_is_refused(pg_dsn: str, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    migrate(pg_dsn, settings(mode))
    edited = (MIGRATIONS[0], Migration(2, "recorder offsets", lambda mode, db: ["SELECT 1"]))
    monkeypatch.setattr(migrate_module, "MIGRATIONS", edited)
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(pg_dsn, settings(mode))


def test_a_migration_applied_with_its_earlier_rendering_is_recognised(
    pg_dsn: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What lets a database migrated in timescaledb mode before migration 6 (event-time policies
    of db.retention_days in migrations 1, 3 and 4) keep migrating: its checksum is recognised as
    the old rendering with some parameters, kept, and the parameters noted for later runs."""
    migrate(pg_dsn, settings(mode))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # as if applied with 45 days
        conn.execute("UPDATE schema_migrations SET checksum = %s WHERE version = 2", (checksum(["45"]),))
    earlier = Migration(
        2, "recorder offsets", lambda mode, db: [OFFSETS_TABLE], lambda mode, old: [str(old[0])]
    )
    monkeypatch.setattr(migrate_module, "MIGRATIONS", (MIGRATIONS[0], earlier, *MIGRATIONS[2:]))
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(pg_dsn, settings(mode))  # 90 (the old default) is not it
    assert migrate(pg_dsn, settings(mode, retention_days=45)) == (mode, [])  # the configured 45 is
    assert migrate(pg_dsn, settings(mode)) == (mode, [])  # and is remembered once configured away
    with psycopg.connect(pg_dsn) as conn:
        stored = conn.execute("SELECT checksum FROM schema_migrations WHERE version = 2").fetchone()
        note = conn.execute("SELECT value FROM tf_meta WHERE key = 'migration_2_legacy_policies'").fetchone()
    assert stored == (checksum(["45"]),)  # what was applied: an older tradefleet still matches it
    assert note == ("45,2",)


def test_a_native_database_from_before_migration_6_keeps_its_partitions(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Native-only by subject: partitions made before creation times were recorded count from the
    upgrade, and the writer's partition function records them from then on."""
    monkeypatch.setattr(migrate_module, "MIGRATIONS", MIGRATIONS[:5])
    assert migrate(pg_dsn, DbSettings(storage_mode="native"))[1] == [1, 2, 3, 4, 5]
    write_replayed_fills(pg_dsn)
    monkeypatch.setattr(migrate_module, "MIGRATIONS", MIGRATIONS)
    assert migrate(pg_dsn, DbSettings(storage_mode="native", retention_days=3))[1] == [6]
    writer = BatchWriter(pg_dsn)
    writer.write({"fills": [fill("e9", T0 + 9 * DAY_NS)]}, {}, "recorder")  # a new day partition
    writer.close()
    with psycopg.connect(pg_dsn) as conn:
        made = conn.execute("SELECT partition_name FROM tf_partitions ORDER BY 1").fetchall()
        fresh = conn.execute("SELECT bool_and(created_at > now() - interval '1 hour') FROM tf_partitions")
        assert fresh.fetchone() == (True,)
    assert [m[0] for m in made] == [f"fills_p201310{d}" for d in ("08", "09", "13", "17")]
    assert prune(pg_dsn, None, TODAY) == []  # 3 days, counted from the upgrade: all kept


# -- the COPY path -------------------------------------------------------------------------------
def test_copy_round_trip_keeps_values_and_exact_timestamps(pg_dsn: str, mode: str) -> None:
    migrate(pg_dsn, settings(mode))
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
        if mode == "native":  # landed in its day partition, not in DEFAULT
            part = conn.execute("SELECT count(*) FROM quotes_p20131008").fetchone()
        else:  # landed in a chunk of that day
            part = conn.execute(
                "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'quotes' "
                "AND range_start <= '2013-10-08 14:00Z' AND range_end > '2013-10-08 14:00Z'"
            ).fetchone()
    expected = dt.datetime.fromtimestamp(T0 / 1e9, dt.UTC)
    assert ts == expected and price == 182.07 and commission == 0.35
    assert ctx == ({"max": "500"},)
    assert part == (1,)
    writer.close()


def test_sub_microsecond_times_truncate_not_round(pg_dsn: str, mode: str) -> None:
    migrate(pg_dsn, settings(mode))
    writer = BatchWriter(pg_dsn)
    event = Fill(
        ts_event=T0 + 1999,
        ts_init=T0,
        exec_id="e",
        client_order_id="c",
        symbol="X",
        side="SELL",
        quantity=1,
        price=1.0,
    )
    writer.write({"fills": [SINGLE_ROW[Fill][1](event)]}, {}, "recorder")
    with psycopg.connect(pg_dsn) as conn:
        ts = conn.execute("SELECT ts FROM fills").fetchone()[0]  # type: ignore[index]
    assert ts.microsecond == (T0 // 1000 + 1) % 1_000_000
    assert pg_time(T0 + 1999) == pg_time(T0) + 1
    writer.close()


# -- retention and compression -------------------------------------------------------------------
def test_nothing_is_dropped_or_compressed_unless_asked(pg_dsn: str, mode: str) -> None:
    migrate(pg_dsn, settings(mode))
    write_replayed_fills(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        recorded = conn.execute("SELECT * FROM tf_storage_policies").fetchall()
        assert [r[:3] for r in recorded] == [("*", None, None)]
        assert retention_by_table(conn, None) == {}
        if mode == "timescaledb":
            assert policy_jobs(conn) == []
    assert prune(pg_dsn, None, TODAY + dt.timedelta(days=3650)) == []
    assert exec_ids(pg_dsn) == ["e0", "e1", "e5"]


def test_per_table_settings_beat_the_default_and_follow_the_config(pg_dsn: str, retention_mode: str) -> None:
    mode = retention_mode
    db = settings(
        mode,
        retention_days=30,
        tables={"fills": {"retention_days": 0}, "quotes": {"retention_days": 5}},
    )
    migrate(pg_dsn, db)
    with psycopg.connect(pg_dsn) as conn:
        kept = retention_by_table(conn, None)
        assert kept == {t.name: 5 if t.name == "quotes" else 30 for t in TABLES if t.name != "fills"}
        assert retention_by_table(conn, 7)["trades"] == 7  # --days stands in for the default
        assert retention_by_table(conn, 7)["quotes"] == 5 and "fills" not in retention_by_table(conn, 7)
        if mode == "timescaledb" and license_of(pg_dsn) == "timescale":
            jobs = {j.table: j for j in policy_jobs(conn)}
            assert set(jobs) == set(kept) and jobs["quotes"].created_before == dt.timedelta(days=5)
            assert all(j.after is None and j.proc == "policy_retention" for j in jobs.values())
    migrate(pg_dsn, settings(mode, tables={"quotes": {"retention_days": 6}}))  # the config changed
    with psycopg.connect(pg_dsn) as conn:
        assert retention_by_table(conn, None) == {"quotes": 6}
        if mode == "timescaledb" and license_of(pg_dsn) == "timescale":
            assert [(j.table, j.created_before) for j in policy_jobs(conn)] == [
                ("quotes", dt.timedelta(days=6))
            ]


def test_a_replayed_day_is_kept_and_retention_counts_from_its_write(pg_dsn: str, retention_mode: str) -> None:
    mode = retention_mode
    migrate(pg_dsn, settings(mode, tables={"fills": {"retention_days": 3}}))
    write_replayed_fills(pg_dsn)  # 2013 days, written now
    assert prune(pg_dsn, None, TODAY) == []
    assert exec_ids(pg_dsn) == ["e0", "e1", "e5"]
    if mode == "native":
        with psycopg.connect(pg_dsn) as conn:  # as if 10-08 and 10-09 had been written 10 days ago
            conn.execute(
                "UPDATE tf_partitions SET created_at = now() - interval '10 days' "
                "WHERE partition_name IN ('fills_p20131008', 'fills_p20131009')"
            )
        assert prune(pg_dsn, None, TODAY, dry_run=True) == ["fills_p20131008", "fills_p20131009"]
        assert prune(pg_dsn, None, TODAY) == ["fills_p20131008", "fills_p20131009"]
        assert prune(pg_dsn, None, TODAY) == []
        with psycopg.connect(pg_dsn) as conn:
            default_exists = conn.execute("SELECT to_regclass('fills_default') IS NOT NULL").fetchone()
        assert default_exists == (True,)
    else:
        _age_chunks_and_run_retention(pg_dsn)
    assert exec_ids(pg_dsn) == ["e5"]


def _age_chunks_and_run_retention(dsn: str) -> None:
    """TimescaleDB: make the chunks of 10-08 and 10-09 ten days old (a superuser may write the
    catalog), then run the retention policy (TSL) or `db prune` (Apache)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE _timescaledb_catalog.chunk AS c SET creation_time = now() - interval '10 days' "
            "FROM timescaledb_information.chunks AS i "
            "WHERE i.hypertable_name = 'fills' AND c.schema_name = i.chunk_schema "
            "AND c.table_name = i.chunk_name AND i.range_start < '2013-10-10'"
        )
        if license_of(dsn) == "timescale":
            assert prune(dsn, None, TODAY) == []  # the policy's job, not prune's
            job = conn.execute(
                "SELECT job_id FROM timescaledb_information.jobs "
                "WHERE proc_name = 'policy_retention' AND hypertable_name = 'fills'"
            ).fetchone()
            assert job is not None
            conn.execute("CALL run_job(%s)", job)
        else:
            assert len(prune(dsn, None, TODAY, dry_run=True)) == 2
            assert len(prune(dsn, None, TODAY)) == 2


def test_a_timescaledb_database_from_before_migration_6_loses_its_default_policies(
    pg_dsn: str, server_timescaledb: TimescaleInfo
) -> None:
    """Made as the old code made it (migrations 1, 3 and 4 with event-time policies of 90 and 2
    days on every table), then migrated by this one: accepted, and left with only the policies
    the configuration asks for."""
    if server_timescaledb.unusable() or not server_timescaledb.tsl:
        pytest.skip("needs TimescaleDB with the TSL license (policies)")
    if not server_timescaledb.created_time_policies:
        pytest.skip(f"TimescaleDB {server_timescaledb.version} has no creation-time policies")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.execute(
            "CREATE TABLE schema_migrations (version int PRIMARY KEY, name text NOT NULL, "
            "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute("CREATE TABLE tf_meta (key text PRIMARY KEY, value text NOT NULL)")
        conn.execute("INSERT INTO tf_meta VALUES ('storage_mode', 'timescaledb')")
        for migration in MIGRATIONS[:5]:
            old = (
                migration.legacy("timescaledb", (90, 2))
                if migration.legacy
                else migration.statements("timescaledb", DbSettings())
            )
            for statement in old:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, checksum(old)),
            )
        assert len(policy_jobs(conn)) == 2 * len(TABLES)
    db = DbSettings(tables={"quotes": {"retention_days": 30, "compress_after_days": 2}})
    assert migrate(pg_dsn, db) == ("timescaledb", [6])
    assert migrate(pg_dsn, db) == ("timescaledb", [])
    with psycopg.connect(pg_dsn) as conn:
        jobs = [(j.table, j.proc, j.after, j.created_before) for j in policy_jobs(conn)]
        notes = conn.execute("SELECT key FROM tf_meta WHERE key LIKE 'migration%' ORDER BY 1").fetchall()
    assert jobs == [
        ("quotes", "policy_compression", None, dt.timedelta(days=2)),
        ("quotes", "policy_retention", None, dt.timedelta(days=30)),
    ]
    assert notes == [
        ("migration_1_legacy_policies",),
        ("migration_3_legacy_policies",),
        ("migration_4_legacy_policies",),
    ]


# -- TimescaleDB's SQL against a stand-in catalog -------------------------------------------------
# This machine has no TimescaleDB. So that the policy and pruning SQL is still run by a real
# server (named arguments, casts, the jobs query, interval comparisons), these stand-ins take its
# place: timescaledb_information.jobs / .hypertables as tables, and the policy, show_chunks and
# drop_chunks functions with TimescaleDB 2.13's argument names, recording into the jobs table the
# config keys TimescaleDB writes. They check the SQL's shape, not TimescaleDB's behaviour.
STAND_IN = """
CREATE SCHEMA timescaledb_information;
CREATE TABLE timescaledb_information.jobs (
    job_id serial, proc_name name, config jsonb, hypertable_schema name, hypertable_name name);
CREATE TABLE timescaledb_information.hypertables (
    hypertable_schema name, hypertable_name name, compression_enabled bool);
CREATE FUNCTION _job(proc name, rel regclass, config jsonb) RETURNS int LANGUAGE sql AS $$
    INSERT INTO timescaledb_information.jobs (proc_name, config, hypertable_schema, hypertable_name)
    SELECT proc, jsonb_strip_nulls(config), n.nspname, c.relname
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel RETURNING job_id $$;
CREATE FUNCTION _unjob(proc name, rel regclass) RETURNS void LANGUAGE sql AS $$
    DELETE FROM timescaledb_information.jobs
    WHERE proc_name = proc AND hypertable_name = (SELECT relname FROM pg_class WHERE oid = rel) $$;
CREATE FUNCTION add_retention_policy(relation regclass, drop_after interval = NULL,
    if_not_exists bool = false, schedule_interval interval = NULL, initial_start timestamptz = NULL,
    timezone text = NULL, drop_created_before interval = NULL) RETURNS int LANGUAGE sql AS $$
    SELECT _job('policy_retention', relation, jsonb_build_object(
        'drop_after', drop_after::text, 'drop_created_before', drop_created_before::text)) $$;
CREATE FUNCTION add_compression_policy(hypertable regclass, compress_after interval = NULL,
    if_not_exists bool = false, schedule_interval interval = NULL, initial_start timestamptz = NULL,
    timezone text = NULL, compress_created_before interval = NULL) RETURNS int LANGUAGE sql AS $$
    SELECT _job('policy_compression', hypertable, jsonb_build_object(
        'compress_after', compress_after::text, 'compress_created_before', compress_created_before::text)) $$;
CREATE FUNCTION remove_retention_policy(relation regclass, if_exists bool = false) RETURNS void
    LANGUAGE sql AS $$ SELECT _unjob('policy_retention', relation) $$;
CREATE FUNCTION remove_compression_policy(hypertable regclass, if_exists bool = false) RETURNS bool
    LANGUAGE sql AS $$ SELECT _unjob('policy_compression', hypertable); SELECT true $$;
CREATE FUNCTION show_chunks(relation regclass, older_than timestamptz = NULL,
    newer_than timestamptz = NULL, created_before timestamptz = NULL, created_after timestamptz = NULL)
    RETURNS SETOF regclass LANGUAGE sql AS $$ SELECT relation WHERE created_before < now() $$;
CREATE FUNCTION drop_chunks(relation regclass, older_than timestamptz = NULL,
    newer_than timestamptz = NULL, verbose bool = false, created_before timestamptz = NULL,
    created_after timestamptz = NULL) RETURNS SETOF text LANGUAGE sql AS $$
    SELECT relation::text || '_chunk' WHERE created_before < now() $$;
"""
TSL_2_17 = TimescaleInfo(True, True, "2.17.2", "timescale")


@pytest.fixture
def stand_in(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    migrate(pg_dsn, DbSettings(storage_mode="native"))  # the tables and tf_storage_policies
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(STAND_IN)
        conn.execute(
            "INSERT INTO timescaledb_information.hypertables SELECT current_schema(), t, true "
            "FROM unnest(%s::text[]) AS t",
            ([t.name for t in TABLES],),
        )
        yield conn


def test_the_policy_sql_runs_and_replaces_the_old_default_policies(stand_in: psycopg.Connection[Any]) -> None:
    for migration in MIGRATIONS:  # the old migrations' policies, as they rendered them
        for statement in migration.legacy("timescaledb", (90, 2)) if migration.legacy else []:
            if statement.startswith("SELECT add_"):
                stand_in.execute(statement)
    assert {(j.proc, j.after, j.created_before) for j in policy_jobs(stand_in)} == {
        ("policy_retention", dt.timedelta(days=90), None),
        ("policy_compression", dt.timedelta(days=2), None),
    }
    assert (90, 2) in migrate_module._legacy_policy_params(stand_in, "timescaledb", DbSettings())
    db = DbSettings(tables={"quotes": {"retention_days": 30, "compress_after_days": 2}})
    actions = migrate_module.reconcile_storage_policies(stand_in, "timescaledb", db, TSL_2_17)
    assert "quotes: retention after 30 days from write time" in actions
    assert [(j.table, j.proc, j.after, j.created_before) for j in policy_jobs(stand_in)] == [
        ("quotes", "policy_compression", None, dt.timedelta(days=2)),
        ("quotes", "policy_retention", None, dt.timedelta(days=30)),
    ]
    assert migrate_module.reconcile_storage_policies(stand_in, "timescaledb", db, TSL_2_17) == []
    db = DbSettings(retention_days=7, tables={"quotes": {"retention_days": 0}})
    migrate_module.reconcile_storage_policies(stand_in, "timescaledb", db, TSL_2_17)
    jobs = policy_jobs(stand_in)
    assert {j.table for j in jobs} == {t.name for t in TABLES} - {"quotes"}
    assert {(j.proc, j.created_before) for j in jobs} == {("policy_retention", dt.timedelta(days=7))}


def test_db_prune_in_timescaledb_mode_calls_drop_chunks_by_creation_time_and_only_on_apache(
    stand_in: psycopg.Connection[Any], pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in.execute("UPDATE tf_meta SET value = 'timescaledb' WHERE key = 'storage_mode'")
    migrate_module._record_policies(stand_in, DbSettings(tables={"fills": {"retention_days": 3}}))
    dbname = pg_dsn.rsplit("/", 1)[1]
    stand_in.execute(f"ALTER DATABASE {dbname} SET timescaledb.license = 'apache'")
    # No timescaledb in pg_extension here: an unknown version, as one before 2.13, is refused.
    with pytest.raises(retention.RetentionError, match="refusing to prune by event time"):
        prune(pg_dsn, None, TODAY)
    monkeypatch.setattr(retention, "CREATED_TIME_POLICIES_SINCE", ())
    assert prune(pg_dsn, None, TODAY, dry_run=True) == ["fills"]  # show_chunks(created_before => ...)
    assert prune(pg_dsn, None, TODAY) == ["fills_chunk"]  # drop_chunks(created_before => ...)
    stand_in.execute(f"ALTER DATABASE {dbname} SET timescaledb.license = 'timescale'")
    assert prune(pg_dsn, None, TODAY) == []  # the retention policies' job
