"""The audit trail read back from the recorder's tables (audit_events and the risk states), for
`tradefleet audit` and the control API's /api/audit."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from libs.common.markettime import ny_datetime

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
        stamp = ny_datetime(self.ts_ns)
        return json.dumps(
            {
                "ts": self.ts.astimezone(dt.UTC).isoformat(),
                "ts_ny": stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{stamp.microsecond // 1000:03d}",
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
