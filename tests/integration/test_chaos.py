"""Chaos: during a paced replay of the sample day under `tradefleet up`, kill -9 each service in
turn (the md-gateway, features, risk, execution, the recorder, the fast lane, QOS, TCA, sentiment,
alerts, control), then cut PostgreSQL for 10 s and kill the recorder meanwhile. Bounded (one
replay, loopback only) and it stops by itself. (The NATS server's kill -9 is test_fleet's: core
NATS loses what the server held, spine events included, so that run is judged by what it stored,
not by a spine that caught up.)

Invariants, checked against what was stored and what the services say at the end:
- the run ends ``ok``: the replay finished and every quote and trade it published is stored once
  (counted in the database: nothing lost, nothing twice), no tick left missing;
- no order filled beyond its quantity (an order sent twice would be), every fill stored once;
- positions at the end equal the sum of the stored fills, and no order is left open;
- every killed service is ready again within 30 s of its restart (the figures are printed).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import pytest

from libs.common.config import DbSettings
from libs.common.storage.migrate import migrate
from tests.helpers import REPO, TcpProxy, http_json, service_env

# Ready again after a restart: how fast is a benchmark's question (the figures are printed); a
# test only bounds it, loosely enough for a 2-core CI box running two workers (a loaded full run
# saw 5-12 s where a quiet one sees 2-4 s).
READY_WITHIN_S = 30.0
UP = (sys.executable, "-m", "tradefleet", "up")
KILLED_IN_TURN = (
    "md-gateway",
    "features",
    "risk",
    "execution",
    "recorder",
    "fastlane",
    "qos",
    "tca",
    "sentiment",
    "alerts",
    "control",
)


def _state(var: Path) -> dict[str, object]:
    try:
        return dict(json.loads((var / "fleet.json").read_text()))
    except (OSError, ValueError):
        return {}


def _pid(var: Path, name: str) -> int | None:
    pids = _state(var).get("pids") or {}
    return pids.get(name) if isinstance(pids, dict) else None


def _ready(var: Path, name: str) -> bool:
    ports = _state(var).get("http_ports") or {}
    port = ports.get(name) if isinstance(ports, dict) else None
    return bool(port) and http_json(int(port), "/readyz")[0] == 200


async def _until(check, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if await asyncio.to_thread(check):
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


async def _kill_and_time_the_restart(var: Path, name: str) -> float:
    """kill -9, then the seconds from the new process's start to its /readyz answering."""
    old = _pid(var, name)
    assert old is not None, f"{name} is not running"
    os.kill(old, signal.SIGKILL)
    await _until(lambda: _pid(var, name) not in (None, old), 30, f"{name} restarted")
    return await _until(lambda: _ready(var, name), 30, f"{name} ready")


def _replay_position(var: Path) -> int:
    for path in var.glob("runs/*/md-gateway.checkpoint"):
        try:
            return int(json.loads(path.read_text())["position"])
        except (OSError, ValueError, KeyError):
            return 0
    return 0


def _up(tmp: Path, config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*UP, "--config", str(config), "--summary", "summary.json", "--no-live", "--speed", "200"],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _db_checks(dsn: str) -> dict[str, object]:
    with psycopg.connect(dsn) as conn:
        fills = conn.execute("SELECT count(*), count(DISTINCT exec_id) FROM fills").fetchone()
        overfilled = conn.execute(
            "SELECT count(*) FROM (SELECT o.client_order_id FROM orders o JOIN fills f "
            "ON f.client_order_id = o.client_order_id GROUP BY o.client_order_id, o.quantity "
            "HAVING sum(f.quantity) > o.quantity + 1e-9) t"
        ).fetchone()
        approvals = conn.execute("SELECT count(*), count(DISTINCT client_order_id) FROM orders").fetchone()
        net = conn.execute(
            "SELECT symbol, sum(CASE WHEN side = 'BUY' THEN quantity ELSE -quantity END) FROM fills "
            "GROUP BY symbol"
        ).fetchall()
    assert fills is not None and overfilled is not None and approvals is not None
    return {
        "fills": tuple(fills),
        "overfilled_orders": overfilled[0],
        "approvals": tuple(approvals),
        "net_by_symbol": {s: float(q) for s, q in net if abs(float(q)) > 1e-9},
    }


@pytest.mark.timeout(600)
async def test_the_fleet_survives_kill_9_of_each_service_and_a_database_outage(
    pg_dsn: str, tmp_path: Path
) -> None:
    migrate(pg_dsn, DbSettings())
    target = urlparse(pg_dsn)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    via_proxy = target._replace(netloc=f"{target.username}@127.0.0.1:{proxy.port}").geturl()
    config = tmp_path / "fleet.yaml"
    config.write_text(
        f"md_gateway:\n  replay: {{root: {REPO / 'data/sample/lean'}, news: []}}\n"
        "db:\n  connect_timeout_s: 1\n"
    )
    env = {**service_env(TRADEFLEET_DB_URL=via_proxy), "PYTHONPATH": str(REPO)}
    var = tmp_path / "var"
    proc = _up(tmp_path, config, env)
    ready_s: dict[str, float] = {}
    try:
        try:
            await _until(lambda: all(_ready(var, n) for n in KILLED_IN_TURN), 180, "the fleet ready")
        except AssertionError:
            proc.send_signal(signal.SIGINT)
            raise AssertionError((await asyncio.to_thread(proc.communicate, timeout=60))[0][-4000:]) from None
        for name in KILLED_IN_TURN:
            if name == "features":  # it resumes from its checkpoint: one noted first
                await _until(lambda: any(var.glob("runs/*/features.checkpoint")), 60, "a features checkpoint")
            if name == "md-gateway":  # ...and so does the replay, once it has noted a position
                await _until(lambda: _replay_position(var) > 0, 60, "a replay checkpoint")
            ready_s[name] = await _kill_and_time_the_restart(var, name)
        proxy.cut()  # PostgreSQL unreachable for 10 s, the recorder killed meanwhile
        await asyncio.sleep(3)
        ready_s["recorder (database down)"] = await _kill_and_time_the_restart(var, "recorder")
        await asyncio.sleep(max(0.0, 7 - ready_s["recorder (database down)"]))
        proxy.restore()
        output, _ = await asyncio.to_thread(proc.communicate, timeout=420)
    finally:
        proxy.restore()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            await asyncio.to_thread(proc.wait, 60)
        await proxy.stop()
    print("ready after restart (s):", {k: round(v, 2) for k, v in ready_s.items()})
    s = json.loads((tmp_path / "summary.json").read_text())
    restarts = collections.Counter(s["restarts"])
    assert restarts == {**dict.fromkeys(KILLED_IN_TURN, 1), "recorder": 2}, output[-3000:]
    assert s["ok"], json.dumps({k: s.get(k) for k in ("error", "ended", "md_rows_lost", "md_sequence")})
    assert s["md_rows_lost"] == 0 and s["md_rows_duplicated"] == 0
    assert s["md_sequence"]["ticks_missing_now"] == 0
    checks = await asyncio.to_thread(_db_checks, pg_dsn)
    assert checks["fills"][0] == checks["fills"][1], checks  # every fill stored once
    assert checks["approvals"][0] == checks["approvals"][1], checks  # no client order id twice
    assert checks["overfilled_orders"] == 0, checks  # no order sent (so filled) twice
    trading = s["trading"]
    assert trading["open_orders_at_end"] == 0
    held = {k: float(v) for k, v in (trading["positions_at_end"] or {}).items() if abs(float(v)) > 1e-9}
    assert held == checks["net_by_symbol"], (held, checks)
    assert "features resumed from its checkpoint" in (var / "logs" / "features.log").read_text()
    assert (
        "resuming the replay where an earlier run of it stopped"
        in (var / "logs" / "md-gateway.log").read_text()
    )
    slow = {k: v for k, v in ready_s.items() if v > READY_WITHIN_S}
    assert not slow, f"ready later than {READY_WITHIN_S:g} s after a restart: {slow}"
