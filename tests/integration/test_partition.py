"""Per-symbol sharding: the same partition as NATS's own subject mapping, and replicas that split
the symbols between them without gaps or overlap."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import pytest

from libs.common import natsauth
from libs.common.localinfra import free_port, nats_server_binary, start_nats, wait_port
from libs.common.partition import Partitioner, nats_partition
from proto.execution import Fill, OrderEvent
from proto.orders import OrderIntent
from tests.helpers import REPO, http_json, service_env, start_service, stored_events, wait_until
from tests.kit import golden

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


def _sides(fills: list[dict[str, Any]]) -> dict[str, list[tuple[str, float]]]:
    """Per symbol, in time order, what was bought and sold: replicas' decisions on different
    symbols in the same second may reach the bus in either order, one symbol's never do."""
    out: dict[str, list[tuple[str, float]]] = {}
    for row in sorted(fills, key=lambda r: r["ts_event"]):
        out.setdefault(row["symbol"], []).append((row["side"], row["quantity"]))
    return out


@pytest.mark.timeout(900)
def test_three_replicas_on_a_partitioned_secured_server_trade_like_one(tmp_path: Path, pg_dsn: str) -> None:
    """Three replicas each of features, fastlane and qos, each subscribed to its own partition on
    a server that maps the symbols (`tradefleet nats config --partitions 3`), with every
    service's permissions on: the morning's intents are the golden record's (one replica of each,
    the backtest), every symbol handled by exactly one replica."""
    news = REPO / "data/sample/news/20131008.jsonl"
    config = tmp_path / "replicas.yaml"
    config.write_text(
        f"md_gateway:\n  replay: {{root: {REPO / 'data/sample/lean'}, news: [{news}], until: '10:30'}}\n"
        f"sentiment:\n  cache: {REPO / 'var' / 'sentiment-cache'}\n"
        f"  engine: {golden.GOLDEN_SENTIMENT['engine']}\n"
    )
    env = {**service_env(TRADEFLEET_DB_URL=pg_dsn), "PYTHONPATH": str(REPO)}
    auth = tmp_path / "auth"
    made = subprocess.run(
        [sys.executable, "-m", "tradefleet", "nats", "config", "--out", str(auth), "--partitions", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0 and "(3 partition(s))" in made.stdout, made.stderr
    server = start_nats(tmp_path / "nats", config=auth / "nats-server.conf")
    try:
        up = [sys.executable, "-m", "tradefleet", "up", "--config", str(config), "--lockstep", "--no-live"]
        up += ["--nats-url", server.url, "--nats-auth", str(auth), "--replicas", "3"]
        up += ["--summary", "summary.json", "--speed", "0"]
        proc = subprocess.run(
            up, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=850, check=False
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        orders_stream = asyncio.run(stored_events(server.url, "ORDERS", auth / "tap.nk"))
        exec_stream = asyncio.run(stored_events(server.url, "EXEC", auth / "tap.nk"))
    finally:
        server.stop()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ok"] and summary["lockstep"]["timeouts"] == 0
    # Every replica started with its own partition, and no symbol reached a replica not its own.
    replicas = summary["replicas"]
    assert set(replicas) == {f"{s}-{i}" for s in ("features", "fastlane", "qos") for i in range(3)}
    owners = {n: r["owned_symbols"] for n, r in replicas.items() if n.startswith("features")}
    assert owners == {"features-0": [], "features-1": ["BAC"], "features-2": ["IBM"]}
    assert all(r["other_partition"] == 0 for r in replicas.values())  # the server sent only its own

    intents = [e for e in orders_stream if isinstance(e, OrderIntent)]
    now = golden.trading(
        intents,
        [e for e in exec_stream if isinstance(e, OrderEvent)],
        [e for e in exec_stream if isinstance(e, Fill)],
        {},
    )
    before = golden.expected("morning")
    by_id = lambda rows: sorted(rows, key=lambda r: r["intent_id"])  # noqa: E731
    assert len(now["intents"]) == len(before["intents"]) >= 4
    assert golden.differences(by_id(now["intents"]), by_id(before["intents"])) == []
    # The same orders of each symbol, filled in full. Not at the same instants: a replica's bars
    # close on the next tick of its own symbols (one replica of all closes them on any symbol's),
    # so a decision reaches the simulated market a few hundred milliseconds later on the tape.
    assert _sides(now["fills"]) == _sides(before["fills"])


async def _partitions_seen(url: str, seed: Path) -> int:
    from libs.common.config import NatsSettings
    from libs.common.nats_bus import NatsBus

    bus = NatsBus(NatsSettings(url=url, nkey_seed_file=seed), "tap")
    await bus.connect()
    try:
        return bus.partitions
    finally:
        await bus.close()


def test_changing_the_partition_count_is_a_config_change(tmp_path: Path) -> None:
    """The procedure of docs/ARCHITECTURE.md (Scaling): rewrite the server's config with the new
    count, reload the server, restart the replicas with it. A replica still on the old count
    refuses to start, naming both, instead of leaving symbols to no replica or to two."""
    auth = tmp_path / "auth"
    natsauth.write(auth, partitions=2)
    server = start_nats(tmp_path / "js", config=auth / "nats-server.conf")
    try:
        assert asyncio.run(_partitions_seen(server.url, auth / "tap.nk")) == 2
        seeds_before = {p.name: p.read_text() for p in auth.glob("*.nk")}
        natsauth.write(auth, partitions=3)
        assert {p.name: p.read_text() for p in auth.glob("*.nk")} == seeds_before  # identities kept
        server.process.send_signal(signal.SIGHUP)  # nats-server reloads its config
        wait_until(lambda: asyncio.run(_partitions_seen(server.url, auth / "tap.nk")) == 3, 10, what="reload")
        env = service_env(
            TRADEFLEET_NATS_URL=server.url,
            TRADEFLEET_NATS__NKEY_SEED_FILE=str(auth / "features.nk"),
            TRADEFLEET_HTTP__PORT=str(free_port()),
            TRADEFLEET_PARTITION__COUNT="2",
            TRADEFLEET_PARTITION__OWNED="1",
        )
        stale = start_service("features", env, tmp_path / "stale.log")
        assert stale.wait(60) != 0
        assert (
            "partition.count is 2 but the NATS server maps 3 partitions"
            in (tmp_path / "stale.log").read_text()
        )
    finally:
        server.stop()
