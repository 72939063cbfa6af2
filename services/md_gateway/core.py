"""The md-gateway core: raw provider records in, clean Quote/Trade/Bar/DepthUpdate events out.

Pure: no I/O, the clock is passed in. Bad ticks are dropped with a counter per reason, never a
crash. Providers hand in plain tuples (cheaper than objects at hundreds of thousands per second):

  ("Q", ts_ns, symbol, bid, bid_size, ask, ask_size, venue, suspicious)  one- or two-sided quote;
                                                                        a side with price 0 is absent
  ("T", ts_ns, symbol, price, size, venue, conditions, suspicious, aggressor)
  ("B", ts_close_ns, symbol, timeframe, open, high, low, close, volume)
  ("D", ts_ns, symbol, side, position, operation, price, size)

Time sanity comes first: a record stamped implausibly far from the market clock (see ``far``) is
dropped as "far_timestamp" before it touches a book, so one record stamped 2100-01-01 is never
published (so never stored) and never makes a symbol's later records look out of order.
"""

from __future__ import annotations

import collections
import math
from typing import Any

from libs.common.clock import Clock
from libs.common.counts import Counts
from libs.common.markettime import ny_day_of
from proto.base import Event
from proto.market import FLAG_ODD_LOT, Bar, DepthUpdate, Quote, Trade, make_seq
from proto.units import SECOND_NS

LEAN_ODD_LOT = 0x80000000
JUMP_RESET_STREAK = 5  # this many consecutive "jumps" to one level is a real move: re-anchor
# The per-kind record counters: a record dropped for its time still counts as one of its kind.
RECORD_KINDS = {"Q": "quote_records", "T": "trade_records", "B": "bar_records", "D": "depth_records"}
INF = math.inf
# The counts made per record, kept as int attributes (``_n_KEY``) and folded into ``stats`` when it
# is read: an item assignment per count on the per-record path cost more than the checks.
HOT_STATS = ("records", "quote_records", "trade_records", "quotes", "trades", "unchanged", "outside_session")


class _Book:
    """Consolidated best bid/offer of one symbol. LEAN's per-exchange rows are one-sided and an
    exchange's quote is not refreshed when it leaves the top, so the latest bid row is the bid and
    the latest ask row the ask (what LEAN does; max/min over exchanges leaves 97% crossed)."""

    __slots__ = (
        "ask",
        "ask_size",
        "bid",
        "bid_size",
        "jump_streak",
        "last_mid",
        "last_published",
        "last_trade",
        "last_ts",
        "trade_streak",
    )

    def __init__(self) -> None:
        self.bid = self.ask = 0.0
        self.bid_size = self.ask_size = 0
        self.last_ts = 0
        self.last_mid = 0.0
        self.last_trade = 0.0
        self.last_published: tuple[float, float, int, int] | None = None
        self.jump_streak = 0
        self.trade_streak = 0


class MarketDataCore:
    """``session``: the regular session [open, close) in ns, or None when every tick counts.
    ``day``: the [start, end) in ns of the day a replay replays; None: the New York day of the
    session when there is one, else a live feed's (see ``far``). ``max_clock_skew_s``: how far
    outside the market clock a record may be stamped."""

    def __init__(
        self,
        clock: Clock,
        max_jump_pct: float = 10.0,
        drop_suspicious: bool = True,
        session: tuple[int, int] | None = None,
        max_clock_skew_s: float = 300.0,
        day: tuple[int, int] | None = None,
    ) -> None:
        self.clock = clock
        self.max_jump = max_jump_pct / 100.0
        self.drop_suspicious = drop_suspicious
        self.skew_ns = int(max_clock_skew_s * SECOND_NS)
        self.day = day
        self.session: tuple[int, int] | None = None
        self.plausible: tuple[int, int] | None = None  # a replay's bounds on a record's time
        self.set_session(session)
        self.books: dict[str, _Book] = {}
        self.bad: collections.Counter[str] = Counts()  # Counts: see libs/common/counts.py
        self._stats: collections.Counter[str] = Counts()
        self._n_records = self._n_quote_records = self._n_trade_records = 0
        self._n_quotes = self._n_trades = self._n_unchanged = self._n_outside_session = 0
        # Ticks (quotes, trades, depth) published per symbol: the finished status carries them,
        # so a replica that receives only its partitions knows how many of its own to wait for.
        self.published_by_symbol: collections.Counter[str] = Counts()
        # Each published quote, trade and bar is numbered per symbol within the source's session
        # (proto.market.make_seq): consumers see what they missed. The runtime sets the tick session
        # (a replay keeps its own across restarts); a core taking records again after a restart
        # numbers them again the same way.
        self.tick_session = 0
        self.numbered: collections.Counter[str] = Counts()
        self._handlers = {"Q": self.on_quote, "T": self.on_trade, "B": self.on_bar, "D": self.on_depth}

    @property
    def stats(self) -> collections.Counter[str]:
        """What the core counted, by key, in the order each key was first counted."""
        stats = self._stats
        for key in HOT_STATS:
            n = getattr(self, f"_n_{key}")
            if n:
                stats[key] = n
        return stats

    def _count(self, key: str) -> None:
        """One more ``key`` (off the per-record path)."""
        if key in HOT_STATS:
            n = getattr(self, f"_n_{key}") + 1
            setattr(self, f"_n_{key}", n)
            if n == 1:
                self._stats.setdefault(key, 0)  # its place in the order
        else:
            self._stats[key] += 1

    def on_record(self, rec: tuple[Any, ...]) -> Event | None:
        n = self._n_records = self._n_records + 1
        if n == 1:
            self._stats.setdefault("records", 0)
        # The replay's bounds compared inline (``far``'s first case): a call per record is a
        # measurable share of this hot path; ``far`` only where there are no bounds yet.
        ts, bounds = rec[1], self.plausible
        if not bounds[0] <= ts <= bounds[1] if bounds is not None else self.far(ts):
            self._count(RECORD_KINDS[rec[0]])
            self._reject("far_timestamp")
            return None
        return self._handlers[rec[0]](rec)

    def on_plausible(self, rec: tuple[Any, ...]) -> Event | None:
        """``on_record`` for a record the caller found within ``plausible`` already (the
        backtest's replay checks that first: its clock must not move for a far record)."""
        n = self._n_records = self._n_records + 1
        if n == 1:
            self._stats.setdefault("records", 0)
        return self._handlers[rec[0]](rec)

    def set_session(self, session: tuple[int, int] | None) -> None:
        self.session = session
        day = self.day or (ny_day_of(session[0]) if session is not None else None)
        self.plausible = None if day is None else (day[0] - self.skew_ns, day[1] + self.skew_ns)

    def far(self, ts: int) -> bool:
        """Is ``ts`` implausibly far from the market clock? A replay's market clock is the day it
        replays: a record stamped outside that day by more than the skew is far, whichever way.
        (The day, not the latest record's time: a real day has quiet stretches longer than any
        sensible skew; the sample day's pre-market has one of 33 minutes.) Live, the market clock
        is the core's clock: a record stamped more than the skew ahead of it is far; one behind it
        is not (delayed data is late, not wrong; each book still refuses to go back in time).
        With neither a day nor a running clock (a simulated clock nobody sets), the first record's
        New York day is taken as the day replayed."""
        bounds = self.plausible
        if bounds is None:
            now = self.clock.now_ns()
            if now:
                return ts > now + self.skew_ns
            try:
                day = ny_day_of(ts)
            except (OverflowError, OSError, ValueError):  # beyond any calendar
                return True
            bounds = self.plausible = (day[0] - self.skew_ns, day[1] + self.skew_ns)
        return not bounds[0] <= ts <= bounds[1]

    def _book(self, symbol: str) -> _Book:
        book = self.books.get(symbol)
        if book is None:
            book = self.books[symbol] = _Book()
        return book

    def _reject(self, reason: str) -> None:
        self.bad[reason] += 1

    def _in_session(self, ts: int) -> bool:
        s = self.session
        return s is None or s[0] <= ts < s[1]

    @staticmethod
    def _price_problem(*prices: float) -> str | None:
        for p in prices:
            if math.isnan(p) or math.isinf(p):
                return "nan_price"
            if p < 0:
                return "negative_price"
        return None

    def _out_of_order(self, book: _Book, ts: int) -> bool:
        if ts < book.last_ts:
            self._reject("out_of_order")
            return True
        book.last_ts = ts
        return False

    # -- quotes -----------------------------------------------------------------------------
    # on_quote and on_trade are the gateway's (and every backtest's) per-record path: the checks
    # of _price_problem, _book, _out_of_order and _in_session are made inline there, with the
    # same outcomes in the same order (a price outside [0, inf) goes to _price_problem for its
    # reason: NaN and infinities are "nan_price", a negative one "negative_price").
    def on_quote(self, rec: tuple[Any, ...]) -> Quote | None:
        _, ts, symbol, bid, bid_size, ask, ask_size, venue, suspicious = rec
        n = self._n_quote_records = self._n_quote_records + 1
        if n == 1:
            self._stats.setdefault("quote_records", 0)
        if suspicious and self.drop_suspicious:
            self._reject("suspicious")
            return None
        if not (0.0 <= bid < INF and 0.0 <= ask < INF):
            problem = self._price_problem(bid, ask)
            if problem:
                self._reject(problem)
                return None
        if bid == 0 and ask == 0:
            self._reject("zero_price")
            return None
        if bid_size < 0 or ask_size < 0:
            self._reject("negative_size")
            return None
        book = self.books.get(symbol)
        if book is None:
            book = self.books[symbol] = _Book()
        if ts < book.last_ts:
            self._reject("out_of_order")
            return None
        book.last_ts = ts
        old = old_bid, old_bid_size, old_ask, old_ask_size = book.bid, book.bid_size, book.ask, book.ask_size
        if bid > 0:
            book.bid, book.bid_size = bid, bid_size
        else:
            bid, bid_size = old_bid, old_bid_size
        if ask > 0:
            book.ask, book.ask_size = ask, ask_size
        else:
            ask, ask_size = old_ask, old_ask_size
        if bid <= 0 or ask <= 0:
            return None  # one side still unknown
        mid = (bid + ask) * 0.5
        last_mid = book.last_mid
        if last_mid and abs(mid - last_mid) > self.max_jump * last_mid:
            book.jump_streak += 1
            if book.jump_streak < JUMP_RESET_STREAK:
                book.bid, book.bid_size, book.ask, book.ask_size = old
                self._reject("price_jump")
                return None
        book.jump_streak = 0
        if bid > ask:
            self._reject("crossed")
            return None
        if bid == ask:
            self._reject("locked")
            return None
        book.last_mid = mid
        session = self.session
        if session is not None and not session[0] <= ts < session[1]:
            self._count("outside_session")
            return None
        key = (bid, ask, bid_size, ask_size)
        if key == book.last_published:
            n = self._n_unchanged = self._n_unchanged + 1
            if n == 1:
                self._stats.setdefault("unchanged", 0)
            return None
        book.last_published = key
        n = self._n_quotes = self._n_quotes + 1
        if n == 1:
            self._stats.setdefault("quotes", 0)
        self.published_by_symbol[symbol] += 1
        numbered = self.numbered
        number = numbered[symbol] + 1
        numbered[symbol] = number
        return Quote(
            ts_event=ts,
            ts_init=self.clock.now_ns(),
            symbol=symbol,
            bid=bid,
            ask=ask,
            bid_size=bid_size,
            ask_size=ask_size,
            venue=venue,
            seq=(self.tick_session << 32) | number,  # make_seq, inline (hot path)
        )

    # -- trades -----------------------------------------------------------------------------
    def on_trade(self, rec: tuple[Any, ...]) -> Trade | None:
        _, ts, symbol, price, size, venue, conditions, suspicious, aggressor = rec
        n = self._n_trade_records = self._n_trade_records + 1
        if n == 1:
            self._stats.setdefault("trade_records", 0)
        if suspicious and self.drop_suspicious:
            self._reject("suspicious")
            return None
        if not 0.0 <= price < INF:
            problem = self._price_problem(price)
            if problem:
                self._reject(problem)
                return None
        if price == 0:
            self._reject("zero_price")
            return None
        if size <= 0:
            self._reject("bad_size")
            return None
        book = self.books.get(symbol)
        if book is None:
            book = self.books[symbol] = _Book()
        if ts < book.last_ts:
            self._reject("out_of_order")
            return None
        book.last_ts = ts
        reference = book.last_trade or book.last_mid
        if reference and abs(price - reference) > self.max_jump * reference:
            book.trade_streak += 1
            if book.trade_streak < JUMP_RESET_STREAK:
                self._reject("price_jump")
                return None
        book.trade_streak = 0
        book.last_trade = price
        session = self.session
        if session is not None and not session[0] <= ts < session[1]:
            self._count("outside_session")
            return None
        n = self._n_trades = self._n_trades + 1
        if n == 1:
            self._stats.setdefault("trades", 0)
        self.published_by_symbol[symbol] += 1
        numbered = self.numbered
        number = numbered[symbol] + 1
        numbered[symbol] = number
        return Trade(
            ts_event=ts,
            ts_init=self.clock.now_ns(),
            symbol=symbol,
            price=price,
            size=size,
            venue=venue,
            conditions=conditions,
            aggressor=aggressor,
            flags=FLAG_ODD_LOT if conditions & LEAN_ODD_LOT else 0,
            seq=(self.tick_session << 32) | number,
        )

    # -- bars and depth ---------------------------------------------------------------------
    def on_bar(self, rec: tuple[Any, ...]) -> Bar | None:
        _, ts, symbol, timeframe, o, h, low, c, volume = rec
        self._count("bar_records")
        problem = self._price_problem(o, h, low, c)
        if problem or min(o, h, low, c) <= 0:
            self._reject(problem or "zero_price")
            return None
        if not (low <= min(o, c) and max(o, c) <= h):
            self._reject("inconsistent_bar")
            return None
        if not self._in_session(ts - 1):
            self._count("outside_session")
            return None
        self._count("bars")
        self.numbered[symbol] += 1
        return Bar(
            ts_event=ts,
            ts_init=self.clock.now_ns(),
            symbol=symbol,
            timeframe=timeframe,
            open=o,
            high=h,
            low=low,
            close=c,
            volume=volume,
            seq=(self.tick_session << 32) | self.numbered[symbol],
        )

    def on_depth(self, rec: tuple[Any, ...]) -> DepthUpdate | None:
        _, ts, symbol, side, position, operation, price, size = rec
        self._count("depth_records")
        if operation != "DELETE":
            problem = self._price_problem(price)
            if problem or price <= 0:
                self._reject(problem or "zero_price")
                return None
        if not self._in_session(ts):
            self._count("outside_session")
            return None
        self._count("depth")
        self.published_by_symbol[symbol] += 1
        return DepthUpdate(
            ts_event=ts,
            ts_init=self.clock.now_ns(),
            symbol=symbol,
            side=side,
            position=position,
            operation=operation,
            price=price,
            size=size,
        )

    def last_seqs(self) -> dict[str, int]:
        """The ``seq`` of each symbol's last quote, trade or bar."""
        return {symbol: make_seq(self.tick_session, n) for symbol, n in self.numbered.items()}

    def counters(self) -> dict[str, Any]:
        return {"stats": dict(self.stats), "bad_ticks": dict(self.bad), "bad_total": sum(self.bad.values())}
