"""The simulated venue: ``SimVenue`` fills against the replayed market, pure and event-time driven;
``SimBroker`` is it behind the execution gateway's Broker seam (broker.py).

What keeps its results honest:
- latency: an order reaches the venue ``submit_latency`` after it is sent and is judged against
  the market *then*; every report (ack, fill, cancel, reject) reaches us ``report_latency`` later;
- market orders (and the marketable part of a limit) cross the spread and walk the displayed size:
  the touch's displayed size fills at the touch, the rest one tick worse per further displayed
  size (with only level 1 in the data, deeper levels are assumed as large as the touch);
- a resting limit fills only when the market trades through its price (all of it) or, when trades
  only touch it, once the volume traded at that price has used up the queue ahead of it (estimated
  as the displayed size at that price when the order arrived); that gives partial fills;
- stops trigger on a trade at or through the stop, then behave as market (or limit) orders; a
  trailing stop's stop follows the best trade since it arrived (by an amount or a percent);
- a bracket's exit legs wait at the venue until their parent fills (or ends part-filled, then
  for what was filled); legs sharing an OCA group reduce each other by every fill, and the one
  left with nothing to do is cancelled;
- cancel/replace: a replace reaches the venue after the submit latency like a cancel; a new
  price loses the order's place in the queue; quantity can go down to what has filled, no less;
- IOC leaves nothing resting; DAY orders are cancelled at the session's end;
- IB commissions (fixed or tiered); rejects for unknown symbols and bad sizes.

The venue never reads a clock: time moves with the market data it is given and with ``advance``.
"""

from __future__ import annotations

import collections
import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

from libs.common.config import MarketSettings, SimSettings
from proto.base import Event
from proto.market import FeedStatus, Quote, Trade
from services.execution.broker import BrokerOrder, BrokerReport, MarginPreview, ReportKind, ReportSink
from services.execution.commissions import CommissionModel, commission_model

REG_T_INITIAL = 0.5  # the initial margin a what-if quotes: Regulation T's half of the notional


@dataclass
class SimOrder(BrokerOrder):
    """An order as the venue works it: the order, and how far it got."""

    filled: float = 0.0
    queue_ahead: float = 0.0
    triggered: bool = False
    live: bool = False
    held: bool = False
    #: a trailing stop's best trade price since it started working
    extreme: float | None = None

    @property
    def remaining(self) -> float:
        return self.quantity - self.filled

    @property
    def sign(self) -> int:
        return 1 if self.side == "BUY" else -1


@dataclass
class _Book:
    bid: float = 0.0
    ask: float = 0.0
    bid_size: float = 0.0
    ask_size: float = 0.0


@dataclass(order=True)
class _Pending:
    ts: int
    seq: int
    action: str = field(compare=False)
    order: SimOrder | None = field(compare=False, default=None)
    client_order_id: str = field(compare=False, default="")
    changes: dict[str, float] = field(compare=False, default_factory=dict)


class SimVenue:
    def __init__(
        self,
        config: SimSettings | None = None,
        session_end_ns: int | None = None,
        exec_prefix: str = "sim",
        tick: float = 0.01,
        known_symbols: frozenset[str] | None = None,  # None: any symbol a quote was seen for
    ) -> None:
        self.cfg = config or SimSettings()
        self.tick = tick
        self.known_symbols = known_symbols
        self.exec_prefix = exec_prefix  # exec ids must differ across runs: fills dedupe by them
        self.commissions: CommissionModel = commission_model(self.cfg.commission)
        self.books: dict[str, _Book] = {}
        self.orders: dict[str, SimOrder] = {}
        self.ended_filled: dict[str, float] = {}  # what an order that has ended had filled
        self._arrivals: list[_Pending] = []
        self._reports: list[tuple[int, int, BrokerReport]] = []
        self._seq = itertools.count()
        self._exec_ids = itertools.count(1)
        self.session_end_ns = session_end_ns
        self.now = 0
        self.stats: collections.Counter[str] = collections.Counter()

    def working_ids(self) -> list[str]:
        """Client order ids at the venue or on their way to it."""
        on_the_way = [p.order.client_order_id for p in self._arrivals if p.order is not None]
        return [*self.orders, *on_the_way]

    def idle(self) -> bool:
        """No order at the venue or on its way, no report in flight: market data then only sets
        the touch (the RL environment skips to the latest quote while the broker is idle)."""
        return not (self.orders or self._arrivals or self._reports)

    # -- what the execution gateway calls -----------------------------------------------------------
    def submit(self, order: BrokerOrder, now: int) -> None:
        """The venue works its own copy: what the sender holds never changes under it."""
        self._schedule(now + self._ms(self.cfg.submit_latency_ms), "submit", order=order.copy_as(SimOrder))

    def cancel(self, client_order_id: str, now: int) -> None:
        self._schedule(now + self._ms(self.cfg.submit_latency_ms), "cancel", client_order_id=client_order_id)

    def replace(
        self,
        client_order_id: str,
        now: int,
        quantity: float | None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
    ) -> None:
        changes = {
            k: v
            for k, v in (("quantity", quantity), ("limit_price", limit_price), ("stop_price", stop_price))
            if v is not None
        }
        self._schedule(
            now + self._ms(self.cfg.submit_latency_ms),
            "replace",
            client_order_id=client_order_id,
            changes=changes,
        )

    def advance(self, now: int) -> list[BrokerReport]:
        """Move time without market data (the runtime's timer; the end of a replay)."""
        self._until(now)
        return self._due(now)

    def end_of_data(self) -> list[BrokerReport]:
        """A replay ended: orders still working can never trade; they end cancelled, and every
        report still in flight is delivered."""
        self._until(self.now)
        for order in list(self.orders.values()):
            self._end(order, self.now, "cancelled", "end of market data", release=False)
        for pending in self._arrivals:  # sent but never arrived: the venue never saw them
            if pending.order is not None:
                self._report("rejected", pending.order, self.now, reason="end of market data")
        self._arrivals.clear()
        return self._due(2**62)

    # -- market data ------------------------------------------------------------------------------
    def on_quote(
        self, symbol: str, ts: int, bid: float, ask: float, bid_size: float, ask_size: float
    ) -> list[BrokerReport]:
        self._until(ts)
        book = self.books.get(symbol)
        if book is None:
            book = self.books[symbol] = _Book()
        book.bid, book.ask, book.bid_size, book.ask_size = bid, ask, bid_size, ask_size
        # The market moved through a resting limit: the orders at its price were taken on the way,
        # so it fills whole, at its own price, as the maker (never at the better new touch).
        for order in list(self.orders.values()):
            if order.symbol != symbol or not self._resting_limit(order):
                continue
            opposite = ask if order.sign > 0 else bid
            if (opposite - (order.limit_price or 0.0)) * order.sign < -1e-12:
                self._fill(order, ts, order.remaining, order.limit_price or 0.0, "ADD")
        return self._due(ts)

    @staticmethod
    def _resting_limit(order: SimOrder) -> bool:
        return order.live and (
            order.order_type == "LMT" or (order.order_type == "STP_LMT" and order.triggered)
        )

    def on_trade(self, symbol: str, ts: int, price: float, size: float) -> list[BrokerReport]:
        self._until(ts)
        book = self.books.get(symbol)
        for order in list(self.orders.values()):
            if order.symbol != symbol or not order.live or order.remaining <= 0:
                continue
            if order.order_type == "TRAIL" and not order.triggered:
                self._trail(order, price)
            if order.order_type in ("STP", "STP_LMT", "TRAIL") and not order.triggered:
                stop = order.stop_price or 0.0  # validated positive on arrival
                if (price - stop) * order.sign >= 0:  # a trade at or through the stop
                    order.triggered = True
                    if book is not None:
                        self._cross(order, ts, book)
                continue
            if self._resting_limit(order):
                self._trade_at_limit(order, ts, price, size)
        return self._due(ts)

    def _trail(self, order: SimOrder, price: float) -> None:
        """Move a trailing stop with the best price seen (up for a sell stop, down for a buy)."""
        if order.extreme is None or (price - order.extreme) * order.sign < 0:
            order.extreme = price
        distance = order.trail_amount or order.extreme * (order.trail_percent or 0.0) / 100
        order.stop_price = round(order.extreme + order.sign * distance, 10)

    # -- time ---------------------------------------------------------------------------------------
    def _until(self, now: int) -> None:
        """Handle every order arrival and cancel due by ``now``, then the session's end."""
        self.now = max(self.now, now)
        while self._arrivals and self._arrivals[0].ts <= now:
            p = heapq.heappop(self._arrivals)
            if p.action == "submit" and p.order is not None:
                self._arrive(p.order, p.ts)
            elif p.action == "cancel":
                self._cancel_at_venue(p.client_order_id, p.ts)
            elif p.action == "replace":
                self._replace_at_venue(p.client_order_id, p.ts, p.changes)
        if self.session_end_ns is not None and now >= self.session_end_ns:
            end, self.session_end_ns = self.session_end_ns, None
            for order in [o for o in self.orders.values() if o.tif == "DAY"]:
                self._end(order, end, "cancelled", "end of day", release=False)

    def _arrive(self, order: SimOrder, ts: int) -> None:
        cfg = self.cfg
        book = self.books.get(order.symbol)
        known = self.known_symbols is None or order.symbol in self.known_symbols
        if book is None or not known:
            self._report("rejected", order, ts, reason=f"unknown symbol {order.symbol}")
            return
        if not (
            order.quantity > 0
            and float(order.quantity).is_integer()
            and order.quantity <= cfg.max_order_shares
        ):
            self._report("rejected", order, ts, reason=f"bad size {order.quantity}")
            return
        if order.order_type in ("LMT", "STP_LMT") and not (order.limit_price and order.limit_price > 0):
            self._report("rejected", order, ts, reason="limit order without a positive limit price")
            return
        if order.order_type in ("STP", "STP_LMT") and not (order.stop_price and order.stop_price > 0):
            self._report("rejected", order, ts, reason="stop order without a positive stop price")
            return
        if order.order_type == "TRAIL" and not (
            (order.trail_amount or 0) > 0 or 0 < (order.trail_percent or 0) < 100
        ):
            self._report("rejected", order, ts, reason="trailing stop without a positive trail")
            return
        self.orders[order.client_order_id] = order
        self._report("ack", order, ts)
        if order.parent_id:
            if order.parent_id in self.orders:  # the parent still works: the leg waits for it
                order.held = True
                return
            parent_filled = self.ended_filled.get(order.parent_id, 0.0)
            if parent_filled <= 0:
                self._end(order, ts, "cancelled", "parent order did not fill")
                return
            order.quantity = min(order.quantity, parent_filled)
        self._activate(order, ts, book)

    def _activate(self, order: SimOrder, ts: int, book: _Book) -> None:
        """The order starts working: it takes what it can now, then rests (or waits to trigger)."""
        order.live, order.held = True, False
        if order.order_type == "TRAIL":  # trails from the touch it would sell (buy) into
            self._trail(order, book.bid if order.sign < 0 else book.ask)
        if order.order_type in ("MKT", "LMT"):
            self._cross(order, ts, book)
        if order.live and order.order_type == "LMT":
            self._join_queue(order, book)
        if order.live and order.tif == "IOC":
            self._end(order, ts, "cancelled", "IOC remainder")

    def _join_queue(self, order: SimOrder, book: _Book) -> None:
        level = book.bid_size if order.sign > 0 else book.ask_size
        at_touch = order.limit_price == (book.bid if order.sign > 0 else book.ask)
        order.queue_ahead = level * self.cfg.queue_ahead_fraction if at_touch else 0.0

    def _cross(self, order: SimOrder, ts: int, book: _Book) -> None:
        """Take liquidity: walk the displayed size from the touch, no further than a limit."""
        touch, displayed = (book.ask, book.ask_size) if order.sign > 0 else (book.bid, book.bid_size)
        if touch <= 0:
            return
        limit = order.limit_price if order.order_type in ("LMT", "STP_LMT") else None
        per_level = max(displayed, 1.0)
        level = 0
        while order.live and order.remaining > 0:
            price = round(touch + order.sign * level * self.tick, 10)
            if limit is not None and (price - limit) * order.sign > 1e-12:
                break
            self._fill(order, ts, min(order.remaining, per_level), price, "REMOVE")
            level += 1

    def _trade_at_limit(self, order: SimOrder, ts: int, price: float, size: float) -> None:
        limit = order.limit_price or 0.0
        through = (price - limit) * order.sign < -1e-12  # the market traded beyond our price
        if through:
            self._fill(order, ts, order.remaining, limit, "ADD")
            return
        if abs(price - limit) <= 1e-12:  # only touched: the queue ahead of us goes first
            order.queue_ahead -= size
            if order.queue_ahead < 0:
                self._fill(order, ts, min(order.remaining, -order.queue_ahead), limit, "ADD")
                order.queue_ahead = 0.0

    def _fill(
        self, order: SimOrder, ts: int, quantity: float, price: float, liquidity: Literal["ADD", "REMOVE"]
    ) -> None:
        if quantity <= 0:
            return
        order.filled += quantity
        commission = self.commissions.commission(order.side, quantity, price, liquidity)
        self._report(
            "fill", order, ts, quantity=quantity, price=price, commission=commission, liquidity=liquidity
        )
        if order.oca_group:
            self._reduce_oca(order, ts, quantity)
        if order.remaining <= 1e-9:
            order.live = False
            self.orders.pop(order.client_order_id, None)
            self.ended_filled[order.client_order_id] = order.filled
            self._release_legs(order, ts)

    def _reduce_oca(self, filled: SimOrder, ts: int, quantity: float) -> None:
        for other in list(self.orders.values()):
            if other is filled or other.oca_group != filled.oca_group:
                continue
            other.quantity = max(other.quantity - quantity, other.filled)
            if other.remaining <= 1e-9:
                self._end(other, ts, "cancelled", f"OCA: filled by {filled.client_order_id}")
            else:
                self._report("replaced", other, ts, quantity=other.quantity, reason="OCA reduce")

    def _release_legs(self, parent: SimOrder, ts: int) -> None:
        """The parent has ended: its held legs work for what it filled, or end if it filled none."""
        book = self.books.get(parent.symbol)
        for leg in [o for o in self.orders.values() if o.parent_id == parent.client_order_id and o.held]:
            if parent.filled <= 0 or book is None:
                self._end(leg, ts, "cancelled", "parent order did not fill")
                continue
            if leg.quantity > parent.filled:
                leg.quantity = parent.filled
                self._report("replaced", leg, ts, quantity=leg.quantity, reason="parent part-filled")
            self._activate(leg, ts, book)

    def _cancel_at_venue(self, client_order_id: str, ts: int) -> None:
        order = self.orders.get(client_order_id)
        if order is None:
            self.stats["cancel_unknown_or_done"] += 1
            return
        self._end(order, ts, "cancelled", "cancel requested")

    def _replace_at_venue(self, client_order_id: str, ts: int, changes: dict[str, float]) -> None:
        order = self.orders.get(client_order_id)
        if order is None:
            self._report_replace_rejected(client_order_id, ts, "order not working")
            return
        quantity = changes.get("quantity", order.quantity)
        limit = changes.get("limit_price", order.limit_price)
        stop = changes.get("stop_price", order.stop_price)
        if not (order.filled < quantity <= order.quantity) or not float(quantity).is_integer():
            self._report_replace_rejected(
                client_order_id, ts, f"bad quantity {quantity} (filled {order.filled})"
            )
            return
        if (limit is not None and not limit > 0) or (stop is not None and not stop > 0):
            self._report_replace_rejected(client_order_id, ts, "prices must be positive")
            return
        repriced = limit != order.limit_price
        order.quantity, order.limit_price, order.stop_price = quantity, limit, stop
        self._report("replaced", order, ts, quantity=quantity, price=limit or 0.0, reason="replaced")
        book = self.books.get(order.symbol)
        if repriced and order.live and book is not None and self._resting_limit(order):
            self._cross(order, ts, book)  # a limit moved through the market takes what it can
            if order.live:
                self._join_queue(order, book)  # a new price goes to the back of the queue

    def _report_replace_rejected(self, client_order_id: str, ts: int, reason: str) -> None:
        ghost = SimOrder(client_order_id, "", "BUY", 0)
        self._report("replace_rejected", ghost, ts, reason=reason)

    def _end(self, order: SimOrder, ts: int, kind: ReportKind, reason: str, release: bool = True) -> None:
        """``release=False`` when the market is closing: legs still held end with their parent
        instead of starting to work against a book that will not move again."""
        if order.client_order_id not in self.orders:
            return  # ended already (a leg ended with its parent earlier in the same sweep)
        order.live = False
        self.orders.pop(order.client_order_id, None)
        self.ended_filled[order.client_order_id] = order.filled
        self._report(kind, order, ts, reason=reason)
        if release:
            self._release_legs(order, ts)
            return
        for leg in [o for o in self.orders.values() if o.parent_id == order.client_order_id and o.held]:
            self._end(leg, ts, "cancelled", reason, release=False)

    # -- reports --------------------------------------------------------------------------------------
    def _report(self, kind: ReportKind, order: SimOrder, venue_ts: int, **fields: object) -> None:
        exec_id = f"{self.exec_prefix}-{next(self._exec_ids)}" if kind == "fill" else ""
        report = BrokerReport(
            kind=kind,
            client_order_id=order.client_order_id,
            ts=venue_ts + self._ms(self.cfg.report_latency_ms),
            venue_ts=venue_ts,
            exec_id=exec_id,
            **fields,  # type: ignore[arg-type]
        )
        self.stats[kind] += 1
        heapq.heappush(self._reports, (report.ts, next(self._seq), report))

    def _due(self, now: int) -> list[BrokerReport]:
        out = []
        while self._reports and self._reports[0][0] <= now:
            out.append(heapq.heappop(self._reports)[2])
        return out

    def _schedule(self, ts: int, action: str, **fields: object) -> None:
        heapq.heappush(self._arrivals, _Pending(ts, next(self._seq), action, **fields))  # type: ignore[arg-type]

    @staticmethod
    def _ms(ms: float) -> int:
        return int(ms * 1_000_000)


class SimBroker:
    """The simulated venue behind the Broker seam. Its time is market time: the latest quote or
    trade the gateway received, which is when an order sent now is judged against the market (plus
    the submit latency). Reports are made due by market data (``on_market``) and, once the replay
    has ended, at once (``due``): no order waits forever for data that will not come."""

    name = "sim"

    def __init__(self, settings: SimSettings, market: MarketSettings | None = None) -> None:
        tick = (market or MarketSettings()).tick_size
        self.venue = SimVenue(settings, tick=tick)
        self.market_ns = 0
        self.finished = False
        self.held: dict[str, float] = collections.defaultdict(float)  # net shares from our fills
        self._sides: dict[str, tuple[str, str]] = {}  # client order id -> symbol, side

    async def start(self, reports: ReportSink, namespace: str = "") -> None:
        # Nothing to connect to: every report comes back from on_market or due.
        self.venue.exec_prefix = f"sim{namespace}"

    async def stop(self) -> None:
        pass

    def now_ns(self) -> int:
        return self.market_ns

    def idle(self) -> bool:
        return self.venue.idle()

    def on_market(self, event: Event) -> list[BrokerReport]:
        # The common tick first: nothing at the venue or on its way and no report in flight, so a
        # quote only sets the touch and a trade only moves time (what SimVenue.on_quote/on_trade
        # then do, without the sweep; every tick of a replay passes here).
        kind = type(event)
        if kind is Quote or kind is Trade:
            venue = self.venue
            if not (venue.orders or venue._arrivals or venue._reports) and venue.session_end_ns is None:
                ts = event.ts_event
                if ts > self.market_ns:  # noqa: PLR1730 - max() costs a call, per tick
                    self.market_ns = ts
                if ts > venue.now:  # noqa: PLR1730
                    venue.now = ts
                if kind is Quote:
                    q: Quote = event  # type: ignore[assignment]
                    book = venue.books.get(q.symbol)
                    if book is None:
                        book = venue.books[q.symbol] = _Book()
                    book.bid, book.ask, book.bid_size, book.ask_size = q.bid, q.ask, q.bid_size, q.ask_size
                return []
        if isinstance(event, Quote):
            self.market_ns = max(self.market_ns, event.ts_event)
            reports = self.venue.on_quote(
                event.symbol, event.ts_event, event.bid, event.ask, event.bid_size, event.ask_size
            )
        elif isinstance(event, Trade):
            self.market_ns = max(self.market_ns, event.ts_event)
            reports = self.venue.on_trade(event.symbol, event.ts_event, event.price, event.size)
        elif isinstance(event, FeedStatus) and event.state == "replay_finished":
            self.finished = True
            reports = self.venue.end_of_data()
        else:
            return []
        return self._held(reports)

    def due(self) -> list[BrokerReport]:
        return self._held(self.venue.end_of_data()) if self.finished else []

    async def submit(self, order: BrokerOrder) -> None:
        self._sides[order.client_order_id] = (order.symbol, order.side)
        self.venue.submit(order, self.market_ns)

    async def cancel(self, client_order_id: str) -> None:
        self.venue.cancel(client_order_id, self.market_ns)

    async def replace(
        self,
        client_order_id: str,
        quantity: float | None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
    ) -> None:
        self.venue.replace(client_order_id, self.market_ns, quantity, limit_price, stop_price)

    async def cancel_all(self) -> None:
        for cid in self.venue.working_ids():
            self.venue.cancel(cid, self.market_ns)

    async def positions(self) -> dict[str, float] | None:
        return {symbol: shares for symbol, shares in self.held.items() if shares}

    async def what_if(self, order: BrokerOrder, timeout_s: float = 5.0) -> MarginPreview | None:
        """At the touch: the commission its model charges and Regulation T's initial margin. The
        simulated venue keeps no account, so it cannot say the equity after."""
        book = self.venue.books.get(order.symbol)
        if book is None or book.bid <= 0 or book.ask <= 0:
            return MarginPreview(None, None, None, None, None, error=f"no market for {order.symbol}")
        price = order.limit_price or (book.ask if order.side == "BUY" else book.bid)
        notional = order.quantity * price
        commission = self.venue.commissions.commission(order.side, order.quantity, price, "REMOVE")
        margin = notional * REG_T_INITIAL
        return MarginPreview(margin, margin, None, None, commission)

    def summary(self) -> dict[str, Any]:
        return {"venue": dict(self.venue.stats), "finished": self.finished}

    def _held(self, reports: list[BrokerReport]) -> list[BrokerReport]:
        for r in reports:
            if r.kind == "fill":
                side = self._sides.get(r.client_order_id)
                if side is not None:
                    self.held[side[0]] += r.quantity if side[1] == "BUY" else -r.quantity
        return reports
