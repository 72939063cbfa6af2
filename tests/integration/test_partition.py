"""Per-symbol sharding: the same partition as NATS's own subject mapping, and replicas that split
the symbols between them without gaps or overlap."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import nats

from libs.common.localinfra import free_port, nats_server_binary, wait_port
from libs.common.partition import Partitioner, nats_partition
from tests.helpers import http_json, service_env, start_service, wait_until

SYMBOLS = ["IBM", "BAC", "SPY", "AIG", "BRK_B", "AAPL", "MSFT", "GOOG", "TSLA", "X"]
COUNT = 7


async def _mapped(url: str) -> dict[str, int]:
    nc = await nats.connect(url)
    got: dict[str, int] = {}
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        _, symbol, partition = msg.subject.split(".")
        got[symbol] = int(partition)
        if len(got) == len(SYMBOLS):
            done.set()

    await nc.subscribe("part.*.*", cb=on_msg)
    await nc.flush()
    for symbol in SYMBOLS:
        await nc.publish(f"part.{symbol}", b"")
    await asyncio.wait_for(done.wait(), 10)
    await nc.close()
    return got


def test_our_partition_is_the_nats_servers(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\n"
        f'mappings: {{ "part.*": "part.{{{{wildcard(1)}}}}.{{{{partition({COUNT},1)}}}}" }}\n'
    )
    server = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        mapped = asyncio.run(_mapped(f"nats://127.0.0.1:{port}"))
    finally:
        server.terminate()
        server.wait(10)
    assert mapped == {s: nats_partition(s, COUNT) for s in SYMBOLS}
    assert len(set(mapped.values())) > 3  # the symbols really spread


def test_partitioner_owns_its_share() -> None:
    halves = [Partitioner(3, [0]), Partitioner(3, [1, 2])]
    for symbol in SYMBOLS:
        assert sum(p.owns(symbol) for p in halves) == 1
    assert all(Partitioner(3).owns(s) for s in SYMBOLS)


def test_two_features_replicas_split_the_real_day(tmp_path: Path, nats_url: str) -> None:
    # With 3 partitions IBM is in 2 and BAC in 1: replica A owns {0, 1}, replica B owns {2}.
    assert (nats_partition("IBM", 3), nats_partition("BAC", 3)) == (2, 1)
    ports = {"a": free_port(), "b": free_port(), "gw": free_port()}
    procs = []
    try:
        for name, owned in (("a", "[0, 1]"), ("b", "[2]")):
            env = service_env(
                TRADEFLEET_NATS_URL=nats_url,
                TRADEFLEET_HTTP__PORT=str(ports[name]),
                TRADEFLEET_PARTITION__COUNT="3",
                TRADEFLEET_PARTITION__OWNED=owned,
                TRADEFLEET_FEATURES__EMIT_MICRO="false",
            )
            procs.append(start_service("features", env, tmp_path / f"features-{name}.log"))
            wait_until(lambda n=name: http_json(ports[n], "/readyz")[0] == 200, 60, what=f"replica {name}")
        env = service_env(TRADEFLEET_NATS_URL=nats_url, TRADEFLEET_HTTP__PORT=str(ports["gw"]))
        procs.append(start_service("md-gateway", env, tmp_path / "gw.log"))

        def app(name: str) -> dict[str, Any]:
            return dict((http_json(ports[name], "/status")[1] or {}).get("app", {}))

        wait_until(lambda: app("a").get("finished") and app("b").get("finished"), 120, what="both finished")
        a, b = app("a"), app("b")
        assert a["owned_symbols"] == ["BAC"] and b["owned_symbols"] == ["IBM"]
        # Each closes every regular-session minute of its own symbol; together, the whole day.
        assert a["vectors"]["1m"] == b["vectors"]["1m"] == 390
        assert a["other_partition"] > 0 and b["other_partition"] > 0
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)
