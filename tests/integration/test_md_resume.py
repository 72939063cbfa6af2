"""A restarted md-gateway resumes its replay from its checkpoint instead of replaying the day:
kill -9 mid-replay, start it again, and every record of the day is published, at most the last
half second of it twice, never the whole day again."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import nats

from libs.common import codec
from libs.common.localinfra import free_port, start_nats
from tests.helpers import REPO, await_until, http_json, service_env, start_service


def _status(port: int) -> dict[str, Any]:
    code, body = http_json(port, "/status")
    return dict((body or {}).get("app", {})) if code == 200 else {}


async def test_a_killed_replay_resumes_where_it_stopped(tmp_path: Path) -> None:
    server = start_nats(tmp_path / "nats")  # its own: the JetStream state is this test's
    checkpoint = tmp_path / "md.checkpoint"
    nc = await nats.connect(server.url)
    seen = {"events": 0}

    async def count(msg: Any) -> None:
        obj = codec.decode(msg.data)
        seen["events"] += len(getattr(obj, "events", None) or [obj])

    await nc.subscribe("md.quote.>", cb=count, pending_msgs_limit=10_000_000, pending_bytes_limit=-1)
    await nc.subscribe("md.trade.>", cb=count, pending_msgs_limit=10_000_000, pending_bytes_limit=-1)
    await nc.flush()
    port = free_port()
    env = service_env(
        TRADEFLEET_NATS_URL=server.url,
        TRADEFLEET_HTTP__PORT=str(port),
        TRADEFLEET_MD_GATEWAY__REPLAY__ROOT=str(REPO / "data/sample/lean"),
        TRADEFLEET_MD_GATEWAY__REPLAY__SYMBOLS='["IBM"]',
        TRADEFLEET_MD_GATEWAY__REPLAY__NEWS="[]",
        TRADEFLEET_MD_GATEWAY__REPLAY__SPEED="3000",  # paced: a kill lands mid-replay
        TRADEFLEET_MD_GATEWAY__REPLAY__CHECKPOINT=str(checkpoint),
    )
    log = tmp_path / "md.log"
    proc = start_service("md-gateway", env, log)
    try:

        def noted() -> int:
            try:
                return int(json.loads(checkpoint.read_text())["position"])
            except (OSError, ValueError, KeyError):
                return 0

        await await_until(lambda: noted() > 20_000, timeout=120, what="a checkpoint mid-replay")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        before = seen["events"]
        assert 0 < noted() < 150_000  # mid-replay
        proc = start_service("md-gateway", env, log)
        await await_until(lambda: _status(port).get("finished"), timeout=180, what="the replay finished")
        stats = _status(port)["stats"]
        await nc.flush()
        await asyncio.sleep(0.5)
        published = stats["quotes"] + stats["trades"]  # the whole day's (the core took it all again)
        assert "resuming the replay where an earlier run of it stopped" in log.read_text()
        assert seen["events"] >= published  # nothing lost
        again = seen["events"] - published
        assert again < 0.1 * published and again < before  # not the day (nor the first life) again
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        await nc.close()
        server.stop()
