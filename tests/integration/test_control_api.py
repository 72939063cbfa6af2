"""The control API over real HTTP against real services on a real NATS: roles, reads, actions
answered by the services, live parameters applied without a restart and kept after one, strategy
stop per symbol, outside signals into QOS, and the WebSocket's live risk state."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from libs.common.hotstate import HotState, read_all
from libs.common.localinfra import free_port, start_nats
from proto.orders import OrderDenied
from proto.signals import QosScore
from services.risk.core import client_order_id_for
from tests.helpers import http_json, service_env, start_service, wait_until
from tests.integration.test_order_path import Desk

REDIS = "redis://127.0.0.1:6379/0"
TOKENS = {"viewer": "tf_view_secret", "operator": "tf_op_secret", "admin": "tf_admin_secret"}
READS = (
    "/api/whoami",
    "/api/status",
    "/api/positions",
    "/api/orders",
    "/api/pnl",
    "/api/qos",
    "/api/models",
    "/api/signals",
    "/api/alerts",
    "/api/news",
    "/api/tca",
    "/api/feedback",
    "/api/book",
    "/api/params/risk",
    "/api/params/qos",
    "/api/params/exits",
)


def token_config() -> str:
    entries = [
        {"name": f"{role}-1", "role": role, "token_sha256": hashlib.sha256(t.encode()).hexdigest()}
        for role, t in TOKENS.items()
    ]
    return json.dumps(entries)


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


class Fleet:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server = start_nats(tmp / "nats")
        self.ports = {name: free_port() for name in ("risk", "execution", "qos", "control")}
        self.api_port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.prefix = f"test-control-{uuid.uuid4().hex[:8]}"

    def start(self, name: str) -> None:
        env = service_env(
            TRADEFLEET_NATS_URL=self.server.url,
            TRADEFLEET_HTTP__PORT=str(self.ports[name]),
            TRADEFLEET_EXECUTION__JOURNAL=str(self.tmp / "journal.msgpack"),
            TRADEFLEET_CONTROL__PORT=str(self.api_port),
            TRADEFLEET_CONTROL__TOKENS=token_config(),
            TRADEFLEET_CONTROL__ACK_WAIT_S="10",
            TRADEFLEET_QOS__WEIGHTS='{"5m": 0.4, "15m": 0.3, "30m": 0.2, "60m": 0.1, "external": 0.5}',
            TRADEFLEET_HOT_STATE__REDIS_URL=REDIS,
            TRADEFLEET_HOT_STATE__PREFIX=self.prefix,
        )
        self.procs[name] = start_service(name, env, self.tmp / f"{name}.log")
        wait_until(lambda: http_json(self.ports[name], "/readyz")[0] == 200, 60, what=f"{name} ready")

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(10)

    def status(self, name: str) -> dict[str, Any]:
        return dict((http_json(self.ports[name], "/status")[1] or {}).get("app", {}))

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(20)
        self.server.stop()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        for name in ("risk", "execution", "qos", "control"):
            f.start(name)
        yield f
    finally:
        f.stop()


async def test_roles_reads_actions_live_parameters_and_the_live_stream(fleet: Fleet) -> None:
    base = f"http://127.0.0.1:{fleet.api_port}"
    async with httpx.AsyncClient(base_url=base, timeout=20) as api, Desk(fleet.server.url) as desk:
        await desk.tick(3)
        # Reads: every endpoint for a viewer; nothing without a valid token.
        for path in READS:
            r = await api.get(path, headers=auth("viewer"))
            assert r.status_code == 200, (path, r.text)
        assert (await api.get("/api/whoami", headers=auth("viewer"))).json() == {
            "name": "viewer-1",
            "role": "viewer",
        }
        assert (await api.get("/api/status")).status_code == 401
        assert (await api.get("/api/status", headers={"Authorization": "Bearer nope"})).status_code == 401
        # A viewer acts on nothing; an operator changes no parameter.
        assert (await api.post("/api/kill", headers=auth("viewer"), json={})).status_code == 403
        put = {"values": {"max_position_shares": 150}}
        assert (await api.put("/api/params/risk", headers=auth("operator"), json=put)).status_code == 403

        # A bad value: field errors, nothing applied.
        bad = await api.put(
            "/api/params/risk", headers=auth("admin"), json={"values": {"max_position_shares": -1}}
        )
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["values", "max_position_shares"]
        # A tighter limit, applied live by the running gate (its ack says so) ...
        done = await api.put("/api/params/risk", headers=auth("admin"), json=put)
        body = done.json()
        assert done.status_code == 200 and body["ok"], body
        assert body["changed"] == {"max_position_shares": [2000.0, 150.0]}
        assert body["acks"][0]["service"] == "risk" and "150" in body["acks"][0]["summary"]
        # ... so the next entry past it is denied with POSITION_SHARES.
        await desk.intent("p-1", qty=100)
        await desk.until(lambda: _filled(desk, "p-1"), "the first fill")
        await desk.intent("p-2", qty=100)
        (denial,) = await desk.until(lambda: _denied(desk, "p-2"), "the second decision")
        assert denial.code == "POSITION_SHARES"
        # A restarted gate keeps the live limit (read back from ctl.config.risk).
        await asyncio.sleep(0.3)
        fleet.kill("risk")
        fleet.start("risk")
        await desk.tick(2)
        await desk.intent("p-3", qty=100)
        (denial,) = await desk.until(lambda: _denied(desk, "p-3"), "the decision after the restart")
        assert denial.code == "POSITION_SHARES" and denial.context["max"] == "150"
        params = (await api.get("/api/params/risk", headers=auth("viewer"))).json()
        assert params["values"]["max_position_shares"] == 150 and params["changed_by"] == "api:admin-1"

        # Strategy stop for one symbol: QOS takes no entries for it, live.
        stop = await api.post("/api/strategy/stop", headers=auth("operator"), json={"symbol": "ibm"})
        assert stop.status_code == 200 and stop.json()["ok"] and stop.json()["acks"][0]["service"] == "qos"
        assert fleet.status("qos")["entries_off"] == ["IBM"]
        qos = (await api.get("/api/qos", headers=auth("viewer"))).json()
        assert qos["entries_off"] == ["IBM"]
        # An outside model's signal reaches QOS as its input.
        sent = await api.post(
            "/api/signal", headers=auth("operator"), json={"symbol": "IBM", "source": "desk", "signal": 0.6}
        )
        assert sent.status_code == 202
        wait_until(lambda: fleet.status("qos").get("external_in") == 1, 10, what="the signal in qos")

        # The live stream: a kill from an operator shows as EMERGENCY on a viewer's socket.
        url = f"ws://127.0.0.1:{fleet.api_port}/api/ws?token={TOKENS['viewer']}"
        async with websockets.connect(url) as socket:
            kill = await api.post("/api/kill", headers=auth("operator"), json={"flatten": False})
            answer = kill.json()
            assert kill.status_code == 200 and answer["ok"], answer
            assert {a["service"] for a in answer["acks"]} == {"risk", "execution"}
            seen = await _until_message(
                socket, lambda m: m["type"] == "risk" and m["data"]["mode"] == "EMERGENCY"
            )
            assert "kill by api:operator-1" in seen["data"]["mode_reason"]
        status = (await api.get("/api/status", headers=auth("viewer"))).json()
        assert status["risk"]["mode"] == "EMERGENCY"
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(f"ws://127.0.0.1:{fleet.api_port}/api/ws?token=nope"):
                pass

        # The services keep their latest in Redis (the gate its state); a restarted control
        # service starts from it, with what no stream keeps (QOS scores) too.
        hot = HotState(REDIS, prefix=fleet.prefix)
        now = time.time_ns()
        hot.put_event(
            QosScore(ts_event=now, ts_init=now, symbol="BAC", score=0.42, peak=0.5, regime="up/mid")
        )
        await hot.flush()
        await hot.close()
        assert any(type(e).__name__ == "RiskState" for e in await read_all(REDIS, fleet.prefix))
        fleet.kill("control")
        fleet.start("control")
        qos = (await api.get("/api/qos", headers=auth("viewer"))).json()
        scores = {s["symbol"]: s["score"] for s in qos["symbols"]}
        assert scores["BAC"] == 0.42  # only Redis had it
        assert "IBM" in scores  # the score qos made of the outside signal, kept by qos itself
        # A clean stop tells the clients it is going away (1001), not that they were too slow.
        async with websockets.connect(url) as socket:
            await asyncio.sleep(0.2)
            fleet.procs["control"].terminate()
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                await asyncio.wait_for(_until_message(socket, lambda m: False, 20), 25)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


def _filled(desk: Desk, intent_id: str) -> bool:
    from proto.execution import Fill

    return bool(desk.of(Fill, client_order_id_for(intent_id)))


def _denied(desk: Desk, intent_id: str) -> list[OrderDenied]:
    return [d for d in desk.of(OrderDenied) if d.intent_id == intent_id]


async def _until_message(socket: Any, wanted: Any, timeout: float = 15.0) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        while True:
            message = json.loads(await socket.recv())
            if wanted(message):
                return message  # type: ignore[no-any-return]

    return await asyncio.wait_for(read(), timeout)
