"""Storage modes and retention / compression policies without a database: the checksums that
existing databases hold, the configuration, and the TimescaleDB detection and policy reconcile
against a hand-written stub connection that answers catalog queries as a server would (this
machine has no TimescaleDB; tests/integration/test_storage.py runs them for real where it has)."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from libs.common.config import ConfigError, DbSettings, load_settings
from libs.common.storage.migrate import (
    MIGRATIONS,
    MigrationError,
    PolicyJob,
    TimescaleInfo,
    _legacy_policy_params,
    checksum,
    choose_mode,
    detect_mode,
    preloads_timescaledb,
    probe_timescaledb,
    reconcile_storage_policies,
    version_tuple,
)
from libs.common.storage.schema import TABLES

# What migrations 1-5 rendered before this change (native: any configuration; timescaledb: with
# db.retention_days / compress_after_days 90 / 2 and 30 / 7). Databases hold these checksums.
NATIVE = {
    1: "fc810b04e1b3d770292bfc43e6bf5b77ff4b0a51c4141a804deaf1fc1dac3844",
    2: "b329d73122e299534678d840bc6ce5deb562d1435603d2a1d50ad495838ba2fd",
    3: "c314275163c1d7f31598e96653c814b5008d3a39c2259af63eb5872a6ba2867d",
    4: "87f2452ecb905d085cb809cde14ded5a94954817a476e4345abb74de6a941abd",
    5: "16f1c405ac13485bc6784bbfffdac26ec948ba01cadf1133776b35494e32aff0",
}
TIMESCALE_90_2 = {
    1: "d69c52381725077b4eb62c43db3ded0a2fe7ad78436429ed5033691871bbcd69",
    3: "df9fbe4b6002b9ac25698eceb9e1e06fb5cf8b2f3a8eb3bebaaf545044451aa1",
    4: "f86088604f4549229efa9f1cfd9228a8f969c953589c7934dbc24b6b50e28318",
}
TIMESCALE_30_7 = {
    1: "df1c7ac308179bf9452189221aaab18ddb503de3e055d7caa5c3fc7a16a13a10",
    3: "2c1c79ab9a8d3f58b39884962f4a966e95c37acd507fa75b7c3aa627421515cc",
    4: "4ca0c9fc0cc7c1499e074cbca269fd62d4401c844636722097443ac88fb2bf1f",
}


# -- a stub connection -----------------------------------------------------------------------------
class Rows:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self.rows)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)


class StubConnection:
    """Answers a query with the rows of the first ``answers`` key found in its text (no rows
    otherwise), raises for ``fails`` keys, and records every statement it was given."""

    def __init__(
        self,
        answers: dict[str, list[tuple[Any, ...]]] | None = None,
        fails: dict[str, Exception] | None = None,
    ) -> None:
        self.answers = answers or {}
        self.fails = fails or {}
        self.ran: list[str] = []
        self.params: list[Any] = []
        self.rolled_back = False

    def execute(self, query: str, params: Any = None) -> Rows:
        text = " ".join(str(query).split())
        self.ran.append(text)
        self.params.append(params)
        for needle, exc in self.fails.items():
            if needle in text:
                raise exc
        for needle, rows in self.answers.items():
            if needle in text:
                return Rows(rows)
        return Rows([])

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        yield

    def rollback(self) -> None:
        self.rolled_back = True

    def __enter__(self) -> StubConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def ran_with(self, text: str) -> list[str]:
        return [q for q in self.ran if text in q]


def catalog(
    *, available: bool = True, preload: str | None = "timescaledb", version: str = "2.17.2"
) -> StubConnection:
    """The migrator's connection: pg_available_extensions and pg_settings (None: hidden)."""
    return StubConnection(
        {
            "pg_available_extensions": [(version, None)] if available else [],
            "pg_settings": [(preload,)] if preload is not None else [],
        }
    )


def second(license_: str | None = "timescale", version: str = "2.17.2", fails: Exception | None = None):
    """The probe's own connection, where CREATE EXTENSION runs and is rolled back."""
    conn = StubConnection(
        {"pg_extension": [(version,)], "timescaledb.license": [(license_,)]},
        {"CREATE EXTENSION": fails} if fails else None,
    )
    opened: list[StubConnection] = []

    def connect() -> StubConnection:
        opened.append(conn)
        return conn

    return connect, opened


def never() -> contextlib.AbstractContextManager[Any]:
    raise AssertionError("no second connection was needed")


PRELOAD_ERROR = psycopg.OperationalError(
    'extension "timescaledb" must be preloaded\nHINT:  Please preload the timescaledb library via '
    "shared_preload_libraries."
)


# -- checksums -------------------------------------------------------------------------------------
@pytest.mark.parametrize("db", [DbSettings(), DbSettings(retention_days=30, compress_after_days=7)])
def test_native_migrations_1_to_5_are_unchanged(db: DbSettings) -> None:
    assert {m.version: checksum(m.statements("native", db)) for m in MIGRATIONS[:5]} == NATIVE


@pytest.mark.parametrize(("old", "expected"), [((90, 2), TIMESCALE_90_2), ((30, 7), TIMESCALE_30_7)])
def test_the_legacy_timescaledb_rendering_is_what_databases_hold(
    old: tuple[int, int], expected: dict[int, str]
) -> None:
    assert {m.version: checksum(m.legacy("timescaledb", old)) for m in MIGRATIONS if m.legacy} == expected


def test_timescaledb_migrations_no_longer_carry_policies_or_tsl_features() -> None:
    for migration in MIGRATIONS:
        for statement in migration.statements("timescaledb", DbSettings(retention_days=1)):
            assert "policy" not in statement and "timescaledb.compress" not in statement


def test_migration_6_is_the_last_and_keeps_5() -> None:
    assert [(m.version, m.name) for m in MIGRATIONS][-2:] == [
        (5, "market-data sequences"),
        (6, "storage policies"),
    ]


def test_legacy_candidates_include_the_defaults_the_config_and_the_policies_in_place() -> None:
    jobs = StubConnection(
        {
            "timescaledb_information.jobs": [
                ("quotes", "policy_retention", dt.timedelta(days=45), None),
                ("quotes", "policy_compression", dt.timedelta(days=3), None),
            ]
        }
    )
    params = _legacy_policy_params(jobs, "timescaledb", DbSettings(retention_days=30))  # type: ignore[arg-type]
    assert {r for r, _ in params} == {30, 45, 90} and {c for _, c in params} == {2, 3}


# -- configuration ---------------------------------------------------------------------------------
def test_retention_and_compression_are_off_unless_asked() -> None:
    db = DbSettings()
    assert all(db.retention_for(t.name) is None and db.compression_for(t.name) is None for t in TABLES)


def test_a_table_setting_beats_the_default_and_zero_turns_it_off() -> None:
    db = DbSettings(
        retention_days=30,
        compress_after_days=2,
        tables={
            "quotes": {"retention_days": 7},
            "audit_events": {"retention_days": 0, "compress_after_days": 0},
        },
    )
    assert (db.retention_for("quotes"), db.compression_for("quotes")) == (7, 2)
    assert (db.retention_for("audit_events"), db.compression_for("audit_events")) == (None, None)
    assert (db.retention_for("fills"), db.compression_for("fills")) == (30, 2)


def test_an_unknown_table_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEFLEET_DB__TABLES", '{"quote": {"retention_days": 3}}')
    with pytest.raises(ConfigError, match="unknown time-series table"):
        load_settings(None)
    monkeypatch.setenv("TRADEFLEET_DB__TABLES", '{"quotes": {"retention_days": 3}}')
    assert load_settings(None).db.retention_for("quotes") == 3


# -- detection -------------------------------------------------------------------------------------
def test_versions_and_preload_lists_are_read_as_the_server_writes_them() -> None:
    assert version_tuple("2.13.0") == (2, 13, 0) and version_tuple("2.14.0-dev") == (2, 14, 0)
    assert version_tuple(None) == () and version_tuple("2.9.3") < (2, 13)
    assert preloads_timescaledb("pg_stat_statements, timescaledb")
    assert preloads_timescaledb('"$libdir/timescaledb"')
    assert not preloads_timescaledb("pg_stat_statements")
    assert not preloads_timescaledb("timescaledb_toolkit") and not preloads_timescaledb("")


def test_no_extension_auto_is_native_and_timescaledb_is_refused() -> None:
    info = probe_timescaledb(catalog(available=False), never)  # type: ignore[arg-type]
    assert info == TimescaleInfo(available=False)
    mode, why = choose_mode("auto", info, DbSettings())
    assert mode == "native" and "not installed" in why
    with pytest.raises(MigrationError, match="storage_mode=timescaledb but the timescaledb extension is not"):
        choose_mode("timescaledb", info, DbSettings())


def test_not_preloaded_is_seen_in_pg_settings_without_trying_create_extension() -> None:
    conn = catalog(preload="pg_stat_statements")
    mode, why, info = detect_mode(conn, "auto", never, DbSettings())  # type: ignore[arg-type]
    assert mode == "native" and "shared_preload_libraries" in why and info and info.preloaded is False
    assert not conn.ran_with("CREATE EXTENSION")
    with pytest.raises(MigrationError, match="must be preloaded"):
        detect_mode(catalog(preload="pg_stat_statements"), "timescaledb", never, DbSettings())  # type: ignore[arg-type]


def test_not_preloaded_where_pg_settings_is_hidden_is_learnt_on_a_second_connection() -> None:
    connect, opened = second(fails=PRELOAD_ERROR)
    conn = catalog(preload=None)  # a role without pg_read_all_settings sees no row
    mode, why, info = detect_mode(conn, "auto", connect, DbSettings())  # type: ignore[arg-type]
    assert opened and mode == "native" and "shared_preload_libraries" in why
    assert info is not None and info.preloaded is False
    assert not conn.ran_with("CREATE EXTENSION")  # the FATAL ended the probe's session, not this one


def test_another_create_extension_failure_is_named() -> None:
    connect, _ = second(fails=psycopg.errors.InsufficientPrivilege("permission denied to create extension"))
    info = probe_timescaledb(catalog(), connect)  # type: ignore[arg-type]
    assert info.unusable() == "CREATE EXTENSION timescaledb failed: permission denied to create extension"
    assert choose_mode("auto", info, DbSettings())[0] == "native"


def test_preloaded_with_tsl_is_timescaledb_and_the_probe_keeps_nothing() -> None:
    connect, opened = second(license_="timescale", version="2.17.2")
    conn = catalog()
    mode, _, info = detect_mode(conn, "auto", connect, DbSettings())  # type: ignore[arg-type]
    assert mode == "timescaledb" and info == TimescaleInfo(True, True, "2.17.2", "timescale")
    assert opened[0].rolled_back and opened[0].ran_with("CREATE EXTENSION IF NOT EXISTS timescaledb")
    assert conn.ran_with("CREATE EXTENSION IF NOT EXISTS timescaledb")  # now for real, on this one


def test_the_apache_license_auto_is_native_and_explicit_is_apache_hypertables() -> None:
    connect, _ = second(license_="apache")
    info = probe_timescaledb(catalog(), connect)  # type: ignore[arg-type]
    mode, why = choose_mode("auto", info, DbSettings())
    assert mode == "native" and "timescaledb.license is 'apache'" in why
    assert choose_mode("timescaledb", info, DbSettings())[0] == "timescaledb"


def test_before_2_13_auto_is_native_only_when_retention_or_compression_is_asked() -> None:
    info = TimescaleInfo(True, True, "2.12.2", "timescale")
    assert choose_mode("auto", info, DbSettings())[0] == "timescaledb"
    mode, why = choose_mode("auto", info, DbSettings(tables={"quotes": {"retention_days": 3}}))
    assert mode == "native" and "2.13" in why


def test_native_asked_is_native_without_looking() -> None:
    assert detect_mode(StubConnection(), "native", never)[0] == "native"  # type: ignore[arg-type]


# -- policies --------------------------------------------------------------------------------------
def timescale_db(jobs: list[PolicyJob] | None = None, compression_enabled: bool = False) -> StubConnection:
    return StubConnection(
        {
            "to_regclass": [(True,)],
            "timescaledb_information.jobs": [
                (j.table, j.proc, j.after, j.created_before) for j in jobs or []
            ],
            "timescaledb_information.hypertables": [(compression_enabled,)],
        }
    )


TSL = TimescaleInfo(True, True, "2.17.2", "timescale")
APACHE = TimescaleInfo(True, True, "2.17.2", "apache")
LEGACY = [
    job
    for t in TABLES
    for job in (
        PolicyJob(t.name, "policy_compression", dt.timedelta(days=2), None),
        PolicyJob(t.name, "policy_retention", dt.timedelta(days=90), None),
    )
]


def reconcile(conn: StubConnection, mode: str, db: DbSettings, info: TimescaleInfo | None) -> list[str]:
    return reconcile_storage_policies(conn, mode, db, info)  # type: ignore[arg-type]


def test_the_old_default_policies_go_and_only_asked_ones_come_by_write_time() -> None:
    conn = timescale_db(LEGACY)
    db = DbSettings(tables={"quotes": {"retention_days": 30}})
    actions = reconcile(conn, "timescaledb", db, TSL)
    assert len(conn.ran_with("remove_retention_policy(%s::regclass, if_exists => true)")) == len(TABLES)
    assert len(conn.ran_with("remove_compression_policy(%s::regclass, if_exists => true)")) == len(TABLES)
    (added,) = conn.ran_with("add_retention_policy")
    assert "drop_created_before => make_interval(days => %s::int)" in added and "drop_after" not in added
    assert conn.params[conn.ran.index(added)] == ("quotes", 30)
    assert not conn.ran_with("add_compression_policy")
    assert "quotes: retention after 30 days from write time" in actions


def test_policies_that_already_match_are_left_alone() -> None:
    jobs = [
        PolicyJob("quotes", "policy_retention", None, dt.timedelta(days=30)),
        PolicyJob("quotes", "policy_compression", None, dt.timedelta(days=2)),
    ]
    conn = timescale_db(jobs, compression_enabled=True)
    db = DbSettings(tables={"quotes": {"retention_days": 30, "compress_after_days": 2}})
    assert reconcile(conn, "timescaledb", db, TSL) == []
    assert not conn.ran_with("_policy(")


def test_compression_is_switched_on_only_for_a_table_that_asks() -> None:
    conn = timescale_db([], compression_enabled=False)
    reconcile(conn, "timescaledb", DbSettings(tables={"trades": {"compress_after_days": 4}}), TSL)
    (alter,) = conn.ran_with("ALTER TABLE")
    assert alter.startswith("ALTER TABLE trades SET (timescaledb.compress, timescaledb.compress_segmentby")
    (added,) = conn.ran_with("add_compression_policy")
    assert "compress_created_before => make_interval(days => %s::int)" in added
    assert "compress_after" not in added.replace("compress_created_before", "")


def test_compression_under_the_apache_license_is_refused_naming_it() -> None:
    with pytest.raises(MigrationError, match=r"timescaledb\.license is 'apache': compression is a TSL"):
        reconcile(timescale_db(), "timescaledb", DbSettings(compress_after_days=2), APACHE)


def test_retention_under_the_apache_license_is_left_to_db_prune() -> None:
    conn = timescale_db()
    actions = reconcile(conn, "timescaledb", DbSettings(tables={"fills": {"retention_days": 9}}), APACHE)
    assert actions == ["retention by `tradefleet db prune` (drop_chunks, Apache): fills"]
    assert not conn.ran_with("_policy(")


def test_before_2_13_policies_are_refused_rather_than_made_by_event_time() -> None:
    old = TimescaleInfo(True, True, "2.12.2", "timescale")
    with pytest.raises(MigrationError, match=r"only has event-time policies .* need 2\.13"):
        reconcile(timescale_db(), "timescaledb", DbSettings(retention_days=30), old)
    conn = timescale_db(LEGACY)  # nothing asked: the old defaults still go
    assert reconcile(conn, "timescaledb", DbSettings(), old)
    assert not conn.ran_with("add_") and conn.ran_with("remove_retention_policy")


def test_native_mode_records_the_policy_and_compression_is_only_warned_about() -> None:
    conn = StubConnection({"to_regclass": [(True,)]})
    db = DbSettings(retention_days=5, tables={"quotes": {"compress_after_days": 1}})
    assert reconcile(conn, "native", db, None) == [
        f"retention by `tradefleet db prune`: {', '.join(t.name for t in TABLES)}"
    ]
    inserted = [
        p for q, p in zip(conn.ran, conn.params, strict=True) if "INSERT INTO tf_storage_policies" in q
    ]
    assert inserted == [("*", 5, None), ("quotes", None, 1)]
    assert not conn.ran_with("_policy(") and not conn.ran_with("ALTER TABLE")
