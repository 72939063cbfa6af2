"""md-gateway replay -> one subscriber: ticks/s end to end, with and without micro-batching.

The gateway runs as the real service process (`tradefleet service md-gateway`) replaying the shipped
day (IBM + BAC, 2013-10-08; 861k tick rows) as fast as possible; one subscriber process decodes every
event through the same bus code the services use. Reported per variant (median of rounds):
- input_ticks_per_s: LEAN tick rows the gateway consumed per second of replay (parse, clean, publish);
- events_per_s: cleaned events received by the subscriber per second, first to last receipt;
- lost: events published but not received (a slow core-NATS consumer drops, by design).

    python -m bench.md_path [--rounds 3]
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
from pathlib import Path
from typing import Any

from bench.common import median, save
from libs.common.localinfra import free_port, start_nats
from tests.helpers import http_json, wait_until

REPO = Path(__file__).resolve().parents[1]


async def subscriber(url: str) -> None:
    from libs.common.bus import Delivery
    from libs.common.config import NatsSettings
    from libs.common.nats_bus import NatsBus
    from proto.market import FeedStatus

    bus = NatsBus(NatsSettings(url=url), "bench-sub")
    await bus.connect()
    received = 0
    first = last = 0.0
    finished: dict[str, int] = {}
    done = asyncio.Event()

    async def on_md(d: Delivery) -> None:
        nonlocal received, first, last
        if received == 0:
            first = time.perf_counter()
        received += 1
        last = time.perf_counter()
        if finished and received >= finished["expected"]:
            done.set()

    async def on_status(d: Delivery) -> None:
        event = d.event
        if isinstance(event, FeedStatus) and event.state == "replay_finished":
            c = event.counters
            finished["expected"] = c.get("quotes", 0) + c.get("trades", 0) + c.get("bars", 0)
            finished["records"] = c.get("records", 0)
            if received >= finished["expected"]:
                done.set()

    for pattern in ("md.quote.>", "md.trade.>", "md.bar.>"):
        await bus.subscribe(pattern, on_md)
    await bus.subscribe("md.status", on_status)
    await bus.barrier()
    print("ready", flush=True)
    # Nothing more arrives after replay_finished but the events a slow consumer dropped.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout=120)
    if finished and received < finished["expected"]:
        await asyncio.sleep(2)
    await bus.close()
    elapsed = max(last - first, 1e-9)
    print(
        json.dumps(
            {
                "received": received,
                "expected": finished.get("expected", 0),
                "events_per_s": received / elapsed,
                "receive_span_s": elapsed,
            }
        ),
        flush=True,
    )


def one_round(url: str, batching: bool) -> dict[str, Any]:
    sub = subprocess.Popen(
        [sys.executable, "-m", "bench.md_path", "sub", url], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert sub.stdout is not None and sub.stdout.readline().strip() == "ready"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEFLEET_")}
    env.update(
        {
            "TRADEFLEET_NATS_URL": url,
            "TRADEFLEET_HTTP__PORT": str(port),
            "TRADEFLEET_MD_GATEWAY__BATCHING": "true" if batching else "false",
            "TRADEFLEET_MD_GATEWAY__REPLAY__ROOT": str(REPO / "data/sample/lean"),
            "TRADEFLEET_TELEMETRY__LOG_LEVEL": "WARNING",
        }
    )
    gw = subprocess.Popen(
        [sys.executable, "-m", "tradefleet", "service", "md-gateway"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    status = wait_until(
        lambda: (s := (http_json(port, "/status")[1] or {}).get("app", {})).get("finished") and s,
        timeout=180,
        interval=0.2,
        what="replay finished",
    )
    out, _ = sub.communicate(timeout=180)
    gw.terminate()
    gw.wait(20)
    result = json.loads(out.strip().splitlines()[-1])
    stats = status["stats"]
    ticks = stats["quote_records"] + stats["trade_records"]
    result.update(
        {
            "input_ticks": ticks,
            "replay_s": status["elapsed_s"],
            "input_ticks_per_s": ticks / status["elapsed_s"],
            "published": stats["quotes"] + stats["trades"] + stats["bars"],
        }
    )
    result["lost"] = result["published"] - result["received"]
    return result


def run(rounds: int = 3) -> dict[str, Any]:
    server = start_nats(Path(tempfile.mkdtemp(prefix="bench-nats-")))
    runs: dict[str, list[dict[str, Any]]] = {"batched": [], "unbatched": []}
    try:
        for _ in range(rounds):
            runs["batched"].append(one_round(server.url, True))
            runs["unbatched"].append(one_round(server.url, False))
    finally:
        server.stop()
    summary: dict[str, Any] = {"rounds": rounds, "runs": runs}
    for variant, results in runs.items():
        for key in ("input_ticks_per_s", "events_per_s", "lost", "replay_s"):
            summary[f"{variant}_{key}"] = median([r[key] for r in results])
    summary["batching_speedup_events"] = summary["batched_events_per_s"] / summary["unbatched_events_per_s"]
    save("md_path", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", nargs="?", default="run")
    parser.add_argument("args", nargs="*")
    parser.add_argument("--rounds", type=int, default=3)
    ns = parser.parse_args()
    if ns.role == "sub":
        asyncio.run(subscriber(ns.args[0]))
    else:
        run(ns.rounds)


if __name__ == "__main__":
    main()
