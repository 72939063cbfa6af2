"""Alert delivery latency through the fleet: an alert published on JetStream -> the message
received by a (fake) Telegram Bot API server, while `tradefleet up --speed 0` replays the sample
day as fast as it can, against one bare JetStream hop on the same NATS server in the same run.

- critical: ``alert.critical``, each with its own dedupe key, so none is folded and each goes out
  at once (services/alerts/core.py). The path: JetStream publish -> the alerts service's durable
  pull consumer -> its Telegram sink (python-telegram-bot over HTTP) -> the fake's sendMessage.
- warning: a few per round, reported apart: a warning is held ``BURST_S`` (2 s) by design, to fold
  a burst of the same alert into one message, and then waits for the service's next tick (0.25 s):
  its latency is that hold plus the same path, not a delivery cost.
- bare: the same count of messages, published to a scratch stream BENCH (``bench.>``: nothing of
  the fleet consumes it) and taken by a nats-py pull consumer fetching one at a time, as the
  alerts service's bus does, in this process.

With a few dozen probes a round, p99 is the round's slowest (one probe): p90 is kept beside it.

Latency = wall time received - wall time just before the publish, both ``time.time_ns()`` in this
process (the fake Bot API serves from a thread of it). Alert, bare message and warning are
interleaved within each round so the three see the same load from the replay.

Each round is a fleet run of its own: start, measure inside the replay, stop (SIGTERM to `up`,
which stops every service) without waiting for the day to end. The replay lasts only ~10-30 s
after the fleet is up here (it varies with the machine's load), too short for three rounds; a
fresh fleet per round also keeps one round's backlog out of the next. Probes go at 10 a second so
that a round (6 s) ends before the replay does. Each round records whether the replay was still
running when its last probe went out: one that was not measured an idle fleet at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import nats
from aiohttp import web

from bench.common import median, percentile, save
from libs.common.config import NatsSettings
from libs.common.nats_bus import NatsBus
from proto.alerts import Alert, Severity
from services.alerts.core import BURST_S
from tests.kit.fake_telegram import FakeBotApi

REPO = Path(__file__).resolve().parents[1]
TOKEN = "123456:bench-token"
CHAT = 4242
PROBE = re.compile(r"latency probe (\S+)")
FLEET_UP_S = 240.0  # a cold start on two busy cores: imports and model loads dominate


class StampedBotApi(FakeBotApi):
    """The fake Bot API noting the wall time each message arrived (the fake itself keeps none)."""

    def __init__(self, token: str) -> None:
        super().__init__(token, chats=[CHAT])
        self.received: list[tuple[int, str]] = []  # (time.time_ns(), text), in arrival order

    def _send_message(self, params: dict[str, str]) -> web.Response:
        now = time.time_ns()  # on arrival, before the fake's own bookkeeping
        response = super()._send_message(params)
        if response.status == 200:
            self.received.append((now, params["text"]))
        return response


def _start_fleet(tmp: Path, api_url: str) -> subprocess.Popen[bytes]:
    """`tradefleet up --speed 0` with only Telegram on (email off), its own NATS and PostgreSQL
    under ``tmp``; the caller's TRADEFLEET_ settings are dropped so nothing reaches a shared DB."""
    config = tmp / "fleet.yaml"
    config.write_text(
        f"alerts:\n  telegram: {{api_url: '{api_url}', token: '{TOKEN}', chat_ids: [{CHAT}]}}\n"
        # the bench's probes must not be taken for the fleet's own: default floors, no email
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEFLEET_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tradefleet",
            "up",
            "--config",
            str(config),
            "--speed",
            "0",
            "--no-live",
            "--var-dir",
            str(tmp / "var"),
            "--summary",
            str(tmp / "summary.json"),
        ],
        cwd=REPO,  # the default replay (data/sample/lean and its news) is relative to the repo
        env=env,
        stdout=(tmp / "up.log").open("ab"),
        stderr=subprocess.STDOUT,
    )


def _wait_fleet(proc: subprocess.Popen[bytes], tmp: Path) -> dict[str, Any]:
    state = tmp / "var" / "fleet.json"
    deadline = time.monotonic() + FLEET_UP_S
    while not state.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (tmp / "up.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"tradefleet up did not come up:\n{tail}")
        time.sleep(0.1)
    time.sleep(0.2)  # written in one call, but not atomically: let it land before reading
    return dict(json.loads(state.read_text()))


def _replay_state(port: int) -> tuple[bool, int]:
    """The md-gateway's (finished, records replayed) from its /status; (True, -1) if unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as resp:
            app = json.loads(resp.read()).get("app", {})
    except (OSError, ValueError):
        return True, -1
    return bool(app.get("finished")), int(app.get("stats", {}).get("records", 0))


def _probe(severity: Severity, alert_id: str, now: int) -> Alert:
    # Its own dedupe key: no probe is folded into another (nor into the fleet's alerts).
    return Alert(
        ts_event=now,
        ts_init=now,
        alert_id=alert_id,
        severity=severity,
        source="bench",
        title=f"latency probe {alert_id}",
        dedupe=f"bench:{alert_id}",
    )


def _sent_at(alert_id: str) -> int:
    """The probe's id ends with its publish time: the message text alone gives the latency."""
    return int(alert_id.rsplit("-", 1)[1])


async def _poll(done: Callable[[], bool], timeout_s: float) -> bool:
    """Poll: what is awaited happens on the fake's thread or in another process."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _all_in(api: StampedBotApi, bare_got: list[tuple[int, int]], first: int, want: int, count: int) -> bool:
    """The round's probes all at the fake and its bare messages all taken."""
    probes = sum("latency probe bench-" in text for _, text in api.received[first:])
    return probes >= want and len(bare_got) >= count


async def _sleep_until(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def _measure(
    url: str, api: StampedBotApi, gateway_port: int, count: int, rate: float, warnings: int
) -> dict[str, Any]:
    """One round: ``count`` critical probes and ``count`` bare messages, interleaved half a gap
    apart at ``rate`` each per second, and ``warnings`` warning probes spread among them."""
    bus = NatsBus(NatsSettings(url=url), "bench-alerts")
    await bus.connect()
    nc = await nats.connect(url)
    js = nc.jetstream()
    with contextlib.suppress(Exception):
        await js.delete_stream("BENCH")
    await js.add_stream(name="BENCH", subjects=["bench.>"])  # file storage, as ALERTS
    psub = await js.pull_subscribe("bench.hop", durable="bench", stream="BENCH")
    bare_got: list[tuple[int, int]] = []  # (received, sent)

    async def bare_consumer() -> None:
        # One message per fetch, as the bus's pull loop takes its first: the same mechanism the
        # alerts service receives with, minus the service.
        while True:
            try:
                msgs = await psub.fetch(1, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            now = time.time_ns()
            for msg in msgs:
                bare_got.append((now, int(msg.data)))
                await msg.ack()

    consumer = asyncio.create_task(bare_consumer())
    try:
        # The sink's first send initializes the bot (getMe): one probe first keeps that out of
        # the figures.
        seen = len(api.received)
        warm_id = f"bench-warm-{time.time_ns()}"
        await bus.publish("alert.critical", _probe("critical", warm_id, time.time_ns()))
        await _poll(lambda: any(warm_id in t for _, t in api.received[seen:]), 30)
        first_received = len(api.received)
        gap = 1.0 / rate
        warn_every = max(1, count // max(1, warnings))
        start = time.perf_counter()
        for k in range(count):
            await _sleep_until(start + k * gap)
            now = time.time_ns()
            await bus.publish("alert.critical", _probe("critical", f"bench-c{k}-{now}", now))
            if warnings and k % warn_every == 0 and k // warn_every < warnings:
                await _sleep_until(start + (k + 0.25) * gap)
                now = time.time_ns()
                await bus.publish("alert.warning", _probe("warning", f"bench-w{k}-{now}", now))
            await _sleep_until(start + (k + 0.5) * gap)
            await js.publish("bench.hop", str(time.time_ns()).encode())
        finished, records = await asyncio.to_thread(_replay_state, gateway_port)
        # Everything out: the last warning's hold, its tick, and slack for a loaded machine.
        want = count + min(warnings, count)
        await _poll(partial(_all_in, api, bare_got, first_received, want, count), 10)
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        with contextlib.suppress(Exception):
            await js.delete_stream("BENCH")
        await nc.close()
        await bus.close()
    critical: list[float] = []
    warning: list[float] = []
    for received, text in api.received[first_received:]:
        m = PROBE.search(text)
        if m is None or m.group(1).startswith("bench-warm"):
            continue  # the fleet's own alerts (the day's drift quarantines), the warm-up
        lat = (received - _sent_at(m.group(1))) / 1000
        (warning if m.group(1).startswith("bench-w") else critical).append(lat)
    bare = [(got - sent) / 1000 for got, sent in bare_got]
    return {
        "critical_sent": count,
        "critical_received": len(critical),
        "critical_p50_us": percentile(critical, 0.5),
        "critical_p90_us": percentile(critical, 0.9),
        "critical_p99_us": percentile(critical, 0.99),
        "critical_max_us": max(critical, default=float("nan")),
        "bare_sent": count,
        "bare_received": len(bare),
        "bare_p50_us": percentile(bare, 0.5),
        "bare_p90_us": percentile(bare, 0.9),
        "bare_p99_us": percentile(bare, 0.99),
        "warning_sent": min(warnings, count),
        "warning_received": len(warning),
        "warning_p50_us": percentile(warning, 0.5),
        "warning_max_us": max(warning, default=float("nan")),
        # the fleet was still replaying when the last probe went out: measured under load
        "replaying_at_end": not finished,
        "records_replayed_at_end": records,
    }


def _round(api: StampedBotApi, count: int, rate: float, warnings: int) -> dict[str, Any]:
    """A fleet started, measured while it replays, stopped."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.monotonic()
        proc = _start_fleet(tmp, api.url)
        try:
            state = _wait_fleet(proc, tmp)
            up_s = time.monotonic() - t0
            figures = asyncio.run(
                _measure(state["nats_url"], api, state["http_ports"]["md-gateway"], count, rate, warnings)
            )
        finally:
            # Mid-replay most likely: `up` stops every service on SIGTERM, the clean way.
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {**figures, "fleet_up_s": round(up_s, 1), "fleet_run_s": round(time.monotonic() - t0, 1)}


def run(rounds: int = 3, count: int = 60, rate: float = 10.0, warnings: int = 5) -> dict[str, Any]:
    """``rounds`` fleet runs, each with ``count`` critical probes and ``count`` bare messages at
    ``rate`` a second (plus ``warnings`` warning probes); medians over the rounds."""
    api = StampedBotApi(TOKEN)
    _, stop_api = api.run_in_thread()
    try:
        per_round = [_round(api, count, rate, warnings) for _ in range(rounds)]
    finally:
        stop_api()
    result: dict[str, Any] = {
        "count_per_round": count,
        "rate_per_s": rate,
        "warnings_per_round": warnings,
        "fleet_run_per_round": True,
        "warning_note": f"includes the {BURST_S:g} s burst hold and the service's 0.25 s tick, by design",
        "rounds": per_round,
    }
    for key in per_round[0]:
        if not key.endswith("_us"):
            continue
        result[key] = median([r[key] for r in per_round])
    result["critical_p50_over_bare"] = median([r["critical_p50_us"] / r["bare_p50_us"] for r in per_round])
    result["critical_p99_over_bare"] = median([r["critical_p99_us"] / r["bare_p99_us"] for r in per_round])
    result["rounds_while_replaying"] = sum(r["replaying_at_end"] for r in per_round)
    save("alerts_latency", result)
    return result


if __name__ == "__main__":
    print(json.dumps(run(rounds=int(sys.argv[1]) if len(sys.argv) > 1 else 3), indent=1))
