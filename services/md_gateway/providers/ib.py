"""Interactive Brokers market data on the official ibapi client (libs/common/ib/session.py).

Streams tick-by-tick BidAsk (quotes) and AllLast (trades) per symbol, and optionally L2 depth,
as the md-gateway core's raw records. What keeps it alive and honest
(../shared/reference/ib-api.md, section 6, "Market-data gateway"):
- a subscription registry independent of reqIds: after a reconnect or a 1101 every wanted
  subscription is issued again, paced, with new reqIds (1102 keeps them);
- a line budget (``max_lines``, IB's default 100): asking for more is a clear error at start,
  never a silent drop at IB (101);
- permission notes (354, 10089, 10090, 10167, 10168, 10197) are reported, never end a
  subscription; an error that does end one (200 no security definition, 101) ends that one only;
- depth keeps the book per side, so a 317 reset deletes every level it had;
- live or delayed market data (reqMarketDataType 1-4);
- feed health as status notes: connected, disconnected, stale (1100), recovered (1101/1102), and
  per-symbol staleness when a subscribed symbol has been silent too long.

Timestamps: IB's tick-by-tick time has one-second resolution. ``timestamps="receive"`` (live)
stamps the local receive time; ``"exchange"`` uses IB's second, made strictly increasing within
it (what a recorded day streamed through a fake TWS needs to land in the same bars).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ibapi.client import EClient
from ibapi.contract import Contract

from libs.common.calendar import MarketCalendar
from libs.common.ib.session import PERMISSION_CODES, IbSession, classify
from libs.common.logging import get_logger
from proto.units import SECOND_NS as NS

log = get_logger(__name__)
SubKind = Literal["BidAsk", "AllLast", "Depth", "News"]
# Errors that end the one subscription they name (the request itself failed).
ENDS_SUBSCRIPTION = frozenset({101, 200, 309, 322, 10092})
DEPTH_RESET = 317


class LineBudgetExceeded(ValueError):
    """More subscriptions than market-data lines: IB would refuse them (101)."""


@dataclass(frozen=True)
class Subscription:
    kind: SubKind
    symbol: str

    def contract(self) -> Contract:
        c = Contract()
        c.symbol, c.secType, c.exchange, c.currency = self.symbol, "STK", "SMART", "USD"
        return c


@dataclass
class _Depth:
    bids: dict[int, float] = field(default_factory=dict)  # position -> price
    asks: dict[int, float] = field(default_factory=dict)


def _request(
    sub: Subscription, req_id: int, contract: Contract, depth_rows: int
) -> Callable[[EClient], None]:
    if sub.kind == "Depth":
        return lambda c: c.reqMktDepth(req_id, contract, depth_rows, False, [])
    if sub.kind == "News":  # news ticks only (mdoff: no prices on this line)
        return lambda c: c.reqMktData(req_id, contract, "mdoff,292", False, False, [])
    return lambda c: c.reqTickByTickData(req_id, contract, sub.kind, 0, False)


class IbMarketData:
    name = "ib"

    def __init__(
        self,
        session: IbSession,
        symbols: list[str],
        *,
        depth_symbols: list[str] | None = None,
        news: bool = False,
        depth_rows: int = 5,
        market_data_type: int = 1,
        max_lines: int = 100,
        timestamps: Literal["receive", "exchange"] = "receive",
        stale_after_s: float = 30.0,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.ib = session
        kinds: tuple[SubKind, ...] = ("BidAsk", "AllLast")
        self.wanted = [Subscription(k, s) for s in symbols for k in kinds]
        self.wanted += [Subscription("Depth", s) for s in depth_symbols or []]
        self.news = news
        self.wanted += [Subscription("News", s) for s in symbols] if news else []
        if len(self.wanted) > max_lines:
            raise LineBudgetExceeded(
                f"{len(self.wanted)} market-data subscriptions for {len(symbols)} symbols exceed the "
                f"line budget of {max_lines} (ib.max_lines); subscribe fewer symbols or raise the budget"
            )
        self.depth_rows = depth_rows
        self.market_data_type = market_data_type
        self.timestamps = timestamps
        self.stale_after_ns = int(stale_after_s * NS)
        self.wall_ns = wall_ns
        self.active: dict[int, Subscription] = {}  # reqId -> subscription, this connection only
        self.failed: dict[Subscription, str] = {}
        self.books: dict[str, _Depth] = collections.defaultdict(_Depth)
        self.last_ts: dict[str, int] = {}
        self.last_seen: dict[str, int] = {}
        self.stats: collections.Counter[str] = collections.Counter()
        self.queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._req_ids = itertools.count(1_000)
        self._stale: set[str] = set()

    # -- the provider interface ------------------------------------------------------------------
    def session(self, calendar: MarketCalendar | None = None) -> tuple[int, int] | None:
        return None  # live: the cleaning's session filter uses the day it runs on (md_gateway config)

    async def stream(self) -> AsyncIterator[tuple[Any, ...]]:
        """Raw records and ("S", ts, state, symbol, detail) status notes, as they come."""
        keeper = asyncio.create_task(self._keep_subscribed(), name="ib-md-subscriptions")
        try:
            while True:
                yield await self.queue.get()
        finally:
            keeper.cancel()

    def on_event(self, name: str, args: tuple[Any, ...]) -> None:
        """The session's callbacks (on the event loop)."""
        handler = getattr(self, f"_on_{name}", None)
        if handler is not None:
            handler(*args)

    # -- subscriptions ---------------------------------------------------------------------------
    async def _keep_subscribed(self) -> None:
        while True:
            await self.ib.data_lost.wait()
            self.ib.data_lost.clear()
            await self._subscribe_all()

    async def _subscribe_all(self) -> None:
        """Every wanted subscription again, with new reqIds (old ones died with the connection
        or with a 1101), through the session's pacer."""
        self.active.clear()
        self.books.clear()
        if self.market_data_type != 1:
            await self.ib.send(lambda c: c.reqMarketDataType(self.market_data_type))
        if self.news:
            await self.ib.send(lambda c: c.reqNewsBulletins(True))
        for sub in self.wanted:
            if sub in self.failed:
                continue
            req_id = next(self._req_ids)
            self.active[req_id] = sub
            contract = sub.contract()
            await self.ib.send(_request(sub, req_id, contract, self.depth_rows))
            self.stats["subscribe_requests"] += 1
        self._note(
            "connected" if self.ib.connections <= 1 else "recovered", "", f"{len(self.active)} subscriptions"
        )

    def check_stale(self, now_ns: int) -> None:
        """Per symbol: silent for ``stale_after`` while connected -> a stale note (once); the
        runtime calls it periodically (it owns time)."""
        for symbol in {s.symbol for s in self.active.values()}:
            seen = self.last_seen.get(symbol, 0)
            if seen and now_ns - seen > self.stale_after_ns and symbol not in self._stale:
                self._stale.add(symbol)
                self._note("stale", symbol, f"no ticks for {(now_ns - seen) / NS:.0f} s")

    # -- callbacks -----------------------------------------------------------------------------------
    def _stamp(self, symbol: str, ib_seconds: int) -> int:
        ts = self.wall_ns() if self.timestamps == "receive" else int(ib_seconds) * NS
        ts = max(ts, self.last_ts.get(symbol, 0) + 1)  # strictly increasing per symbol
        self.last_ts[symbol] = ts
        self.last_seen[symbol] = self.wall_ns()
        if symbol in self._stale:
            self._stale.discard(symbol)
            self._note("recovered", symbol, "ticks again")
        return ts

    def _on_tickByTickBidAsk(
        self, req_id: int, t: int, bid: float, ask: float, bid_size: int, ask_size: int, attrib: Any
    ) -> None:
        sub = self.active.get(req_id)
        if sub is None:
            self.stats["ticks_for_unknown_req"] += 1
            return
        self.queue.put_nowait(
            ("Q", self._stamp(sub.symbol, t), sub.symbol, bid, bid_size, ask, ask_size, "IB", False)
        )

    def _on_tickByTickAllLast(
        self,
        req_id: int,
        tick_type: int,
        t: int,
        price: float,
        size: int,
        attrib: Any,
        exchange: str,
        conditions: str,
    ) -> None:
        sub = self.active.get(req_id)
        if sub is None:
            self.stats["ticks_for_unknown_req"] += 1
            return
        # IB's special conditions are a string of codes; ours are LEAN's bit flags: none carry
        # over. An unreported trade (not on the tape) is kept out, like a suspicious one.
        unreported = bool(getattr(attrib, "unreported", False))
        rec = (
            "T",
            self._stamp(sub.symbol, t),
            sub.symbol,
            price,
            size,
            exchange,
            0,
            unreported,
            0,
        )  # aggressor unknown
        self.queue.put_nowait(rec)

    def _on_updateMktDepth(
        self, req_id: int, position: int, operation: int, side: int, price: float, size: int
    ) -> None:
        sub = self.active.get(req_id)
        if sub is None:
            return
        book = self.books[sub.symbol]
        levels, side_name = (book.bids, "BID") if side == 1 else (book.asks, "ASK")
        op = ("INSERT", "UPDATE", "DELETE")[operation]
        if op == "DELETE":
            levels.pop(position, None)
        else:
            levels[position] = price
        ts = (
            self._stamp(sub.symbol, 0)
            if self.timestamps == "receive"
            else self.last_ts.get(sub.symbol, 0) + 1
        )
        self.last_ts[sub.symbol] = ts
        self.queue.put_nowait(("D", ts, sub.symbol, side_name, position, op, price, size))

    def _on_tickNews(
        self, req_id: int, ts_ms: int, provider: str, article_id: str, headline: str, extra: str
    ) -> None:
        sub = self.active.get(req_id)
        if sub is None:
            return
        ts = int(ts_ms) * 1_000_000 if ts_ms else self.wall_ns()
        self.stats["news"] += 1
        self.queue.put_nowait(
            ("N", ts, sub.symbol, f"ib:{provider}", f"ib:{provider}:{article_id}", headline)
        )

    def _on_updateNewsBulletin(self, msg_id: int, msg_type: int, message: str, exchange: str) -> None:
        self.stats["bulletins"] += 1
        news_id = f"ib:bulletin:{msg_id}:{abs(hash(message)) % 10**12}"  # msgId restarts with TWS
        self.queue.put_nowait(("N", self.wall_ns(), "", "ib:bulletin", news_id, message))

    def _on_error(self, req_id: int, code: int, text: str) -> None:
        sub = self.active.get(req_id)
        kind = classify(code)
        if code == DEPTH_RESET and sub is not None:
            self._reset_depth(sub.symbol)
        elif code in PERMISSION_CODES:
            self.stats[f"permission_{code}"] += 1  # data may still flow: keep the subscription
            self._note("connected", sub.symbol if sub else "", f"IB {code}: {text}")
        elif code in ENDS_SUBSCRIPTION and sub is not None:
            del self.active[req_id]
            self.failed[sub] = f"{code} {text}"
            self.stats["subscriptions_failed"] += 1
            self._note("stale", sub.symbol, f"{sub.kind} subscription refused by IB ({code}): {text}")
        elif kind == "connectivity":
            self._note("stale", "", f"IB {code}: {text}")
        elif code == 1101:
            self._note("recovered", "", "IB 1101: data lost, resubscribing")
        elif code == 1102:
            self._note("recovered", "", "IB 1102: data kept")

    def _on_disconnected(self) -> None:
        self.active.clear()
        self._note("disconnected", "", "TWS connection closed; reconnecting")

    def _reset_depth(self, symbol: str) -> None:
        """317: the book as we know it is void; delete every level before the new one arrives."""
        book = self.books.pop(symbol, _Depth())
        ts = self.last_ts.get(symbol, 0) + 1
        self.last_ts[symbol] = ts
        for side_name, levels in (("BID", book.bids), ("ASK", book.asks)):
            for position in sorted(levels, reverse=True):
                self.queue.put_nowait(("D", ts, symbol, side_name, position, "DELETE", 0.0, 0))
        self.stats["depth_resets"] += 1

    def _note(self, state: str, symbol: str, detail: str) -> None:
        self.stats[f"status_{state}"] += 1
        self.queue.put_nowait(("S", self.wall_ns(), state, symbol, detail))
