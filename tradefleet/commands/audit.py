"""`tradefleet audit`: the audit trail read back from the recorder's tables, in time order.

Who did what to the fleet and what answered: operator commands (ctl) with the services' acks
under them, live parameter changes (param: who, what, old and new), outside models' signals,
alerts, risk mode changes, dead letters, headlines, sentiment scores and the policy's answers.
Readable lines in New York time by default, one JSON object per line with --json.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated

import typer

from libs.common.storage.audit import AuditRow, read_audit
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
