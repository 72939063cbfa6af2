"""Every incremental indicator equals TA-Lib's (the ta-lib package) on the same real bars."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import talib

from libs.common.markettime import ny_midnight_ns
from services.features import indicators as ind
from services.md_gateway.providers.lean import bar_records

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample" / "lean" / "equity" / "usa" / "minute"
SHARED = REPO.parent / "shared" / "data" / "market" / "lean" / "equity" / "usa" / "minute"
RTOL = 1e-9


def _bars(path: Path, symbol: str, day: str) -> list[tuple[float, float, float, float, float]]:
    rows = bar_records(path, symbol, ny_midnight_ns(day), "minute")
    return [(r[4], r[5], r[6], r[7], float(r[8])) for r in rows]


def real_bar_sets() -> list[tuple[str, np.ndarray]]:
    sets = []
    for sym in ("ibm", "bac"):
        sets.append(
            (f"{sym}-sample", np.array(_bars(SAMPLE / sym / "20131008_trade.zip", sym.upper(), "20131008")))
        )
    # Several consecutive days when the shared data is present: longer series, overnight gaps.
    if SHARED.exists():
        for sym in ("aig", "spy"):
            days = sorted(p.name[:8] for p in (SHARED / sym).glob("2013100*_trade.zip"))
            rows = [b for d in days for b in _bars(SHARED / sym / f"{d}_trade.zip", sym.upper(), d)]
            sets.append((f"{sym}-{len(days)}days", np.array(rows)))
    return sets


BAR_SETS = real_bar_sets()


def assert_same(ours: list[float], theirs: np.ndarray, name: str) -> None:
    """NaN exactly where TA-Lib has NaN (same warm-up), then equal to 1e-9 relative. Values below 1 in
    magnitude are held to 1e-9 absolute instead: an oscillator at 0 is a running sum of zeros, and
    both sides carry 1e-14 of rounding noise there, which no relative measure survives."""
    got = np.array(ours)
    assert np.array_equal(np.isnan(got), np.isnan(theirs)), f"{name}: warm-up differs"
    valid = ~np.isnan(theirs)
    assert valid.sum() > 100, f"{name}: too few values to compare"
    scale = np.maximum(np.abs(theirs[valid]), 1.0)
    worst = float(np.max(np.abs(got[valid] - theirs[valid]) / scale))
    assert worst <= RTOL, f"{name}: worst relative error {worst:.3e}"


@pytest.fixture(params=BAR_SETS, ids=[n for n, _ in BAR_SETS])
def bars(request: pytest.FixtureRequest) -> np.ndarray:
    return request.param[1]


def test_the_sample_bars_are_real(bars: np.ndarray) -> None:
    assert len(bars) >= 380
    assert np.all(bars[:, 1] >= bars[:, 2])


def test_sma_ema_roc(bars: np.ndarray) -> None:
    close = bars[:, 3]
    for n in (5, 20):
        sma, ema = ind.Sma(n), ind.Ema(n)
        assert_same([sma.update(x) for x in close], talib.SMA(close, n), f"SMA{n}")
        assert_same([ema.update(x) for x in close], talib.EMA(close, n), f"EMA{n}")
    roc = ind.Roc(10)
    assert_same([roc.update(x) for x in close], talib.ROC(close, 10), "ROC10")


def test_macd(bars: np.ndarray) -> None:
    close = bars[:, 3]
    macd = ind.Macd(12, 26, 9)
    ours = [macd.update(x) for x in close]
    line, signal, hist = talib.MACD(close, 12, 26, 9)
    assert_same([o[0] for o in ours], line, "MACD line")
    assert_same([o[1] for o in ours], signal, "MACD signal")
    assert_same([o[2] for o in ours], hist, "MACD histogram")


def test_rsi(bars: np.ndarray) -> None:
    close = bars[:, 3]
    rsi = ind.Rsi(14)
    assert_same([rsi.update(x) for x in close], talib.RSI(close, 14), "RSI14")


def test_atr_adx_di(bars: np.ndarray) -> None:
    high, low, close = bars[:, 1], bars[:, 2], bars[:, 3]
    atr, adx = ind.Atr(14), ind.Adx(14)
    assert_same(
        [atr.update(h, lo, c) for h, lo, c in zip(high, low, close, strict=True)],
        talib.ATR(high, low, close, 14),
        "ATR14",
    )
    ours = [adx.update(h, lo, c) for h, lo, c in zip(high, low, close, strict=True)]
    assert_same([o[0] for o in ours], talib.PLUS_DI(high, low, close, 14), "+DI")
    assert_same([o[1] for o in ours], talib.MINUS_DI(high, low, close, 14), "-DI")
    assert_same([o[2] for o in ours], talib.ADX(high, low, close, 14), "ADX")


def test_bollinger_and_derived(bars: np.ndarray) -> None:
    close = bars[:, 3]
    bb = ind.Bollinger(20, 2.0)
    ours = [bb.update(x) for x in close]
    upper, middle, lower = talib.BBANDS(close, 20, 2.0, 2.0, 0)
    assert_same([o[0] for o in ours], upper, "BB upper")
    assert_same([o[1] for o in ours], middle, "BB middle")
    assert_same([o[2] for o in ours], lower, "BB lower")


def test_stochastic(bars: np.ndarray) -> None:
    high, low, close = bars[:, 1], bars[:, 2], bars[:, 3]
    st = ind.Stochastic(14, 3, 3)
    ours = [st.update(h, lo, c) for h, lo, c in zip(high, low, close, strict=True)]
    k, d = talib.STOCH(high, low, close, 14, 3, 0, 3, 0)
    assert_same([o[0] for o in ours], k, "STOCH %K")
    assert_same([o[1] for o in ours], d, "STOCH %D")


def test_vwap_against_a_cumulative_sum(bars: np.ndarray) -> None:
    # TA-Lib has no VWAP: the reference is numpy's cumulative sums over the same (price, volume).
    typical, volume = bars[:, 3], bars[:, 4]
    vwap = ind.SessionVwap()
    ours = []
    for p, v in zip(typical, volume, strict=True):
        vwap.add(p, v)
        ours.append(vwap.value)
    ref = np.cumsum(typical * volume) / np.cumsum(volume)
    ok = ~np.isnan(ref)
    assert np.allclose(np.array(ours)[ok], ref[ok], rtol=RTOL, atol=0)


def test_monotonic_window_is_exact() -> None:
    rng = np.random.default_rng(3)
    xs = rng.normal(size=500)
    hi, lo = ind.MonotonicWindow(7, True), ind.MonotonicWindow(7, False)
    for i, x in enumerate(xs):
        assert hi.update(x) == max(xs[max(0, i - 6) : i + 1])
        assert lo.update(x) == min(xs[max(0, i - 6) : i + 1])
    assert not math.isnan(hi.update(0.0))
