"""The soak (bench/soak.py), short: the fleet on a paced replay for about a minute, sampled every
few seconds by the bench's own sampler, shows no upward RSS trend beyond noise in any process;
and the detector it uses does flag a leak, on a synthetic series and on a real leaking process."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import soak
from tests.helpers import service_env

MIB = 2**20
# The processes of the spine and what feeds and records it: each must be sampled, none rising.
FLEET = {"md-gateway", "features", "fastlane", "qos", "risk", "execution", "recorder", "up", "nats-server"}


def _series(values_mib: list[float], every_s: float = 3.0) -> tuple[list[float], list[float]]:
    return [i * every_s for i in range(len(values_mib))], [v * MIB for v in values_mib]


def test_the_trend_detector_flags_a_leak_and_not_noise_warm_up_or_arena_steps() -> None:
    rng = random.Random(21)
    flat = [180 + rng.gauss(0, 2) for _ in range(15)]
    assert not soak.rss_trend(*_series(flat)).rising
    # warm-up (the pre-market replayed at once, caches filling) then a plateau: the second half
    # is what is judged, and it is flat
    warm = [100 + 6 * i for i in range(13)] + [178 + rng.gauss(0, 1.5) for _ in range(17)]
    samples = [{"t_s": t, "rss": {"svc": v}} for t, v in zip(*_series(warm), strict=True)]
    assert not soak.trends(samples)["svc"].rising
    # the allocator taking two more arenas on the way: steps, not a trend
    steps = [150.0] * 5 + [154.0] * 5 + [158.0] * 5
    assert not soak.rss_trend(*_series(steps)).rising
    # a leak: 0.5 MiB a second (30 MiB/min) on a noisy 180 MiB, over 45 s
    leak = [180 + 1.5 * i + rng.gauss(0, 2) for i in range(15)]
    t = soak.rss_trend(*_series(leak))
    assert t.rising and t.growth_mib > t.limit_mib and 1500 < t.slope_mib_per_h < 2100
    # ... and the same leak after a warm-up, through trends() (the second half)
    samples = [{"t_s": t, "rss": {"svc": v}} for t, v in zip(*_series(warm[:13] + leak), strict=True)]
    assert soak.trends(samples)["svc"].rising


def test_the_sampler_sees_a_real_leaking_process_rise_and_an_idle_one_stay_flat(tmp_path: Path) -> None:
    """The bench's Sampler on two real processes (named in a fleet.json as `up` writes it): one
    keeps 1 MiB more every 50 ms, the other sleeps."""
    leaky = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nheld = []\nfor _ in range(400):\n"
            "    held.append(b'x' * (1 << 20))\n    time.sleep(0.05)\ntime.sleep(60)",
        ]
    )
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state = {"supervisor_pid": os.getpid(), "pids": {"leaky": leaky.pid, "idle": idle.pid}}
        (tmp_path / "fleet.json").write_text(json.dumps(state))
        sampler = soak.Sampler(tmp_path)
        sampler.state = state
        samples = []
        start = time.monotonic()
        for k in range(20):
            time.sleep(max(0.0, start + k * 0.3 - time.monotonic()))
            samples.append(sampler.sample(time.monotonic() - start))
    finally:
        for p in (leaky, idle):
            p.kill()
            p.wait()
    found = soak.trends(samples)
    assert found["leaky"].rising, found["leaky"]
    assert not found["idle"].rising, found["idle"]
    assert samples[-1]["rss"]["leaky"] - samples[0]["rss"]["leaky"] > 40 * MIB


def test_histogram_quantile_interpolates_within_buckets_and_survives_a_restart() -> None:
    bounds = [0.001, 0.01, float("inf")]
    assert soak.hist_quantile(bounds, [50, 100, 100], 0.5) == pytest.approx(0.001)
    assert soak.hist_quantile(bounds, [0, 100, 100], 0.5) == pytest.approx(0.0055)
    assert soak.hist_quantile(bounds, [0, 0, 10], 0.99) == 0.01  # in +Inf: the last finite bound
    assert soak.bucket_delta([5, 9, 9], [2, 4, 4]) == [3, 5, 5]
    assert soak.bucket_delta([1, 2, 2], [2, 4, 4]) == [1, 2, 2]  # a restarted process: from zero


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_short_soak_of_the_fleet_shows_no_upward_rss_trend(tmp_path: Path) -> None:
    """bench.soak.run itself: `tradefleet up --speed 20` for 75 s of paced replay (from the open:
    the busiest half hour of the day), a sample every 3 s; the second half of the run (past the
    pre-market burst and the warm-up) shows no RSS rising beyond noise in any process."""
    result = soak.run(
        minutes=1.25,
        interval_s=3.0,
        speed=20.0,
        var_dir=tmp_path / "var",
        env={**service_env(), "PYTHONPATH": str(soak.REPO)},
        save_as=None,
        on_sample=None,
    )
    (loop,) = result["loops"]
    assert loop["ok"] and loop["ended"] == "duration" and loop["error"] is None, loop
    assert not loop["restarts"], loop
    assert loop["soaked_s"] >= 70 and len(result["samples"]) >= 20
    processes = result["processes"]
    assert set(processes) >= FLEET, sorted(processes)
    rising = {n: p["trend"] for n, p in processes.items() if p["rising"]}
    assert not rising, json.dumps(rising, indent=1)
    # the other two figures were sampled too: every service's loop lag, the spine's stages
    assert {"md-gateway", "features", "fastlane", "qos", "risk", "execution", "recorder"} <= set(
        result["loop_lag_ms"]
    )
    assert loop["heartbeat_error"] is None
    spine = [s for s in result["stages"] if s.startswith(("features<-md.", "fastlane<-feat.", "qos<-sig."))]
    assert len(spine) >= 3, sorted(result["stages"])
    print(soak.report(result))
