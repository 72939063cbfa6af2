"""The control service's WebSocket fan-out during a full-speed replay: 50 clients on /api/ws
reading as fast as they can while `tradefleet up --speed 0` replays the sample day, beside the same
replay with no client (same run: the two arms alternate, a fresh fleet each), medians of rounds.

Figures, each arm a whole fleet run (start, replay, catch up, stop):

- delivered: frames each client received, over the window from the first frame any client got to
  the last one (the fleet's active span), per client (median) and in total; clients dropped by
  the service (``ws_dropped`` in its /status while the fleet ran, from `up`'s summary: a client
  ``control.ws_max_queue`` frames behind is closed with 1013).
- spine: tick -> intent and tick -> QOS score latency, with and without the clients. Bars close
  on event time when the first tick at or after the boundary arrives, from any symbol
  (services/features/core.py): a tap on ``md.>`` notes that tick's ``ts_init`` (the md-gateway's
  wall clock as it made it) for each minute boundary; latency = the intent's (or score's)
  ``ts_init`` (qos's wall clock) - that tick's, both stamped by the fleet, so the tap's own load
  moves neither. The day gives ~10 intents a run (p99 is the slowest one); the ~600 QOS scores,
  one hop short of the intent, are the well-sampled figure. At full speed the spine runs behind
  the replay: these latencies are mostly that backlog, which is what the clients could grow.
- cost: CPU seconds of the control service and of the whole fleet (its processes' /proc times,
  last sample before they stop), the clients' own process, and the replay's and run's wall time.

The bench starts its own NATS (`up --nats-url`), taps it before `up` starts, and picks the control
port, so the tap and the clients are in place before the md-gateway, started last, replays a tick
(``clients_before_first_tick`` checks it). The clients run in a process of their own
(``python -m bench.ws_fanout clients URL N``) with the `websockets` client's defaults
(permessage-deflate offered, as browsers do), as a viewer token from control.tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import nats
import websockets

from bench.alerts_latency import FLEET_UP_S, REPO
from bench.common import median, percentile, save
from bench.spine_latency import MINUTE
from libs.common import codec
from libs.common.config import ControlSettings
from libs.common.localinfra import free_port, start_nats
from proto.events import Batch
from proto.market import DepthUpdate, Quote, Trade
from proto.orders import OrderIntent
from proto.signals import QosScore
from services.control.auth import digest

CLIENTS = 50
TOKEN = "tf_bench_ws_fanout"
RUN_LIMIT_S = 300.0  # one fleet run: start, replay, catch up, stop (~30 s here)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the clients (their own process) --------------------------------------------------------------
async def _client(url: str, rec: dict[str, Any], deadline: float) -> None:
    """Connect as soon as the service listens, then read every frame until the socket closes."""
    while True:
        try:
            ws = await websockets.connect(url, max_size=None, open_timeout=10)
            break
        except websockets.InvalidStatus as exc:  # refused (the token): no point retrying
            rec["error"] = f"refused: {exc}"
            return
        except OSError:  # not listening yet
            if time.monotonic() > deadline:
                rec["error"] = "never connected"
                return
            await asyncio.sleep(0.05)
    rec["connected_ns"] = time.time_ns()
    rec["deflate"] = "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or "")
    frames = size = 0
    first = last = 0
    types: Counter[str] = Counter()
    qos: list[tuple[str, int, int]] = []  # (symbol, ts_event, received): the fan-out's own latency
    try:
        async for msg in ws:
            last = time.time_ns()
            if not frames:
                first = last
            frames += 1
            size += len(msg)
            text = msg if isinstance(msg, str) else msg.decode()
            # {"type":"qos","data":...}: the type without parsing the frame
            kind = text[9 : text.find('"', 9)] if text.startswith('{"type":"') else json.loads(text)["type"]
            types[kind] += 1
            if kind == "qos":
                data = json.loads(text)["data"]
                qos.append((data["symbol"], data["ts"], last))
    except websockets.ConnectionClosed:
        pass
    finally:
        rec.update(
            frames=frames,
            bytes=size,
            first_ns=first,
            last_ns=last,
            close_code=ws.close_code,
            close_reason=ws.close_reason,
            closed_ns=time.time_ns(),
            types=dict(types),
            qos=qos,
        )


async def _clients(url: str, n: int) -> dict[str, Any]:
    """``n`` clients until every socket is closed or stdin closes (the bench is done)."""
    deadline = time.monotonic() + FLEET_UP_S
    recs: list[dict[str, Any]] = [{} for _ in range(n)]
    everyone = asyncio.gather(*(_client(url, r, deadline) for r in recs))
    told = asyncio.ensure_future(asyncio.to_thread(sys.stdin.read))
    await asyncio.wait({everyone, told}, return_when=asyncio.FIRST_COMPLETED)
    everyone.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await everyone
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"clients": recs, "cpu_s": usage.ru_utime + usage.ru_stime}


# -- the tap and the fleet (this process) --------------------------------------------------------
class Tap:
    """The closing tick of each minute boundary (as features sees it: the first tick at or after
    it, from any symbol) and the intents and QOS scores, with their ts_init."""

    def __init__(self) -> None:
        self.closing: dict[int, int] = {}  # boundary -> ts_init of the tick that closed it
        self.next_boundary = 0
        self.first_tick_ns = 0
        self.intents: list[tuple[int, int]] = []  # (ts_event, ts_init)
        self.scores: list[tuple[int, int]] = []
        self.score_init: dict[tuple[str, int], int] = {}  # (symbol, ts_event) -> ts_init
        self.slow_consumer = 0

    async def on_md(self, msg: Any) -> None:
        decoded = codec.decode(msg.data)
        for e in decoded.events if isinstance(decoded, Batch) else (decoded,):
            if not isinstance(e, (Quote, Trade, DepthUpdate)):
                continue
            if not self.first_tick_ns:
                self.first_tick_ns = e.ts_init
            if e.ts_event >= self.next_boundary:
                boundary = e.ts_event // MINUTE * MINUTE
                if self.next_boundary:
                    self.closing.setdefault(boundary, e.ts_init)
                self.next_boundary = boundary + MINUTE

    async def on_decision(self, msg: Any) -> None:
        e = codec.decode(msg.data)
        if isinstance(e, OrderIntent):
            self.intents.append((e.ts_event, e.ts_init))
        elif isinstance(e, QosScore):
            self.scores.append((e.ts_event, e.ts_init))
            self.score_init.setdefault((e.symbol, e.ts_event), e.ts_init)

    async def on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            self.slow_consumer += 1

    def latencies(self, pairs: list[tuple[int, int]]) -> list[float]:
        return [(ts_init - self.closing[ts]) / 1000 for ts, ts_init in pairs if ts in self.closing]


def _cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def _config(tmp: Path, port: int) -> Path:
    """A viewer token of our own (up then makes none) and the control port we connect to."""
    entry = {"name": "bench", "role": "viewer", "token_sha256": digest(TOKEN)}
    path = tmp / "fleet.yaml"
    path.write_text(json.dumps({"control": {"port": port, "tokens": [entry]}}) + "\n")  # YAML
    return path


def _start_up(tmp: Path, nats_url: str, config: Path) -> subprocess.Popen[bytes]:
    """`tradefleet up --speed 0` on our NATS, its own PostgreSQL under ``tmp``; the caller's
    TRADEFLEET_ settings are dropped so nothing reaches a shared DB."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEFLEET_")}
    env["PYTHONPATH"] = str(REPO)
    args = ["--config", str(config), "--speed", "0", "--no-live", "--nats-url", nats_url]
    args += ["--var-dir", str(tmp / "var"), "--summary", str(tmp / "summary.json")]
    return subprocess.Popen(
        [sys.executable, "-m", "tradefleet", "up", *args],
        cwd=REPO,  # the default replay (data/sample/lean and its news) is relative to the repo
        env=env,
        stdout=(tmp / "up.log").open("ab"),
        stderr=subprocess.STDOUT,
    )


def _start_clients(ws_url: str, n: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.ws_fanout", "clients", ws_url, str(n)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


async def _follow(up: subprocess.Popen[bytes], tmp: Path) -> dict[str, float]:
    """Wait for `up` to end; the fleet's processes' CPU time, last sampled while they ran."""
    cpu: dict[str, float] = {}
    pids: dict[str, int] = {}
    state = tmp / "var" / "fleet.json"
    deadline = time.monotonic() + RUN_LIMIT_S
    while up.poll() is None:
        if time.monotonic() > deadline:
            up.send_signal(signal.SIGTERM)  # `up` stops every service on SIGTERM
            await asyncio.to_thread(up.wait, 90)
            break
        if not pids and state.exists():
            with contextlib.suppress(OSError, ValueError):
                pids = {k: int(v) for k, v in json.loads(state.read_text())["pids"].items()}
        for name, pid in pids.items():
            if (seconds := _cpu_s(pid)) is not None:
                cpu[name] = seconds
        await asyncio.sleep(0.25)
    return cpu


async def _arm(tmp: Path, clients: int) -> dict[str, Any]:
    """One fleet run, with ``clients`` WebSocket clients (0: the bare arm)."""
    load = os.getloadavg()[0]  # a busy machine (another fleet, a test run) shows here
    server = start_nats(tmp / "nats")
    tap = Tap()
    nc = await nats.connect(server.url, error_cb=tap.on_error)
    proc: subprocess.Popen[bytes] | None = None
    t0 = time.monotonic()
    try:
        big = {"pending_msgs_limit": 10_000_000, "pending_bytes_limit": 2**31}
        await nc.subscribe("md.>", cb=tap.on_md, **big)
        await nc.subscribe("order.intent.>", cb=tap.on_decision, **big)
        await nc.subscribe("qos.*", cb=tap.on_decision, **big)
        await nc.flush()
        port = free_port()
        up = _start_up(tmp, server.url, _config(tmp, port))
        if clients:
            proc = _start_clients(f"ws://127.0.0.1:{port}/api/ws?token={TOKEN}", clients)
        cpu = await _follow(up, tmp)
        run_s = time.monotonic() - t0
        got: dict[str, Any] = {"clients": [], "cpu_s": 0.0}
        if proc is not None:
            # Every socket closes as the control service stops; stdin's end says stop anyway.
            out, _ = await asyncio.to_thread(proc.communicate, b"", 30)
            got = json.loads(out)
        await asyncio.sleep(0.5)  # the tap's last messages
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        await nc.close()
        server.stop()
    summary = json.loads((tmp / "summary.json").read_text()) if (tmp / "summary.json").exists() else {}
    if not summary.get("ok"):
        tail = (tmp / "up.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"tradefleet up did not finish well:\n{tail}")
    return {**_figures(tap, got, summary, cpu, run_s, clients), "loadavg_1m_at_start": load}


def _figures(
    tap: Tap, got: dict[str, Any], summary: dict[str, Any], cpu: dict[str, float], run_s: float, n: int
) -> dict[str, Any]:
    intent, qos = tap.latencies(tap.intents), tap.latencies(tap.scores)
    figures: dict[str, Any] = {
        "clients": n,
        "intents": len(intent),
        "intent_p50_us": percentile(intent, 0.5),
        "intent_p99_us": percentile(intent, 0.99),
        "qos_scores": len(qos),
        "qos_p50_us": percentile(qos, 0.5),
        "qos_p99_us": percentile(qos, 0.99),
        "tap_slow_consumer": tap.slow_consumer,
        "replay_s": summary.get("replay_s"),
        "fleet_elapsed_s": summary.get("elapsed_s"),
        "run_s": round(run_s, 1),
        "ticks_replayed": summary.get("ticks_replayed"),
        "control_cpu_s": cpu.get("control", float("nan")),
        "fleet_cpu_s": round(sum(cpu.values()), 2),
        "ws_dropped": summary.get("control", {}).get("ws_dropped", 0),
    }
    recs = [r for r in got["clients"] if r.get("frames")]
    if not n:
        return figures
    first = min((r["first_ns"] for r in recs), default=0)
    last = max((r["last_ns"] for r in recs), default=0)
    window_s = (last - first) / 1e9 if last > first else float("nan")
    frames = [r.get("frames", 0) for r in got["clients"]]
    types: Counter[str] = Counter()
    for r in recs:
        types.update(r["types"])
    # QOS score published (its ts_init) -> frame read by a client: the fan-out alone
    fanout = [
        (received - tap.score_init[(symbol, ts)]) / 1000
        for r in recs
        for symbol, ts, received in r["qos"]
        if (symbol, ts) in tap.score_init
    ]
    closed = [(r["closed_ns"] - tap.first_tick_ns) / 1e9 for r in got["clients"] if r.get("closed_ns")]
    figures.update(
        {
            "clients_connected": sum("connected_ns" in r for r in got["clients"]),
            "clients_before_first_tick": sum(
                0 < r.get("connected_ns", 0) < tap.first_tick_ns for r in got["clients"]
            ),
            "window_s": round(window_s, 2),
            "frames_total": sum(frames),
            "frames_per_client_min": min(frames),
            "frames_per_client_median": median(frames),
            "frames_per_client_max": max(frames),
            "payload_mib_per_client_median": round(median([r.get("bytes", 0) for r in recs]) / 2**20, 2),
            "per_client_msgs_per_s": median(frames) / window_s,
            "total_msgs_per_s": sum(frames) / window_s,
            "qos_frames_per_client_median": median([r["types"].get("qos", 0) for r in recs]),
            "qos_to_client_p50_us": percentile(fanout, 0.5),
            "qos_to_client_p99_us": percentile(fanout, 0.99),
            "closed_after_first_tick_s_median": round(median(closed), 2),
            "clients_deflate": sum(bool(r.get("deflate")) for r in got["clients"]),
            "close_codes": dict(Counter(str(r.get("close_code")) for r in got["clients"])),
            "frame_types_all_clients": dict(types.most_common()),
            "clients_cpu_s": round(got["cpu_s"], 2),
        }
    )
    return figures


def _one(clients: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_arm(Path(tmp), clients))


def run(rounds: int = 2, clients: int = CLIENTS) -> dict[str, Any]:
    """``rounds`` pairs of fleet runs, with ``clients`` clients and without, alternating which goes
    first; medians over the rounds and the median of the rounds' ratios."""
    per_round = []
    for i in range(rounds):
        if i % 2:
            with_clients, bare = _one(clients), _one(0)
        else:
            bare, with_clients = _one(0), _one(clients)
        per_round.append({"with_clients": with_clients, "bare": bare})
    result: dict[str, Any] = {
        "clients": clients,
        "ws_max_queue": ControlSettings().ws_max_queue,
        "replay": "the sample day (IBM, BAC, 2013-10-08), tradefleet up --speed 0",
        "rounds": per_round,
    }
    w = [r["with_clients"] for r in per_round]
    b = [r["bare"] for r in per_round]
    for key in (
        "per_client_msgs_per_s",
        "total_msgs_per_s",
        "frames_per_client_median",
        "window_s",
        "qos_to_client_p50_us",
        "qos_to_client_p99_us",
        "closed_after_first_tick_s_median",
        "clients_cpu_s",
    ):
        result[key] = median([x[key] for x in w])
    # the share of the run's QOS scores a client was sent before it was dropped (or the end)
    result["qos_share_delivered"] = median([x["qos_frames_per_client_median"] / x["qos_scores"] for x in w])
    result["clients_dropped"] = median([x["ws_dropped"] for x in w])
    result["clients_dropped_max"] = max(x["ws_dropped"] for x in w)
    result["clients_before_first_tick_min"] = min(x["clients_before_first_tick"] for x in w)
    for key in ("intent_p50_us", "intent_p99_us", "qos_p50_us", "qos_p99_us", "replay_s", "fleet_elapsed_s"):
        result[f"{key}_clients"] = median([x[key] for x in w])
        result[f"{key}_bare"] = median([x[key] for x in b])
        result[f"{key}_ratio"] = median([x[key] / y[key] for x, y in zip(w, b, strict=True)])
    for key in ("control_cpu_s", "fleet_cpu_s"):
        result[f"{key}_clients"] = median([x[key] for x in w])
        result[f"{key}_bare"] = median([x[key] for x in b])
    save("ws_fanout", result)
    return result


def table(r: dict[str, Any]) -> str:
    """The compact table `python -m bench.ws_fanout` prints."""
    rows = [
        f"ws fan-out: {r['clients']} clients on /api/ws, {r['replay']};"
        f" {len(r['rounds'])} rounds, medians; ws_max_queue {r['ws_max_queue']}",
        f"  delivered {r['per_client_msgs_per_s']:,.0f} msgs/s per client,"
        f" {r['total_msgs_per_s']:,.0f} in total ({r['frames_per_client_median']:,.0f} frames each"
        f" over {r['window_s']:.1f} s); dropped {r['clients_dropped']:g} of {r['clients']}"
        f" (max {r['clients_dropped_max']}), closed {r['closed_after_first_tick_s_median']:.1f} s after"
        f" the first tick, {r['qos_share_delivered']:.0%} of the QOS scores delivered",
        f"  QOS score published -> read by a client p50 {r['qos_to_client_p50_us'] / 1e6:.2f} s,"
        f" p99 {r['qos_to_client_p99_us'] / 1e6:.2f} s",
        f"  {'':24}{'clients':>10}{'none':>10}{'ratio':>8}",
    ]
    for label, key, scale in (
        ("tick -> intent p50 ms", "intent_p50_us", 1000.0),
        ("tick -> intent p99 ms", "intent_p99_us", 1000.0),
        ("tick -> QOS p50 ms", "qos_p50_us", 1000.0),
        ("tick -> QOS p99 ms", "qos_p99_us", 1000.0),
        ("replay s", "replay_s", 1.0),
        ("fleet run s (up's)", "fleet_elapsed_s", 1.0),
    ):
        c, b, q = r[f"{key}_clients"], r[f"{key}_bare"], r[f"{key}_ratio"]
        rows.append(f"  {label:24}{c / scale:>10.1f}{b / scale:>10.1f}{q:>8.2f}")
    rows.append(
        f"  CPU s: control {r['control_cpu_s_clients']:.1f} vs {r['control_cpu_s_bare']:.1f},"
        f" whole fleet {r['fleet_cpu_s_clients']:.1f} vs {r['fleet_cpu_s_bare']:.1f};"
        f" the clients' process {r['clients_cpu_s']:.1f}"
    )
    return "\n".join(rows)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "clients":
        print(json.dumps(asyncio.run(_clients(sys.argv[2], int(sys.argv[3])))))
    else:
        outcome = run(rounds=int(sys.argv[1]) if len(sys.argv) > 1 else 2)
        print(json.dumps(outcome, indent=1))
        print(table(outcome))
