"""Tables of the time-series store, declared once and rendered for either storage mode.

- ``timescaledb``: hypertables chunked by day; compression and retention are not part of the
  schema but policies that `db migrate` reconciles with the configuration (migrate.py);
- ``native``: PostgreSQL declarative range partitioning by day (a DEFAULT partition catches
  anything a day partition was not made for), used on plain PostgreSQL such as the dev machines;
  retention is `tradefleet db prune` (retention.py).
"""

from __future__ import annotations

from dataclasses import dataclass

PG_EPOCH_OFFSET_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds
DAY_US = 86_400_000_000


def pg_time(ts_ns: int) -> int:
    """Unix ns -> PostgreSQL's binary timestamptz (int64 microseconds since 2000-01-01).

    The COPY writer sends this integer as an 8-byte field under a timestamptz column: the binary
    layouts are identical, and it avoids building a datetime per row (about 1 us each)."""
    return ts_ns // 1000 - PG_EPOCH_OFFSET_US


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    copy_type: str  # type psycopg dumps in binary COPY (int8 for timestamptz, see pg_time)


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    segment_by: str  # TimescaleDB compression segment column
    time_column: str = "ts"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def copy_types(self) -> list[str]:
        return [c.copy_type for c in self.columns]


def _ts(name: str) -> Column:
    return Column(name, "timestamptz NOT NULL", "int8")


def _c(name: str, sql_type: str, copy_type: str | None = None) -> Column:
    return Column(name, sql_type, copy_type or sql_type.split(maxsplit=1)[0])


TABLES: tuple[Table, ...] = (
    Table(
        "quotes",
        (
            _ts("ts"),
            _c("symbol", "text NOT NULL"),
            _c("bid", "float8"),
            _c("ask", "float8"),
            _c("bid_size", "int8"),
            _c("ask_size", "int8"),
            _c("venue", "text"),
            _c("flags", "int4"),
            _ts("ts_init"),
        ),
        "symbol",
    ),
    Table(
        "trades",
        (
            _ts("ts"),
            _c("symbol", "text NOT NULL"),
            _c("price", "float8"),
            _c("size", "int8"),
            _c("venue", "text"),
            _c("conditions", "int8"),
            _c("aggressor", "int2"),
            _c("flags", "int4"),
            _ts("ts_init"),
        ),
        "symbol",
    ),
    Table(
        "bars",
        (
            _ts("ts"),
            _c("symbol", "text NOT NULL"),
            _c("timeframe", "text NOT NULL"),
            _c("open", "float8"),
            _c("high", "float8"),
            _c("low", "float8"),
            _c("close", "float8"),
            _c("volume", "int8"),
            _c("trade_count", "int8"),
            _c("vwap", "float8"),
            _ts("ts_init"),
        ),
        "symbol",
    ),
    Table(
        "order_intents",
        (
            _ts("ts"),
            _c("intent_id", "text NOT NULL"),
            _c("symbol", "text NOT NULL"),
            _c("side", "text"),
            _c("quantity", "float8"),
            _c("order_type", "text"),
            _c("limit_price", "float8"),
            _c("stop_price", "float8"),
            _c("tif", "text"),
            _c("reason", "text"),
            _c("score", "float8"),
            _ts("ts_init"),
        ),
        "symbol",
    ),
    Table(
        "orders",
        (
            _ts("ts"),
            _c("client_order_id", "text NOT NULL"),
            _c("intent_id", "text"),
            _c("symbol", "text NOT NULL"),
            _c("side", "text"),
            _c("quantity", "float8"),
            _c("order_type", "text"),
            _c("limit_price", "float8"),
            _c("stop_price", "float8"),
            _c("tif", "text"),
            _ts("ts_init"),
        ),
        "symbol",
    ),
    Table(
        "order_denials",
        (
            _ts("ts"),
            _c("intent_id", "text NOT NULL"),
            _c("symbol", "text NOT NULL"),
            _c("code", "text NOT NULL"),
            _c("context", "jsonb"),
            _ts("ts_init"),
        ),
        "symbol",
    ),
    Table(
        "order_events",
        (
            _ts("ts"),
            _c("client_order_id", "text NOT NULL"),
            _c("seq", "int8"),
            _c("symbol", "text NOT NULL"),
            _c("status", "text"),
            _c("side", "text"),
            _c("quantity", "float8"),
            _c("filled_quantity", "float8"),
            _c("avg_fill_price", "float8"),
            _c("broker_order_id", "text"),
            _c("reason", "text"),
            _ts("ts_init"),
        ),
        "symbol",
    ),
    Table(
        "fills",
        (
            _ts("ts"),
            _c("exec_id", "text NOT NULL"),
            _c("client_order_id", "text NOT NULL"),
            _c("symbol", "text NOT NULL"),
            _c("side", "text"),
            _c("quantity", "float8"),
            _c("price", "float8"),
            _c("commission", "float8"),
            _c("venue", "text"),
            _c("liquidity", "text"),
            _ts("ts_init"),
        ),
        "symbol",
    ),
    Table(
        "positions",
        (
            _ts("ts"),
            _c("account", "text NOT NULL"),
            _c("seq", "int8"),
            _c("symbol", "text NOT NULL"),
            _c("quantity", "float8"),
            _c("avg_price", "float8"),
            _c("mark", "float8"),
            _c("realized_pnl", "float8"),
            _c("unrealized_pnl", "float8"),
            _ts("ts_init"),
        ),
        "symbol",
    ),
    Table(
        "tca",
        (
            _ts("ts"),
            _c("client_order_id", "text NOT NULL"),
            _c("symbol", "text NOT NULL"),
            _c("side", "text"),
            _c("quantity", "float8"),
            _c("arrival_price", "float8"),
            _c("avg_fill_price", "float8"),
            _c("slippage_bps", "float8"),
            _c("commission", "float8"),
            _c("spread_bps_at_arrival", "float8"),
            _c("fill_ratio", "float8"),
            _c("latency_ns", "int8"),
            _ts("ts_init"),
        ),
        "symbol",
    ),
)
# Tables added after migration 1 (its checksum covers exactly the tables above).
LATER_TABLES: tuple[Table, ...] = (
    Table(
        "feature_vectors",
        (
            _ts("ts"),
            _c("symbol", "text NOT NULL"),
            _c("timeframe", "text NOT NULL"),
            _c("feature_set", "text NOT NULL"),
            _c("vals", "float8[]", "float8[]"),
            _c("regime", "text"),
            _c("price", "float8"),
            _ts("ts_init"),
        ),
        "symbol",
    ),
)
# The audit trail (migration 4): what acted on the fleet and what answered. One table for every
# kind of action, so `tradefleet audit` reads one time-ordered index; what is not in a column is
# in ``event`` (the whole event as JSON). Every RiskState is kept, not only mode changes: they are
# few (a fill, an approval, a mode change), they show what the gate saw at each step, and a
# mode change is then a query (the mode_changes view) instead of the recorder remembering the
# previous mode across restarts and redeliveries.
AUDIT_TABLES: tuple[Table, ...] = (
    Table(
        "audit_events",
        (
            _ts("ts"),
            _c("kind", "text NOT NULL"),
            _c("subject", "text NOT NULL"),
            _c("who", "text NOT NULL"),
            _c("what", "text NOT NULL"),
            _c("ref", "text"),
            _c("event", "jsonb NOT NULL"),
            _ts("ts_init"),
        ),
        "kind",
    ),
    Table(
        "risk_states",
        (
            _ts("ts"),
            _c("account", "text NOT NULL"),
            _c("instance", "text NOT NULL"),
            _c("seq", "int8"),
            _c("mode", "text NOT NULL"),
            _c("mode_reason", "text"),
            _c("operator_mode", "text"),
            _c("operator_reason", "text"),
            _c("realized_pnl", "float8"),
            _c("unrealized_pnl", "float8"),
            _c("gross_exposure", "float8"),
            _c("net_exposure", "float8"),
            _c("open_orders", "int8"),
            _c("state", "jsonb NOT NULL"),
            _ts("ts_init"),
        ),
        "account",
    ),
)
FIRST_TABLES = TABLES
TABLES = FIRST_TABLES + LATER_TABLES + AUDIT_TABLES
TABLES_BY_NAME = {t.name: t for t in TABLES}

# Lookups by key that the trading side makes (fills by order, events by order).
INDEXES: tuple[tuple[str, str], ...] = (
    ("quotes", "symbol, ts DESC"),
    ("trades", "symbol, ts DESC"),
    ("bars", "symbol, timeframe, ts DESC"),
    ("orders", "client_order_id"),
    ("order_events", "client_order_id, seq"),
    ("fills", "exec_id"),
    ("fills", "client_order_id"),
    ("tca", "client_order_id"),
)
LATER_INDEXES: tuple[tuple[str, str], ...] = (("feature_vectors", "feature_set, timeframe, ts"),)
AUDIT_INDEXES: tuple[tuple[str, str], ...] = (
    ("audit_events", "kind, ts"),
    ("audit_events", "ref"),  # a command's acks by its command_id, a headline's scores by news_id
    ("risk_states", "account, ts"),
)
# A mode change is the RiskState whose mode differs from the account's previous one (the first
# state recorded counts: it is the mode the gate started in). A plain view: the same SQL for both
# storage modes.
MODE_CHANGES_VIEW = """
CREATE OR REPLACE VIEW mode_changes AS
SELECT ts, account, instance, seq, previous_mode, mode, mode_reason, operator_mode, operator_reason,
       state, ts_init
FROM (
    SELECT *, lag(mode) OVER (PARTITION BY account ORDER BY ts, seq) AS previous_mode
    FROM risk_states
) AS states
WHERE previous_mode IS DISTINCT FROM mode
"""

PARTITION_FUNCTION = """
CREATE OR REPLACE FUNCTION tf_ensure_day_partition(parent text, day date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('%s_p%s', parent, to_char(day, 'YYYYMMDD'));
BEGIN
    IF to_regclass(part) IS NULL THEN
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                       part, parent, (day::timestamp AT TIME ZONE 'UTC'),
                       ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    END IF;
END $$;
"""


def _columns_sql(table: Table) -> str:
    return ",\n    ".join(f"{c.name} {c.sql_type}" for c in table.columns)


def render_tables(
    mode: str,
    tables: tuple[Table, ...] = FIRST_TABLES,
    indexes: tuple[tuple[str, str], ...] = INDEXES,
    *,
    legacy_policies: tuple[int, int] | None = None,
) -> list[str]:
    """The DDL of ``tables`` for a storage mode.

    ``legacy_policies=(retention_days, compress_after_days)`` renders what migrations 1, 3 and 4
    were in timescaledb mode before migration 6: compression switched on and event-time
    retention and compression policies for every table. It is never applied any more; migrate.py
    renders it only to recognise the checksum of a database migrated then. The native rendering
    never changed (its checksums are pinned in tests/unit/test_storage_policies.py)."""
    statements: list[str] = []
    if mode == "native" and tables is FIRST_TABLES:
        statements.append(PARTITION_FUNCTION)
    for table in tables:
        if mode == "timescaledb":
            statements += [
                f"CREATE TABLE IF NOT EXISTS {table.name} (\n    {_columns_sql(table)}\n)",
                f"SELECT create_hypertable('{table.name}', '{table.time_column}', "
                "chunk_time_interval => INTERVAL '1 day', if_not_exists => TRUE)",
            ]
            if legacy_policies is not None:
                retention_days, compress_after_days = legacy_policies
                statements += [
                    compression_settings_sql(table),
                    f"SELECT add_compression_policy('{table.name}', INTERVAL '{compress_after_days} days', "
                    "if_not_exists => TRUE)",
                    f"SELECT add_retention_policy('{table.name}', INTERVAL '{retention_days} days', "
                    "if_not_exists => TRUE)",
                ]
        elif mode == "native":
            statements += [
                f"CREATE TABLE IF NOT EXISTS {table.name} (\n    {_columns_sql(table)}\n) "
                f"PARTITION BY RANGE ({table.time_column})",
                f"CREATE TABLE IF NOT EXISTS {table.name}_default PARTITION OF {table.name} DEFAULT",
            ]
        else:
            raise ValueError(f"unknown storage mode {mode!r}")
    for table_name, cols in indexes:
        index = f"{table_name}_{cols.replace(', ', '_').replace(' DESC', '')}_idx"
        statements.append(f"CREATE INDEX IF NOT EXISTS {index} ON {table_name} ({cols})")
    return statements


def compression_settings_sql(table: Table) -> str:
    """TimescaleDB: switch compression on for a hypertable (segmented by symbol or the like, newest
    first); a TSL feature, issued only for a table whose compression is configured."""
    return (
        f"ALTER TABLE {table.name} SET (timescaledb.compress, "
        f"timescaledb.compress_segmentby = '{table.segment_by}', "
        f"timescaledb.compress_orderby = '{table.time_column} DESC')"
    )


# Migration 6 (both modes): the retention and compression `db migrate` applied, as configured
# (table_name '*': the defaults, db.retention_days and db.compress_after_days), so that
# `tradefleet db prune` and an operator's SELECT see the policy in force. Days; NULL: not set, 0: off.
STORAGE_POLICIES_TABLE = """
CREATE TABLE IF NOT EXISTS tf_storage_policies (
    table_name text PRIMARY KEY,
    retention_days int,
    compress_after_days int,
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""

# Migration 6 (native): when each day partition was made, i.e. when its day was first written.
# Retention counts from there, as TimescaleDB's drop_created_before counts from a chunk's
# creation: a replayed 2013 day gets a partition made today and is kept like today's.
PARTITIONS_TABLE = """
CREATE TABLE IF NOT EXISTS tf_partitions (
    partition_name text PRIMARY KEY,
    parent text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""


def partitions_backfill_sql(tables: tuple[Table, ...]) -> str:
    """Day partitions that exist before migration 6 get its time as their creation: their real one
    is not known, and taking it as now means nothing is dropped sooner than a full retention
    period after the upgrade."""
    names = ", ".join(f"'{t.name}'" for t in tables)
    return (
        "INSERT INTO tf_partitions (partition_name, parent) "
        "SELECT child.relname, parent.relname FROM pg_inherits "
        "JOIN pg_class child ON child.oid = pg_inherits.inhrelid "
        "JOIN pg_class parent ON parent.oid = pg_inherits.inhparent "
        f"WHERE parent.relname IN ({names}) AND child.relname ~ '_p[0-9]{{8}}$' "
        "ON CONFLICT (partition_name) DO NOTHING"
    )


# Migration 6 (native): the same function (the writer's call is unchanged) that also records when
# it made a partition. A savepoint rolled back (the day's rows already in DEFAULT) takes the row
# back with the partition.
PARTITION_FUNCTION_RECORDING = """
CREATE OR REPLACE FUNCTION tf_ensure_day_partition(parent text, day date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('%s_p%s', parent, to_char(day, 'YYYYMMDD'));
BEGIN
    IF to_regclass(part) IS NULL THEN
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                       part, parent, (day::timestamp AT TIME ZONE 'UTC'),
                       ((day + 1)::timestamp AT TIME ZONE 'UTC'));
        INSERT INTO tf_partitions (partition_name, parent) VALUES (part, parent)
        ON CONFLICT (partition_name) DO NOTHING;
    END IF;
END $$;
"""


# Which market-data ticks the database holds, per symbol, by their source's numbering
# (services/recorder/sequence.py): written in the same transaction as the rows.
SEQUENCES_TABLE = """
CREATE TABLE IF NOT EXISTS md_sequences (
    consumer text NOT NULL,
    symbol text NOT NULL,
    state jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, symbol)
)
"""

OFFSETS_TABLE = """
CREATE TABLE IF NOT EXISTS recorder_offsets (
    stream text NOT NULL,
    consumer text NOT NULL,
    last_seq bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, consumer)
)
"""
