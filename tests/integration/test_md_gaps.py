"""Every tick of the day is stored exactly once although the recorder and the md-gateway are
each killed -9 mid-replay: the recorder sees the numbers it missed while it was down (a hole),
asks the replay for them (gap.request) and stores what comes back (gap.fill); the md-gateway
resumes from its checkpoint and sends its last half second again, which the recorder knows it
holds and does not write twice."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import psycopg

from libs.common.config import DbSettings
from libs.common.localinfra import free_port, start_nats
from libs.common.storage.migrate import migrate
from tests.helpers import REPO, await_until, http_json, service_env, start_service


def _app(port: int) -> dict[str, Any]:
    code, body = http_json(port, "/status")
    return dict((body or {}).get("app", {})) if code == 200 else {}


def _stored(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        q = conn.execute("SELECT (SELECT count(*) FROM quotes) + (SELECT count(*) FROM trades)").fetchone()
    assert q is not None
    return int(q[0])


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


async def test_killed_recorder_and_md_gateway_store_every_tick_once(pg_dsn: str, tmp_path: Path) -> None:
    migrate(pg_dsn, DbSettings())
    server = start_nats(tmp_path / "nats")
    checkpoint = tmp_path / "md.checkpoint"
    md_port, rec_port = free_port(), free_port()
    md_env = service_env(
        TRADEFLEET_NATS_URL=server.url,
        TRADEFLEET_HTTP__PORT=str(md_port),
        TRADEFLEET_MD_GATEWAY__REPLAY__ROOT=str(REPO / "data/sample/lean"),
        TRADEFLEET_MD_GATEWAY__REPLAY__SYMBOLS='["IBM"]',
        TRADEFLEET_MD_GATEWAY__REPLAY__NEWS="[]",
        TRADEFLEET_MD_GATEWAY__REPLAY__SPEED="1500",  # paced: the kills land mid-replay
        TRADEFLEET_MD_GATEWAY__REPLAY__CHECKPOINT=str(checkpoint),
    )
    rec_env = service_env(
        TRADEFLEET_NATS_URL=server.url,
        TRADEFLEET_DB_URL=pg_dsn,
        TRADEFLEET_HTTP__PORT=str(rec_port),
        TRADEFLEET_RECORDER__SPILL_DIR=str(tmp_path / "spill"),
        TRADEFLEET_RECORDER__FLUSH_INTERVAL_MS="50",
    )
    md_log, rec_log = tmp_path / "md.log", tmp_path / "recorder.log"
    recorder = start_service("recorder", rec_env, rec_log)
    md = None

    def position() -> int:
        try:
            return int(json.loads(checkpoint.read_text())["position"])
        except (OSError, ValueError, KeyError):
            return 0

    try:
        await await_until(lambda: bool(_app(rec_port)), timeout=60, what="the recorder up")
        md = start_service("md-gateway", md_env, md_log)
        await await_until(
            lambda: asyncio.to_thread(lambda: _stored(pg_dsn) > 5_000), timeout=90, what="ticks stored"
        )
        _kill(recorder)  # what is published meanwhile never reaches it
        down_at = position()
        await await_until(lambda: position() > down_at + 10_000, timeout=60, what="the replay moving on")
        recorder = start_service("recorder", rec_env, rec_log)
        at = position()
        await await_until(lambda: position() > at + 10_000, timeout=60, what="the replay moving on")
        _kill(md)  # a restart resumes from the checkpoint and sends its last half second again
        md = start_service("md-gateway", md_env, md_log)
        await await_until(lambda: _app(md_port).get("finished"), timeout=180, what="the replay finished")
        stats = _app(md_port)["stats"]
        published = stats["quotes"] + stats["trades"]

        async def all_stored_once() -> bool:
            seq = _app(rec_port).get("sequence", {})
            stored = await asyncio.to_thread(_stored, pg_dsn)
            assert stored <= published, f"{stored - published} tick(s) stored twice"
            return stored == published and seq.get("ticks_missing_now") == 0

        await await_until(all_stored_once, timeout=120, what="every tick stored, once")
        seq = _app(rec_port)["sequence"]
        assert seq["holes_opened"] >= 1 and seq["ticks_missed"] > 0 and seq["gap_requests"] >= 1
        assert "resuming the replay where an earlier run of it stopped" in md_log.read_text()
    finally:
        for proc in (recorder, md):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)
        server.stop()
