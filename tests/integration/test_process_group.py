"""Process groups (fleet.groups, `tradefleet service a+b`): the spine's services in one process,
in-process among themselves and NATS for the rest, trade exactly as the separate fleet and the
backtest do, and a group killed with -9 comes back like any service."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from libs.common.config import DbSettings
from libs.common.localinfra import start_nats
from libs.common.storage.migrate import migrate
from proto.execution import Fill, OrderEvent
from proto.orders import OrderApproved, OrderIntent
from tests.helpers import REPO, service_env, stored_events
from tests.integration.test_chaos import _db_checks, _pid, _ready, _until
from tests.kit import golden
from tests.kit.golden import normalized

SPINE = "features+fastlane+qos+risk"
SPINE_MEMBERS = SPINE.split("+")


def _parity_config(tmp_path: Path) -> Path:
    news = REPO / "data/sample/news/20131008.jsonl"
    config = tmp_path / "grouped.yaml"
    config.write_text(
        f"md_gateway:\n  replay: {{root: {REPO / 'data/sample/lean'}, news: [{news}], until: '10:30'}}\n"
        f"sentiment:\n  cache: {REPO / 'var' / 'sentiment-cache'}\n"
        f"  engine: {golden.GOLDEN_SENTIMENT['engine']}\n"
        f"fleet:\n  groups: ['{SPINE}']\n"
    )
    return config


@pytest.mark.timeout(600)
def test_a_grouped_spine_in_lockstep_trades_as_the_separate_fleet(tmp_path: Path, pg_dsn: str) -> None:
    """features+fastlane+qos+risk in one process (fleet.groups), everything else its own, on a
    real NATS in lockstep: the same intents, approvals, orders and fills as the golden record of
    the separate fleet and the backtest (test_backtest_parity), every event of the group still
    on NATS (the streams hold the intents and approvals it decided in-process)."""
    config = _parity_config(tmp_path)
    server = start_nats(tmp_path / "nats")
    try:
        env = {**service_env(TRADEFLEET_DB_URL=pg_dsn), "PYTHONPATH": str(REPO)}
        up = [sys.executable, "-m", "tradefleet", "up", "--config", str(config), "--lockstep", "--no-live"]
        up += ["--nats-url", server.url, "--summary", "summary.json", "--speed", "0"]
        proc = subprocess.run(
            up, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        orders_stream = asyncio.run(stored_events(server.url, "ORDERS", None))
        exec_stream = asyncio.run(stored_events(server.url, "EXEC", None))
    finally:
        server.stop()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ok"] and summary["lockstep"]["timeouts"] == 0 and summary["lockstep"]["settles"] > 1000
    logs = tmp_path / "var" / "logs"
    assert (logs / f"{SPINE}.log").exists() and not (logs / "features.log").exists()  # one process

    intents = [e for e in orders_stream if isinstance(e, OrderIntent)]
    approvals = [e for e in orders_stream if isinstance(e, OrderApproved)]
    orders = [e for e in exec_stream if isinstance(e, OrderEvent)]
    fills = [e for e in exec_stream if isinstance(e, Fill)]
    before = golden.expected("morning")
    now = golden.trading(intents, orders, fills, {})
    assert len(now["intents"]) == len(before["intents"]) >= 4
    assert golden.differences(now["intents"], before["intents"]) == []
    # each intent approved once (the group's risk gate decided it in-process; the stream has it)
    assert sorted(a.intent_id for a in approvals) == sorted(i.intent_id for i in intents)
    fleet = json.loads(json.dumps(normalized(orders, fills)))
    assert golden.differences(fleet, {"orders": before["orders"], "fills": before["fills"]}) == []


def _up(tmp: Path, config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    up = [sys.executable, "-m", "tradefleet", "up", "--config", str(config), "--summary", "summary.json"]
    return subprocess.Popen(
        [*up, "--no-live", "--speed", "200", "--group", SPINE],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _group_status(var: Path) -> dict[str, Any]:
    from tests.helpers import http_json

    state = json.loads((var / "fleet.json").read_text())
    return dict(http_json(int(state["http_ports"]["risk"]), "/status")[1] or {})


@pytest.mark.timeout(600)
async def test_a_killed_group_restarts_and_recovers_like_a_service(pg_dsn: str, tmp_path: Path) -> None:
    """kill -9 of the group mid-replay: `up` restarts it, its members resume (features from its
    checkpoint, risk from its books), and the run ends with every tick stored once, no order sent
    twice and positions equal to the stored fills."""
    migrate(pg_dsn, DbSettings())
    config = tmp_path / "fleet.yaml"
    # risk.max_quote_age_ms compares market times: at 200x on a loaded machine, risk's own quote
    # subscription can trail an intent handed over in-process by seconds of market time.
    config.write_text(
        f"md_gateway:\n  replay: {{root: {REPO / 'data/sample/lean'}, news: []}}\n"
        "risk:\n  max_quote_age_ms: 120000\n"
    )
    env = {**service_env(TRADEFLEET_DB_URL=pg_dsn), "PYTHONPATH": str(REPO)}
    var = tmp_path / "var"
    proc = _up(tmp_path, config, env)
    try:
        try:
            await _until(lambda: all(_ready(var, n) for n in SPINE_MEMBERS), 180, "the fleet ready")
        except AssertionError:
            proc.send_signal(signal.SIGINT)
            raise AssertionError((await asyncio.to_thread(proc.communicate, timeout=60))[0][-4000:]) from None
        state = json.loads((var / "fleet.json").read_text())
        assert state["groups"] == {SPINE: SPINE_MEMBERS}
        assert _pid(var, SPINE) is not None and _pid(var, "features") is None
        group = (await asyncio.to_thread(_group_status, var)).get("group", {})
        assert group.get("members") == ["features", "fastlane", "qos", "risk"]
        await _until(lambda: any(var.glob(f"runs/*/{SPINE}.checkpoint")), 60, "a features checkpoint")
        # the group handed its members their events in-process before it is killed
        await _until(lambda: _group_status(var).get("group", {}).get("delivered", 0) > 0, 60, "deliveries")
        old = _pid(var, SPINE)
        assert old is not None
        os.kill(old, signal.SIGKILL)
        await _until(lambda: _pid(var, SPINE) not in (None, old), 30, "the group restarted")
        ready_s = await _until(lambda: all(_ready(var, n) for n in SPINE_MEMBERS), 30, "every member ready")
        output, _ = await asyncio.to_thread(proc.communicate, timeout=420)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            await asyncio.to_thread(proc.wait, 60)
    print("group ready after restart (s):", round(ready_s, 2))
    s = json.loads((tmp_path / "summary.json").read_text())
    assert collections.Counter(s["restarts"]) == {SPINE: 1}, output[-3000:]
    assert s["ok"], json.dumps({k: s.get(k) for k in ("error", "ended", "md_rows_lost", "md_sequence")})
    assert s["md_rows_lost"] == 0 and s["md_rows_duplicated"] == 0
    checks = await asyncio.to_thread(_db_checks, pg_dsn)
    assert checks["fills"][0] == checks["fills"][1], checks
    assert checks["approvals"][0] == checks["approvals"][1], checks
    assert checks["overfilled_orders"] == 0, checks
    trading = s["trading"]
    assert trading["open_orders_at_end"] == 0 and trading["orders_sent"] > 0
    held = {k: float(v) for k, v in (trading["positions_at_end"] or {}).items() if abs(float(v)) > 1e-9}
    assert held == checks["net_by_symbol"], (held, checks)
    assert "features resumed from its checkpoint" in (var / "logs" / f"{SPINE}.log").read_text()
