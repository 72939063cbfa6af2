"""Providers read real files: LEAN timestamps and merge order, LOBSTER aggressors, synthetic feed."""

from __future__ import annotations

import itertools

import pytest

from libs.common.clock import SimClock
from services.md_gateway.core import MarketDataCore
from services.md_gateway.providers.lean import LeanDataMissing, LeanReplay
from services.md_gateway.providers.lobster import LobsterReplay
from services.md_gateway.providers.synthetic import SyntheticFeed
from tests.conftest import SAMPLE_LEAN, shared_path


def test_lean_first_ibm_trade_time_is_converted_from_new_york_ms() -> None:
    replay = LeanReplay(SAMPLE_LEAN, "20131008", ["IBM"], bars="none")
    first_trade = next(r for r in replay.records() if r[0] == "T")
    # Raw row: 31669457,1821000,300,P,2000,0 -> 08:47:49.457 EDT = 12:47:49.457 UTC, $182.10
    assert first_trade[1] == 1_381_236_469_457_000_000
    assert first_trade[3] == 182.10  # exact, not approximately
    assert first_trade[4] == 300 and first_trade[5] == "P" and first_trade[6] == 0x2000


def test_lean_merges_symbols_in_time_order() -> None:
    replay = LeanReplay(SAMPLE_LEAN, "20131008", ["IBM", "BAC"], limit=200_000)
    records = list(replay.records())
    assert len(records) == 200_000
    assert {r[2] for r in records} == {"IBM", "BAC"}
    ts = [r[1] for r in records]
    assert ts == sorted(ts)


def test_lean_missing_data_is_a_clear_error() -> None:
    with pytest.raises(LeanDataMissing, match="tsla"):
        LeanReplay(SAMPLE_LEAN, "20131008", ["TSLA"])


LOBSTER = shared_path("market", "lobster")


@pytest.mark.skipif(
    not LOBSTER.exists(), reason="LOBSTER samples are not shipped; read from shared/ when present"
)
def test_lobster_level1_trades_carry_the_exact_aggressor() -> None:
    replay = LobsterReplay(LOBSTER, "20120621", ["AMZN"], level=1, limit=5000)
    records = list(replay.records())
    trades = [r for r in records if r[0] == "T"]
    assert trades and all(r[8] in (-1, 1) for r in trades)
    # First message of the file: 34200.017459617,5,0,1,2238200,-1 (hidden execution of a resting sell)
    assert trades[0][1:5] == (records[0][1], "AMZN", pytest.approx(223.82), 1)
    assert trades[0][8] == 1
    core = MarketDataCore(SimClock(0))
    events = [e for r in records if (e := core.on_record(r)) is not None]
    assert any(type(e).__name__ == "Quote" for e in events)


@pytest.mark.skipif(not LOBSTER.exists(), reason="LOBSTER samples are not shipped")
def test_lobster_level10_emits_depth_updates() -> None:
    replay = LobsterReplay(LOBSTER, "20120621", ["AAPL"], level=10)
    records = list(replay.records())
    depth = [r for r in records if r[0] == "D"]
    first_book = [r for r in depth if r[1] == depth[0][1]]
    assert len(first_book) == 20  # 10 levels x 2 sides on the first row
    assert {r[3] for r in depth} == {"BID", "ASK"}


def test_synthetic_feed_is_deterministic_and_clean() -> None:
    a = list(itertools.islice(SyntheticFeed(5, 1000, 0, seed=3).records(), 2000))
    b = list(itertools.islice(SyntheticFeed(5, 1000, 0, seed=3).records(), 2000))
    assert a == b
    core = MarketDataCore(SimClock(0))
    for rec in a:
        core.on_record(rec)
    assert core.bad.get("crossed", 0) == 0 and core.bad.get("price_jump", 0) == 0
    assert a[-1][1] == int(1999 * 1e6)


SHARED_LEAN = shared_path("market", "lean")


@pytest.mark.skipif(
    not SHARED_LEAN.exists(), reason="second bars are not shipped; read from shared/ when present"
)
def test_lean_second_bars_close_one_second_after_their_open() -> None:
    replay = LeanReplay(SHARED_LEAN, "20131008", ["IBM"], bars="second")
    bars = [r for r in replay.records() if r[0] == "B"]
    assert len(bars) > 5_000 and {r[3] for r in bars} == {"1s"}
    # First raw row: 31669000,1821000,1821000,1820500,1820500,900 (08:47:49 EDT) -> closes 12:47:50 UTC
    assert bars[0][1] == 1_381_236_470_000_000_000
    assert bars[0][4:9] == (182.10, 182.10, 182.05, 182.05, 900)
