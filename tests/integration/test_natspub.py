"""The bus's core publish with its header block encoded once (libs/common/natspub.py) against
nats-py's own ``publish`` with the same headers, on a real NATS server: the same message
arrives, and the same refusals are raised (closed, payload too large, reconnect buffer full)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest

from libs.common import natspub
from libs.common.config import NatsSettings
from libs.common.localinfra import start_nats
from libs.common.nats_bus import SCHEMA_HEADER, NatsBus
from tests.kit import stubs

HEADERS = {"Tf-Schema": "3", "Tf-Origin": "features+fastlane/4242/1733400000000000000"}


async def _received(url: str, send: Any) -> list[Any]:
    nc = await nats.connect(url)
    got: list[Any] = []

    async def keep(msg: Any) -> None:
        got.append(msg)

    sub = await nc.subscribe("natspub.>", cb=keep)
    await nc.flush()
    await send(nc)
    await nc.flush()
    for _ in range(200):
        if len(got) >= 2:
            break
        await asyncio.sleep(0.01)
    await sub.unsubscribe()
    await nc.close()
    return got


def test_the_encoded_block_arrives_as_nats_py_sends_it(nats_url: str) -> None:
    payload = b"\x93\xa4tick\x01\xcb@Y\x00\x00\x00\x00\x00\x00"

    async def send(nc: Any) -> None:
        await nc.publish("natspub.plain", payload, headers=HEADERS)
        await natspub.publish_encoded(nc, "natspub.block", payload, natspub.encode_headers(HEADERS))

    plain, block = asyncio.run(_received(nats_url, send))
    assert (plain.subject, block.subject) == ("natspub.plain", "natspub.block")
    assert block.data == plain.data == payload
    assert block.headers == plain.headers == HEADERS


def test_bad_headers_are_refused_when_encoded() -> None:
    with pytest.raises(ValueError, match="header key"):
        natspub.encode_headers({"Tf Schema": "3"})
    with pytest.raises(ValueError, match="line break"):
        natspub.encode_headers({"Tf-Schema": "3\r\nX-Evil: 1"})


def test_the_same_refusals_as_nats_py(tmp_path: Path) -> None:
    server = start_nats(tmp_path / "nats")
    block = natspub.encode_headers(HEADERS)

    async def refusals() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"plain": [], "block": []}
        nc = await nats.connect(
            server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.05, pending_size=1024
        )
        assert natspub.supported(nc)
        big = b"x" * (nc.max_payload + 1)
        for name, publish in (
            ("plain", lambda s, p: nc.publish(s, p, headers=HEADERS)),
            ("block", lambda s, p: natspub.publish_encoded(nc, s, p, block)),
        ):
            with pytest.raises(nats.errors.MaxPayloadError):
                await publish("natspub.big", big)
            out[name].append("max_payload")
        server.stop()  # reconnecting: kept while the buffer has room, then refused
        for _ in range(500):
            if not nc.is_connected:
                break
            await asyncio.sleep(0.01)
        assert not nc.is_connected
        for name, publish in (
            ("plain", lambda s, p: nc.publish(s, p, headers=HEADERS)),
            ("block", lambda s, p: natspub.publish_encoded(nc, s, p, block)),
        ):
            kept = 0
            with pytest.raises(nats.errors.OutboundBufferLimitError):
                for _ in range(100):
                    await publish("natspub.down", b"y" * 100)
                    kept += 1
            out[name].append(f"kept {kept} then buffer full")
            nc._pending, nc._pending_data_size = [], 0  # the other path starts from empty too
        await nc.close()
        for name, publish in (
            ("plain", lambda s, p: nc.publish(s, p, headers=HEADERS)),
            ("block", lambda s, p: natspub.publish_encoded(nc, s, p, block)),
        ):
            with pytest.raises(nats.errors.ConnectionClosedError):
                await publish("natspub.closed", b"z")
            out[name].append("closed")
        return out

    try:
        out = asyncio.run(refusals())
    finally:
        server.stop()
    assert out["plain"] == out["block"] and len(out["block"]) == 3


def test_the_bus_encodes_its_headers_once_unless_tracing(nats_url: str) -> None:
    async def run() -> tuple[bytes | None, dict[str, str] | None]:
        bus = NatsBus(NatsSettings(url=nats_url), service="natspub-test")
        await bus.connect()
        block = bus._header_block
        got: list[Any] = []

        async def keep(msg: Any) -> None:
            got.append(msg)

        nc = await nats.connect(nats_url)
        await nc.subscribe("md.quote.>", cb=keep)
        await nc.flush()
        await bus.publish("md.quote.IBM", stubs.quote())
        await bus.flush()
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.01)
        await nc.close()
        await bus.close()
        return block, got[0].headers if got else None

    block, headers = asyncio.run(run())
    assert block is not None and headers is not None and SCHEMA_HEADER in headers
    assert block == natspub.encode_headers(headers)
