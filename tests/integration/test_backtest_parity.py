"""Fleet/backtest parity: the same morning of the shipped day through the fleet (every service its
own process, over a real NATS, in lockstep) and through the backtest (one process, in-process
bus) gives the same orders and fills."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import pytest

from libs.common import codec
from libs.common.config import load_settings
from libs.common.localinfra import start_nats
from proto.execution import Fill, OrderEvent
from tests.helpers import REPO, service_env
from tests.kit import golden
from tests.kit.golden import normalized
from tradefleet.backtest.engine import Backtest
from tradefleet.backtest.sources import find_days

UNTIL = "10:30"  # the first hour: entries and exits on both symbols, and a headline


async def _exec_stream(url: str) -> list[Any]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("EXEC")
        events = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg("EXEC", seq)
            events.append(codec.decode(msg.data or b""))
        return events
    finally:
        await nc.close()


@pytest.mark.timeout(600)
def test_the_fleet_in_lockstep_and_the_backtest_agree_order_for_order(tmp_path: Path, pg_dsn: str) -> None:
    news = REPO / "data/sample/news/20131008.jsonl"
    config = tmp_path / "parity.yaml"
    config.write_text(
        f"md_gateway:\n  replay: {{root: {REPO / 'data/sample/lean'}, news: [{news}], until: '{UNTIL}'}}\n"
        f"sentiment:\n  cache: {REPO / 'var' / 'sentiment-cache'}\n"
        f"  engine: {golden.GOLDEN_SENTIMENT['engine']}\n"
    )
    server = start_nats(tmp_path / "nats")
    try:
        env = {**service_env(TRADEFLEET_DB_URL=pg_dsn), "PYTHONPATH": str(REPO)}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tradefleet",
                "up",
                "--config",
                str(config),
                "--lockstep",
                "--no-live",
                "--nats-url",
                server.url,
                "--summary",
                "summary.json",
                "--speed",
                "0",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        summary = json.loads((tmp_path / "summary.json").read_text())
        stream = asyncio.run(_exec_stream(server.url))
    finally:
        server.stop()
    assert summary["ok"] and summary["lockstep"]["timeouts"] == 0 and summary["lockstep"]["settles"] > 1000

    settings = load_settings(config)
    days = find_days(str(REPO / "data/sample/lean"), ["IBM", "BAC"], "20131008", "20131008")
    result = asyncio.run(Backtest(settings, days, news=[news]).run())

    fleet = normalized(
        [e for e in stream if isinstance(e, OrderEvent)], [e for e in stream if isinstance(e, Fill)]
    )
    backtest = normalized(result.ledger.orders, result.ledger.fills)
    assert len(backtest["fills"]) >= 2, "the morning must trade for parity to mean something"
    assert fleet["fills"] == backtest["fills"]
    assert fleet["orders"] == backtest["orders"]
    # ...and the same as the fleet traded this morning before the issue-16 reshaping.
    before = golden.expected("morning")
    now = golden.trading(result.ledger.intents, result.ledger.orders, result.ledger.fills, {})
    assert golden.differences(now["intents"], before["intents"]) == []
    fleet_record = json.loads(json.dumps(fleet))
    assert golden.differences(fleet_record, {"orders": before["orders"], "fills": before["fills"]}) == []
