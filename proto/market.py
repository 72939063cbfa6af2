"""Market data: quotes, trades, depth, bars and feed health."""

from __future__ import annotations

from typing import Literal

import msgspec

from proto.base import DurableEvent, Event, Identifier, Price, Size, Symbol

# Quote/Trade flag bits: why a tick that was kept is still worth a second look.
FLAG_EXTENDED_HOURS = 1
FLAG_ODD_LOT = 2

# A tick's (or a source's bar's) ``seq`` says where it stands in its source's stream of one
# symbol: the source's session in the high 32 bits (a replay keeps its session across restarts, a
# live feed starts a new one) and the number in the low 32 bits (1, 2, 3... over the symbol's
# quotes, trades and bars). A
# consumer that sees a number skipped knows ticks were lost on the way (a NATS restart, a consumer
# down) and which; one it has seen already is a duplicate (a resumed replay). 0: unsequenced.
SEQ_BITS = 32
SEQ_MASK = (1 << SEQ_BITS) - 1
SESSION_MAX = (1 << 31) - 1


def make_seq(session: int, number: int) -> int:
    return (session << SEQ_BITS) | number


def split_seq(seq: int) -> tuple[int, int]:
    """(session, number) of a tick's ``seq``."""
    return seq >> SEQ_BITS, seq & SEQ_MASK


class Quote(Event, frozen=True, kw_only=True):
    """Consolidated best bid and offer."""

    symbol: Symbol
    bid: Price
    ask: Price
    bid_size: Size
    ask_size: Size
    venue: str = ""
    flags: int = 0
    seq: int = 0  # session and number in its source's stream of this symbol (see make_seq)

    def __post_init__(self) -> None:
        # A crossed book is never valid downstream; the gateway drops them before publishing.
        if self.bid > self.ask:
            raise ValueError(f"crossed quote: bid {self.bid} > ask {self.ask}")


class Trade(Event, frozen=True, kw_only=True):
    symbol: Symbol
    price: Price
    size: Size
    venue: str = ""
    conditions: int = 0
    # +1 buyer-initiated, -1 seller-initiated, 0 unknown (LEAN has no aggressor flag; LOBSTER does).
    aggressor: Literal[-1, 0, 1] = 0
    flags: int = 0
    seq: int = 0  # session and number in its source's stream of this symbol (see make_seq)


class DepthUpdate(Event, frozen=True, kw_only=True):
    """One level-2 book change, in IB's updateMktDepth shape so the IB provider maps 1:1."""

    symbol: Symbol
    side: Literal["BID", "ASK"]
    position: int = msgspec.field(default=0)
    operation: Literal["INSERT", "UPDATE", "DELETE"] = "UPDATE"
    price: float = 0.0
    size: Size = 0
    market_maker: str = ""


class Bar(Event, frozen=True, kw_only=True):
    """OHLCV bar; ``ts_event`` is the bar's close time."""

    symbol: Symbol
    timeframe: str
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Size
    trade_count: int = 0
    vwap: float | None = None
    seq: int = 0  # numbered with the symbol's quotes and trades (see make_seq)

    def __post_init__(self) -> None:
        if (
            self.low > self.high
            or not (self.low <= self.open <= self.high)
            or not (self.low <= self.close <= self.high)
        ):
            raise ValueError(f"inconsistent bar o={self.open} h={self.high} l={self.low} c={self.close}")


FeedState = Literal[
    "connected",
    "disconnected",
    "stale",
    "recovered",
    "replay_started",
    "replay_progress",
    "replay_finished",
]


# A finished replay's FeedStatus counts the ticks (quotes, trades, depth) it published per symbol
# under "published.SYMBOL" (beside the totals per kind).
PUBLISHED_PREFIX = "published."
# ... and the ``seq`` of the last quote, trade or bar of each symbol under "last_seq.SYMBOL": a
# consumer that missed the tail of the day learns it from there.
LAST_SEQ_PREFIX = "last_seq."


class FeedStatus(DurableEvent, frozen=True, kw_only=True):
    """Health of a market-data source; missing data is an event."""

    source: Identifier
    state: FeedState
    seq: int
    symbol: str = ""
    detail: str = ""
    counters: dict[str, int] = {}

    def dedupe_key(self) -> str:
        return f"feed:{self.source}:{self.seq}"


class GapRequest(Event, frozen=True, kw_only=True):
    """Ticks a consumer knows it missed (numbers ``first``..``last`` of ``symbol`` in the source's
    ``session``): the md-gateway sends them again on gap.fill.SYMBOL when its source can (a
    replay), and says how many it sent in the reply it counts. Asked again until filled."""

    symbol: Symbol
    session: int
    first: int
    last: int
    requester: Identifier
