"""The audit trail end to end: a kill, its acks, the mode change, an alert, a dead letter, a
headline, its score and a policy answer go through NATS into the real recorder and PostgreSQL, and
`tradefleet audit` reads them back in time order; a redelivered command is stored once."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from pathlib import Path

import psycopg
from typer.testing import CliRunner

from libs.common.bus import Delivery
from libs.common.config import DbSettings, load_settings
from libs.common.nats_bus import NatsBus
from libs.common.runtime import Runtime
from libs.common.storage.audit import read_audit
from libs.common.storage.migrate import migrate
from proto.alerts import Alert, DeadLetter
from proto.base import Event
from proto.control import Control, ControlAck
from proto.news import NewsItem, SentimentScore
from proto.orders import RiskState
from proto.signals import PolicySignal
from proto.subjects import subject_of
from services.recorder.runtime import RecorderApp
from tests.helpers import await_until
from tradefleet.cli import app as cli

MS = 1_000_000


def _trail(run: str, t0: int) -> list[Event]:
    """One of each audited event, in time order (published out of it, to show the order is the
    events' own)."""

    def at(i: int) -> dict[str, int]:
        return {"ts_event": t0 + i * MS, "ts_init": t0 + i * MS}

    state = {"instance": f"r-{run}", "account": f"DU{run}"}
    kill = Control(
        **at(1), command_id=f"k-{run}", command="kill", issued_by=f"ops-{run}", args={"flatten": "true"}
    )
    return [
        RiskState(**at(0), **state, seq=1, mode="LIVE"),
        kill,
        ControlAck(
            **at(2),
            command_id=kill.command_id,
            command="kill",
            service="risk",
            accepted=True,
            summary=f"mode LIVE -> EMERGENCY ({run})",
        ),
        ControlAck(
            **at(3),
            command_id=kill.command_id,
            command="kill",
            service="execution",
            accepted=True,
            summary=f"2 orders cancelled, flattening ({run})",
        ),
        RiskState(**at(4), **state, seq=2, mode="EMERGENCY", mode_reason="operator kill"),
        RiskState(**at(5), **state, seq=3, mode="EMERGENCY", realized_pnl=-12.0),  # not a change
        Alert(**at(6), alert_id=f"a-{run}", severity="critical", source="risk", title=f"kill by ops-{run}"),
        DeadLetter(
            **at(7),
            service="qos",
            subject="order.intent.IBM",
            reason="malformed",
            error=f"bad msgpack {run}",
            payload=b"\xc1",
            digest=f"dg-{run}",
        ),
        NewsItem(**at(8), news_id=f"n-{run}", source="webhook", headline=f"IBM beats {run}", symbols=["IBM"]),
        SentimentScore(
            **at(9),
            news_id=f"n-{run}",
            symbol="IBM",
            polarity=0.8,
            label="positive",
            probabilities=[0.05, 0.15, 0.8],
            model_version=f"m-{run}",
            headline=f"IBM beats {run}",
        ),
        PolicySignal(
            **at(10),
            symbol="IBM",
            score_ts=t0,
            scale=0.5,
            timing="enter",
            policy_version=f"p-{run}",
            proposal=1,
        ),
    ]


def _stored(dsn: str, run: str) -> tuple[int, int, int]:
    """Audit rows of this run, distinct ones, and its risk states."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT count(*), count(DISTINCT (kind, who, what, ts)) FROM audit_events "
            "WHERE who LIKE %(run)s OR what LIKE %(run)s OR ref LIKE %(run)s",
            {"run": f"%{run}%"},
        ).fetchone()
        states = conn.execute("SELECT count(*) FROM risk_states WHERE account = %s", (f"DU{run}",)).fetchone()
    assert rows is not None and states is not None
    return int(rows[0]), int(rows[1]), int(states[0])


def _audit(dsn: str, *args: str) -> list[str]:
    result = CliRunner().invoke(cli, ["audit", "--db-url", dsn, *args], env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


async def test_the_audit_trail_is_recorded_once_and_read_back_in_order(
    nats_url: str, pg_dsn: str, tmp_path: Path
) -> None:
    migrate(pg_dsn, DbSettings())
    settings = load_settings(
        None,
        nats={"url": nats_url},
        db={"url": pg_dsn},
        recorder={"flush_interval_ms": 20, "batch_rows": 50, "spill_dir": str(tmp_path / "spill")},
        http={"port": -1},
    )
    recorder = RecorderApp(settings, pg_dsn)
    rt = Runtime("recorder", settings)
    task = asyncio.create_task(rt.run(recorder, install_signals=False))
    bus = NatsBus(load_settings(None, nats={"url": nats_url}).nats, "test-publisher")
    run = uuid.uuid4().hex[:8]
    try:
        await await_until(lambda: rt.ready, what="recorder ready")
        await bus.connect()
        await bus.ensure_streams()
        events = _trail(run, time.time_ns() - 10_000 * MS)
        for event in reversed(events):
            await bus.publish(subject_of(event), event)
        kill = events[1]
        await bus.publish("ctl.kill", kill)  # a republish: the stream drops it (Nats-Msg-Id)
        await bus.flush()
        await await_until(
            lambda: asyncio.to_thread(lambda: _stored(pg_dsn, run) == (8, 8, 3)), what="the trail stored"
        )

        # A redelivery of a committed command (its ack lost): acked, not added again.
        stored = await bus.last("ctl.kill")
        assert stored is not None and stored[0] == kill
        assert recorder.core is not None
        await await_until(lambda: recorder.core and recorder.core.already_committed("CONTROL", stored[1]))
        skipped = recorder.core.stats["duplicates_skipped"]
        await recorder._on_durable(Delivery("ctl.kill", kill, None, "CONTROL", stored[1], True))
        assert recorder.core.stats["duplicates_skipped"] == skipped + 1
        for batch in (recorder.core.pending, *recorder.core.backlog):
            assert kill not in batch.durable_events.get("audit_events", [])
    finally:
        rt.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
        await bus.close()
    assert _stored(pg_dsn, run) == (8, 8, 3)

    # Other tests' events may share the streams: this run's lines are those naming it.
    lines = [line for line in _audit(pg_dsn, "--since", "-1h") if run in line]
    assert [line[24:].split()[:2] for line in lines] == [
        ["mode", "risk"],
        ["ctl", f"ops-{run}"],
        ["->", "risk"],
        ["->", "execution"],
        ["mode", "risk"],
        ["alert", "risk"],
        ["dlq", "qos"],
        ["news", "webhook"],
        ["sentiment", f"sentiment:m-{run}"],
        ["policy", f"policy:p-{run}"],
    ]
    assert lines[0].endswith(f"start -> LIVE (account DU{run})")
    assert lines[1].endswith(f"kill flatten=true  (id k-{run})")
    assert f"accepted kill: mode LIVE -> EMERGENCY ({run})  (+1 ms)" in lines[2]
    assert lines[4].endswith(f"LIVE -> EMERGENCY: operator kill (account DU{run})")
    assert lines[6].endswith(f"refused order.intent.IBM: malformed: bad msgpack {run}")
    assert lines[9].endswith("IBM enter at scale 0.50 (QOS proposed +1)")

    only_commands = [line for line in _audit(pg_dsn, "--since", "-1h", "--kind", "ctl") if run in line]
    assert len(only_commands) == 1 and f"(id k-{run})" in only_commands[0]

    objects = [json.loads(line) for line in _audit(pg_dsn, "--since", "-1h", "--json")]
    mine = [o for o in objects if run in json.dumps(o)]
    assert [o["kind"] for o in mine] == [
        "mode",
        "ctl",
        "ack",
        "ack",
        "mode",
        "alert",
        "dlq",
        "news",
        "sentiment",
        "policy",
    ]
    assert mine[1]["subject"] == "ctl.kill" and mine[1]["who"] == f"ops-{run}"
    assert mine[1]["event"]["args"] == {"flatten": "true"} and mine[1]["event"]["type"] == "Control"
    assert mine[4]["event"]["seq"] == 2 and mine[4]["ref"] == f"r-{run}/2"
    assert [o["ts"] for o in mine] == sorted(o["ts"] for o in mine)

    # A window that starts after the first state still knows the mode before it: the change is
    # LIVE -> EMERGENCY, read from the account's last state before the window, not "start".
    after_first = dt.datetime.fromisoformat(mine[0]["ts"]) + dt.timedelta(microseconds=1)
    until = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    rows, _ = read_audit(pg_dsn, after_first, until, ["mode"], 100)
    (change,) = [r for r in rows if run in r.what]
    assert change.what == f"LIVE -> EMERGENCY: operator kill (account DU{run})"
