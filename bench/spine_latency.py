"""The decision path's latency: the bar-closing tick -> the risk gate's decision, through
features, fastlane, qos and risk deployed two ways on a private NATS, beside one bare NATS hop, in
the same run:

- separate: each service its own process (four process hops);
- grouped: `tradefleet service features+fastlane+qos+risk`, one process (libs/common/group.py):
  in-process among the four, NATS for what leaves the group (its events still go to NATS).

The source publishes the real sample day (cleaned by the md-gateway core, in order) at a paced
rate, stamping each tick's ``ts_init`` with its publish time (as the md-gateway does), and notes
the first tick at or after each minute boundary: it closes the bars. QOS is set to decide often
(low thresholds, no cooldown) so that most bars end in an intent and a decision. Clocks: every
figure is a difference of wall-clock stamps (``time.time_ns``) taken on this one host.

- md publish -> decision: the decision's ``ts_init`` (made by risk just before it is published)
  minus the closing tick's publish time;
- in the process: the decision's ``ts_init`` minus that of the first feature vector of the bar
  (made by features on the closing tick, after decoding it and closing the bar): the part that
  crosses no process in the grouped deployment and three in the separate one;
- one bare hop: the same paced ticks, received by a bare nats-py subscriber in another process
  (closing ticks only): receipt - publish;
- the cores alone (``cores``): the same cores on the backtest's in-process bus over the whole
  day (some 260 decisions, not 8): the closing tick's dispatch -> the decision's publish, by
  ``time.perf_counter_ns`` in one thread. No NATS and no process: the floor under both.

``python -m bench.spine_latency --rounds 3 --rate 10000`` writes bench/results/spine_latency.json.
"""

from __future__ import annotations

import argparse
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
from libs.common.localinfra import free_ports, start_nats
from proto.features import FeatureVector
from proto.market import Quote, Trade
from proto.orders import OrderApproved, OrderDenied
from proto.subjects import spec

MINUTE = 60_000_000_000
QUOTE, TRADE = spec("md.quote.{symbol}"), spec("md.trade.{symbol}")
SPINE = ("features", "fastlane", "qos", "risk")
SINK_SUBJECTS = ("feat.>", "order.approved.>", "order.denied.>")
# Decide often: an entry as soon as QOS leans (re-armed at once), an exit as soon as it eases,
# no waiting between.
DECIDE_OFTEN = {
    "TRADEFLEET_QOS__ENTRY_THRESHOLD": "0.01",
    "TRADEFLEET_QOS__REARM_THRESHOLD": "1.0",
    "TRADEFLEET_QOS__EXIT_DECAY": "0.01",
    "TRADEFLEET_QOS__COOLDOWN_S": "0",
    "TRADEFLEET_QOS__MIN_HOLD_S": "0",
    "TRADEFLEET_RISK__MAX_ORDERS_PER_MINUTE": "100000",
    "TRADEFLEET_RISK__MAX_OPEN_ORDERS": "100000",
}


def _spawn_service(name: str, url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEFLEET_")}
    env.update(
        TRADEFLEET_NATS_URL=url, TRADEFLEET_HTTP__PORT=str(port), TRADEFLEET_TELEMETRY__LOG_FORMAT="json"
    )
    env.update(DECIDE_OFTEN)
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


def closing_ticks(events: list[Any]) -> dict[int, int]:
    """Index in ``events`` of each bar-closing tick -> the boundary it closes (its minute)."""
    out: dict[int, int] = {}
    next_boundary = 0
    for i, e in enumerate(events):
        if e.ts_event >= next_boundary:
            boundary = e.ts_event // MINUTE * MINUTE
            if next_boundary:
                out[i] = boundary
            next_boundary = boundary + MINUTE
    return out


async def drive(url: str, events: list[Any], rate: float, sink_subjects: tuple[str, ...]) -> dict[str, Any]:
    """Publish the day paced; collect (boundary -> publish wall ns) and what the sink received."""
    nc = await nats.connect(url)
    received: list[tuple[int, Any]] = []

    async def on_msg(msg: Any) -> None:
        received.append((time.time_ns(), codec.decode(msg.data)))

    for subject in sink_subjects:
        await nc.subscribe(subject, cb=on_msg, pending_msgs_limit=1_000_000)
    await nc.flush()
    closes = closing_ticks(events)
    closing: dict[int, int] = {}
    gap = 1.0 / rate
    start = time.perf_counter()
    for i, e in enumerate(events):
        delay = start + i * gap - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        subject = (QUOTE if isinstance(e, Quote) else TRADE).subject(symbol=e.symbol)
        now = time.time_ns()
        if i in closes:
            closing.setdefault(closes[i], now)
        await nc.publish(subject, codec.encode(msgspec.structs.replace(e, ts_init=now)))
    await asyncio.sleep(2.0)
    await nc.close()
    return {"closing": closing, "received": received}


def _start(procs: dict[str, subprocess.Popen[bytes]], name: str, port: int, url: str, logs: Path) -> None:
    procs[name] = _spawn_service(name, url, port, logs / f"{name}.log")
    deadline = time.monotonic() + 120
    while not _ready(port):  # a group's first member answers ready once all its members are
        if time.monotonic() > deadline or procs[name].poll() is not None:
            raise RuntimeError(f"{name} did not start; see {logs}/{name}.log")
        time.sleep(0.1)


def deployment_round(grouped: bool, url: str, events: list[Any], rate: float, logs: Path) -> dict[str, Any]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        if grouped:
            _start(procs, "+".join(SPINE), free_ports(len(SPINE)), url, logs)
        else:
            for name in reversed(SPINE):  # consumers first
                _start(procs, name, free_ports(1), url, logs)
        got = asyncio.run(drive(url, events, rate, SINK_SUBJECTS))
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(20)
    return decision_latency(got["closing"], got["received"])


def decision_latency(closing: dict[int, int], received: list[tuple[int, Any]]) -> dict[str, Any]:
    first_vector: dict[tuple[str, int], int] = {}
    for _, ev in received:
        if isinstance(ev, FeatureVector) and ev.ts_event % MINUTE == 0:  # made at a minute's close
            key = (ev.symbol, ev.ts_event)
            first_vector[key] = min(first_vector.get(key, ev.ts_init), ev.ts_init)
    from_md, in_process = [], []
    approved = denied = 0
    for _, ev in received:
        if not isinstance(ev, OrderApproved | OrderDenied):
            continue
        boundary = ev.ts_event // MINUTE * MINUTE
        if boundary not in closing:
            continue
        approved += isinstance(ev, OrderApproved)
        denied += isinstance(ev, OrderDenied)
        from_md.append((ev.ts_init - closing[boundary]) / 1000)
        if (made := first_vector.get((ev.symbol, ev.ts_event))) is not None:
            in_process.append((ev.ts_init - made) / 1000)
    return {
        "decisions": len(from_md),
        "approved": approved,
        "denied": denied,
        "md_to_decision_p50_us": percentile(from_md, 0.5),
        "md_to_decision_p99_us": percentile(from_md, 0.99),
        "in_process_p50_us": percentile(in_process, 0.5),
        "in_process_p99_us": percentile(in_process, 0.99),
    }


async def _sink(url: str) -> None:
    """A bare subscriber in its own process: each closing tick's receipt - publish (us)."""
    nc = await nats.connect(url)
    lat: list[float] = []
    next_boundary = 0
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        nonlocal next_boundary
        if msg.subject == "bench.done":
            done.set()
            return
        now = time.time_ns()
        ev = codec.decode(msg.data)
        assert isinstance(ev, Quote | Trade)  # one tick a message: the source does not batch
        if ev.ts_event >= next_boundary:
            boundary = ev.ts_event // MINUTE * MINUTE
            if next_boundary:
                lat.append((now - ev.ts_init) / 1000)
            next_boundary = boundary + MINUTE

    await nc.subscribe("md.>", cb=on_msg, pending_msgs_limit=1_000_000)
    await nc.subscribe("bench.done", cb=on_msg)
    await nc.flush()
    print("ready", flush=True)
    await done.wait()
    print(json.dumps(lat), flush=True)
    await nc.close()


def bare_round(url: str, events: list[Any], rate: float) -> dict[str, Any]:
    """One bare hop under the same paced stream: closing ticks' receipt - publish."""
    sink = subprocess.Popen(
        [sys.executable, "-m", "bench.spine_latency", "sink", url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        asyncio.run(drive(url, events, rate, ()))

        async def done() -> None:
            nc = await nats.connect(url)
            await nc.publish("bench.done", b"")
            await nc.close()

        asyncio.run(done())
        lat = json.loads(sink.stdout.readline())
    finally:
        sink.terminate()
        sink.wait(10)
    return {
        "bare_hop_p50_us": percentile(lat, 0.5),
        "bare_hop_p99_us": percentile(lat, 0.99),
        "ticks": len(lat),
    }


# -- the cores alone: no NATS, no process ------------------------------------------------------
def _decide_often_settings() -> Any:
    from libs.common.config import load_settings

    sections: dict[str, dict[str, str]] = {}
    for key, value in DECIDE_OFTEN.items():
        section, field = key.removeprefix("TRADEFLEET_").lower().split("__")
        sections.setdefault(section, {})[field] = value
    return load_settings(None, **sections)


def cores_round() -> dict[str, Any]:
    """The same four cores (and execution's SimBroker after them) on the backtest's in-process
    bus over the whole sample day: the bar-closing tick's dispatch -> the decision's publish, in
    one thread, nothing between the cores but the bus's FIFO. The floor under both deployments:
    what the cores' own work on a close costs."""
    from tradefleet.backtest.engine import Backtest, BacktestHooks
    from tradefleet.backtest.sources import find_days

    class DecisionHooks(BacktestHooks):
        closing_ns = 0  # the closing tick being dispatched (0: another record)
        latencies: list[float] = []

        def on_published(self, pattern: str, count: int) -> None:
            if self.closing_ns and pattern.startswith(("order.approved", "order.denied")):
                self.latencies.append((time.perf_counter_ns() - self.closing_ns) / 1000)
            super().on_published(pattern, count)

    class Timed(Backtest):
        def _day_events(self, *args: Any) -> Any:
            hooks = self.hooks
            assert isinstance(hooks, DecisionHooks)
            next_boundary = 0
            for subject, event in super()._day_events(*args):
                ts = getattr(event, "ts_event", 0)
                hooks.closing_ns = 0
                if subject.startswith("md.") and ts >= next_boundary:
                    if next_boundary:
                        hooks.closing_ns = time.perf_counter_ns()
                    next_boundary = ts // MINUTE * MINUTE + MINUTE
                yield subject, event

    repo = Path(__file__).resolve().parents[1]
    days = find_days(str(repo / "data" / "sample" / "lean"), ["IBM", "BAC"], "20131008", "20131008")
    backtest = Timed(_decide_often_settings(), days)
    hooks = DecisionHooks()
    hooks.latencies = []
    backtest.hooks = backtest.bus.hooks = hooks
    asyncio.run(backtest.run())
    lat = hooks.latencies
    return {"decisions": len(lat), "p50_us": percentile(lat, 0.5), "p99_us": percentile(lat, 0.99)}


def run(rounds: int = 3, rate: float = 10_000.0, limit: int = 150_000) -> dict[str, Any]:
    events = sample_events()[:limit]
    per_round = []
    with tempfile.TemporaryDirectory() as tmp:
        server = start_nats(Path(tmp) / "nats")
        try:
            for _ in range(rounds):
                bare = bare_round(server.url, events, rate)
                separate = deployment_round(False, server.url, events, rate, Path(tmp))
                grouped = deployment_round(True, server.url, events, rate, Path(tmp))
                cores = cores_round()
                one: dict[str, Any] = {"bare": bare, "separate": separate, "grouped": grouped, "cores": cores}
                one["grouped_md_p99_over_bare_p99"] = (
                    grouped["md_to_decision_p99_us"] / bare["bare_hop_p99_us"]
                )
                one["separate_md_p99_over_bare_p99"] = (
                    separate["md_to_decision_p99_us"] / bare["bare_hop_p99_us"]
                )
                per_round.append(one)
                print(json.dumps(one), file=sys.stderr, flush=True)
        finally:
            server.stop()
    result: dict[str, Any] = {"rate_ticks_per_s": rate, "ticks": len(events), "rounds": per_round}
    for kind in ("bare", "separate", "grouped", "cores"):
        keys = per_round[0][kind]
        result[kind] = {k: median([r[kind][k] for r in per_round]) for k in keys}
    for key in ("grouped_md_p99_over_bare_p99", "separate_md_p99_over_bare_p99"):
        result[key] = median([float(r[key]) for r in per_round])
    save("spine_latency", result)
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "sink":
        asyncio.run(_sink(sys.argv[2]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
        parser.add_argument("--rounds", type=int, default=3)
        parser.add_argument("--rate", type=float, default=10_000.0, help="ticks per second, paced")
        parser.add_argument("--limit", type=int, default=150_000, help="the day's first N ticks")
        args = parser.parse_args()
        print(json.dumps(run(args.rounds, args.rate, args.limit), indent=1))
