"""Sustained load: the whole fleet (`tradefleet up`) on a replay paced at a fixed tick rate (10k
market-data events a second by default) for at least 5 minutes, sampled every 30 s: per-stage
latency p50/p99, RSS, event-loop lag, and how far each consumer is behind the gateway. At the
end: events published vs received by features vs stored by the recorder (loss must be 0), the
dropped counters, and whether anything grew.

Pacing (md_gateway.replay.ticks_per_s): the gateway publishes that many quotes, trades and bars a
second of wall time, in the files' order, cleaned and numbered as ever, whatever their market
time. The sample day (IBM and BAC, 2013-10-08) is 862,096 records of which 487,361 are published
(328,289 quotes, 158,292 trades, 780 bars; the rest are locked, unchanged or out-of-session
quotes): 49 s at 10k/s. A longer run replays it in passes (md_gateway.replay.passes): pass k is
the same day's records moved to the k-th next trading day (2013-10-09, -10, -11, -14, ...), in a
tick session of its own, so the market clock only goes forward (features closes its bars, the
spine decides, as on consecutive days) and the recorder stores every pass's ticks as new rows.
It is the one day's data again, relabelled; said in the result (``data``). Where whole passes would
overshoot the run by more than 5%, each pass replays the day's first records only (replay.limit,
estimated from the ratio above): 5 min at 10k/s is 7 passes of the day's first ~758k records.

The replay ends by itself after the last pass; `up` then waits for the recorder and the spine to
catch up and writes its summary: the loss figures are its database counts of a finished run, not
a count cut off by a stop.

What is sampled (bench/soak.py's Sampler, imported, plus each service's /status):

- per stage (service <- subject): tf_event_latency_seconds from /metrics, the interval's
  histogram (1 message in 8 timed), p50/p99 interpolated within its buckets;
- RSS and CPU of every process (psutil), event-loop lag from the heartbeats, /healthz round trip;
- from /status: events the gateway published and its pacing (behind schedule, slips), ticks
  features received, rows the recorder stored and holds; their differences are each consumer's
  backlog at that moment.

"Growth", defined: over the paced window (fleet ready until the replay's last pass is published)
the samples' histograms are pooled over the first and the last third; a stage grows when its
last-third p99 exceeds 1.5x its first-third p99 AND by more than GROWTH_FLOOR_MS (the buckets are
coarse: a 2.5 ms p99 that becomes 4 ms is one bucket, not a trend), judged only where each third
timed MIN_TIMED messages (a stage that sees a few bars or heartbeats a minute is listed, not
judged). The same rule on each service's loop-lag p99 (median of the samples' p99 per third),
with LAG_FLOOR_MS. A backlog grows when its last-third median exceeds 2x the first third's and
one second of the rate.

``python -m bench.sustained`` (5 min at 10k/s, a sample every 30 s) writes
bench/results/sustained.json; ``--rate 10000 4000`` runs one rate after the other and saves both;
``--minutes 0.5 --interval-s 5`` checks the bench itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import median, save
from bench.soak import (
    MIB,
    REPO,
    Sampler,
    _get,
    _pooled,
    _ratio,
    _start_up,
    _stop_up,
    _wait_for_fleet,
    fleet_env,
    spine_stages,
    summarize,
)

# The sample day (md_gateway.replay defaults): events one pass publishes, and per record.
EVENTS_PER_PASS = 487_361
RECORDS_PER_PASS = 862_096
GROWTH_RATIO = 1.5
GROWTH_FLOOR_MS = 2.0
LAG_FLOOR_MS = 25.0  # a loop's lag on this shared 2-core machine moves by tens of ms at random
MIN_TIMED = 100  # timed messages a third needs before its p99 is judged (1 in 8 is timed)
BACKLOG_RATIO = 2.0


# -- the plan ------------------------------------------------------------------------------------
def plan(rate: float, minutes: float, events_per_pass: int = EVENTS_PER_PASS) -> dict[str, Any]:
    """How many passes make at least ``minutes`` at ``rate``, each cut to the day's first records
    (replay.limit, estimated from the day's events per record) where whole passes would overshoot
    by more than 5%; and the environment that asks the gateway for it."""
    needed = math.ceil(rate * minutes * 60)
    env = {"TRADEFLEET_MD_GATEWAY__REPLAY__TICKS_PER_S": f"{rate:g}"}
    passes = max(1, math.ceil(needed / events_per_pass))
    limit = None
    per_pass = events_per_pass
    if passes * events_per_pass > 1.05 * needed:
        per_pass = math.ceil(needed / passes)
        limit = math.ceil(per_pass * RECORDS_PER_PASS / events_per_pass)
        env["TRADEFLEET_MD_GATEWAY__REPLAY__LIMIT"] = str(limit)
    if passes > 1:
        env["TRADEFLEET_MD_GATEWAY__REPLAY__PASSES"] = str(passes)
    return {"passes": passes, "limit": limit, "events_planned": passes * per_pass, "env": env}


# -- counts from /status ---------------------------------------------------------------------------
def _status(port: int | None) -> dict[str, Any]:
    if port is None:
        return {}
    _, body = _get(port, "/status", timeout=5.0)
    if body is None:
        return {}
    with contextlib.suppress(ValueError):
        return dict(json.loads(body))
    return {}


def counts(ports: dict[str, int]) -> dict[str, Any]:
    """Where each consumer of the market data is: events the gateway published (quotes, trades,
    bars), ticks features received, rows the recorder stored and still holds, and the pacing."""
    # the consumers first, the gateway last: while all run, a consumer never reads ahead of it
    feats = _status(ports.get("features")).get("app", {})
    rec = _status(ports.get("recorder")).get("app", {})
    md = _status(ports.get("md-gateway")).get("app", {})
    stats = md.get("stats", {})
    stored = rec.get("rows_stored", {})
    received = feats.get("received", {})
    out: dict[str, Any] = {
        "published": sum(int(stats.get(k, 0)) for k in ("quotes", "trades", "bars")),
        "published_ticks": sum(int(stats.get(k, 0)) for k in ("quotes", "trades")),
        "features_received": sum(int(received.get(k, 0)) for k in ("quotes", "trades")),
        "recorded": sum(int(stored.get(k, 0)) for k in ("quotes", "trades", "bars")),
        "recorder_pending": rec.get("pending_rows"),
        "vectors": sum(feats.get("vectors", {}).values()),
        "finished": bool(md.get("finished")),
        "pace": md.get("pace", {}),
    }
    out["features_behind"] = out["published_ticks"] - out["features_received"]
    out["recorder_behind"] = out["published"] - out["recorded"]
    return out


# -- the run ---------------------------------------------------------------------------------------
def run(
    rate: float = 10_000.0,
    minutes: float = 5.0,
    interval_s: float = 30.0,
    max_minutes: float | None = None,
    var_dir: Path = REPO / "var" / "sustained",
    env: dict[str, str] | None = None,
    nice: int = 0,
    save_as: str | None = "sustained",
    start_timeout_s: float = 300.0,
    on_sample: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The fleet on a replay paced at ``rate`` events/s for at least ``minutes`` (at most
    ``max_minutes``, default the plan's 1.25x), sampled every ``interval_s`` until `up` has ended;
    returns (and with ``save_as`` saves) the result."""
    var_dir = var_dir.resolve()
    the_plan = plan(rate, minutes)
    env = {**(env if env is not None else fleet_env()), **the_plan["env"]}
    replay_s = the_plan["events_planned"] / rate
    # The replay ends by itself, and `up` once everything caught up. A fleet that cannot hold the
    # rate would take longer: `up` is stopped at this cap instead (its --duration, a normal end:
    # "ended": "duration", loss then counted as `up` counts it for such an end).
    cap_s = max_minutes * 60 if max_minutes else max(replay_s * 1.25, replay_s + 60)
    features_log = var_dir / "logs" / "features.log"  # appended to by every run in this dir
    log_from = features_log.stat().st_size if features_log.exists() else 0
    proc, summary_path = _start_up(var_dir, 0, 0.0, cap_s, env, nice)
    sampler = Sampler(var_dir)
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    finished_at: float | None = None
    final: dict[str, Any] = {}
    try:
        state = _wait_for_fleet(var_dir, proc, start_timeout_s)
        startup_s = time.monotonic() - started
        ports = dict(state.get("http_ports", {}))
        sampler.start(state)
        t0 = time.monotonic()
        k = 0
        last_counts: dict[str, Any] | None = None
        while proc.poll() is None:
            due = t0 + k * interval_s
            while time.monotonic() < due and proc.poll() is None:
                time.sleep(min(0.5, max(0.0, due - time.monotonic())))
                # the counts followed closely: the last ones read before `up` stops the fleet
                # are the run's (a replay's end and the catch-up fall between samples)
                c = counts(ports)
                if c.get("published"):
                    final = c
                    if c.get("finished") and finished_at is None:
                        finished_at = time.monotonic()
            if proc.poll() is not None:
                break
            t_s = time.monotonic() - t0
            s = {"loop": 0, **sampler.sample(t_s)}
            c = counts(ports)
            s["counts"] = c
            if last_counts is not None and c.get("published"):
                dt_s = t_s - samples[-1]["t_s"]
                s["rates"] = {
                    key: round((c[key] - last_counts[key]) / dt_s, 1)
                    for key in ("published", "features_received", "recorded")
                }
            # sampled while the replay was still publishing (its last pass not yet out; a gateway
            # that no longer answers has been stopped)
            s["paced"] = bool(c.get("published")) and not c.get("finished") and finished_at is None
            if c.get("finished") and finished_at is None:
                finished_at = time.monotonic()
            if c.get("published"):
                last_counts, final = c, c
            samples.append(s)
            if on_sample is not None:
                on_sample(s)
            with contextlib.suppress(OSError):
                (var_dir / "sustained-partial.json").write_text(json.dumps({"samples": samples}) + "\n")
            k += 1
        ran = time.monotonic() - t0
    finally:
        sampler.close()
        _stop_up(proc, timeout=cap_s + 120)
    summary: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        summary = json.loads(summary_path.read_text())
    loop = {
        "loop": 0,
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
    result = judge(samples, loop, summary, final, sampler.bounds, rate, features_end(features_log, log_from))
    result.update(rate=rate, minutes=minutes, interval_s=interval_s, plan=the_plan, cap_s=round(cap_s))
    result["data"] = (
        "md_gateway.replay defaults (IBM, BAC, 2013-10-08, data/sample/lean)"
        + (f", the day's first {the_plan['limit']} records" if the_plan["limit"] else ", the whole day")
        + (
            f", in {the_plan['passes']} passes: pass k moved to the k-th next trading day with its"
            " own tick session (the same day's data, relabelled)"
            if the_plan["passes"] > 1
            else ""
        )
    )
    result.update(final_counts=final, samples=samples, loops=[loop], latency_bounds_s=sampler.bounds)
    if save_as:
        save(save_as, result)
    return result


def features_end(log: Path, offset: int) -> dict[str, Any] | None:
    """What features said at the replay's end (its log from ``offset``): it waits for every tick
    the gateway's finished status says it published, then logs "replay features finished", after
    "replay finished but ticks are missing" (expected, received) when they did not all come. None:
    it said neither (a run stopped before the replay ended)."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    out: dict[str, Any] | None = None
    for line in lines:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("event") == "replay finished but ticks are missing":
                out = {"missing": int(entry["expected"]) - int(entry["received"]), **entry}
            elif entry.get("event") == "replay features finished":
                out = out or {"missing": 0}
    return out


# -- the verdict -----------------------------------------------------------------------------------
def thirds(series: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """The first and the last third of a series (one element each when it is that short)."""
    n = max(1, len(series) // 3)
    return list(series[:n]), list(series[-n:])


def grows(first: float, last: float, floor: float, ratio: float = GROWTH_RATIO) -> bool:
    """Does ``last`` exceed ``first`` by the ratio AND by the floor? (nan: cannot say: no)"""
    if math.isnan(first) or math.isnan(last):
        return False
    return last > ratio * first and last - first > floor


def judge(
    samples: list[dict[str, Any]],
    loop: dict[str, Any],
    summary: dict[str, Any],
    final: dict[str, Any],
    bounds: list[float],
    rate: float,
    features_said: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """soak.summarize's table (RSS, loop lag, stages first vs last), then this bench's verdict:
    the rate achieved, loss, drops, and growth over the paced window's thirds."""
    out = summarize(samples, [loop], bounds or None) if samples else {}
    paced = [s for s in samples if s.get("paced") and s.get("stages")]
    growth: dict[str, Any] = {"stages": {}, "loop_lag_ms": {}, "backlog": {}}
    if bounds and paced:
        head, tail = thirds(paced)
        for stage in sorted({st for s in paced for st in s["stages"]}):
            a = _pooled([s["stages"][stage] for s in head if stage in s["stages"]], bounds)
            b = _pooled([s["stages"][stage] for s in tail if stage in s["stages"]], bounds)
            growth["stages"][stage] = {
                "first_third": a,
                "last_third": b,
                "p99_ratio": _ratio(b["p99_us"], a["p99_us"]),
                "judged": a["n"] >= MIN_TIMED and b["n"] >= MIN_TIMED,
                "grows": a["n"] >= MIN_TIMED
                and b["n"] >= MIN_TIMED
                and grows(a["p99_us"], b["p99_us"], GROWTH_FLOOR_MS * 1000),
            }
        for name in sorted({n for s in paced for n in s["loop_lag_ms"]}):
            a_l = [s["loop_lag_ms"][name]["p99"] for s in head if name in s["loop_lag_ms"]]
            b_l = [s["loop_lag_ms"][name]["p99"] for s in tail if name in s["loop_lag_ms"]]
            fa, fb = median(a_l), median(b_l)
            growth["loop_lag_ms"][name] = {
                "first_third_p99": fa,
                "last_third_p99": fb,
                "grows": grows(fa, fb, LAG_FLOOR_MS),
            }
        for key in ("features_behind", "recorder_behind"):
            a_b = [float(s["counts"][key]) for s in head if s.get("counts", {}).get("published")]
            b_b = [float(s["counts"][key]) for s in tail if s.get("counts", {}).get("published")]
            fa, fb = median(a_b), median(b_b)
            growth["backlog"][key] = {
                "first_third_median": fa,
                "last_third_median": fb,
                "grows": grows(fa, fb, rate, BACKLOG_RATIO),
            }
    growing = sorted(
        f"{kind}:{name}" for kind, items in growth.items() for name, v in items.items() if v["grows"]
    )
    rates = [s["rates"]["published"] for s in paced if "rates" in s]
    pace = final.get("pace", {})
    replay_s = summary.get("replay_s")
    published = int(final.get("published", 0))
    events = summary.get("events_published", {})
    in_db = summary.get("rows_in_database") or {}
    stored_db = sum(int(in_db.get(k, 0)) for k in ("quotes", "trades", "bars")) if in_db else None
    gw_published = sum(int(events.get(k, 0)) for k in ("quotes", "trades", "bars")) if events else published
    dropped = {n: d for n, d in (summary.get("dropped_messages") or {}).items() if d}
    out["verdict"] = {
        "rate_target": rate,
        "rate_achieved": round(gw_published / replay_s, 1) if replay_s else None,
        "rate_per_interval": {
            "min": min(rates) if rates else None,
            "median": round(median(rates), 1) if rates else None,
            "max": max(rates) if rates else None,
        },
        "replay_s": replay_s,
        "pace": pace,
        "published": gw_published,
        "features_received": final.get("features_received"),  # last read, maybe before the end
        "features_expected": final.get("published_ticks"),
        "recorded_in_db": stored_db,
        "md_rows_lost": summary.get("md_rows_lost"),
        # features' own count at the replay's end (exact); None for a run stopped at the cap
        "features_lost": features_said["missing"] if features_said is not None else None,
        "dropped_messages": dropped,
        "md_sequence": summary.get("md_sequence"),
        "bad_ticks": summary.get("bad_ticks"),
        "up_ok": summary.get("ok"),
        "up_ended": summary.get("ended"),
        "growth_rule": (
            f"last third > {GROWTH_RATIO}x first third and by > {GROWTH_FLOOR_MS} ms (stage p99 pooled,"
            f" judged with >= {MIN_TIMED} timed messages in each third) or by > {LAG_FLOOR_MS} ms"
            f" (loop-lag p99, median of the samples); backlog: > {BACKLOG_RATIO}x and by > 1 s of the rate"
        ),
        "growing": growing,
        "paced_samples": len(paced),
    }
    v = out["verdict"]
    # A finished replay: every count exact. One stopped at the cap: as `up` judges such an end
    # (stored at least what the gateway last said it published, nothing stalled), not exact.
    v["loss_exact"] = summary.get("ended") == "finished"
    v["no_loss"] = (
        v["md_rows_lost"] == 0
        and (v["features_lost"] == 0 or not v["loss_exact"])
        and (stored_db == gw_published or not v["loss_exact"])
        and not dropped
        and bool(summary.get("ok"))
    )
    v["no_growth"] = not growing
    out["growth"] = growth
    return out


# -- the report ------------------------------------------------------------------------------------
def report(result: dict[str, Any]) -> str:
    v = result["verdict"]
    per = v["rate_per_interval"]
    lines = [
        f"sustained: {result['rate']:g} events/s target for >= {result['minutes']:g} min"
        f" ({result['plan']['passes']} pass(es)); {v['paced_samples']} paced samples every"
        f" {result['interval_s']:g} s; fleet CPU {result.get('fleet_cpu_pct_mean', 0):.0f}% of one core",
        f"achieved {v['rate_achieved']} events/s over {v['replay_s']} s (per interval min/median/max"
        f" {per['min']}/{per['median']}/{per['max']});"
        f" pace {v['pace']}",
        f"published {v['published']:,}; features received {v['features_received']} of"
        f" {v['features_expected']}; recorder stored (db) {v['recorded_in_db']}; md rows lost"
        f" {v['md_rows_lost']}; dropped {v['dropped_messages'] or 'none'}; up ok={v['up_ok']}"
        f" ended={v['up_ended']}",
        f"NO LOSS: {v['no_loss']}   NO GROWTH: {v['no_growth']} {v['growing'] or ''}",
        f"{'stage (p50/p99 ms)':<34}{'first third (n)':>24}{'last third (n)':>24}{'p99 x':>7}",
    ]

    def pair(p: dict[str, Any]) -> str:
        return f"{p['p50_us'] / 1000:.2f}/{p['p99_us'] / 1000:.2f} ({p['n']})"

    for stage, g in result["growth"]["stages"].items():
        lines.append(
            f"{stage:<34}{pair(g['first_third']):>24}{pair(g['last_third']):>24}"
            f"{g['p99_ratio'] or math.nan:>7.2f}"
            f"{'  GROWS' if g['grows'] else '' if g['judged'] else '  (too few to judge)'}"
        )
    lines.append(f"{'loop lag p99 ms':<34}{'first third':>24}{'last third':>24}")
    for name, g in result["growth"]["loop_lag_ms"].items():
        lines.append(
            f"{name:<34}{g['first_third_p99']:>24.1f}{g['last_third_p99']:>24.1f}"
            f"{'  GROWS' if g['grows'] else ''}"
        )
    for name, g in result["growth"]["backlog"].items():
        lines.append(
            f"{name:<34}{g['first_third_median']:>24.0f}{g['last_third_median']:>24.0f}"
            f"{'  GROWS' if g['grows'] else ''}"
        )
    lines.append(f"{'process':<14}{'RSS start':>10}{'end':>8}{'max':>8}{'trend':>8}{'CPU %':>7}")
    for name, p in result.get("processes", {}).items():
        lines.append(
            f"{name:<14}{p['rss_start_mib']:>10.0f}{p['rss_end_mib']:>8.0f}{p['rss_max_mib']:>8.0f}"
            f"{'RISING' if p['rising'] else 'flat':>8}{p['cpu_pct_median'] or 0:>7.1f}"
        )
    return "\n".join(lines)


def print_sample(s: dict[str, Any]) -> None:
    c = s.get("counts", {})
    spine = "; ".join(
        f"{st} {v['p50_us'] / 1000:.2f}/{v['p99_us'] / 1000:.2f}"
        for st, v in spine_stages(s["stages"]).items()
    )
    lag = " ".join(f"{n} {v['p99']:.0f}" for n, v in s["loop_lag_ms"].items())
    rss = sum(s["rss"].values()) / MIB
    print(
        f"[sustained] t={s['t_s']:.0f}s {'paced' if s.get('paced') else 'after'} rates {s.get('rates')}"
        f" behind feat {c.get('features_behind')} rec {c.get('recorder_behind')}"
        f" pace {c.get('pace', {}).get('behind_s')} slipped {c.get('pace', {}).get('slipped_s')}"
        f" fleet RSS {rss:.0f} MiB\n      lag p99 ms: {lag or '-'}\n      spine p50/p99 ms: {spine or '-'}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rate",
        type=float,
        nargs="+",
        default=[10_000.0],
        help="market-data events a second; several: one run each, one after the other, saved together",
    )
    parser.add_argument(
        "--minutes", type=float, default=5.0, help="paced replay, at least (start-up not counted)"
    )
    parser.add_argument("--interval-s", type=float, default=30.0, help="seconds between samples")
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="stop `up` here if the rate is not held (1.25x)"
    )
    parser.add_argument(
        "--var-dir", type=Path, default=REPO / "var" / "sustained", help="the fleet's state dir"
    )
    parser.add_argument("--nice", type=int, default=0, help="run the fleet at this niceness")
    parser.add_argument("--save-as", default="sustained", help="bench/results/NAME.json ('' : not saved)")
    ns = parser.parse_args()
    runs = []
    for rate in ns.rate:
        result = run(
            rate=rate,
            minutes=ns.minutes,
            interval_s=ns.interval_s,
            max_minutes=ns.max_minutes,
            var_dir=ns.var_dir / f"rate-{rate:g}",
            nice=ns.nice,
            save_as=None,
            on_sample=print_sample,
        )
        with contextlib.suppress(OSError):  # each run whole beside its fleet's state, as it ends
            (ns.var_dir / f"rate-{rate:g}" / "result.json").write_text(json.dumps(result) + "\n")
        print(report(result), flush=True)
        runs.append(result)
    if ns.save_as:
        save(ns.save_as, {"runs": runs, "verdicts": {f"{r['rate']:g}": r["verdict"] for r in runs}})


if __name__ == "__main__":
    main()
