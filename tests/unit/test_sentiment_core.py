"""The sentiment core without a model: ticker and event tagging, story deduplication across
sources, what is dropped and why, and the events made from a model's probabilities."""

from __future__ import annotations

from libs.common.clock import SimClock
from proto.news import NewsItem
from services.sentiment.core import Pending, SentimentCore
from services.sentiment.tagging import StoryDeduper, Tagger
from tests.kit import stubs

T0 = 1_381_239_000_000_000_000
MIN = 60_000_000_000


def item(
    headline: str, ts: int = T0, source: str = "file", symbols: list[str] | None = None, nid: str = ""
) -> NewsItem:
    return stubs.news(
        headline, ts, nid or f"{source}:{abs(hash((headline, ts)))}", source, symbols=symbols or []
    )


def test_tickers_from_cashtags_names_and_the_source_but_not_attributions() -> None:
    t = Tagger()
    assert t.tickers("$AAPL and $msft rally; IBM flat") == ["AAPL", "MSFT", "IBM"]
    assert t.tickers("International Business Machines beats estimates") == ["IBM"]
    assert t.tickers("Bank of America CEO Brian Moynihan on rates") == ["BAC"]
    assert t.tickers("Oil climbs", given=["xom"]) == ["XOM"]
    # The bank as the source of an opinion is not the subject (real tweets from the training set).
    assert t.tickers("Dow stock price target raised to $52 vs. $46 at BofA Merrill Lynch") == []
    assert t.tickers("$AMD - AMD's Navi shows strong adoption - BofA https://t.co/x") == ["AMD"]
    assert t.tickers('"After a 60% drop in 6 months, Bank of America says buy pot stock Canopy"') == []
    # Bare capitals count only for configured symbols: "IT" and "A" are words.
    assert t.tickers("IT spending: A slow year") == []


def test_event_tags() -> None:
    t = Tagger()
    assert t.events("IBM beats Q3 estimates, raises full-year guidance") == ["earnings", "guidance"]
    assert t.events("WestRock upgraded to buy from neutral at BofA Merrill Lynch") == ["upgrade"]
    assert t.events("Costco price target raised to $330 vs. $320") == ["price_target"]
    assert "m&a" in t.events("Microsoft to acquire Activision in $69B deal")
    assert "fda" in t.events("FDA approves the drug after a phase 3 trial")
    assert "lawsuit" in t.events("Shareholders file class action lawsuit against XYZ")
    assert "offering" in t.events("XYZ prices secondary offering of 5M shares")
    assert t.events("Markets are quiet today") == []


def test_the_same_story_from_two_sources_is_one_story() -> None:
    d = StoryDeduper(window_ns=60 * MIN)
    ibm = ["IBM"]
    assert not d.seen(T0, "IBM beats third-quarter estimates, shares jump", ibm)
    assert d.seen(T0 + MIN, "UPDATE: IBM beats third-quarter estimates; shares jump", ibm)  # same words
    assert d.seen(T0 + 2 * MIN, "IBM beats third quarter estimates shares jump in late trading", ibm)
    assert d.seen(T0 + 2 * MIN, "IBM beats third quarter estimates, shares jump", ["IBM", "MSFT"])
    assert not d.seen(T0 + 3 * MIN, "IBM misses revenue estimates, shares fall", ibm)
    assert not d.seen(T0 + 200 * MIN, "IBM beats third-quarter estimates, shares jump", ibm)  # a later day
    # One wire template, two companies: two stories.
    assert not d.seen(T0, "Acme upgraded to buy from neutral at Goldman Sachs", ["ACME"])
    assert not d.seen(T0, "Bolt upgraded to buy from neutral at Goldman Sachs", ["BOLT"])


def test_admit_drops_with_reasons_and_scores_make_one_event_per_ticker() -> None:
    core = SentimentCore(SimClock(T0), Tagger(), symbols=())
    assert core.admit(item("   ")) == "empty"
    assert core.admit(item("Markets are quiet today")) == "no_ticker"
    first = core.admit(item("$IBM and $BAC rally after the Fed", source="ib:BRFG"))
    assert isinstance(first, Pending) and first.symbols == ["IBM", "BAC"]
    assert core.admit(item("IBM and BAC rally after the Fed", source="webhook")) == "duplicate"
    events = core.scored(first, [0.1, 0.2, 0.7], latency_us=850)
    assert [e.symbol for e in events] == ["IBM", "BAC"]
    assert events[0].label == "positive" and abs(events[0].polarity - 0.6) < 1e-12
    assert events[0].latency_us == 850 and events[0].news_id == first.item.news_id
    assert core.scored(first, [0.1, float("nan"), 0.7], 1) == []  # a broken model output is refused
    assert dict(core.stats) == {
        "received": 4,
        "dropped.empty": 1,
        "dropped.no_ticker": 1,
        "dropped.duplicate": 1,
        "scored": 1,
        "published": 2,
        "dropped.bad_model_output": 1,
    }


def test_a_symbol_filter_keeps_only_the_traded_tickers() -> None:
    core = SentimentCore(SimClock(T0), Tagger(), symbols=["IBM"])
    admitted = core.admit(item("$IBM and $BAC rally"))
    assert isinstance(admitted, Pending) and admitted.symbols == ["IBM"]
    assert core.admit(item("$BAC slides")) == "no_ticker"


def test_a_headline_whose_batch_failed_is_scored_when_it_comes_back() -> None:
    core = SentimentCore(SimClock(T0), Tagger())
    first = core.admit(item("$IBM beats estimates", nid="ib:1"))
    assert isinstance(first, Pending)
    core.release(first)  # the model failed; JetStream will deliver it again
    again = core.admit(item("$IBM beats estimates", nid="ib:1"))
    assert isinstance(again, Pending)  # not taken for its own duplicate
    assert core.admit(item("$IBM beats estimates", source="wire")) == "duplicate"  # still deduplicated
