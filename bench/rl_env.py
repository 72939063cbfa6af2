"""The RL environment's speed: steps per second of SymbolDayEnv (models/policy/env.py), which runs
on the backtest's cores, its in-process bus and the SimBroker, so whatever the backtest's
per-event path costs, training pays per step too.

The tapes (the shipped day's IBM and BAC, recorded by the backtest engine's upstream apps, no
news) are made once and not timed. Then each round plays every tape to its end with a seeded
random actor (the actions a learner explores with) and with the rules actor (every proposal
entered at full size): steps (decisions) per second, episodes per second and tape events played
per second, on process CPU time. Medians over rounds. On the shipped day QOS proposes only a
few entries per symbol-day (its models are quarantined for drift by midday), so an episode is
mostly the tape's playback: episodes/s and events/s say more than the few steps do.
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Any

import numpy as np

from bench.common import median, save
from libs.common.config import load_settings
from models.policy.env import SymbolDayEnv, Tape, record_tapes
from models.policy.train import rules_actor
from tradefleet.backtest.sources import find_days

DAY = "20131008"


def tapes(symbols: list[str]) -> list[Tape]:
    from bench.backtest_peers import SAMPLE

    days = find_days(str(SAMPLE), symbols, DAY, DAY)
    return record_tapes(load_settings(None), days, news=None, sentiment=False)


def play_all(env: SymbolDayEnv, actor: Any) -> tuple[int, int, int, float]:
    """Every tape to its end: (episodes, steps, tape events, CPU seconds)."""
    episodes = steps = events = 0
    started = time.process_time()
    for index, tape in enumerate(env.tapes):
        try:
            obs, _ = env.reset(options={"tape": index})
        except ValueError:  # no proposal on that tape
            continue
        episodes += 1
        events += len(tape.events)
        done = False
        while not done:
            obs, _, done, _, _ = env.step(actor(obs))
            steps += 1
    return episodes, steps, events, time.process_time() - started


def run(rounds: int = 3, symbols: list[str] | None = None) -> dict[str, Any]:
    symbols = symbols or ["IBM", "BAC"]
    recorded = tapes(symbols)
    env = SymbolDayEnv(recorded, load_settings(None))
    rng = np.random.default_rng(7)

    def random_actor(_obs: np.ndarray) -> np.ndarray:
        return rng.random(2, dtype=np.float32)

    per: dict[str, list[tuple[int, int, int, float]]] = {"random": [], "rules": []}
    try:
        for _ in range(rounds):
            per["random"].append(play_all(env, random_actor))
            per["rules"].append(play_all(env, rules_actor))
    finally:
        env.close()
    table = {
        name: {
            "episodes": runs[0][0],
            "steps": [r[1] for r in runs],
            "tape_events": runs[0][2],
            "steps_per_s_median": round(median([s / t for _, s, _, t in runs]), 2),
            "episodes_per_s_median": round(median([n / t for n, _, _, t in runs]), 3),
            "tape_events_per_s_median": round(median([e / t for _, _, e, t in runs])),
            "cpu_seconds_median": round(median([t for *_, t in runs]), 3),
        }
        for name, runs in per.items()
    }
    out = {
        "machine": platform.node(),
        "rounds": rounds,
        "symbols": symbols,
        "day": DAY,
        "tapes": [t.name for t in recorded],
        "clock": "process CPU time (the machine is shared: wall time is noisier)",
        "actors": table,
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--symbols", default="IBM,BAC")
    parser.add_argument("--no-save", action="store_true", help="print only (no bench/results/rl_env.json)")
    ns = parser.parse_args()
    out = run(ns.rounds, ns.symbols.split(","))
    if not ns.no_save:
        save("rl_env", out)
    print(f"\n== RL environment, {', '.join(out['tapes'])}, medians of {ns.rounds} ==")
    for name, row in out["actors"].items():
        rate, episodes = row["steps_per_s_median"], row["episodes_per_s_median"]
        print(
            f"{name:7s} {rate:>6} steps/s  {episodes:>6} episodes/s"
            f"  {row['tape_events_per_s_median']:>9,} events/s"
            f"  (steps per round {row['steps']}, {row['tape_events']:,} tape events)"
        )


if __name__ == "__main__":
    main()
