"""Soak: the whole fleet (`tradefleet up`) on a paced replay of the sample day for an hour,
sampled every minute: each process's RSS and CPU, each service's event-loop lag and the latency
of every stage (hop) of the spine. The question is whether anything creeps: RSS that keeps
growing once warm, a loop that gets later, a stage that gets slower.

What is sampled, and from where (nothing in the services was added for it):

- RSS and CPU: psutil on the pids `up` writes to DIR/fleet.json (rewritten after a restart), on
  `up` itself and on the nats-server it started.
- Event-loop lag: each service's heartbeat (hb.SERVICE, every telemetry.heartbeat_s) is an
  ``asyncio.sleep(heartbeat_s)`` between two beats stamped ``ts_init`` on the service's clock;
  the gap between consecutive beats of one process minus heartbeat_s is how late that timer
  fired, i.e. the event loop's lag (plus the beat's own few microseconds of work). Read as the
  fleet's ``tap`` user. Beside it, the round trip of GET /healthz, answered on the same loop.
- Per-stage latency: each service's /metrics histogram ``tf_event_latency_seconds`` (receive time
  minus the producer's ts_init, per service and subscribed subject, 1 message in 8 timed); the
  difference of two scrapes is the interval's histogram, whose p50/p99 are interpolated within
  its buckets (50 us .. 5 s) as Prometheus' histogram_quantile does.

The replay cannot loop inside one `up` (md_gateway.replay plays one day; `up` ends when it has
finished and everything downstream caught up), so a day that ends before the soak does is
replayed by a fresh `up` (a new loop: new processes, RSS from scratch; the samples say which loop).
At the default --speed 6 the session (6.5 h of market time) outlasts the hour: one loop, the same
processes throughout.

``python -m bench.soak --minutes 60 --interval-s 60 --speed 6`` (the defaults) writes
bench/results/soak.json; ``--minutes 3`` checks the bench itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.common import median, save

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20
# The spine, in the order an event crosses it (service <- subject it receives): the stages
# printed first; every other stage found on /metrics follows.
SPINE = (
    ("features", "md.quote."),
    ("features", "md.trade."),
    ("fastlane", "feat."),
    ("qos", "sig.fast."),
    ("risk", "order.intent."),
    ("execution", "order.approved."),
)


def spine_stages(stages: dict[str, Any]) -> dict[str, Any]:
    """The spine's stages among these (tick -> features -> fastlane -> qos -> risk -> execution)."""
    return {st: v for st, v in stages.items() if any(st.startswith(f"{s}<-{p}") for s, p in SPINE)}


# -- the trend detector (the suite's test uses this very function) ---------------------------
@dataclass(frozen=True)
class Trend:
    """Least-squares fit of RSS over a window (the second half of a loop: past the warm-up)."""

    samples: int
    span_s: float
    slope_mib_per_h: float
    growth_mib: float  # the fit's rise over the window
    noise_mib: float  # standard deviation of the residuals
    limit_mib: float  # what growth must exceed to count as a trend
    rising: bool


def rss_trend(
    t_s: Sequence[float],
    rss_bytes: Sequence[float],
    floor_mib: float = 16.0,
    rel: float = 0.08,
    k_noise: float = 3.0,
) -> Trend:
    """Is RSS rising beyond noise over these samples? The rise of the least-squares line over
    the window must exceed all of ``floor_mib`` (Python's allocator takes memory from the system
    in arenas, a few MiB at a time), ``rel`` of the median RSS and ``k_noise`` standard deviations
    of the residuals (a step or two is noise; a line that keeps rising leaves none)."""
    n = len(t_s)
    if n < 3 or t_s[-1] - t_s[0] <= 0:
        return Trend(n, 0.0, 0.0, 0.0, 0.0, floor_mib, False)
    mib = [v / MIB for v in rss_bytes]
    slope, intercept = statistics.linear_regression(t_s, mib)
    residuals = [y - (slope * x + intercept) for x, y in zip(t_s, mib, strict=True)]
    noise = statistics.pstdev(residuals)
    span = t_s[-1] - t_s[0]
    growth = slope * span
    limit = max(floor_mib, rel * statistics.median(mib), k_noise * noise)
    return Trend(n, round(span, 1), slope * 3600, growth, noise, limit, growth > limit)


def second_half(samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The samples past the warm-up: the second half of the loop (its midpoint sample included)."""
    return list(samples[len(samples) // 2 :]) if len(samples) >= 3 else list(samples)


def trends(samples: Sequence[dict[str, Any]], **limits: float) -> dict[str, Trend]:
    """Per process, the RSS trend over the second half of these samples (one loop's)."""
    window = second_half(samples)
    names = sorted({n for s in window for n in s["rss"]})
    out = {}
    for name in names:
        points = [(s["t_s"], s["rss"][name]) for s in window if name in s["rss"]]
        out[name] = rss_trend([p[0] for p in points], [p[1] for p in points], **limits)
    return out


# -- histograms ------------------------------------------------------------------------------
def parse_latency(text: str) -> dict[str, tuple[list[float], list[float]]]:
    """/metrics -> {"service<-subject": (upper bounds, cumulative counts)} of
    tf_event_latency_seconds."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "tf_event_latency_seconds":
            continue
        for s in family.samples:
            if s.name.endswith("_bucket"):
                stage = f"{s.labels['service']}<-{s.labels['subject']}"
                out.setdefault(stage, {})[float(s.labels["le"])] = s.value
    return {stage: (sorted(b), [b[k] for k in sorted(b)]) for stage, b in out.items()}


def bucket_delta(now: list[float], before: list[float] | None) -> list[float]:
    """This interval's cumulative counts; a restarted process starts again from zero."""
    if before is None or len(before) != len(now) or now[-1] < before[-1]:
        return list(now)
    return [a - b for a, b in zip(now, before, strict=True)]


def hist_quantile(bounds: list[float], cumulative: list[float], q: float) -> float:
    """Prometheus' histogram_quantile: linear within the bucket holding rank q. In seconds; the
    highest finite bound when the rank falls in +Inf; nan for an empty histogram."""
    total = cumulative[-1] if cumulative else 0
    if total <= 0:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, cumulative, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


# -- event-loop lag from heartbeats -----------------------------------------------------------
class HeartbeatLag:
    """Listens to hb.> as the fleet's tap user (its own thread and loop) and keeps, per service,
    how late each heartbeat came after the one before it on the service's own clock."""

    def __init__(self, state: dict[str, Any], heartbeat_s: float) -> None:
        self.state = state
        self.period_ns = int(heartbeat_s * 1e9)
        self._lock = threading.Lock()
        self._late: dict[str, list[float]] = {}  # service -> lateness (ms) since the last take
        self._last: dict[tuple[str, str, int], tuple[int, int]] = {}  # -> (seq, ts_init)
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="soak-heartbeats", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(20)

    def take(self) -> dict[str, list[float]]:
        with self._lock:
            late, self._late = self._late, {}
        return late

    def close(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._listen())
        except Exception as exc:  # lag goes missing from the samples; said in the result
            self.error = repr(exc)
        finally:
            self._ready.set()
            self._loop.close()

    async def _listen(self) -> None:
        from libs.common import codec
        from proto.control import Heartbeat
        from tradefleet.reach import Target, connect

        auth = self.state.get("nats_auth")
        target = Target(self.state["nats_url"], "soak", seed_dir=Path(auth) if auth else None)
        nc = await connect(target, "bench-soak")
        self._stop = asyncio.Event()

        async def on_beat(msg: Any) -> None:
            beat = codec.decode(msg.data)
            if not isinstance(beat, Heartbeat) or beat.stopping:
                return
            key = (beat.service, beat.replica, beat.instance)
            with self._lock:
                last = self._last.get(key)
                self._last[key] = (beat.seq, beat.ts_init)
                if last is not None and beat.seq == last[0] + 1:
                    late_ms = (beat.ts_init - last[1] - self.period_ns) / 1e6
                    name = beat.service + (f"[{beat.replica}]" if beat.replica else "")
                    self._late.setdefault(name, []).append(late_ms)

        await nc.subscribe("hb.>", cb=on_beat)
        await nc.flush()
        self._ready.set()
        await self._stop.wait()
        with contextlib.suppress(Exception):
            await nc.close()


# -- the sampler -----------------------------------------------------------------------------
def read_state(var_dir: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((var_dir / "fleet.json").read_text()))
    except (OSError, ValueError):
        return None


def _get(port: int, path: str, timeout: float = 5.0) -> tuple[float, bytes | None]:
    """(seconds, body) of GET path; body None when it failed."""
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            body = resp.read()
    except OSError:
        return time.perf_counter() - start, None
    return time.perf_counter() - start, body


def _pcts(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"n": len(values), "p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1], 2)}


class Sampler:
    """Reads a running fleet from the state file of its `tradefleet up` (DIR/fleet.json)."""

    def __init__(self, var_dir: Path, heartbeat_s: float = 2.0, healthz_probes: int = 3) -> None:
        self.var_dir = var_dir
        self.heartbeat_s = heartbeat_s
        self.healthz_probes = healthz_probes
        self.state: dict[str, Any] = {}
        self.lag: HeartbeatLag | None = None
        self._hist: dict[str, list[float]] = {}
        self.bounds: list[float] = []  # the histograms' finite upper bounds (s), as scraped
        self._primed = False  # the first scrape is the baseline: what came before is start-up
        self._cpu: dict[str, tuple[int, float, float]] = {}  # name -> (pid, cpu s, wall)

    def start(self, state: dict[str, Any]) -> None:
        self.state = state
        self.lag = HeartbeatLag(state, self.heartbeat_s)
        self.lag.start()

    def close(self) -> None:
        if self.lag is not None:
            self.lag.close()

    def processes(self) -> dict[str, psutil.Process]:
        """Every service (pids as `up` last wrote them), `up` itself and its nats-server."""
        state = read_state(self.var_dir) or self.state
        procs: dict[str, psutil.Process] = {}
        for name, pid in state.get("pids", {}).items():
            with contextlib.suppress(psutil.Error):
                procs[name] = psutil.Process(int(pid))
        with contextlib.suppress(psutil.Error):
            up = psutil.Process(int(state["supervisor_pid"]))
            procs["up"] = up
            for child in up.children():
                with contextlib.suppress(psutil.Error):
                    if child.name().startswith("nats-server"):
                        procs["nats-server"] = child
        return procs

    def sample(self, t_s: float) -> dict[str, Any]:
        """One sample: RSS (bytes) and CPU (% of one core since the last sample) per process,
        heartbeat lateness and /healthz round trips (ms) per service, and per stage the
        interval's latency p50/p99 (us), how many messages were timed and the interval's
        histogram (none in the first sample: the scrape it makes is the baseline)."""
        rss: dict[str, int] = {}
        cpu: dict[str, float] = {}
        now = time.monotonic()
        for name, proc in self.processes().items():
            try:
                with proc.oneshot():
                    rss[name] = proc.memory_info().rss
                    times = proc.cpu_times()
            except psutil.Error:
                continue
            used = times.user + times.system
            last = self._cpu.get(name)
            if last is not None and last[0] == proc.pid and now > last[2]:
                cpu[name] = round(100 * (used - last[1]) / (now - last[2]), 1)
            self._cpu[name] = (proc.pid, used, now)
        healthz: dict[str, float] = {}
        stages: dict[str, dict[str, float]] = {}
        for name, port in sorted(self.state.get("http_ports", {}).items()):
            rtts = [_get(port, "/healthz", timeout=5.0) for _ in range(self.healthz_probes)]
            ok = [s * 1000 for s, body in rtts if body is not None]
            if ok:
                healthz[name] = round(median(ok), 2)
            _, body = _get(port, "/metrics", timeout=10.0)
            if body is None:
                continue
            for stage, (bounds, counts) in parse_latency(body.decode()).items():
                delta = bucket_delta(counts, self._hist.get(stage))
                self._hist[stage] = counts
                self.bounds = bounds[:-1]
                if delta[-1] > 0 and self._primed:
                    stages[stage] = {
                        "n": int(delta[-1]),
                        "p50_us": round(hist_quantile(bounds, delta, 0.5) * 1e6, 1),
                        "p99_us": round(hist_quantile(bounds, delta, 0.99) * 1e6, 1),
                        "buckets": [int(c) for c in delta],  # cumulative, the last one +Inf
                    }
        self._primed = True
        late = self.lag.take() if self.lag is not None else {}
        lag = {name: p for name, values in sorted(late.items()) if (p := _pcts(values)) is not None}
        return {
            "t_s": round(t_s, 1),
            "rss": rss,
            "cpu_pct": cpu,
            "loop_lag_ms": lag,
            "healthz_ms": healthz,
            "stages": stages,
        }


# -- the run ---------------------------------------------------------------------------------
def fleet_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment (a TRADEFLEET_DB_URL in it is used), the control API on any free
    port (another fleet may hold 8600), and the repo importable."""
    env = dict(os.environ)
    env.update(TRADEFLEET_CONTROL__PORT="0", PYTHONPATH=str(REPO))
    env.update(extra or {})
    return env


def _start_up(var_dir: Path, loop: int, speed: float, duration_s: float, env: dict[str, str], nice: int):
    var_dir.mkdir(parents=True, exist_ok=True)
    summary = var_dir / f"summary-loop{loop}.json"
    log = (var_dir / f"up-loop{loop}.log").open("ab")
    cmd = [
        *(["nice", "-n", str(nice)] if nice else []),
        sys.executable,
        "-m",
        "tradefleet",
        "up",
        "--var-dir",
        str(var_dir),
        "--speed",
        f"{speed:g}",
        "--duration",
        f"{duration_s:.0f}",
        "--no-live",
        "--summary",
        str(summary),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc, summary


def _stop_up(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for `up` to end by itself (its --duration), else SIGTERM it: it stops every service
    it started and still writes its summary."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_fleet(var_dir: Path, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(var_dir)
        if state and state.get("pids") and state.get("supervisor_pid") == proc.pid:
            return state
        if proc.poll() is not None:
            raise RuntimeError(f"tradefleet up exited with {proc.returncode}; see {var_dir}/up-loop*.log")
        time.sleep(0.5)
    raise RuntimeError(f"the fleet was not up after {timeout:.0f} s; see {var_dir}/up-loop*.log")


def _print_sample(s: dict[str, Any]) -> None:
    rss = " ".join(f"{n} {v / MIB:.0f}" for n, v in sorted(s["rss"].items()))
    lag = " ".join(f"{n} {v['p99']:.1f}" for n, v in s["loop_lag_ms"].items())
    spine = [
        f"{stage} {v['p50_us'] / 1000:.2f}/{v['p99_us'] / 1000:.2f}"
        for stage, v in sorted(spine_stages(s["stages"]).items(), key=lambda kv: _stage_order(kv[0]))
    ]
    print(
        f"[soak] loop {s['loop']} t={s['t_s']:.0f}s RSS MiB: {rss}\n"
        f"       loop lag p99 ms: {lag or '-'}\n"
        f"       spine p50/p99 ms: {'; '.join(spine) or '-'}",
        flush=True,
    )


def run(
    minutes: float = 60.0,
    interval_s: float = 60.0,
    speed: float = 6.0,
    var_dir: Path = REPO / "var" / "soak",
    env: dict[str, str] | None = None,
    nice: int = 0,
    save_as: str | None = "soak",
    start_timeout_s: float = 300.0,
    on_sample: Callable[[dict[str, Any]], None] | None = _print_sample,
    **limits: float,
) -> dict[str, Any]:
    """Soak the fleet for ``minutes`` of paced replay (start-up not counted), sampling every
    ``interval_s``; returns (and with ``save_as`` saves) the samples and their summary."""
    var_dir = var_dir.resolve()
    env = env if env is not None else fleet_env()
    budget = minutes * 60
    soaked = 0.0
    samples: list[dict[str, Any]] = []
    loops: list[dict[str, Any]] = []
    partial = var_dir / "soak-partial.json"
    bounds: list[float] = []
    loop = 0
    # Another loop only when it can give at least a few samples past its start.
    while budget - soaked >= min(budget, 3 * interval_s):
        remaining = budget - soaked
        # `up` ends itself a little after the last sample (its --duration counts from ready).
        proc, summary_path = _start_up(var_dir, loop, speed, remaining + min(interval_s, 30) + 5, env, nice)
        sampler = Sampler(var_dir)
        started = time.monotonic()
        try:
            state = _wait_for_fleet(var_dir, proc, start_timeout_s)
            startup_s = time.monotonic() - started
            sampler.start(state)
            t0 = time.monotonic()
            k = 0
            while True:
                due = t0 + k * interval_s
                while time.monotonic() < due and proc.poll() is None:
                    time.sleep(min(0.5, max(0.0, due - time.monotonic())))
                if proc.poll() is not None:
                    break  # the day finished (or `up` stopped): the next loop replays it again
                s = {"loop": loop, **sampler.sample(soaked + time.monotonic() - t0)}
                samples.append(s)
                bounds = sampler.bounds or bounds
                if on_sample is not None:
                    on_sample(s)
                with contextlib.suppress(OSError):
                    partial.write_text(json.dumps({"samples": samples, "loops": loops}) + "\n")
                k += 1
                if k * interval_s > remaining + 1e-6:
                    break
            ran = time.monotonic() - t0
        finally:
            sampler.close()
            _stop_up(proc, timeout=max(interval_s, 30) + 90)
        summary = {}
        with contextlib.suppress(OSError, ValueError):
            summary = json.loads(summary_path.read_text())
        loops.append(
            {
                "loop": loop,
                "startup_s": round(startup_s, 1),
                "soaked_s": round(ran, 1),
                "up_exit": proc.returncode,
                "ok": summary.get("ok"),
                "ended": summary.get("ended"),
                "error": summary.get("error"),
                "market_time_end": summary.get("market_time_end"),
                "restarts": summary.get("restarts"),
                "heartbeat_error": sampler.lag.error if sampler.lag is not None else None,
            }
        )
        soaked += ran
        loop += 1
        if not (summary.get("ended") == "finished" and summary.get("ok")):
            break  # only a day replayed to its end is replayed again; anything else ends the soak
    result = summarize(samples, loops, bounds, **limits)
    result.update(minutes=minutes, interval_s=interval_s, speed=speed, latency_bounds_s=bounds)
    result.update(samples=samples, loops=loops)
    if save_as:
        save(save_as, result)
    return result


def summarize(
    samples: list[dict[str, Any]],
    loops: list[dict[str, Any]],
    bounds: list[float] | None = None,
    **limits: float,
) -> dict[str, Any]:
    """Per process: RSS at ready (the loop's first sample), at start (its second: past the warm-up
    burst of the pre-market replayed at once), at the end, the end/start ratio and the trend of
    the second half of each loop; per service the event-loop lag first vs last sample; per stage
    p50/p99 first vs last sample (the first interval that timed any message) and their ratios,
    and the same over the first and the last quarter of the samples pooled (a stage that times a
    message or two a minute, such as fastlane's one in 8 feature vectors, needs the pool)."""
    out: dict[str, Any] = {"processes": {}, "loop_lag_ms": {}, "stages": {}}
    by_loop: dict[int, list[dict[str, Any]]] = {}
    for s in samples:
        by_loop.setdefault(s["loop"], []).append(s)
    loop_trends = {loop: trends(ss, **limits) for loop, ss in by_loop.items()}
    names = sorted({n for s in samples for n in s["rss"]})
    for name in names:
        series = [s for s in samples if name in s["rss"]]
        ready = series[0]["rss"][name]
        start = series[1]["rss"][name] if len(series) > 1 else ready
        end = series[-1]["rss"][name]
        per_loop = {loop: asdict(t[name]) for loop, t in loop_trends.items() if name in t}
        cpu = [s["cpu_pct"][name] for s in series if name in s["cpu_pct"]]
        out["processes"][name] = {
            "rss_ready_mib": round(ready / MIB, 1),
            "rss_start_mib": round(start / MIB, 1),
            "rss_end_mib": round(end / MIB, 1),
            "rss_max_mib": round(max(s["rss"][name] for s in series) / MIB, 1),
            "rss_end_over_start": round(end / start, 3) if start else None,
            "cpu_pct_median": round(median(cpu), 1) if cpu else None,
            "trend": per_loop,
            "rising": any(t["rising"] for t in per_loop.values()),
        }
    for name in sorted({n for s in samples for n in s["loop_lag_ms"]}):
        series = [s["loop_lag_ms"][name] for s in samples if name in s["loop_lag_ms"]]
        out["loop_lag_ms"][name] = {
            "first": series[0],
            "last": series[-1],
            "p99_median_of_samples": round(median([v["p99"] for v in series]), 2),
        }
    for stage in sorted({st for s in samples for st in s["stages"]}, key=_stage_order):
        series = [s["stages"][stage] for s in samples if stage in s["stages"]]
        first, last = series[0], series[-1]
        out["stages"][stage] = {
            "first": first,
            "last": last,
            "p50_last_over_first": _ratio(last["p50_us"], first["p50_us"]),
            "p99_last_over_first": _ratio(last["p99_us"], first["p99_us"]),
            "p50_median_of_samples_us": round(median([v["p50_us"] for v in series]), 1),
            "p99_median_of_samples_us": round(median([v["p99_us"] for v in series]), 1),
        }
        if bounds:
            quarter = max(1, len(series) // 4)
            head, tail = _pooled(series[:quarter], bounds), _pooled(series[-quarter:], bounds)
            out["stages"][stage].update(
                first_quarter=head,
                last_quarter=tail,
                quarter_p50_ratio=_ratio(tail["p50_us"], head["p50_us"]),
                quarter_p99_ratio=_ratio(tail["p99_us"], head["p99_us"]),
            )
    out["rising"] = sorted(n for n, p in out["processes"].items() if p["rising"])
    total = sum(s["cpu_pct"].get(n, 0.0) for s in samples[1:] for n in s["cpu_pct"])
    out["fleet_cpu_pct_mean"] = round(total / max(1, len(samples) - 1), 1)
    out["loops_run"] = len(loops)
    return out


def _pooled(series: list[dict[str, Any]], bounds: list[float]) -> dict[str, float]:
    """These intervals' histograms added up: n, p50 and p99 (us)."""
    total = [0.0] * (len(bounds) + 1)
    for v in series:
        for i, c in enumerate(v.get("buckets", [])[: len(total)]):
            total[i] += c
    edges = [*bounds, math.inf]
    return {
        "samples": len(series),
        "n": int(total[-1]),
        "p50_us": round(hist_quantile(edges, total, 0.5) * 1e6, 1),
        "p99_us": round(hist_quantile(edges, total, 0.99) * 1e6, 1),
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b and not (math.isnan(a) or math.isnan(b)) else None


def _stage_order(stage: str) -> tuple[int, str]:
    for i, (service, prefix) in enumerate(SPINE):
        if stage.startswith(f"{service}<-{prefix}"):
            return i, stage
    return len(SPINE), stage


def report(result: dict[str, Any]) -> str:
    """The short table the closing notes quote."""
    lines = [
        f"soak: {result['minutes']:g} min at --speed {result['speed']:g}, a sample every"
        f" {result['interval_s']:g} s, {len(result['samples'])} samples, {result['loops_run']} loop(s);"
        f" fleet CPU {result['fleet_cpu_pct_mean']:.0f}% of one core (mean)",
        f"{'process':<14}{'RSS ready':>10}{'start':>8}{'end':>8}{'end/start':>10}"
        f"{'slope MiB/h':>12}{'trend':>8}{'CPU %':>7}",
    ]
    for name, p in result["processes"].items():
        slopes = [t["slope_mib_per_h"] for t in p["trend"].values() if t["samples"] >= 3]
        slope = f"{slopes[-1]:+.1f}" if slopes else "-"
        lines.append(
            f"{name:<14}{p['rss_ready_mib']:>10.0f}{p['rss_start_mib']:>8.0f}{p['rss_end_mib']:>8.0f}"
            f"{p['rss_end_over_start'] or float('nan'):>10.3f}{slope:>12}"
            f"{'RISING' if p['rising'] else 'flat':>8}{p['cpu_pct_median'] or 0:>7.1f}"
        )
    lines.append(f"{'loop lag ms':<22}{'first p50/p99':>16}{'last p50/p99':>16}")
    for name, v in result["loop_lag_ms"].items():
        f, last = v["first"], v["last"]
        lines.append(f"{name:<22}{f['p50']:>8.1f}/{f['p99']:<7.1f}{last['p50']:>8.1f}/{last['p99']:<7.1f}")
    lines.append(
        f"{'stage (ms)':<30}{'first sample':>16}{'last sample':>16}"
        f"{'first quarter (n)':>24}{'last quarter (n)':>24}{'p99 x':>7}"
    )

    def pair(v: dict[str, Any]) -> str:
        return f"{v['p50_us'] / 1000:.2f}/{v['p99_us'] / 1000:.2f}"

    for stage, v in result["stages"].items():
        head, tail = v.get("first_quarter"), v.get("last_quarter")
        quarters = ""
        if head and tail:
            quarters = (
                f"{pair(head) + ' (' + str(head['n']) + ')':>24}"
                f"{pair(tail) + ' (' + str(tail['n']) + ')':>24}"
                f"{v['quarter_p99_ratio'] or math.nan:>7.2f}"
            )
        lines.append(f"{stage:<30}{pair(v['first']):>16}{pair(v['last']):>16}{quarters}")
    for loop in result["loops"]:
        lines.append(
            f"loop {loop['loop']}: up in {loop['startup_s']:.0f} s, soaked {loop['soaked_s']:.0f} s,"
            f" ended {loop['ended']} ok={loop['ok']} at {loop['market_time_end']}"
            + (f", error {loop['error']}" if loop["error"] else "")
            + (f", restarts {loop['restarts']}" if loop["restarts"] else "")
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--minutes", type=float, default=60.0, help="paced replay to soak (start-up not counted)"
    )
    parser.add_argument("--interval-s", type=float, default=60.0, help="seconds between samples")
    parser.add_argument(
        "--speed", type=float, default=6.0, help="replay speed (6: the 6.5 h session in 65 min)"
    )
    parser.add_argument("--var-dir", type=Path, default=REPO / "var" / "soak", help="the fleet's state dir")
    parser.add_argument(
        "--nice", type=int, default=0, help="run the fleet at this niceness (a shared machine)"
    )
    ns = parser.parse_args()
    result = run(
        minutes=ns.minutes, interval_s=ns.interval_s, speed=ns.speed, var_dir=ns.var_dir, nice=ns.nice
    )
    print(report(result))


if __name__ == "__main__":
    main()
