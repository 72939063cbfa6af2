"""Per-hop cost of the service runtime vs a bare nats-py relay, measured in the same run.

Two operating points are worth reporting: 5k msg/s, where every message costs an event-loop wakeup
(the realistic per-symbol rate, CPU dominated by wakeups), and 20k msg/s, where wakeups amortise
and the per-message processing cost shows.

Topology (three processes + nats-server): source -> relay -> sink. The relay decodes each Quote
and republishes it; the bare relay does the same with nats-py and msgspec only. We report the
relay process's CPU per message (getrusage) and the source->sink latency, alternating the two
relays over several rounds and taking medians (the machine is shared and noisy).

    python -m bench.hop [--rounds 3] [--count 20000] [--rate 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import nats

from bench.common import cpu_seconds, median, percentile, save
from libs.common.localinfra import start_nats
from proto.market import Quote

SRC, DST = "md.quote.HOPSRC", "md.quote.HOPDST"


async def bare_relay(url: str, count: int) -> dict[str, Any]:
    nc = await nats.connect(url)
    decoder = msgspec.msgpack.Decoder(Quote)
    encoder = msgspec.msgpack.Encoder()
    seen = 0
    done = asyncio.Event()
    cpu0 = 0.0

    async def on_msg(msg: Any) -> None:
        nonlocal seen, cpu0
        if seen == 0:
            cpu0 = cpu_seconds()
        quote = decoder.decode(msg.data)
        await nc.publish(DST, encoder.encode(quote), headers={"Tf-Schema": "1"})
        seen += 1
        if seen >= count:
            done.set()

    await nc.subscribe(SRC, cb=on_msg, pending_msgs_limit=1_000_000)
    print("ready", flush=True)
    await done.wait()
    cpu = cpu_seconds() - cpu0
    await nc.drain()
    return {"cpu_us_per_msg": cpu / count * 1e6}


async def runtime_relay(url: str, count: int) -> dict[str, Any]:
    from libs.common.bus import Delivery
    from libs.common.config import load_settings
    from libs.common.runtime import Runtime, ServiceApp

    settings = load_settings(None, nats={"url": url}, http={"port": -1}, telemetry={"log_level": "WARNING"})
    cpu0 = 0.0

    class Relay(ServiceApp):
        seen = 0

        async def start(self, rt: Runtime) -> None:
            self.rt = rt
            await rt.subscribe(SRC, self.on_quote)
            print("ready", flush=True)

        async def on_quote(self, d: Delivery) -> None:
            nonlocal cpu0
            if self.seen == 0:
                cpu0 = cpu_seconds()
            await self.rt.publish(DST, d.event)
            self.seen += 1
            if self.seen >= count:
                self.done.set()

    app = Relay()
    rt = Runtime("hop-relay", settings)
    task = asyncio.create_task(rt.run(app, install_signals=False))
    await app.done.wait()
    cpu = cpu_seconds() - cpu0
    await task
    return {"cpu_us_per_msg": cpu / count * 1e6}


async def source(url: str, count: int, rate: float) -> None:
    nc = await nats.connect(url)
    encoder = msgspec.msgpack.Encoder()
    gap = 1.0 / rate
    start = time.perf_counter()
    for i in range(count):
        target = start + i * gap
        delay = target - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        now = time.time_ns()
        quote = Quote(
            ts_event=now,
            ts_init=now,
            symbol="HOPSRC",
            bid=100.0,
            ask=100.01,
            bid_size=i % 500 + 1,
            ask_size=1,
        )
        await nc.publish(SRC, encoder.encode(quote))
    await nc.drain()


async def sink(url: str, count: int) -> dict[str, Any]:
    nc = await nats.connect(url)
    decoder = msgspec.msgpack.Decoder(Quote)
    latencies: list[float] = []
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        quote = decoder.decode(msg.data)
        latencies.append((time.time_ns() - quote.ts_init) / 1000)
        if len(latencies) >= count:
            done.set()

    await nc.subscribe(DST, cb=on_msg, pending_msgs_limit=1_000_000)
    print("ready", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout=120)
    await nc.close()
    warm = latencies[len(latencies) // 10 :]
    return {"received": len(latencies), "p50_us": percentile(warm, 0.5), "p99_us": percentile(warm, 0.99)}


def _spawn(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.hop", *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        raise RuntimeError(f"{args[0]} did not start: {line!r}")
    return proc


def one_round(url: str, mode: str, count: int, rate: float) -> dict[str, Any]:
    sink_p = _spawn("sink", url, str(count))
    relay_p = _spawn(mode, url, str(count))
    src = subprocess.run(
        [sys.executable, "-m", "bench.hop", "source", url, str(count), str(rate)], check=True
    )
    assert src.returncode == 0
    relay_out, _ = relay_p.communicate(timeout=120)
    sink_out, _ = sink_p.communicate(timeout=120)
    return {**json.loads(relay_out.strip().splitlines()[-1]), **json.loads(sink_out.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", nargs="?", default="run")
    parser.add_argument("args", nargs="*")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=5_000)
    ns = parser.parse_args()
    if ns.role == "bare":
        print(json.dumps(asyncio.run(bare_relay(ns.args[0], int(ns.args[1])))), flush=True)
        return
    if ns.role == "runtime":
        print(json.dumps(asyncio.run(runtime_relay(ns.args[0], int(ns.args[1])))), flush=True)
        return
    if ns.role == "source":
        asyncio.run(source(ns.args[0], int(ns.args[1]), float(ns.args[2])))
        return
    if ns.role == "sink":
        print(json.dumps(asyncio.run(sink(ns.args[0], int(ns.args[1])))), flush=True)
        return
    run(ns.rounds, ns.count, ns.rate)


def run(rounds: int = 3, count: int = 20_000, rate: float = 5_000, name: str = "hop") -> dict[str, Any]:
    server = start_nats(Path(tempfile.mkdtemp(prefix="bench-nats-")))
    results: dict[str, list[dict[str, Any]]] = {"bare": [], "runtime": []}
    try:
        for _ in range(rounds):
            for mode in ("bare", "runtime"):
                results[mode].append(one_round(server.url, mode, count, rate))
    finally:
        server.stop()
    summary: dict[str, Any] = {"rounds": rounds, "count": count, "rate": rate, "runs": results}
    for mode in ("bare", "runtime"):
        for key in ("cpu_us_per_msg", "p50_us", "p99_us"):
            summary[f"{mode}_{key}"] = median([r[key] for r in results[mode]])
    summary["cpu_overhead_pct"] = (
        summary["runtime_cpu_us_per_msg"] / summary["bare_cpu_us_per_msg"] - 1
    ) * 100
    # Same-round ratios, then their median: robust to a noisy round.
    ratios = [
        r["cpu_us_per_msg"] / b["cpu_us_per_msg"]
        for r, b in zip(results["runtime"], results["bare"], strict=True)
    ]
    summary["cpu_ratio_median_of_rounds"] = median(ratios)
    save(name, summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    return summary


if __name__ == "__main__":
    main()
