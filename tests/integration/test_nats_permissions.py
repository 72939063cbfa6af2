"""Least privilege on a real nats-server with the generated configuration: no identity, no bus;
a service holding qos's seed cannot publish an approval (execution never sees it), the risk gate
can; services cannot make streams, the provisioner does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.js import api as js_api

from libs.common import natsauth
from libs.common.localinfra import start_nats
from proto.subjects import STREAMS
from tests.helpers import run_cli


async def test_each_service_may_do_what_the_catalog_says_and_nothing_else(tmp_path: Path) -> None:
    out = await asyncio.to_thread(run_cli, "nats", "config", "--out", str(tmp_path / "auth"))
    assert out.returncode == 0 and "nats-server.conf" in out.stdout, out.stderr
    seeds = {p.stem: p for p in (tmp_path / "auth").glob("*.nk")}
    assert {"qos", "risk", "execution", "tap", "operator", "admin"} <= set(seeds)
    assert all(oct(p.stat().st_mode)[-3:] == "600" for p in seeds.values())
    server = start_nats(tmp_path / "js", config=tmp_path / "auth" / "nats-server.conf")
    errors: list[str] = []

    async def seen(exc: Exception) -> None:
        errors.append(str(exc))

    async def as_user(user: str) -> nats.NATS:
        return await nats.connect(server.url, nkeys_seed=str(seeds[user]), error_cb=seen)

    try:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(server.url, allow_reconnect=False, max_reconnect_attempts=0, error_cb=seen)
        qos, risk, execution = await as_user("qos"), await as_user("risk"), await as_user("execution")
        got: list[bytes] = []

        async def hear(msg: object) -> None:
            got.append(msg.data)  # type: ignore[attr-defined]

        await execution.subscribe("order.approved.>", cb=hear)
        await execution.flush()
        await qos.publish("order.approved.IBM", b"forged by qos")
        await qos.flush()
        await risk.publish("order.approved.IBM", b"approved by risk")
        await risk.flush()
        for _ in range(50):
            if got and any("permissions violation" in e for e in errors):
                break
            await asyncio.sleep(0.05)
        assert got == [b"approved by risk"]
        assert any('permissions violation for publish to "order.approved.ibm"' in e.lower() for e in errors)
        # qos may not even listen to approvals, nor a service make a stream.
        overheard: list[bytes] = []

        async def overhear(msg: object) -> None:
            overheard.append(msg.data)  # type: ignore[attr-defined]

        await qos.subscribe("order.approved.>", cb=overhear)
        await qos.flush()
        await risk.publish("order.approved.IBM", b"second")
        await risk.flush()
        await asyncio.sleep(0.3)
        assert overheard == [] and got == [b"approved by risk", b"second"]
        assert any("permissions violation for subscription" in e.lower() for e in errors), errors
        with pytest.raises((nats.errors.Error, nats.js.errors.Error, TimeoutError)):
            await risk.jetstream(timeout=2).add_stream(js_api.StreamConfig(name="X", subjects=["x.>"]))
        for client in (qos, risk, execution):
            await client.close()
        # The provisioner makes the catalog's streams; a service then uses them.
        admin = str(seeds["admin"])
        proc = await asyncio.to_thread(
            run_cli, "nats", "provision", "--nats-url", server.url, "--seed-file", admin
        )
        assert proc.returncode == 0, proc.stderr
        risk = await as_user("risk")
        info = await risk.jetstream().stream_info("ORDERS")
        assert info.config.subjects == ["order.>"] and {s.name for s in STREAMS} >= {"ORDERS", "CONTROL"}
        ack = await risk.jetstream().publish("order.approved.IBM", b"{}")
        assert ack.stream == "ORDERS"
        await risk.close()
    finally:
        server.stop()


def test_permissions_follow_the_catalog() -> None:
    users = natsauth.users()
    approvals = [
        u for u, p in users.items() if any(natsauth.covers(a, "order.approved.IBM") for a in p.publish)
    ]
    assert sorted(approvals) == ["admin", "leaf", "risk"]  # the leaf carries the on-prem gate's
    execs = [u for u, p in users.items() if any(natsauth.covers(a, "exec.fill.IBM") for a in p.publish)]
    assert sorted(execs) == ["admin", "execution", "leaf"]
    ctl = [u for u, p in users.items() if any(natsauth.covers(a, "ctl.set_mode") for a in p.publish)]
    assert sorted(ctl) == ["admin", "alerts", "control", "operator"]
    assert any(natsauth.covers(a, "ctl.kill") for a in users["execution"].publish)  # the panic file
    assert users["leaf"].connection_types == ("LEAFNODE",)
    assert not any(natsauth.covers(a, "$JS.API.STREAM.CREATE.ORDERS") for a in users["risk"].publish)
    assert users["tap"].subscribe == (">",) and not any(
        natsauth.covers(a, "order.approved.IBM") for a in users["tap"].publish
    )
