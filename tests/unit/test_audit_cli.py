"""`tradefleet audit` without a trail: bad times and a dead database are one line and exit 2; a
command's acks print under it."""

from __future__ import annotations

import datetime as dt

from typer.testing import CliRunner, Result

from libs.common.localinfra import free_port
from libs.common.storage.audit import AuditRow
from tradefleet.cli import app
from tradefleet.commands.audit import readable_lines


def _audit(*args: str) -> Result:
    return CliRunner().invoke(app, ["audit", *args], env={"COLUMNS": "240"})


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_a_bad_since_or_until_is_one_line() -> None:
    assert _one_line_error(_audit("--since", "yesterday", "--db-url", "postgresql://x")).startswith(
        "--since: 'yesterday' is not a time"
    )
    assert _one_line_error(_audit("--until", "soon", "--db-url", "postgresql://x")).startswith("--until:")
    assert "is not after --since" in _one_line_error(_audit("--since", "-1h", "--until", "-2h"))


def test_a_dead_database_is_one_line() -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    assert _one_line_error(_audit("--db-url", dead)).startswith(
        f"cannot use the database at {dead}: connection failed"
    )


def test_a_bad_kind_is_refused() -> None:
    assert _audit("--kind", "orders").exit_code == 2


def _row(second: int, kind: str, who: str, what: str, ref: str) -> AuditRow:
    ts = dt.datetime(2026, 5, 4, 14, 30, second, tzinfo=dt.UTC)
    return AuditRow(ts, kind, f"{kind}.x", who, what, ref, {})


def test_acks_print_under_their_command_with_how_long_they_took() -> None:
    rows = [
        _row(1, "ctl", "alice", "kill flatten=true", "k-1"),
        _row(2, "alert", "risk", "critical: EMERGENCY", "a-1"),
        _row(3, "ack", "risk", "accepted kill: mode LIVE -> EMERGENCY", "k-1"),
        _row(4, "ack", "execution", "accepted kill: 2 orders cancelled", "k-1"),
        _row(5, "ack", "risk", "accepted resume: ...", "r-9"),  # its command is not in the window
    ]
    assert readable_lines(rows) == [
        "2026-05-04 10:30:01.000  ctl       alice              kill flatten=true  (id k-1)",
        "                         -> risk            accepted kill: mode LIVE -> EMERGENCY  (+2000 ms)",
        "                         -> execution       accepted kill: 2 orders cancelled  (+3000 ms)",
        "2026-05-04 10:30:02.000  alert     risk               critical: EMERGENCY",
        "2026-05-04 10:30:05.000  ack       risk               accepted resume: ...",
    ]
