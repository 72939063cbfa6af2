"""A fake TWS / IB Gateway: the TWS API wire protocol at server version 157 (what the registry's
ibapi 9.81.1 negotiates), over a real socket, so the real ``ibapi`` client can be tested without
an IB account. Deterministic: market data moves only when told to (``play``), and every fault is
injected explicitly.

Protocol facts are from ../shared/reference/ib-api.md section 2 (framing, handshake, message
layouts); the order and open-order layouts at version 157 were read off ibapi 9.81.1's encoder and
decoder (placeOrder: 110 fields; openOrder: 119) and are checked by tests against the real client.

What it does, like TWS: the handshake, managedAccounts + nextValidId + farm status after START_API;
L1 (reqMktData), tick-by-tick (BidAsk, AllLast) and L2 depth streams from a recorded day; orders
(market, limit, stop, trailing, brackets via parentId, OCA groups) filled against that day's
quotes, with partial fills and commission reports; cancels (202, 10147/10148), reqGlobalCancel;
positions, open orders, executions, current time, ids, historical bars and historical ticks
(reqHistoricalTicks: TRADES and BID_ASK, whole seconds, at most the requested count rounded up to
complete the last second) with IB's pacing rules.

Faults: dropping sockets, connectivity codes (1100/1101/1102: 1101 loses market-data
subscriptions), 326 for a client id in use, 100 when a client sends more than 50 messages in a
second, 103 for a reused order id, 162 (pacing, no data), 201 rejects, 10268 for eTradeOnly,
short sales held Inactive with whyHeld=locate until release_locates(),
late commissions, a nextValidId rollback, a silent socket, arbitrary error codes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

SERVER_VERSION = 157
UNSET_DOUBLE = 1.7976931348623157e308
# placeOrder field positions at server version 157 (ibapi 9.81.1 client.placeOrder).
PO = {
    "order_id": 1,
    "symbol": 3,
    "sec_type": 4,
    "exchange": 9,
    "currency": 11,
    "action": 16,
    "quantity": 17,
    "order_type": 18,
    "lmt_price": 19,
    "aux_price": 20,
    "tif": 21,
    "oca_group": 22,
    "account": 23,
    "order_ref": 26,
    "transmit": 27,
    "parent_id": 28,
    "oca_type": 47,
    "etrade_only": 53,
    "firm_quote_only": 54,
    "trail_stop_price": 69,
    "trailing_percent": 70,
    "what_if": 85,
}
OPEN_ORDER_FIELDS = 119  # after the message id


def frame(*fields: object) -> bytes:
    text = b"".join(_field(f) for f in fields)
    return struct.pack("!I", len(text)) + text


def _field(value: object) -> bytes:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float) and value == UNSET_DOUBLE:
        return b"1.7976931348623157E308\0"
    return str(value).encode() + b"\0"


def _float(raw: bytes) -> float:
    return float(raw) if raw else 0.0


# Historical answers, as TWS encodes them at version 157. Module-level so the decoder tests can
# encode captured IB responses (tests/fixtures/ib) and read them back through the real ibapi.
def historical_data_frame(req_id: int, bars: list[tuple[Any, ...]], start: str, end: str) -> bytes:
    """HISTORICAL_DATA (17): bars as (date, open, high, low, close, volume, average, bar count)."""
    body: list[object] = [17, req_id, start, end, len(bars)]
    for date, o, h, low, close, volume, average, count in bars:
        body += [date, o, h, low, close, volume, average, count]
    return frame(*body)


def historical_ticks_bid_ask_frame(req_id: int, ticks: list[tuple[Any, ...]], done: bool) -> bytes:
    """HISTORICAL_TICKS_BID_ASK (97): (time s, mask, bid, ask, bid size, ask size); in this
    message bit 0 of the mask is askPastHigh and bit 1 bidPastLow (tick-by-tick has them swapped)."""
    body: list[object] = [97, req_id, len(ticks)]
    for t, mask, bid, ask, bid_size, ask_size in ticks:
        body += [t, mask, bid, ask, bid_size, ask_size]
    return frame(*body, done)


def historical_ticks_last_frame(req_id: int, ticks: list[tuple[Any, ...]], done: bool) -> bytes:
    """HISTORICAL_TICKS_LAST (98): (time s, mask, price, size, exchange, special conditions);
    bit 0 of the mask is pastLimit, bit 1 unreported."""
    body: list[object] = [98, req_id, len(ticks)]
    for t, mask, price, size, exchange, conditions in ticks:
        body += [t, mask, price, size, exchange, conditions]
    return frame(*body, done)


def _ib_time(text: str) -> float:
    """'yyyymmdd hh:mm:ss UTC' (what our clients send) as epoch seconds."""
    return dt.datetime.strptime(text[:17], "%Y%m%d %H:%M:%S").replace(tzinfo=dt.UTC).timestamp()


def tick_history(records: Iterable[tuple[Any, ...]]) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
    """What reqHistoricalTicks would answer for a recorded day: trades as they printed (an
    unreported one carries its mask bit), and the top of book after each quote update, both
    stamped to the second like IB's. Source-flagged (suspicious) ticks are not on IB's tape."""
    out: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    books: dict[str, list[float]] = {}
    for rec in records:
        kind, ts, symbol = rec[0], rec[1], rec[2]
        seconds = ts // 1_000_000_000
        if kind == "Q" and not rec[8]:
            _, _, _, bid, bid_size, ask, ask_size = rec[:7]
            book = books.setdefault(symbol, [0.0, 0.0, 0.0, 0.0])
            if bid > 0:
                book[0], book[1] = bid, bid_size
            if ask > 0:
                book[2], book[3] = ask, ask_size
            if book[0] > 0 and book[2] > 0:
                row = (seconds, 0, book[0], book[2], int(book[1]), int(book[3]))
                out.setdefault((symbol, "BID_ASK"), []).append(row)
        elif kind == "T" and not rec[7]:
            _, _, _, price, size, venue = rec[:6]
            out.setdefault((symbol, "TRADES"), []).append((seconds, 0, price, int(size), venue or "", ""))
    return out


@dataclass
class FakeOrder:
    order_id: int
    client_id: int
    symbol: str
    action: str
    quantity: float
    order_type: str
    lmt_price: float
    aux_price: float
    tif: str
    order_ref: str
    parent_id: int
    oca_group: str
    account: str
    trailing_percent: float
    perm_id: int
    status: str = "Submitted"
    filled: float = 0.0
    avg_price: float = 0.0
    trail_extreme: float | None = None
    why_held: str = ""
    untransmitted: bool = False  # transmit=0: held at TWS until a later order of its bracket transmits

    @property
    def remaining(self) -> float:
        return self.quantity - self.filled

    @property
    def sign(self) -> int:
        return 1 if self.action == "BUY" else -1

    @property
    def live(self) -> bool:
        return self.status in ("PreSubmitted", "Submitted")


@dataclass
class FakeExecution:
    exec_id: str
    order_id: int
    client_id: int
    symbol: str
    side: str  # BOT / SLD
    shares: float
    price: float
    perm_id: int
    cum_qty: float
    avg_price: float
    order_ref: str
    time: str
    account: str
    commission: float


@dataclass
class Faults:
    """What to break next; the tests set these."""

    silent: bool = False  # answer nothing at all (a half-open socket)
    reject_next: str = ""  # 201 with this reason for the next order
    partial_fills: int = 1  # executions per fill
    late_commissions: bool = False  # hold commission reports until release_commissions()
    hold_fills: bool = False  # accept orders but do not fill them until release_fills()
    next_valid_id: int | None = None  # nextValidId on the next handshake (a rollback after a restart)
    no_data: set[str] = field(default_factory=set)  # historical: 162 no data for these symbols
    max_msgs_per_s: int = 50
    pacing_limit: int = 60  # historical requests per pacing_window_s before 162
    pacing_window_s: float = 600.0
    identical_gap_s: float = 15.0  # an identical historical request sooner than this: 162
    unanswered: set[int] = field(default_factory=set)  # request message ids to ignore (a query that hangs)
    locate: set[str] = field(default_factory=set)  # short sales here wait for a locate (whyHeld)
    historical_error_after: int | None = None  # historical requests answered before a 322 (a job cut off)


class _Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.client_id: int | None = None
        self.mkt: dict[int, tuple[str, str]] = {}  # reqId -> (kind, symbol); kind L1/BidAsk/AllLast/Depth
        self.sent_times: collections.deque[float] = collections.deque()
        self.received: list[list[bytes]] = []
        self.bulletins = False

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)


class FakeTws:
    def __init__(
        self,
        records: Iterable[tuple[Any, ...]] = (),
        account: str = "DU1234567",
        next_valid_id: int = 1,
        commission_per_share: float = 0.005,
        min_commission: float = 1.0,
        clock: Any = None,
    ) -> None:
        self.records = iter(records)
        self.account = account
        self.next_id = next_valid_id
        self.commission_per_share, self.min_commission = commission_per_share, min_commission
        self.clock = clock or time.time
        self.faults = Faults()
        self.clients: list[_Client] = []
        self.books: dict[str, list[float]] = {}  # symbol -> [bid, bid_size, ask, ask_size]
        self.last_trade: dict[str, float] = {}
        self.orders: dict[int, FakeOrder] = {}
        self.executions: list[FakeExecution] = []
        self.positions: dict[str, list[float]] = {}  # symbol -> [quantity, avg cost]
        self.held_commissions: list[tuple[_Client | None, FakeExecution]] = []
        self.historical: dict[str, list[tuple[int, float, float, float, float, float]]] = {}
        self.hist_requests: list[tuple[float, tuple[str, ...]]] = []
        # (symbol, "TRADES" | "BID_ASK") -> ticks in time order; see tick_history()
        self.historical_ticks: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        self.max_order_ids: dict[int, int] = {}  # per client id, across its connections (103)
        self.counters: collections.Counter[str] = collections.Counter()
        self.equity = 100_000.0
        self.margin_rate = 0.25  # Reg T-like initial margin for stocks
        self.market_ts = 0
        self._perm = 1_000
        self._news_seq = 0
        self._exec = 0
        self._server: asyncio.AbstractServer | None = None
        self._stopping = False
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeTws:
        self._stopping = False
        self._server = await asyncio.start_server(self._serve, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        # Stop listening first: a client that reconnects while its old socket is being closed
        # must be refused, not accepted by a fake that is going away (the outage test saw that
        # reconnect succeed, stay up, and no page go out).
        # A connection the kernel accepted just before the close is served after it: _serve
        # refuses it, so nothing connects to a fake that has stopped.
        self._stopping = True
        if self._server is not None:
            self._server.close()
        await self.drop()
        if self._server is not None:
            await self._server.wait_closed()

    async def drop(self) -> None:
        """Close every client socket (a Gateway restart, a network cut)."""
        for c in list(self.clients):
            c.writer.close()
            with contextlib.suppress(Exception):
                await c.writer.wait_closed()
        self.clients.clear()
        self.counters["drops"] += 1

    def connected_client_ids(self) -> list[int]:
        return [c.client_id for c in self.clients if c.client_id is not None]

    # -- faults and scripted messages --------------------------------------------------------------
    def error_all(self, code: int, text: str, req_id: int = -1) -> None:
        """A connectivity or farm message to every client (1100, 1101, 1102, 2104...)."""
        for c in self.clients:
            self._error(c, req_id, code, text)
        if code == 1101:  # "data lost": market-data subscriptions are gone
            for c in self.clients:
                c.mkt.clear()

    def error_for(self, req_id: int, code: int, text: str) -> None:
        for c in self.clients:
            self._error(c, req_id, code, text)

    def release_commissions(self) -> None:
        held, self.held_commissions = self.held_commissions, []
        for client, ex in held:
            self._commission(client, ex)

    def release_fills(self) -> None:
        self.faults.hold_fills = False
        for symbol in {o.symbol for o in self.orders.values() if o.live}:
            self._match(symbol)

    # -- market data -----------------------------------------------------------------------------
    def play(self, n: int | None = None, until_ts: int | None = None) -> int:
        """Stream the next ``n`` records (or those up to ``until_ts``) to the subscribers."""
        done = 0
        for rec in self.records:
            self._market(rec)
            done += 1
            if (n is not None and done >= n) or (until_ts is not None and rec[1] >= until_ts):
                break
        return done

    async def autoplay(
        self,
        speed: float = 1.0,
        start_ns: int = 0,
        on_finished: Callable[[], None] | None = None,
        until_ns: int | None = None,
    ) -> None:
        """Stream the day from ``start_ns`` (to ``until_ns``) paced by market time (``speed``
        market seconds per wall second), then keep serving (orders, queries) until cancelled.
        The clock starts with the first market-data subscription: a recorded day played to
        nobody is lost."""
        while not any(c.mkt for c in self.clients):  # noqa: ASYNC110 - polls the socket clients
            await asyncio.sleep(0.05)
        self.bulletin("fake TWS: a recorded day starts streaming now")
        first_ts: int | None = None
        started = time.monotonic()
        played = 0
        for rec in self.records:
            if rec[1] < start_ns:
                continue
            if until_ns is not None and rec[1] >= until_ns:
                break
            first_ts = rec[1] if first_ts is None else first_ts
            due = started + (rec[1] - first_ts) / 1e9 / max(speed, 1e-9)
            if (wait := due - time.monotonic()) > 0.001:
                await asyncio.sleep(wait)
            self._market(rec)
            played += 1
            if played % 256 == 0:  # backpressure: never further ahead of a slow client than its socket
                for c in list(self.clients):
                    with contextlib.suppress(ConnectionError):
                        await c.writer.drain()
            await asyncio.sleep(0)
        self.counters["autoplay_finished"] += 1
        if on_finished is not None:
            on_finished()
        await asyncio.Event().wait()

    def _market(self, rec: tuple[Any, ...]) -> None:
        kind, ts, symbol = rec[0], rec[1], rec[2]
        if (kind == "Q" and rec[8]) or (kind == "T" and rec[7]):
            self.counters["suspicious_not_sent"] += 1  # the source flagged it: not on IB's tape
            return
        self.market_ts = ts
        seconds = ts // 1_000_000_000
        if kind == "Q":
            _, _, _, bid, bid_size, ask, ask_size = rec[:7]
            book = self.books.setdefault(symbol, [0.0, 0.0, 0.0, 0.0])
            if bid > 0:
                book[0], book[1] = bid, bid_size
            if ask > 0:
                book[2], book[3] = ask, ask_size
            for c in self._live_clients():
                for req_id, (sub, sym) in c.mkt.items():
                    if sym != symbol:
                        continue
                    if sub == "L1":
                        if bid > 0:
                            c.send(frame(1, 6, req_id, 1, bid, int(bid_size), 0))
                        if ask > 0:
                            c.send(frame(1, 6, req_id, 2, ask, int(ask_size), 0))
                    elif sub == "BidAsk" and book[0] > 0 and book[2] > 0:
                        c.send(frame(99, req_id, 3, seconds, book[0], book[2], int(book[1]), int(book[3]), 0))
                    elif sub == "Depth":
                        if bid > 0:
                            c.send(frame(12, 1, req_id, 0, 1, 1, bid, int(bid_size)))
                        if ask > 0:
                            c.send(frame(12, 1, req_id, 0, 1, 0, ask, int(ask_size)))
        elif kind == "T":
            _, _, _, price, size, venue = rec[:6]
            self.last_trade[symbol] = price
            for c in self._live_clients():
                for req_id, (sub, sym) in c.mkt.items():
                    if sym != symbol:
                        continue
                    if sub == "L1":
                        c.send(frame(1, 6, req_id, 4, price, int(size), 0))
                    elif sub == "AllLast":
                        c.send(frame(99, req_id, 2, seconds, price, int(size), 0, venue or "", ""))
            self._trail(symbol, price)
        self._match(symbol)

    def _live_clients(self) -> list[_Client]:
        return [] if self.faults.silent else [c for c in self.clients if c.client_id is not None]

    # -- the socket --------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stopping:
            writer.close()
            return
        client = _Client(reader, writer)
        self.clients.append(client)
        try:
            prefix = await reader.readexactly(4)
            if prefix != b"API\0":
                return
            await self._read_frame(reader)  # "v100..157" (+ connect options)
            conn_time = time.strftime("%Y%m%d %H:%M:%S", time.gmtime(self.clock())) + " GMT"
            client.send(frame(SERVER_VERSION, conn_time))
            while True:
                fields = await self._read_frame(reader)
                client.received.append(fields)
                if not self._rate_ok(client):
                    self._error(client, -1, 100, "Max rate of messages per second has been exceeded:max=50")
                    continue
                if self.faults.silent:
                    continue
                self._handle(client, fields)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if client in self.clients:
                self.clients.remove(client)
            writer.close()

    @staticmethod
    async def _read_frame(reader: asyncio.StreamReader) -> list[bytes]:
        (size,) = struct.unpack("!I", await reader.readexactly(4))
        return (await reader.readexactly(size)).split(b"\0")[:-1]

    def _rate_ok(self, c: _Client) -> bool:
        now = time.monotonic()
        c.sent_times.append(now)
        while c.sent_times and now - c.sent_times[0] > 1.0:
            c.sent_times.popleft()
        return len(c.sent_times) <= self.faults.max_msgs_per_s

    def _error(self, c: _Client, req_id: int, code: int, text: str) -> None:
        self.counters[f"error_{code}"] += 1
        c.send(frame(4, 2, req_id, code, text))

    # -- requests ----------------------------------------------------------------------------------
    def _handle(self, c: _Client, f: list[bytes]) -> None:
        msg = int(f[0])
        self.counters[f"in_{msg}"] += 1
        if msg in self.faults.unanswered:
            return
        handler = getattr(self, f"_in_{msg}", None)
        if handler is not None:
            handler(c, f)

    def _in_71(self, c: _Client, f: list[bytes]) -> None:  # START_API
        client_id = int(f[2])
        if client_id in self.connected_client_ids():
            self._error(
                c,
                -1,
                326,
                "Unable to connect as the client id is already in use. Retry with a unique client id.",
            )
            c.writer.close()
            return
        c.client_id = client_id
        next_id = self.faults.next_valid_id if self.faults.next_valid_id is not None else self.next_id
        self.faults.next_valid_id = None
        c.send(frame(15, 1, self.account))
        c.send(frame(9, 1, next_id))
        self._error(c, -1, 2104, "Market data farm connection is OK:usfarm")
        self._error(c, -1, 2106, "HMDS data farm connection is OK:ushmds")
        self._error(c, -1, 2158, "Sec-def data farm connection is OK:secdefnj")

    def _in_49(self, c: _Client, f: list[bytes]) -> None:  # reqCurrentTime
        c.send(frame(49, 1, int(self.clock())))

    def _in_8(self, c: _Client, f: list[bytes]) -> None:  # reqIds
        c.send(frame(9, 1, max(self.next_id, self.max_order_ids.get(c.client_id or 0, 0) + 1)))

    def _in_59(self, c: _Client, f: list[bytes]) -> None:  # reqMarketDataType
        self.counters[f"market_data_type_{int(f[2])}"] += 1

    def _in_1(self, c: _Client, f: list[bytes]) -> None:  # reqMktData
        req_id, symbol, generic = int(f[2]), f[4].decode(), f[16].decode()
        c.mkt[req_id] = ("News" if "292" in generic else "L1", symbol)  # 292: news ticks
        c.send(frame(58, 1, req_id, 1))

    def _in_12(self, c: _Client, f: list[bytes]) -> None:  # reqNewsBulletins
        c.bulletins = True

    def news(
        self, symbol: str, headline: str, provider: str = "BRFG", article_id: str = "", ts_ms: int = 0
    ) -> None:
        """A headline on the news ticks of ``symbol`` (tickNews)."""
        self._news_seq += 1
        article = article_id or f"{provider}${self._news_seq:08d}"
        stamp = ts_ms or int(self.clock() * 1000)
        for c in self._live_clients():
            for req_id, (sub, sym) in c.mkt.items():
                if sub == "News" and sym == symbol:
                    c.send(frame(84, req_id, stamp, provider, article, headline, "A:800015:L:en"))

    def bulletin(self, message: str, msg_type: int = 1, exchange: str = "") -> None:
        """An IB news bulletin (updateNewsBulletin) to every client that asked for them."""
        self._news_seq += 1
        for c in self._live_clients():
            if c.bulletins:
                c.send(frame(14, 1, self._news_seq, msg_type, message, exchange))

    def _in_2(self, c: _Client, f: list[bytes]) -> None:  # cancelMktData
        c.mkt.pop(int(f[2]), None)

    def _in_97(self, c: _Client, f: list[bytes]) -> None:  # reqTickByTickData
        req_id, symbol, tick_type = int(f[1]), f[3].decode(), f[14].decode()
        c.mkt[req_id] = (tick_type, symbol)

    def _in_98(self, c: _Client, f: list[bytes]) -> None:  # cancelTickByTickData
        c.mkt.pop(int(f[1]), None)

    def _in_10(self, c: _Client, f: list[bytes]) -> None:  # reqMktDepth
        req_id, symbol = int(f[2]), f[4].decode()
        c.mkt[req_id] = ("Depth", symbol)

    def _in_11(self, c: _Client, f: list[bytes]) -> None:  # cancelMktDepth
        c.mkt.pop(int(f[2]), None)

    def _in_61(self, c: _Client, f: list[bytes]) -> None:  # reqPositions
        for symbol, (qty, avg) in sorted(self.positions.items()):
            c.send(
                frame(
                    61,
                    3,
                    self.account,
                    0,
                    symbol,
                    "STK",
                    "",
                    0.0,
                    "",
                    "",
                    "SMART",
                    "USD",
                    symbol,
                    symbol,
                    qty,
                    avg,
                )
            )
        c.send(frame(62, 1))

    def _in_5(self, c: _Client, f: list[bytes]) -> None:  # reqOpenOrders (this client's)
        for o in self.orders.values():
            if o.live and o.client_id == c.client_id:
                c.send(self._open_order(o))
        c.send(frame(53, 1))

    def _in_16(self, c: _Client, f: list[bytes]) -> None:  # reqAllOpenOrders
        for o in self.orders.values():
            if o.live:
                c.send(self._open_order(o))
        c.send(frame(53, 1))

    def _in_7(self, c: _Client, f: list[bytes]) -> None:  # reqExecutions
        req_id = int(f[2])
        for ex in self.executions:
            if ex.client_id == c.client_id:
                c.send(self._exec_details(req_id, ex))
                if not any(e is ex for _, e in self.held_commissions):
                    self._commission(c, ex)
        c.send(frame(55, 1, req_id))

    def _in_99(self, c: _Client, f: list[bytes]) -> None:  # reqCompletedOrders
        c.send(frame(102))  # none kept: reconciliation relies on open orders and executions

    def _in_58(self, c: _Client, f: list[bytes]) -> None:  # reqGlobalCancel
        for o in list(self.orders.values()):
            if o.live:
                self._cancel(o, "global cancel")

    def _in_4(self, c: _Client, f: list[bytes]) -> None:  # cancelOrder
        order_id = int(f[2])
        o = self.orders.get(order_id)
        if o is None:
            self._error(c, order_id, 10147, f"OrderId {order_id} that needs to be cancelled is not found.")
        elif not o.live:
            self._error(
                c,
                order_id,
                10148,
                f"OrderId {order_id} that needs to be cancelled cannot be cancelled, state: {o.status}.",
            )
        else:
            self._cancel(o, "")

    def _in_20(self, c: _Client, f: list[bytes]) -> None:  # reqHistoricalData
        """Bars of ``historical[symbol]`` ((start epoch s, o, h, l, c, volume)) inside the requested
        span, dated in epoch seconds (formatDate=2); IB's pacing: identical within 15 s -> 162,
        more than ``pacing_limit`` in the fake's window -> 162."""
        req_id, symbol = int(f[1]), f[3].decode()
        if self._hist_paced_out(c, req_id, tuple(x.decode() for x in f[2:])):
            return
        end_text, duration = f[15].decode(), f[17].decode()
        end = _ib_time(end_text)
        amount, unit = duration.split()
        span = int(amount) * {"S": 1, "D": 86_400}[unit]
        bars = [b for b in self.historical.get(symbol, []) if end - span <= b[0] < end]
        if symbol in self.faults.no_data or not bars:
            self._error(
                c,
                req_id,
                162,
                "Historical Market Data Service error message:HMDS query returned no data: " + symbol,
            )
            return
        rows = [(start, o, h, low, close, int(volume), close, 1) for start, o, h, low, close, volume in bars]
        c.send(historical_data_frame(req_id, rows, str(bars[0][0]), str(bars[-1][0])))

    def _hist_paced_out(self, c: _Client, req_id: int, key: tuple[str, ...]) -> bool:
        """IB's historical pacing, as the fake enforces it: an identical request within
        ``identical_gap_s``, or more than ``pacing_limit`` in the window, is answered with 162."""
        now = time.monotonic()
        recent = [t for t, k in self.hist_requests if now - t < self.faults.identical_gap_s and k == key]
        self.hist_requests.append((now, key))
        in_window = [t for t, _ in self.hist_requests if now - t < self.faults.pacing_window_s]
        if recent or len(in_window) > self.faults.pacing_limit:
            self._error(
                c,
                req_id,
                162,
                "Historical Market Data Service error message:Historical data request pacing violation",
            )
            return True
        return False

    def _in_96(self, c: _Client, f: list[bytes]) -> None:  # reqHistoricalTicks
        """From startDateTime, at most numberOfTicks ticks, completed to the whole last second
        (as IB does), within endDateTime when given; in messages of at most 500 ticks, the last
        marked done. Paced like reqHistoricalData (the same requests list)."""
        req_id, symbol = int(f[1]), f[3].decode()
        start_text, end_text, count, what = f[15].decode(), f[16].decode(), int(f[17]), f[18].decode()
        if self._hist_paced_out(c, req_id, tuple(x.decode() for x in f[2:])):
            return
        limit = self.faults.historical_error_after
        if limit is not None and self.counters["in_96"] > limit:
            self._error(c, req_id, 322, "Error processing request:-'bW' : cause - server unavailable")
            return
        if what not in ("TRADES", "BID_ASK"):
            self._error(c, req_id, 162, f"Historical Market Data Service error message:{what} not served")
            return
        start = _ib_time(start_text)
        end = _ib_time(end_text) if end_text else float("inf")
        ticks = [t for t in self.historical_ticks.get((symbol, what), []) if start <= t[0] < end]
        if len(ticks) > count:  # complete the last second: the next page starts a second later
            last_second, cut = ticks[count - 1][0], count
            while cut < len(ticks) and ticks[cut][0] == last_second:
                cut += 1
            ticks = ticks[:cut]
        encode = historical_ticks_bid_ask_frame if what == "BID_ASK" else historical_ticks_last_frame
        pages = [ticks[i : i + 500] for i in range(0, len(ticks), 500)] or [[]]
        for i, page in enumerate(pages):
            c.send(encode(req_id, page, i == len(pages) - 1))

    # -- orders ------------------------------------------------------------------------------------
    def _in_3(self, c: _Client, f: list[bytes]) -> None:  # placeOrder
        order_id = int(f[PO["order_id"]])
        if f[PO["etrade_only"]] == b"1" or f[PO["firm_quote_only"]] == b"1":
            self._error(c, order_id, 10268, "The 'EtradeOnly' order attribute is not supported.")
            return
        if order_id in self.orders and self.orders[order_id].client_id == c.client_id:
            existing = self.orders[order_id]
            if existing.live:  # a modify of a live order
                existing.lmt_price = _float(f[PO["lmt_price"]])
                existing.quantity = _float(f[PO["quantity"]])
                self._status(existing)
                self._match(existing.symbol)
                return
        used = self.max_order_ids.get(c.client_id or 0, 0)
        if order_id <= used or order_id in self.orders:
            self._error(c, order_id, 103, "Duplicate order id")
            return
        self.max_order_ids[c.client_id or 0] = order_id
        self.next_id = max(self.next_id, order_id + 1)
        self._perm += 1
        o = FakeOrder(
            order_id=order_id,
            client_id=c.client_id or 0,
            symbol=f[PO["symbol"]].decode(),
            action=f[PO["action"]].decode(),
            quantity=_float(f[PO["quantity"]]),
            order_type=f[PO["order_type"]].decode(),
            lmt_price=_float(f[PO["lmt_price"]]),
            aux_price=_float(f[PO["aux_price"]]),
            tif=f[PO["tif"]].decode(),
            order_ref=f[PO["order_ref"]].decode(),
            parent_id=int(f[PO["parent_id"]] or 0),
            oca_group=f[PO["oca_group"]].decode(),
            account=f[PO["account"]].decode() or self.account,
            trailing_percent=_float(f[PO["trailing_percent"]]) if f[PO["trailing_percent"]] else 0.0,
            perm_id=self._perm,
        )
        if f[PO["what_if"]] == b"1":
            self._what_if(c, o)
            return
        if self.faults.reject_next:
            reason, self.faults.reject_next = self.faults.reject_next, ""
            self._error(c, order_id, 201, f"Order rejected - reason:{reason}")
            o.status = "Inactive"
            self.orders[order_id] = o
            self._status(o)
            return
        if o.trailing_percent >= UNSET_DOUBLE / 2:
            o.trailing_percent = 0.0
        parent = self.orders.get(o.parent_id)
        o.status = (
            "PreSubmitted"
            if (parent is not None and parent.filled < parent.quantity) or o.order_type in ("STP", "TRAIL")
            else "Submitted"
        )
        o.untransmitted = f[PO["transmit"]] == b"0"
        self.orders[order_id] = o
        if not o.untransmitted:  # the last of a bracket sends the whole of it
            for other in self.orders.values():
                if other.order_id == o.parent_id or (o.parent_id and other.parent_id == o.parent_id):
                    other.untransmitted = False
        opens_short = o.action == "SELL" and self.positions.get(o.symbol, [0.0])[0] - o.quantity < 0
        if o.symbol in self.faults.locate and opens_short:  # TWS looks for shares to borrow
            o.status, o.why_held = "Inactive", "locate"
        c.send(self._open_order(o))
        self._status(o)
        self._match(o.symbol)

    def release_locates(self, found: bool = True) -> None:
        """The locate came back: found, the order works; not found, TWS rejects it (201)."""
        for o in self.orders.values():
            if o.why_held != "locate" or o.status != "Inactive":
                continue
            o.why_held = ""
            if found:
                o.status = "Submitted"
                self._status(o)
                self._match(o.symbol)
            else:
                for c in self._clients_of(o):
                    self._error(c, o.order_id, 201, "Order rejected - reason:No shares available to short")
                self._status(o)

    def _cancel(self, o: FakeOrder, reason: str) -> None:
        o.status = "Cancelled"
        self._status(o)
        for c in self._clients_of(o):
            self._error(c, o.order_id, 202, f"Order Canceled - reason:{reason}")

    def _clients_of(self, o: FakeOrder) -> list[_Client]:
        return [c for c in self._live_clients() if c.client_id == o.client_id]

    def _status(self, o: FakeOrder) -> None:
        for c in self._clients_of(o):
            c.send(
                frame(
                    3,
                    o.order_id,
                    o.status,
                    o.filled,
                    o.remaining,
                    o.avg_price,
                    o.perm_id,
                    o.parent_id,
                    o.avg_price,
                    o.client_id,
                    o.why_held,
                    0.0,
                )
            )

    def _trail(self, symbol: str, price: float) -> None:
        for o in self.orders.values():
            moved = o.trail_extreme is None or (price - o.trail_extreme) * o.sign < 0
            if o.symbol == symbol and o.live and o.order_type == "TRAIL" and moved:
                o.trail_extreme = price

    def _match(self, symbol: str) -> None:
        if self.faults.hold_fills:
            return
        book = self.books.get(symbol)
        if book is None or book[0] <= 0 or book[2] <= 0:
            return
        bid, ask = book[0], book[2]
        for o in list(self.orders.values()):
            if o.symbol != symbol or not o.live or o.remaining <= 0 or o.untransmitted:
                continue
            parent = self.orders.get(o.parent_id)
            if parent is not None and parent.filled < parent.quantity:
                continue  # a bracket leg waits for its parent
            touch = ask if o.sign > 0 else bid
            price = self._fill_price(o, touch)
            if price is not None:
                self._fill(o, price)

    def _fill_price(self, o: FakeOrder, touch: float) -> float | None:
        last = self.last_trade.get(o.symbol, touch)
        if o.order_type == "MKT":
            return touch
        if o.order_type == "LMT":
            return touch if (o.lmt_price - touch) * o.sign >= -1e-9 else None
        if o.order_type == "STP":
            return touch if (last - o.aux_price) * o.sign >= 0 else None
        if o.order_type == "TRAIL":
            extreme = o.trail_extreme if o.trail_extreme is not None else last
            distance = (
                o.aux_price
                if o.aux_price and o.aux_price < UNSET_DOUBLE / 2
                else extreme * o.trailing_percent / 100
            )
            stop = extreme + o.sign * distance
            return touch if (last - stop) * o.sign >= 0 else None
        return None

    def _fill(self, o: FakeOrder, price: float) -> None:
        chunks = max(1, self.faults.partial_fills)
        quantity = o.remaining
        sizes = [quantity // chunks] * chunks
        sizes[-1] += quantity - sum(sizes)
        for size in (s for s in sizes if s > 0):
            self._execute(o, size, price)
        for other in self.orders.values():  # OCA: the others in the group are done
            if other is not o and o.oca_group and other.oca_group == o.oca_group and other.live:
                self._cancel(other, "OCA group")
        for child in self.orders.values():  # a filled parent frees its legs
            if child.parent_id == o.order_id and child.status == "PreSubmitted" and child.order_type == "LMT":
                child.status = "Submitted"
                self._status(child)

    def _execute(self, o: FakeOrder, size: float, price: float) -> None:
        self._exec += 1
        o.avg_price = (o.avg_price * o.filled + price * size) / (o.filled + size)
        o.filled += size
        if o.remaining <= 1e-9:
            o.status = "Filled"
        pos = self.positions.setdefault(o.symbol, [0.0, 0.0])
        signed = size * o.sign
        if pos[0] == 0 or (pos[0] > 0) == (signed > 0):
            pos[1] = (pos[1] * abs(pos[0]) + price * size) / (abs(pos[0]) + size)
        pos[0] += signed
        if pos[0] == 0:
            pos[1] = 0.0
        stamp = time.strftime(
            "%Y%m%d  %H:%M:%S", time.gmtime(self.market_ts / 1e9 if self.market_ts else self.clock())
        )
        ex = FakeExecution(
            exec_id=f"0000e{self._exec:06d}.{o.perm_id}.01.01",
            order_id=o.order_id,
            client_id=o.client_id,
            symbol=o.symbol,
            side="BOT" if o.sign > 0 else "SLD",
            shares=size,
            price=price,
            perm_id=o.perm_id,
            cum_qty=o.filled,
            avg_price=o.avg_price,
            order_ref=o.order_ref,
            time=stamp,
            account=o.account,
            commission=max(self.min_commission, size * self.commission_per_share),
        )
        self.executions.append(ex)
        for c in self._clients_of(o):
            c.send(self._exec_details(-1, ex))
        self._status(o)
        targets: list[_Client | None] = list(self._clients_of(o)) or [None]
        for target in targets:
            if self.faults.late_commissions:
                self.held_commissions.append((target, ex))
            else:
                self._commission(target, ex)

    def _exec_details(self, req_id: int, ex: FakeExecution) -> bytes:
        contract = (0, ex.symbol, "STK", "", 0.0, "", "", "SMART", "USD", ex.symbol, ex.symbol)
        execution = (ex.exec_id, ex.time, ex.account, "ISLAND", ex.side, ex.shares, ex.price, ex.perm_id)
        tail = (ex.client_id, 0, ex.cum_qty, ex.avg_price, ex.order_ref, "", "", "", 2)
        return frame(11, req_id, ex.order_id, *contract, *execution, *tail)

    def _commission(self, c: _Client | None, ex: FakeExecution) -> None:
        target = c or next((x for x in self._live_clients() if x.client_id == ex.client_id), None)
        if target is None:
            return
        target.send(frame(59, 1, ex.exec_id, ex.commission, "USD", UNSET_DOUBLE, UNSET_DOUBLE, 0))

    def _what_if(self, c: _Client, o: FakeOrder) -> None:
        """A margin preview: never routed. Like TWS, a first openOrder may come without the
        commission currency (and with numbers not to trust), then the real one."""
        self.counters["what_if"] += 1
        book = self.books.get(o.symbol, [0.0, 0.0, 0.0, 0.0])
        price = o.lmt_price or (book[2] if o.sign > 0 else book[0])
        held = self.positions.get(o.symbol, [0.0, 0.0])[0]
        gross_before = sum(abs(q) * (avg or price) for q, avg in self.positions.values())
        gross_after = gross_before - abs(held) * price + abs(held + o.sign * o.quantity) * price
        init_before, init_after = gross_before * self.margin_rate, gross_after * self.margin_rate
        commission = max(self.min_commission, o.quantity * self.commission_per_share)
        blank = [UNSET_DOUBLE] * 9 + [UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE, "", ""]
        c.send(self._open_order(o, what_if=blank))
        margins = [
            init_before,
            init_before,
            self.equity,
            init_after - init_before,
            init_after - init_before,
            0.0,
        ]
        margins += [init_after, init_after, self.equity]
        c.send(self._open_order(o, what_if=[*margins, commission, commission, commission, "USD", ""]))

    def _in_62(self, c: _Client, f: list[bytes]) -> None:  # reqAccountSummary
        req_id = int(f[2])
        gross = sum(abs(q) * avg for q, avg in self.positions.values())
        values = {
            "NetLiquidation": self.equity,
            "GrossPositionValue": gross,
            "BuyingPower": self.equity / self.margin_rate - gross,
            "AvailableFunds": self.equity - gross * self.margin_rate,
        }
        for tag, value in values.items():
            c.send(frame(63, 1, req_id, self.account, tag, round(value, 2), "USD"))
        c.send(frame(64, 1, req_id))

    def _open_order(self, o: FakeOrder, what_if: list[object] | None = None) -> bytes:
        """openOrder at server version 157: 119 fields; empty ones decode as 0/""/False."""
        f: list[object] = [""] * (OPEN_ORDER_FIELDS + 1)
        f[0] = 5
        f[1] = o.order_id
        f[2:13] = [0, o.symbol, "STK", "", 0.0, "", "", "SMART", "USD", o.symbol, o.symbol]
        f[13], f[14], f[15] = o.action, o.quantity, o.order_type
        f[16], f[17], f[18] = o.lmt_price, o.aux_price, o.tif
        f[19], f[20], f[23], f[24], f[25] = o.oca_group, o.account, o.order_ref, o.client_id, o.perm_id
        f[55], f[56], f[58] = 0, 0, o.parent_id  # eTradeOnly, firmQuoteOnly
        f[67] = o.trailing_percent or ""
        f[85], f[86] = 0, o.status  # whatIf, status
        if what_if is not None:  # initMargin/maintMargin/equityWithLoan before, change, after; commissions
            f[85], f[86] = 1, "PreSubmitted"
            f[87:101] = what_if
        return frame(*f)
