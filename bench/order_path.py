"""The order path's latency in the fleet: risk and execution as separate processes on a private
NATS (JetStream, as in production), against bare nats-py baselines with the same hops, same run.

- intent -> approved -> submitted: wall time from publishing an OrderIntent to receiving its
  OrderApproved (risk's hop) and its PENDING_SUBMIT order event (execution's hop, which includes
  the fsynced journal write before the send). Baseline: a message relayed by two bare nats-py
  processes, each taking it from JetStream and publishing it to JetStream.
- tick -> fill: with the SimBroker's simulated latencies at zero, a market order fills on the
  first quote after it was sent; wall time from publishing that quote to receiving the Fill.
  Baseline: one bare relay taking a core message and publishing it to JetStream.

Quotes stream at ``quote_hz``, intents (1 share, alternating sides) at ``intent_hz``.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import json
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats

from bench.common import median, percentile, save, spawn_service
from libs.common.bus import Delivery
from libs.common.config import NatsSettings
from libs.common.localinfra import free_port, start_nats
from libs.common.nats_bus import NatsBus
from proto.execution import Fill, OrderEvent
from proto.market import Quote
from proto.orders import OrderApproved, OrderDenied, OrderIntent

T0 = 1_381_240_800_000_000_000  # 2013-10-08 10:00 New York: inside the risk gate's session
APPROVAL_KEY = secrets.token_hex(32)


def _spawn(name: str, url: str, port: int, tmp: Path) -> subprocess.Popen[bytes]:
    return spawn_service(
        name,
        url,
        port,
        tmp,
        {
            "TRADEFLEET_RISK__MAX_ORDERS_PER_MINUTE": "1000000",
            "TRADEFLEET_RISK__MAX_OPEN_ORDERS": "100000",
            # round trips of 1 share lose the spread each time: no loss rule may stop the bench
            "TRADEFLEET_RISK__MAX_CONSECUTIVE_LOSSES": "1000000",
            "TRADEFLEET_RISK__DAILY_LOSS_LIMIT": "1000000000",
            "TRADEFLEET_RISK__MAX_DRAWDOWN": "1000000000",
            "TRADEFLEET_EXECUTION__JOURNAL": str(tmp / "journal.msgpack"),
            "TRADEFLEET_EXECUTION__SIM__SUBMIT_LATENCY_MS": "0",
            "TRADEFLEET_EXECUTION__SIM__REPORT_LATENCY_MS": "0",
            # the gate signs, the gateway checks: the same key for both (one per bench run)
            "TRADEFLEET_SIGNING__APPROVAL_KEY": APPROVAL_KEY,
        },
        timeout_s=90,
    )


class _Desk:
    def __init__(self, url: str) -> None:
        self.bus = NatsBus(NatsSettings(url=url), "bench-desk")
        self.intent_sent: dict[str, int] = {}
        self.approved: dict[str, int] = {}  # intent id -> received
        self.submitted: dict[str, int] = {}  # client order id -> received
        self.cid_of: dict[str, str] = {}
        self.quote_sent: list[tuple[int, int]] = []  # (ts_event, wall publish)
        self.fills: list[tuple[Fill, int]] = []
        self.denials: collections.Counter[str] = collections.Counter()
        self.all_filled = asyncio.Event()
        self.expected = 0

    async def hear(self, d: Delivery) -> None:
        now, e = time.time_ns(), d.event
        if isinstance(e, OrderApproved):
            self.approved.setdefault(e.intent_id, now)
            self.cid_of[e.client_order_id] = e.intent_id
        elif isinstance(e, OrderEvent) and e.status == "PENDING_SUBMIT":
            self.submitted.setdefault(e.client_order_id, now)
        elif isinstance(e, Fill):
            self.fills.append((e, now))
            if len(self.fills) >= self.expected:
                self.all_filled.set()
        elif isinstance(e, OrderDenied):
            self.denials[e.code] += 1


async def _drive(
    url: str, intents: int, intent_hz: float, quote_hz: float, tag: str, start_wall: int
) -> dict[str, Any]:
    """``start_wall``: market time is T0 plus the wall time since then, continuous across rounds
    (the SimBroker's clock never goes back)."""
    desk = _Desk(url)
    desk.expected = intents
    await desk.bus.connect()
    await desk.bus.ensure_streams()
    for pattern in ("order.approved.>", "order.denied.>", "exec.order.>", "exec.fill.>"):
        await desk.bus.subscribe(pattern, desk.hear)
    await desk.bus.barrier()
    stop = asyncio.Event()

    async def quotes() -> None:
        k = 0
        while not stop.is_set():
            now = time.time_ns()
            ts = T0 + (now - start_wall)
            bid = 100.00 + (k % 3) * 0.01
            q = Quote(
                ts_event=ts, ts_init=now, symbol="IBM", bid=bid, ask=bid + 0.02, bid_size=500, ask_size=500
            )
            desk.quote_sent.append((ts, time.time_ns()))
            await desk.bus.publish("md.quote.IBM", q)
            await desk.bus.flush()
            k += 1
            await asyncio.sleep(1 / quote_hz)

    feeder = asyncio.create_task(quotes())
    await asyncio.sleep(0.5)  # the gate has quotes
    for k in range(intents):
        now = time.time_ns()
        intent = OrderIntent(
            ts_event=T0 + (now - start_wall),
            ts_init=now,
            intent_id=f"{tag}-{k}",
            symbol="IBM",
            side="BUY" if k % 2 == 0 else "SELL",
            quantity=1,
        )
        desk.intent_sent[intent.intent_id] = time.time_ns()
        await desk.bus.publish("order.intent.IBM", intent)
        await desk.bus.flush()
        await asyncio.sleep(1 / intent_hz)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(desk.all_filled.wait(), 10)
    stop.set()
    await feeder
    await desk.bus.close()

    to_approved = [(desk.approved[i] - t) / 1000 for i, t in desk.intent_sent.items() if i in desk.approved]
    to_submitted = [
        (s - desk.intent_sent[desk.cid_of[c]]) / 1000 for c, s in desk.submitted.items() if c in desk.cid_of
    ]
    quote_ts = [ts for ts, _ in desk.quote_sent]
    tick_to_fill = []
    for fill, received in desk.fills:
        k = bisect.bisect_right(quote_ts, fill.ts_event)  # the first quote after the order was sent
        if k < len(desk.quote_sent):
            tick_to_fill.append((received - desk.quote_sent[k][1]) / 1000)
    warm = slice(len(to_submitted) // 10, None)
    return {
        "intents": intents,
        "approved": len(to_approved),
        "submitted": len(to_submitted),
        "fills": len(tick_to_fill),
        "denials": dict(desk.denials),
        "approved_p50_us": percentile(to_approved[warm], 0.5),
        "approved_p99_us": percentile(to_approved[warm], 0.99),
        "submitted_p50_us": percentile(to_submitted[warm], 0.5),
        "submitted_p99_us": percentile(to_submitted[warm], 0.99),
        "tick_to_fill_p50_us": percentile(tick_to_fill[warm], 0.5),
        "tick_to_fill_p99_us": percentile(tick_to_fill[warm], 0.99),
    }


async def _relay(url: str, src: str, dst: str, from_js: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()

    async def on_msg(msg: Any) -> None:
        await js.publish(dst, msg.data)
        if from_js == "js":
            await msg.ack()

    if from_js == "js":
        await js.subscribe(src, cb=on_msg, manual_ack=True, stream="BENCHOP")
    else:
        await nc.subscribe(src, cb=on_msg)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.sleep(3600)


async def _bare_source(url: str, first: str, last: str, first_js: bool, count: int, hz: float) -> list[float]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    lat: list[float] = []
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        lat.append((time.time_ns() - int(msg.data)) / 1000)
        if len(lat) >= count:
            done.set()

    await nc.subscribe(last, cb=on_msg)
    await nc.flush()
    for _ in range(count):
        if first_js:
            await js.publish(first, str(time.time_ns()).encode())
        else:
            await nc.publish(first, str(time.time_ns()).encode())
            await nc.flush()
        await asyncio.sleep(1 / hz)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 10)
    await nc.close()
    return lat[len(lat) // 10 :]


def _bare(
    url: str, hops: list[tuple[str, str, str]], first: str, last: str, first_js: bool, count: int, hz: float
) -> list[float]:
    relays = []
    try:
        for src, dst, mode in hops:
            p = subprocess.Popen(
                [sys.executable, "-m", "bench.order_path", "relay", url, src, dst, mode],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            relays.append(p)
        return asyncio.run(_bare_source(url, first, last, first_js, count, hz))
    finally:
        for p in relays:
            p.terminate()
            p.wait(10)


async def _bench_stream(url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    with contextlib.suppress(Exception):
        await js.delete_stream("BENCHOP")
    await js.add_stream(name="BENCHOP", subjects=["benchop.>"])
    await nc.close()


def run(
    rounds: int = 3, intents: int = 300, intent_hz: float = 50.0, quote_hz: float = 500.0
) -> dict[str, Any]:
    per_round = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = start_nats(tmp / "nats")
        procs = []
        try:
            procs = [_spawn(name, server.url, free_port(), tmp) for name in ("execution", "risk")]
            start_wall = time.time_ns()
            for r in range(rounds):
                fleet = asyncio.run(
                    _drive(server.url, intents, intent_hz, quote_hz, f"r{r}-{time.time_ns()}", start_wall)
                )
                asyncio.run(_bench_stream(server.url))  # empty: the relays' consumers start at its head
                two_js = _bare(
                    server.url,
                    [("benchop.a", "benchop.b", "js"), ("benchop.b", "benchop.c", "js")],
                    "benchop.a",
                    "benchop.c",
                    True,
                    intents,
                    intent_hz,
                )
                core_to_js = _bare(
                    server.url,
                    [("benchcore.a", "benchop.d", "core")],
                    "benchcore.a",
                    "benchop.d",
                    False,
                    intents,
                    intent_hz,
                )
                per_round.append(
                    {
                        **fleet,
                        "bare_2js_p50_us": percentile(two_js, 0.5),
                        "bare_2js_p99_us": percentile(two_js, 0.99),
                        "bare_core_js_p50_us": percentile(core_to_js, 0.5),
                        "bare_core_js_p99_us": percentile(core_to_js, 0.99),
                    }
                )
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(20)
            server.stop()
    result: dict[str, Any] = {"intent_hz": intent_hz, "quote_hz": quote_hz, "rounds": per_round}
    for key in per_round[0]:
        if key.endswith("_us"):
            result[key] = median([r[key] for r in per_round])
    result["submitted_p50_over_bare"] = median(
        [r["submitted_p50_us"] / r["bare_2js_p50_us"] for r in per_round]
    )
    result["tick_to_fill_p50_over_bare"] = median(
        [r["tick_to_fill_p50_us"] / r["bare_core_js_p50_us"] for r in per_round]
    )
    save("order_path", result)
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "relay":
        asyncio.run(_relay(*sys.argv[2:6]))
    else:
        print(json.dumps(run(rounds=int(sys.argv[1]) if len(sys.argv) > 1 else 3), indent=1))
