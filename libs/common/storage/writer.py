"""Batch writer: one transaction per batch, binary COPY per table, recorder offsets in the same
transaction (so 'committed' and 'acked up to' can never disagree)."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterable, Mapping
from typing import Any, LiteralString

import psycopg
from psycopg.types.json import Jsonb

from libs.common.storage.schema import DAY_US, PG_EPOCH_OFFSET_US, TABLES_BY_NAME

Row = tuple[Any, ...]


class StorageUnavailable(RuntimeError):
    """The database could not take the batch; nothing of it was committed."""


class BatchWriter:
    def __init__(self, dsn: str, connect_timeout_s: int = 3) -> None:
        self.dsn = dsn
        self.connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection | None = None
        self.mode: str | None = None
        self._partitions: dict[str, set[int]] = {}
        self._copy_sql = {
            name: f"COPY {name} ({', '.join(t.column_names)}) FROM STDIN (FORMAT BINARY)"
            for name, t in TABLES_BY_NAME.items()
        }

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.dsn, connect_timeout=self.connect_timeout_s)
            row = self._conn.execute("SELECT value FROM tf_meta WHERE key = 'storage_mode'").fetchone()
            self._conn.commit()
            self.mode = row[0] if row else "native"
        return self._conn

    def load_offsets(self, consumer: str) -> dict[str, int]:
        """Committed stream positions. Uses its own connection: the batch connection belongs to
        the writer thread, and sharing it across threads could commit inside a batch."""
        return self._pairs("SELECT stream, last_seq FROM recorder_offsets WHERE consumer = %s", consumer)

    def load_sequences(self, consumer: str) -> dict[str, dict[str, Any]]:
        """The market-data sequence state stored with the rows (symbol -> state)."""
        return self._pairs("SELECT symbol, state FROM md_sequences WHERE consumer = %s", consumer)

    def _pairs(self, query: LiteralString, consumer: str) -> dict[Any, Any]:
        try:
            with psycopg.connect(self.dsn, connect_timeout=self.connect_timeout_s, autocommit=True) as conn:
                return dict(conn.execute(query, (consumer,)).fetchall())
        except psycopg.OperationalError as exc:
            raise StorageUnavailable(str(exc)) from exc

    def write(
        self,
        rows_by_table: Mapping[str, Iterable[Row]],
        offsets: Mapping[str, int],
        consumer: str,
        days_by_table: Mapping[str, set[int]] | None = None,
        sequences: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Write every row, the offsets and the market-data sequence state atomically.

        Rows may be a lazy iterable: they are then built inside the COPY loop, while the server
        ingests. ``days_by_table`` (UTC days since 1970) lets the native mode make day partitions
        without materialising the rows first."""
        try:
            conn = self._connection()
            new_partitions: list[tuple[str, int]] = []
            with conn.transaction():
                cur = conn.cursor()
                for table, table_rows in rows_by_table.items():
                    rows = table_rows
                    if self.mode == "native":
                        if days_by_table is None:
                            rows = list(table_rows)
                            days = {(row[0] + PG_EPOCH_OFFSET_US) // DAY_US for row in rows}
                        else:
                            days = days_by_table.get(table, set())
                        new_partitions += self._ensure_partitions(conn, table, days)
                    spec = TABLES_BY_NAME[table]
                    with cur.copy(self._copy_sql[table]) as copy:
                        copy.set_types(spec.copy_types)
                        # Consumed in C: no Python bytecode per row between building and writing it.
                        collections.deque(map(copy.write_row, rows), maxlen=0)
                self._positions(cur, offsets, consumer, sequences)
            # Remember partitions only once they are committed.
            for table, day in new_partitions:
                self._partitions.setdefault(table, set()).add(day)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self.close()
            raise StorageUnavailable(str(exc)) from exc

    def write_isolating(
        self,
        rows_by_table: Mapping[str, list[Row]],
        offsets: Mapping[str, int],
        consumer: str,
        sequences: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> list[tuple[str, int, str]]:
        """``write`` for a batch the database refused: still one transaction, but each row in a
        savepoint of its own, so a row it cannot take (a value beyond its types) is left out and
        the rest, the offsets and the sequence state commit together. Returns (table, index,
        why) of each row left out. Slow (a COPY per row): only after a batch failed."""
        refused: list[tuple[str, int, str]] = []
        try:
            conn = self._connection()
            new_partitions: list[tuple[str, int]] = []
            with conn.transaction():
                cur = conn.cursor()
                for table, rows in rows_by_table.items():
                    spec = TABLES_BY_NAME[table]
                    for i, row in enumerate(rows):
                        try:
                            with conn.transaction():
                                if self.mode == "native":
                                    day = (row[0] + PG_EPOCH_OFFSET_US) // DAY_US
                                    new_partitions += self._ensure_partitions(conn, table, {day})
                                with cur.copy(self._copy_sql[table]) as copy:
                                    copy.set_types(spec.copy_types)
                                    copy.write_row(row)
                        except (psycopg.OperationalError, psycopg.InterfaceError):
                            raise
                        except (psycopg.Error, ValueError, TypeError, OverflowError) as exc:
                            refused.append((table, i, f"{type(exc).__name__}: {exc}"[:500]))
                self._positions(cur, offsets, consumer, sequences)
            for table, day in new_partitions:
                self._partitions.setdefault(table, set()).add(day)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self.close()
            raise StorageUnavailable(str(exc)) from exc
        return refused

    @staticmethod
    def _positions(
        cur: psycopg.Cursor[Any],
        offsets: Mapping[str, int],
        consumer: str,
        sequences: Mapping[str, Mapping[str, Any]] | None,
    ) -> None:
        """The stream offsets and the market-data sequence state, in the rows' transaction."""
        for stream, seq in offsets.items():
            cur.execute(
                "INSERT INTO recorder_offsets (stream, consumer, last_seq) VALUES (%s, %s, %s) "
                "ON CONFLICT (stream, consumer) DO UPDATE SET last_seq = GREATEST("
                "recorder_offsets.last_seq, EXCLUDED.last_seq), updated_at = now()",
                (stream, consumer, seq),
            )
        if sequences:
            cur.executemany(
                "INSERT INTO md_sequences (consumer, symbol, state) VALUES (%s, %s, %s) "
                "ON CONFLICT (consumer, symbol) DO UPDATE SET state = EXCLUDED.state, "
                "updated_at = now()",
                [(consumer, symbol, Jsonb(state)) for symbol, state in sequences.items()],
            )

    def _ensure_partitions(
        self, conn: psycopg.Connection, table: str, days: set[int]
    ) -> list[tuple[str, int]]:
        made = []
        for day in days - self._partitions.get(table, set()):
            try:
                with conn.transaction():  # a savepoint: a day that cannot get its own partition
                    conn.execute(  # (rows already in DEFAULT) still lands in DEFAULT
                        "SELECT tf_ensure_day_partition(%s, (date '1970-01-01' + %s::int))", (table, day)
                    )
            except psycopg.errors.CheckViolation:
                pass
            made.append((table, day))
        return made

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close; it is gone anyway
                self._conn.close()
        self._conn = None


def jsonb(value: Mapping[str, Any]) -> Jsonb:
    return Jsonb(dict(value))
