"""A hybrid site on two real nats-servers on loopback: the cloud hub (JetStream and the cloud's
services) and the on-prem leaf node next to the broker (md-gateway, risk, execution), joined by
one leaf connection authenticated with the generated leaf user's nkey."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from libs.common import natsauth
from libs.common.config import NatsSettings
from libs.common.localinfra import NatsServer, free_port, start_nats
from libs.common.nats_bus import NatsBus
from proto.alerts import Alert
from proto.execution import Fill, OrderEvent
from proto.orders import OrderApproved, OrderDenied, OrderIntent, RiskState
from tests.helpers import REPO, http_json, run_cli, service_env, start_service, stored_events, wait_until
from tests.kit import golden
from tests.kit.golden import normalized

# The hub's JetStream domain: the leaf's clients reach its streams through it (nats.js_domain).
DOMAIN = "hub"
ON_THE_HUB = {"TRADEFLEET_NATS__JS_DOMAIN": DOMAIN}


class LinkCutter:
    """A TCP relay standing for the WAN link between the sites: ``cut()`` drops every
    connection through it and refuses new ones until ``restore()``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.up = True
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for end in (src, dst):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self._listener.close()


def _sites(tmp: Path, leaf_port: int, link: LinkCutter | None = None) -> tuple[Path, NatsServer, NatsServer]:
    """The generated users on both servers; the hub with JetStream and leaf nodes on
    ``leaf_port``, the leaf without JetStream (its clients' streams are the hub's), connecting
    through ``link`` or straight to the hub."""
    auth = tmp / "auth"
    natsauth.write(auth)
    (tmp / "hub.conf").write_text(
        f'include "auth/nats-server.conf"\njetstream {{ domain: {DOMAIN} }}\n'
        # no_advertise: a leaf reconnects where it was told (the link), not to the hub's own port
        f'leafnodes {{ listen: "127.0.0.1:{leaf_port}", no_advertise: true }}\n'
    )
    hub = start_nats(tmp / "hub-js", config=tmp / "hub.conf", log_file=tmp / "hub.log")
    seed = (auth / "leaf.nk").read_text().strip()
    remote = f"nats-leaf://127.0.0.1:{link.port if link else leaf_port}"
    (tmp / "leaf.conf").write_text(
        'include "auth/nats-server.conf"\n'
        f'leafnodes {{ reconnect: "1s", remotes: [ {{ url: "{remote}", nkey: "{seed}" }} ] }}\n'
    )
    leaf = start_nats(
        tmp / "leaf-store", config=tmp / "leaf.conf", log_file=tmp / "leaf.log", jetstream=False
    )
    return auth, hub, leaf


def _leaf_connected(leaf: NatsServer) -> bool:
    code, body = http_json(leaf.monitor_port, "/leafz")
    return code == 200 and bool(body and body.get("leafnodes"))


def _provision(url: str, auth: Path) -> None:
    proc = run_cli("nats", "provision", "--nats-url", url, "--seed-file", str(auth / "admin.nk"))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.timeout(900)
def test_the_fleet_split_across_hub_and_leaf_trades_like_one_server(tmp_path: Path, pg_dsn: str) -> None:
    """md-gateway, risk and execution on the leaf, everything else on the hub, in lockstep: the
    morning's intents, orders and fills are the golden record's (one server, the backtest)."""
    auth, hub, leaf = _sites(tmp_path, free_port())
    news = REPO / "data/sample/news/20131008.jsonl"
    config = tmp_path / "hybrid.yaml"
    config.write_text(
        f"md_gateway:\n  replay: {{root: {REPO / 'data/sample/lean'}, news: [{news}], until: '10:30'}}\n"
        f"sentiment:\n  cache: {REPO / 'var' / 'sentiment-cache'}\n"
        f"  engine: {golden.GOLDEN_SENTIMENT['engine']}\n"
    )
    try:
        wait_until(lambda: _leaf_connected(leaf), 30, what="the leaf joined the hub")
        env = {**service_env(TRADEFLEET_DB_URL=pg_dsn, **ON_THE_HUB), "PYTHONPATH": str(REPO)}
        up = [sys.executable, "-m", "tradefleet", "up", "--config", str(config), "--lockstep", "--no-live"]
        up += ["--nats-url", hub.url, "--edge-nats-url", leaf.url, "--nats-auth", str(auth)]
        up += ["--summary", "summary.json", "--speed", "0"]
        proc = subprocess.run(
            up, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=850, check=False
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        orders_stream = asyncio.run(stored_events(hub.url, "ORDERS", auth / "tap.nk"))
        exec_stream = asyncio.run(stored_events(hub.url, "EXEC", auth / "tap.nk"))
        # The on-prem services were the leaf's clients, and only they.
        _, closed = http_json(leaf.monitor_port, "/connz?state=closed&limit=1024")
        on_leaf = {c.get("name") for c in (closed or {}).get("connections", [])}
    finally:
        leaf.stop()
        hub.stop()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ok"] and summary["lockstep"]["timeouts"] == 0
    assert {"md-gateway", "risk", "execution"} <= on_leaf
    assert not on_leaf & {"features", "fastlane", "qos", "sentiment", "recorder", "tca", "control", "alerts"}
    before = golden.expected("morning")
    intents = [e for e in orders_stream if isinstance(e, OrderIntent)]
    now = golden.trading(intents, [], [], {})
    assert golden.differences(now["intents"], before["intents"]) == []
    fleet = normalized(
        [e for e in exec_stream if isinstance(e, OrderEvent)], [e for e in exec_stream if isinstance(e, Fill)]
    )
    record = json.loads(json.dumps(fleet))
    assert golden.differences(record, {"orders": before["orders"], "fills": before["fills"]}) == []


def _risk(port: int) -> dict[str, Any]:
    code, body = http_json(port, "/status")
    return dict((body or {}).get("app", {})) if code == 200 else {}


@pytest.mark.timeout(300)
def test_cutting_the_leaf_link_degrades_the_onprem_gate_and_restoring_it_loses_nothing(
    tmp_path: Path,
) -> None:
    leaf_port = free_port()
    link = LinkCutter(leaf_port)
    auth, hub, leaf = _sites(tmp_path, leaf_port, link)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        wait_until(lambda: _leaf_connected(leaf), 30, what="the leaf joined the hub")
        _provision(hub.url, auth)
        beat = {"TRADEFLEET_TELEMETRY__HEARTBEAT_S": "0.3"}
        ports = {"qos": free_port(), "risk": free_port()}
        procs.append(
            start_service(
                "qos",
                service_env(
                    TRADEFLEET_NATS_URL=hub.url,
                    TRADEFLEET_NATS__NKEY_SEED_FILE=str(auth / "qos.nk"),
                    TRADEFLEET_HTTP__PORT=str(ports["qos"]),
                    **beat,
                ),
                tmp_path / "qos.log",
            )
        )
        procs.append(
            start_service(
                "risk",
                service_env(
                    TRADEFLEET_NATS_URL=leaf.url,
                    TRADEFLEET_NATS__NKEY_SEED_FILE=str(auth / "risk.nk"),
                    TRADEFLEET_HTTP__PORT=str(ports["risk"]),
                    TRADEFLEET_RISK__HUB_SERVICES='["qos"]',
                    TRADEFLEET_RISK__HUB_SILENCE_S="3",
                    **ON_THE_HUB,
                    **beat,
                ),
                tmp_path / "risk.log",
            )
        )
        for name, port in ports.items():
            wait_until(lambda p=port: http_json(p, "/readyz")[0] == 200, 90, what=f"{name} ready")
        # The gate has heard the hub (qos's heartbeats over the leaf link) and is not degraded.
        wait_until(
            lambda: (r := _risk(ports["risk"])).get("hub_reachable") and r["hub_heard_ago_s"]["qos"] < 1.0,
            30,
            what="risk hears qos",
        )
        mode_before = _risk(ports["risk"])["mode"]
        assert mode_before != "DEGRADED"

        link.cut()
        wait_until(
            lambda: _risk(ports["risk"]).get("mode") == "DEGRADED", 20, what="risk DEGRADED on the cut"
        )
        assert "hub unreachable: no heartbeat from qos" in _risk(ports["risk"])["mode_reason"]
        # Meanwhile the cloud decides: an intent stored in the hub waits for the gate.
        intent = OrderIntent(
            ts_event=time.time_ns(),
            ts_init=time.time_ns(),
            intent_id=f"cut-{time.time_ns()}",
            symbol="IBM",
            side="BUY",
            quantity=10,
        )
        asyncio.run(_publish_as_qos(hub.url, auth / "qos.nk", intent))

        link.restore()
        wait_until(
            lambda: (r := _risk(ports["risk"])).get("mode") == mode_before and r.get("unsent") == 0,
            30,
            what="risk back to its mode once the hub is heard, everything it kept sent",
        )

        def stored_states() -> list[RiskState]:
            return [
                e
                for e in asyncio.run(stored_events(hub.url, "RISK", auth / "tap.nk"))
                if isinstance(e, RiskState)
            ]

        # Its status says the mode is back before the state saying so is stored in the hub
        # (published, not yet acknowledged): wait for the store, not only for the status.
        wait_until(
            lambda: bool(got := stored_states()) and got[-1].mode == mode_before,
            30,
            interval=0.2,
            what="the state saying risk is back stored in the hub",
        )
        states = stored_states()

        def risk_alerts() -> list[str]:
            stored = asyncio.run(stored_events(hub.url, "ALERTS", auth / "tap.nk"))
            return [e.title for e in stored if isinstance(e, Alert) and e.source == "risk"]

        # The mode alert follows the state it goes with, each kept and sent in order once the hub
        # is back: wait for it to be stored too, not only the state.
        wait_until(
            lambda: any(t.startswith(f"risk mode DEGRADED -> {mode_before}") for t in risk_alerts()),
            30,
            interval=0.2,
            what="the alert saying risk is back stored in the hub",
        )
        titles = risk_alerts()

        def decided() -> list[Any]:
            orders = asyncio.run(stored_events(hub.url, "ORDERS", auth / "tap.nk"))
            kinds = (OrderApproved, OrderDenied)
            return [e for e in orders if isinstance(e, kinds) and e.intent_id == intent.intent_id]

        # The intent made while the link was down is decided once it is back: nothing lost.
        wait_until(decided, 30, interval=0.2, what="the intent made during the cut decided")
        time.sleep(0.5)  # a second decision (a redelivery taken twice) would be there by now
        decisions = decided()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)
        link.close()
        leaf.stop()
        hub.stop()
    # What risk said during the cut reached the hub afterwards, in order: DEGRADED, then back.
    modes = [s.mode for s in states]
    degraded = modes.index("DEGRADED")
    assert "hub unreachable" in states[degraded].mode_reason and modes[-1] == mode_before
    assert any(t.startswith(f"risk mode {mode_before} -> DEGRADED: hub unreachable") for t in titles), titles
    assert any(t.startswith(f"risk mode DEGRADED -> {mode_before}") for t in titles), titles
    assert len(decisions) == 1


async def _publish_as_qos(url: str, seed: Path, intent: OrderIntent) -> None:
    bus = NatsBus(NatsSettings(url=url, nkey_seed_file=seed), "qos")
    await bus.connect()
    try:
        await bus.publish(f"order.intent.{intent.symbol}", intent)
    finally:
        await bus.close()
