"""The recorder's market-data numbering (services/recorder/sequence.py): what is a duplicate,
what is missing, and that the stored state says exactly what the database holds."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from proto.market import Quote, Trade, make_seq, split_seq
from services.recorder.sequence import TickSequencer, keep_new_ticks

S = 77  # a session


def _quote(n: int, symbol: str = "IBM", session: int = S) -> Quote:
    return Quote(
        ts_event=n,
        ts_init=n,
        symbol=symbol,
        bid=10.0,
        ask=10.1,
        bid_size=1,
        ask_size=1,
        seq=make_seq(session, n),
    )


def _trade(n: int, symbol: str = "IBM", session: int = S) -> Trade:
    return Trade(ts_event=n, ts_init=n, symbol=symbol, price=10.05, size=1, seq=make_seq(session, n))


def test_seq_packs_a_session_and_a_number() -> None:
    assert split_seq(make_seq(2**31 - 1, 2**32 - 1)) == (2**31 - 1, 2**32 - 1)


def test_in_order_ticks_are_new_and_a_replayed_half_second_is_not() -> None:
    seqr = TickSequencer()
    assert all(seqr.admit("IBM", make_seq(S, n)) for n in range(1, 1001))
    assert not any(seqr.admit("IBM", make_seq(S, n)) for n in range(950, 1001))  # a resumed replay
    assert seqr.admit("IBM", make_seq(S, 1001))
    assert seqr.stats["duplicates"] == 51 and seqr.holes() == [] and seqr.missing() == 0


def test_a_skipped_range_is_a_hole_until_its_ticks_come() -> None:
    seqr = TickSequencer()
    for n in [*range(1, 11), *range(21, 31)]:
        assert seqr.admit("IBM", make_seq(S, n))
    assert seqr.holes() == [("IBM", S, 11, 20)]
    assert seqr.stats["gaps"] == 1 and seqr.stats["gap_ticks"] == 10
    for n in (15, 11, 20):
        assert seqr.admit("IBM", make_seq(S, n))  # the fill, in any order
    assert not seqr.admit("IBM", make_seq(S, 15))
    assert seqr.holes() == [("IBM", S, 12, 14), ("IBM", S, 16, 19)]
    for n in range(11, 21):
        seqr.admit("IBM", make_seq(S, n))
    assert seqr.holes() == [] and seqr.missing() == 0


def test_a_batch_holds_its_quotes_and_trades_apart_without_false_holes() -> None:
    seqr = TickSequencer()
    ticks = [_quote(n) if n % 3 else _trade(n) for n in range(1, 301)]
    batch = {
        "quotes": [t for t in ticks if isinstance(t, Quote)],
        "trades": [t for t in ticks if isinstance(t, Trade)],
    }
    kept, left_out = keep_new_ticks(seqr, batch)
    assert kept is batch and not left_out
    assert seqr.stats["gaps"] == 0 and seqr.holes() == []
    again, left_out = keep_new_ticks(seqr, {"quotes": batch["quotes"][-5:], "trades": [_trade(301)]})
    assert again["quotes"] == [] and again["trades"] == [_trade(301)] and left_out["quotes"] == 5


def test_a_new_session_beside_the_old_is_neither_a_duplicate_nor_a_hole() -> None:
    seqr = TickSequencer()
    for n in range(1, 101):
        seqr.admit("IBM", make_seq(S, n))
    # a live feed restarted: its numbers start again at 1 in a session of its own
    assert all(seqr.admit("IBM", make_seq(S + 1, n)) for n in range(1, 51))
    assert seqr.holes() == [] and seqr.stats["duplicates"] == 0
    # a late tick of the old session is still known as held (or not)
    assert not seqr.admit("IBM", make_seq(S, 100))
    assert seqr.admit("IBM", make_seq(S, 101))


def test_a_tail_that_never_came_is_missing_once_the_source_says_where_it_ended() -> None:
    seqr = TickSequencer()
    for n in range(1, 41):
        seqr.admit("IBM", make_seq(S, n))
    seqr.expect("IBM", make_seq(S, 50))
    assert seqr.holes() == [("IBM", S, 41, 50)] and seqr.stats["gap_ticks"] == 10
    for n in (45, 41, 50):
        seqr.admit("IBM", make_seq(S, n))
    assert seqr.stats["gap_ticks"] == 10  # filling an expected tail opens nothing new
    assert seqr.holes() == [("IBM", S, 42, 44), ("IBM", S, 46, 49)]


def test_the_stored_state_brings_back_exactly_what_was_held() -> None:
    seqr = TickSequencer()
    for n in [*range(1, 6), *range(9, 12)]:
        seqr.admit("IBM", make_seq(S, n))
    seqr.admit("BAC", make_seq(S, 3))
    stored = json.loads(json.dumps(seqr.take_changed()))  # as jsonb gives it back
    assert seqr.take_changed() == {}
    again = TickSequencer(stored)
    assert (
        sorted(again.holes(live_only=False)) == sorted(seqr.holes()) == [("BAC", S, 1, 2), ("IBM", S, 6, 8)]
    )
    assert not again.admit("IBM", make_seq(S, 10)) and again.admit("IBM", make_seq(S, 7))


def test_a_trial_copy_leaves_the_original_as_it_was() -> None:
    seqr = TickSequencer()
    seqr.admit("IBM", make_seq(S, 1))
    trial = seqr.copy()
    trial.admit("IBM", make_seq(S, 5))
    assert seqr.holes() == [] and trial.holes() == [("IBM", S, 2, 4)]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.integers(1, 200), max_size=400))
def test_any_order_with_repeats_keeps_each_number_once(numbers: list[int]) -> None:
    seqr = TickSequencer()
    kept = [n for n in numbers if seqr.admit("X", make_seq(S, n))]
    assert sorted(kept) == sorted(set(numbers))
    top = max(numbers, default=0)
    missing = {n for first, last in (h[2:] for h in seqr.holes()) for n in range(first, last + 1)}
    assert missing == set(range(1, top + 1)) - set(numbers)


def test_a_live_feed_sends_again_only_what_it_still_holds() -> None:
    from services.md_gateway.runtime import RecentTicks

    recent = RecentTicks(per_symbol=100)
    for n in range(1, 251):
        recent.add(_quote(n) if n % 2 else _trade(n))
    assert [split_seq(t.seq)[1] for t in recent.get("IBM", 140, 160)] == list(range(151, 161))
    assert [split_seq(t.seq)[1] for t in recent.get("IBM", 245, 300)] == list(range(245, 251))
    assert recent.get("IBM", 1, 100) == [] and recent.get("BAC", 1, 5) == []


def test_only_the_sessions_heard_from_now_are_asked_for() -> None:
    earlier = TickSequencer()
    for n in (1, 2, 5):
        earlier.admit("IBM", make_seq(S, n))
    restarted = TickSequencer(earlier.take_changed())  # a new process, the state from the database
    assert restarted.holes() == [] and restarted.missing() == 0  # that run's source is gone
    assert restarted.missing(live_only=False) == 2
    restarted.admit("IBM", make_seq(S, 6))  # ...unless it is still sending
    assert restarted.holes() == [("IBM", S, 3, 4)]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.lists(st.integers(1, 120), max_size=80), min_size=1, max_size=5))
def test_batches_through_keep_new_ticks_keep_each_number_once(batches: list[list[int]]) -> None:
    """The batch path (its inlined fast path included) agrees with a plain set, batch by batch."""
    seqr, seen = TickSequencer(), set()
    for numbers in batches:
        batch = {
            "quotes": [_quote(n) for n in numbers if n % 2],
            "trades": [_trade(n) for n in numbers if n % 2 == 0],
        }
        kept, _ = keep_new_ticks(seqr, batch)
        got = sorted(split_seq(e.seq)[1] for table in kept.values() for e in table)
        want = sorted(set(numbers) - seen)
        assert got == want
        seen |= set(numbers)
        top = max(seen, default=0)
        holes = {n for _, _, a, b in seqr.holes() for n in range(a, b + 1)}
        assert holes == set(range(1, top + 1)) - seen
