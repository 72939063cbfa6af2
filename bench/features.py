"""Features and fast-lane inference, same run:

1. per-tick cost of the full feature update (features core on the real sample day, every timeframe
   configured) vs recomputing the same indicator set with TA-Lib over a 100-bar window on each
   tick (what a non-incremental implementation does); and, per bar close, our incremental update
   vs the TA-Lib window recompute;
2. fast-lane single-row p50/p99 for lightgbm, lleaves and ONNX Runtime on the same real vectors.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import median, save
from libs.common.calendar import market_calendar
from libs.common.clock import SimClock
from libs.common.config import FeaturesSettings
from models.fastlane import registry
from models.fastlane.engines import load_engine, time_engine
from proto.features import FeatureVector
from proto.market import Trade
from services.features import indicators as ind
from services.features.core import FeatureCore
from services.md_gateway.core import MarketDataCore
from services.md_gateway.providers.lean import LeanReplay

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "lean"
WINDOW = 100


def sample_events() -> list[Any]:
    provider = LeanReplay(SAMPLE, "20131008", ["IBM", "BAC"], "none")
    md = MarketDataCore(SimClock(), 10.0, True, provider.session())
    return [e for e in map(md.on_record, provider.records()) if e is not None]


def ours_per_tick(events: list[Any]) -> tuple[float, list[FeatureVector]]:
    core = FeatureCore(FeaturesSettings(), SimClock(), market_calendar())
    out: list[FeatureVector] = []
    on_event = core.on_event
    t0 = time.perf_counter_ns()
    for e in events:
        out += on_event(e)
    out += core.finish()
    return (time.perf_counter_ns() - t0) / len(events) / 1000, out


def talib_set(h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> None:
    import talib

    talib.EMA(c, 12)
    talib.EMA(c, 26)
    talib.SMA(c, 20)
    talib.MACD(c, 12, 26, 9)
    talib.RSI(c, 14)
    talib.ADX(h, lo, c, 14)
    talib.PLUS_DI(h, lo, c, 14)
    talib.MINUS_DI(h, lo, c, 14)
    talib.ATR(h, lo, c, 14)
    talib.ROC(c, 10)
    talib.BBANDS(c, 20, 2.0, 2.0, 0)
    talib.STOCH(h, lo, c, 14, 3, 0, 3, 0)


def minute_bars(events: list[Any], symbol: str) -> np.ndarray:
    bars: dict[int, list[float]] = {}
    for e in events:
        if isinstance(e, Trade) and e.symbol == symbol:
            b = bars.setdefault(e.ts_event // 60_000_000_000, [e.price, e.price, e.price])
            b[0], b[1], b[2] = max(b[0], e.price), min(b[1], e.price), e.price
    return np.array([bars[k] for k in sorted(bars)])


def talib_per_tick(events: list[Any], timeframes: int, samples: int = 3000) -> float:
    """A 100-bar window with the current tick as the last close, recomputed on each tick, for each
    configured timeframe (the same 1m window stands in for each: TA-Lib's cost depends on length)."""
    bars = minute_bars(events, "IBM")
    h, lo, c = (np.ascontiguousarray(bars[:WINDOW, i]) for i in range(3))
    prices = [e.price for e in events if isinstance(e, Trade)][:samples]
    t0 = time.perf_counter_ns()
    for p in prices:
        c[-1] = p
        for _ in range(timeframes):
            talib_set(h, lo, c)
    return (time.perf_counter_ns() - t0) / len(prices) / 1000


def per_bar(events: list[Any]) -> tuple[float, float]:
    """One timeframe's indicator update on a bar close: incremental vs TA-Lib over the window."""
    bars = minute_bars(events, "IBM")
    state = [ind.Ema(12), ind.Ema(26), ind.Sma(20), ind.Macd(), ind.Rsi(), ind.Roc(), ind.Bollinger()]
    hlc = [ind.Adx(), ind.Atr(), ind.Stochastic()]
    t0 = time.perf_counter_ns()
    for hi, low, close in bars:
        for s in state:
            s.update(close)
        for x in hlc:
            x.update(hi, low, close)
    ours = (time.perf_counter_ns() - t0) / len(bars) / 1000
    h, lo, c = (np.ascontiguousarray(bars[:, i]) for i in range(3))
    t0 = time.perf_counter_ns()
    for end in range(WINDOW, len(bars)):
        talib_set(h[end - WINDOW : end], lo[end - WINDOW : end], c[end - WINDOW : end])
    theirs = (time.perf_counter_ns() - t0) / (len(bars) - WINDOW) / 1000
    return ours, theirs


def engines(vectors: list[FeatureVector]) -> dict[str, dict[str, float]]:
    root = REPO / "models" / "registry"
    version = registry.active_version(root, "15m")
    assert version is not None
    folder = registry.horizon_dir(root, "15m") / version
    rows = np.array([v.values for v in vectors if v.timeframe == "1m"])
    cache = REPO / "var" / "lleaves-cache"
    return {
        name: time_engine(load_engine(name, folder, cache), rows) for name in ("lightgbm", "lleaves", "onnx")
    }


def run(rounds: int = 3) -> dict[str, Any]:
    events = sample_events()
    timeframes = len(FeaturesSettings().timeframes)
    per_round: list[dict[str, Any]] = []
    vectors: list[FeatureVector] = []
    for _ in range(rounds):
        ours, vectors = ours_per_tick(events)
        theirs = talib_per_tick(events, timeframes)
        bar_ours, bar_theirs = per_bar(events)
        per_round.append(
            {
                "ours_us_per_tick": ours,
                "talib_us_per_tick": theirs,
                "bar_ours_us": bar_ours,
                "bar_talib_us": bar_theirs,
            }
        )
    lat = [engines(vectors) for _ in range(rounds)]
    result: dict[str, Any] = {
        "events": len(events),
        "timeframes": timeframes,
        "rounds": per_round,
        "ours_us_per_tick": median([r["ours_us_per_tick"] for r in per_round]),
        "talib_us_per_tick": median([r["talib_us_per_tick"] for r in per_round]),
        "tick_ratio_median_of_rounds": median(
            [r["talib_us_per_tick"] / r["ours_us_per_tick"] for r in per_round]
        ),
        "bar_ours_us": median([r["bar_ours_us"] for r in per_round]),
        "bar_talib_us": median([r["bar_talib_us"] for r in per_round]),
        "engines": {
            name: {k: median([r[name][k] for r in lat]) for k in ("p50_us", "p99_us")} for name in lat[0]
        },
    }
    e = result["engines"]
    result["lleaves_speedup_p99"] = median([r["lightgbm"]["p99_us"] / r["lleaves"]["p99_us"] for r in lat])
    result["onnx_speedup_p99"] = median([r["lightgbm"]["p99_us"] / r["onnx"]["p99_us"] for r in lat])
    result["compiled_choice"] = min(("lleaves", "onnx"), key=lambda n: e[n]["p99_us"])
    save("features", result)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps({k: v for k, v in run().items() if k != "rounds"}, indent=1))
