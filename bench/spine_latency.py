"""Replay tick -> QOS score -> intent latency through the fleet (features, fastlane and qos as
separate processes on a private NATS), with a bare baseline in the same run: the same tick taking
three bare nats-py relay hops (the spine's hop count) in separate processes.

The source publishes the real sample day (through the md-gateway core, in order) at a paced rate
and notes the wall time of the first tick at or after each minute boundary: that tick closes the
bar. Latency = receipt of the QosScore (or OrderIntent) for that boundary - that publish time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import nats

from bench.common import median, percentile, save
from bench.features import sample_events
from libs.common import codec
from libs.common.localinfra import free_port, start_nats
from proto.market import Quote
from proto.orders import OrderIntent
from proto.signals import QosScore
from proto.subjects import spec

MINUTE = 60_000_000_000
QUOTE, TRADE = spec("md.quote.{symbol}"), spec("md.trade.{symbol}")


def _spawn_service(name: str, url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEFLEET_")}
    env.update(
        TRADEFLEET_NATS_URL=url, TRADEFLEET_HTTP__PORT=str(port), TRADEFLEET_TELEMETRY__LOG_FORMAT="json"
    )
    return subprocess.Popen(
        [sys.executable, "-m", "tradefleet", "service", name],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


async def drive(url: str, events: list[Any], rate: float, sink_subjects: tuple[str, ...]) -> dict[str, Any]:
    """Publish the day paced; collect (boundary -> publish wall ns) and what the sink received."""
    nc = await nats.connect(url)
    received: list[tuple[int, Any]] = []

    async def on_msg(msg: Any) -> None:
        received.append((time.time_ns(), codec.decode(msg.data)))

    for subject in sink_subjects:
        await nc.subscribe(subject, cb=on_msg, pending_msgs_limit=1_000_000)
    await nc.flush()
    closing: dict[int, int] = {}
    next_boundary = 0
    gap = 1.0 / rate
    start = time.perf_counter()
    for i, e in enumerate(events):
        delay = start + i * gap - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        subject = (QUOTE if isinstance(e, Quote) else TRADE).subject(symbol=e.symbol)
        now = time.time_ns()
        if e.ts_event >= next_boundary:
            boundary = e.ts_event // MINUTE * MINUTE
            if next_boundary:
                closing.setdefault(boundary, now)
            next_boundary = boundary + MINUTE
        await nc.publish(subject, codec.encode(msgspec.structs.replace(e, ts_init=now)))
    await asyncio.sleep(2.0)
    await nc.close()
    return {"closing": closing, "received": received}


def spine_round(url: str, events: list[Any], rate: float, logs: Path) -> dict[str, Any]:
    procs = {}
    try:
        for name in ("qos", "fastlane", "features"):
            port = free_port()
            procs[name] = _spawn_service(name, url, port, logs / f"{name}.log")
            deadline = time.monotonic() + 90
            while not _ready(port):
                if time.monotonic() > deadline or procs[name].poll() is not None:
                    raise RuntimeError(f"{name} did not start; see {logs}/{name}.log")
                time.sleep(0.1)
        got = asyncio.run(drive(url, events, rate, ("qos.*", "order.intent.>")))
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(20)
    closing = got["closing"]
    qos_lat = [
        (t - closing[ev.ts_event]) / 1000
        for t, ev in got["received"]
        if isinstance(ev, QosScore) and ev.ts_event in closing
    ]
    intent_lat = [
        (t - closing[ev.ts_event]) / 1000
        for t, ev in got["received"]
        if isinstance(ev, OrderIntent) and ev.ts_event in closing
    ]
    return {
        "qos_scores": len(qos_lat),
        "intents": len(intent_lat),
        "qos_p50_us": percentile(qos_lat, 0.5),
        "qos_p99_us": percentile(qos_lat, 0.99),
        "intent_p50_us": percentile(intent_lat, 0.5),
        "intent_max_us": max(intent_lat) if intent_lat else float("nan"),
    }


async def _relay(url: str, src: str, dst: str) -> None:
    nc = await nats.connect(url)

    async def on_msg(msg: Any) -> None:
        await nc.publish(dst, msg.data)

    await nc.subscribe(src, cb=on_msg, pending_msgs_limit=1_000_000)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.sleep(3600)


async def _bare_chain_source(url: str, count: int, rate: float) -> dict[str, Any]:
    nc = await nats.connect(url)
    lat: list[float] = []
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        lat.append((time.time_ns() - int(msg.data)) / 1000)
        if len(lat) >= count:
            done.set()

    await nc.subscribe("bench.hop3", cb=on_msg)
    await nc.flush()
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        await nc.publish("bench.hop0", str(time.time_ns()).encode())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 30)
    await nc.close()
    warm = lat[len(lat) // 10 :]
    return {"bare_p50_us": percentile(warm, 0.5), "bare_p99_us": percentile(warm, 0.99)}


def bare_round(url: str, count: int = 2000, rate: float = 200.0) -> dict[str, Any]:
    relays = []
    try:
        for i in range(3):
            p = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.spine_latency",
                    "relay",
                    url,
                    f"bench.hop{i}",
                    f"bench.hop{i + 1}",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            relays.append(p)
        return asyncio.run(_bare_chain_source(url, count, rate))
    finally:
        for p in relays:
            p.terminate()
            p.wait(10)


def run(rounds: int = 3, rate: float = 25_000.0) -> dict[str, Any]:
    events = sample_events()
    per_round = []
    with tempfile.TemporaryDirectory() as tmp:
        server = start_nats(Path(tmp) / "nats")
        try:
            for _ in range(rounds):
                spine = spine_round(server.url, events, rate, Path(tmp))
                bare = bare_round(server.url)
                per_round.append({**spine, **bare})
        finally:
            server.stop()
    result: dict[str, Any] = {"rate_events_per_s": rate, "rounds": per_round}
    for key in ("qos_p50_us", "qos_p99_us", "intent_p50_us", "bare_p50_us", "bare_p99_us"):
        result[key] = median([r[key] for r in per_round])
    result["qos_p50_over_bare_p50"] = median([r["qos_p50_us"] / r["bare_p50_us"] for r in per_round])
    save("spine_latency", result)
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "relay":
        asyncio.run(_relay(*sys.argv[2:5]))
    else:
        print(json.dumps(run(rounds=int(sys.argv[1]) if len(sys.argv) > 1 else 3), indent=1))
