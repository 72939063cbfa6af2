"""TLS to NATS: a service's bus with nats.tls_ca_file talks to a TLS-only nats-server whose
certificate that CA signed; without the CA it is refused (the server's certificate is not
trusted), so a man in the middle cannot pose as the bus."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import nats
import nats.errors
import pytest

from libs.common.bus import Delivery
from libs.common.config import NatsSettings
from libs.common.localinfra import free_port, nats_server_binary, wait_port
from libs.common.nats_bus import NatsBus
from tests.kit import stubs
from tests.kit.certs import certificates


async def test_a_bus_with_the_ca_talks_tls_and_one_without_it_is_refused(tmp_path: Path) -> None:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed: no certificates to test with")
    ca, cert, key = certificates(tmp_path)
    port = free_port()
    conf = tmp_path / "tls.conf"
    conf.write_text(f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n}}\n')
    server = await asyncio.to_thread(
        subprocess.Popen,
        [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        url = f"tls://127.0.0.1:{port}"
        bus = NatsBus(NatsSettings(url=url, tls_ca_file=ca), "tls-test")
        await bus.connect()
        heard: list[Delivery] = []

        async def hear(d: Delivery) -> None:
            heard.append(d)

        await bus.subscribe("md.quote.>", hear)
        await bus.publish("md.quote.IBM", stubs.quote())
        await bus.flush(roundtrip=True)
        for _ in range(50):
            if heard:
                break
            await asyncio.sleep(0.05)
        assert heard and heard[0].event.symbol == "IBM"
        await bus.close()
        # Without the CA (the system's trust store only), the server's certificate is refused.
        errors: list[Exception] = []

        async def seen(exc: Exception) -> None:
            errors.append(exc)

        with pytest.raises((nats.errors.NoServersError, TimeoutError)):
            await asyncio.wait_for(
                nats.connect(
                    url,
                    tls=ssl.create_default_context(),
                    error_cb=seen,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0.2,
                    connect_timeout=2,
                ),
                15,
            )
        assert any(isinstance(e, ssl.SSLCertVerificationError) for e in errors), errors
    finally:
        server.terminate()
        server.wait(10)
