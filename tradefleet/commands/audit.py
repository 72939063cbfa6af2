"""`tradefleet audit`: the audit trail read back from the recorder's tables, in time order.

Who did what to the fleet and what answered: operator commands (ctl) with the services' acks
under them, live parameter changes (param: who, what, old and new), outside models' signals,
alerts, risk mode changes, dead letters, headlines, sentiment scores and the policy's answers.
Readable lines in New York time by default, one JSON object per line with --json.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import typer

from tradefleet.commands.admin import DbUrlOpt, database_errors
from tradefleet.commands.common import ConfigOpt, fail, load


class AuditKind(StrEnum):
    """A choice of --kind (an enum: typer takes no list of Literal); the values are the kinds the
    recorder writes in audit_events, and mode for the mode_changes view."""

    CTL = "ctl"
    ACK = "ack"
    ALERT = "alert"
    MODE = "mode"
    DLQ = "dlq"
    NEWS = "news"
    SENTIMENT = "sentiment"
    POLICY = "policy"
    PARAM = "param"
    SIGNAL = "signal"


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# audit_events holds every kind but mode, which is the mode_changes view over every recorded
# RiskState (see libs/common/storage/schema.py), computed here over the asked window only. The
# newest rows win a --limit; they are printed oldest first.
AUDIT_SQL = """
SELECT ts, kind, subject, who, what, ref, event FROM (
    SELECT ts, kind, subject, who, what, ref, event
    FROM audit_events
    WHERE ts >= %(since)s AND ts < %(until)s AND kind = ANY(%(kinds)s)
    UNION ALL
    SELECT ts, 'mode', 'risk.state', 'risk',
           coalesce(previous_mode, 'start') || ' -> ' || mode
               || CASE WHEN mode_reason <> '' THEN ': ' || mode_reason ELSE '' END
               || CASE WHEN account <> '' THEN ' (account ' || account || ')' ELSE '' END,
           instance || '/' || seq, state
    FROM (
        -- the mode_changes view, bounded: the window's states and, per account, the one before
        -- it (its mode is the first change's previous), so a long history is not scanned
        SELECT *, lag(mode) OVER (PARTITION BY account ORDER BY ts, seq) AS previous_mode
        FROM (
            SELECT * FROM risk_states
            WHERE ts >= %(since)s AND ts < %(until)s AND 'mode' = ANY(%(kinds)s)
            UNION ALL
            SELECT before.* FROM (
                SELECT DISTINCT account FROM risk_states
                WHERE ts >= %(since)s AND ts < %(until)s AND 'mode' = ANY(%(kinds)s)
            ) AS accounts
            CROSS JOIN LATERAL (
                SELECT * FROM risk_states AS r
                WHERE r.account = accounts.account AND r.ts < %(since)s
                ORDER BY r.ts DESC, r.seq DESC
                LIMIT 1
            ) AS before
        ) AS states
    ) AS changes
    WHERE previous_mode IS DISTINCT FROM mode AND ts >= %(since)s
) AS trail
ORDER BY ts DESC, kind DESC
LIMIT %(limit)s
"""


@dataclass(frozen=True)
class AuditRow:
    ts: dt.datetime
    kind: str
    subject: str
    who: str
    what: str
    ref: str
    event: dict[str, Any]

    @property
    def ts_ns(self) -> int:
        return (self.ts - EPOCH) // dt.timedelta(microseconds=1) * 1000

    def as_json(self) -> str:
        from tradefleet.tap import ny_time

        return json.dumps(
            {
                "ts": self.ts.astimezone(dt.UTC).isoformat(),
                "ts_ny": ny_time(self.ts_ns),
                "kind": self.kind,
                "subject": self.subject,
                "who": self.who,
                "what": self.what,
                "ref": self.ref,
                "event": self.event,
            },
            ensure_ascii=False,
        )


def read_audit(
    dsn: str,
    since: dt.datetime,
    until: dt.datetime,
    kinds: list[str],
    limit: int,
    connect_timeout_s: int = 3,
) -> tuple[list[AuditRow], bool]:
    """The newest ``limit`` rows in [since, until), oldest first, and whether more were left out."""
    import psycopg

    params = {"since": since, "until": until, "kinds": kinds, "limit": limit + 1}
    with psycopg.connect(dsn, connect_timeout=connect_timeout_s) as conn:
        rows = conn.execute(AUDIT_SQL, params).fetchall()
    trail = [
        AuditRow(ts, kind, subject, who, what, ref or "", event)
        for ts, kind, subject, who, what, ref, event in rows
    ]
    more = len(trail) > limit
    return list(reversed(trail[:limit])), more


def readable_lines(rows: list[AuditRow]) -> list[str]:
    """One line per row; a command's acks (same command_id) go right under it, with how long
    after the command each answered, instead of at their own time."""
    from tradefleet.tap import ny_time

    commands = {r.ref for r in rows if r.kind == "ctl"}
    acks: dict[str, list[AuditRow]] = {}
    for r in rows:
        if r.kind == "ack" and r.ref in commands:
            acks.setdefault(r.ref, []).append(r)
    lines = []
    for r in rows:
        if r.kind == "ack" and r.ref in commands:
            continue  # printed under its command
        ref = f"  (id {r.ref})" if r.kind == "ctl" else ""
        lines.append(f"{ny_time(r.ts_ns)}  {r.kind:<9} {r.who:<18} {r.what}{ref}")
        for ack in acks.get(r.ref, []) if r.kind == "ctl" else []:
            after_ms = (ack.ts_ns - r.ts_ns) / 1e6
            lines.append(f"{'':25}-> {ack.who:<15} {ack.what}  (+{after_ms:.0f} ms)")
    return lines


def audit(
    since: Annotated[
        str, typer.Option(help="from this time: ISO 8601 (New York time without a zone) or -30m, -2h, -1d")
    ] = "-2h",
    until: Annotated[str | None, typer.Option(help="up to this time (same forms; default now)")] = None,
    kind: Annotated[
        list[AuditKind] | None,
        typer.Option(help="only these kinds (repeatable; default every kind)"),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many rows: the newest")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    url: DbUrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """The audit trail: operator commands and their acks, alerts, mode changes, dead letters,
    news, sentiment and policy answers, from the recorder's tables, in time order."""
    from tradefleet.tap import parse_since

    now = dt.datetime.now(dt.UTC)
    try:
        start = parse_since(since, now)
    except ValueError as exc:
        fail(f"--since: {exc}")
    try:
        end = parse_since(until, now) if until is not None else now
    except ValueError as exc:
        fail(f"--until: {exc}")
    if end <= start:
        fail(f"--until ({end.isoformat()}) is not after --since ({start.isoformat()})")
    settings = load(config)
    dsn = url or settings.db.url or fail("no database: pass --db-url or set TRADEFLEET_DB_URL")
    import psycopg

    with database_errors(dsn):
        try:
            rows, more = read_audit(
                dsn, start, end, [k.value for k in kind or AuditKind], limit, settings.db.connect_timeout_s
            )
        except psycopg.errors.UndefinedTable:
            fail("the database has no audit tables: run `tradefleet db migrate`")
    for line in [r.as_json() for r in rows] if as_json else readable_lines(rows):
        typer.echo(line)
    if more:
        typer.echo(f"(only the newest {limit} rows; narrow --since or raise --limit)", err=True)
