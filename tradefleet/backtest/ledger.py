"""What a backtest keeps of its run: every intent, order event and fill as published, the QOS
scores, TCA reports, the events a trader wants marked on the timeline (kills, risk mode changes,
alerts such as a model's quarantine), and an account marked to the mid at every minute of market
time. It is a subscriber like any other: it reads the bus, never a service's insides."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import msgspec

from libs.common.bus import Delivery, InProcessBus
from libs.common.config import Settings
from proto.alerts import Alert
from proto.control import Control
from proto.execution import Fill, OrderEvent
from proto.market import Quote, Trade
from proto.news import NewsItem, SentimentScore
from proto.orders import OrderApproved, OrderDenied, OrderIntent, RiskState
from proto.signals import QosScore
from proto.tca import TcaReport
from proto.units import MINUTE_NS


@dataclass
class MinuteRow:
    """The account and the market at the end of one minute of market time."""

    ts: int  # the minute's end
    equity: float
    cash: float
    gross: float  # sum of |position| x mid
    mids: dict[str, float]
    spreads: dict[str, float]
    positions: dict[str, float]


@dataclass
class Ledger:
    settings: Settings
    capital: float = 0.0
    cash: float = 0.0
    positions: dict[str, float] = field(default_factory=dict)
    mids: dict[str, float] = field(default_factory=dict)
    spreads: dict[str, float] = field(default_factory=dict)
    last_trade: dict[str, float] = field(default_factory=dict)
    minutes: list[MinuteRow] = field(default_factory=list)
    intents: list[OrderIntent] = field(default_factory=list)
    orders: list[OrderEvent] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    approvals: int = 0
    #: client_order_id -> the intent it was approved for (what a fill's reason is read from)
    order_intents: dict[str, str] = field(default_factory=dict)
    denials: collections.Counter[str] = field(default_factory=collections.Counter)
    qos: list[QosScore] = field(default_factory=list)
    tca: list[TcaReport] = field(default_factory=list)
    sentiment: list[SentimentScore] = field(default_factory=list)
    news: int = 0
    commissions: float = 0.0
    alerts: list[Alert] = field(default_factory=list)
    controls: list[Control] = field(default_factory=list)
    #: the risk gate's state each time its mode changed (the first one included)
    mode_changes: list[RiskState] = field(default_factory=list)
    day_symbols: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _minute: int = 0
    #: [start, end) of ``_minute`` in ns (minute 0: the state before the first tick)
    _minute_span: tuple[int, int] = (0, MINUTE_NS)

    def __post_init__(self) -> None:
        self.capital = self.cash = self.settings.risk.account_equity

    async def start(self, bus: InProcessBus) -> None:
        # Subscribed after every service: it sees each event after they all have. Its handlers
        # await nothing, so they are sync subscribers (no coroutine per tick).
        sub = bus.subscribe_sync
        sub("md.quote.>", self._on_quote, types=Quote)
        sub("md.trade.>", self._on_trade, types=Trade)
        sub("order.>", self._on_order)
        sub("exec.order.>", self._on_order_event)
        sub("exec.fill.>", self._on_fill)
        sub("qos.*", self._on_qos)
        sub("tca.report.>", self._on_tca)
        sub("news.raw", self._on_news)
        sub("news.sentiment.>", self._on_sentiment)
        sub("alert.>", self._on_alert)
        sub("ctl.>", self._on_control)
        sub("risk.state", self._on_risk_state)

    def on_day(self, date: str, symbols: tuple[str, ...]) -> None:
        self.day_symbols[date] = symbols

    # -- market time and marks ----------------------------------------------------------------
    def _tick(self, ts: int) -> None:
        minute = ts // MINUTE_NS
        if minute != self._minute:
            if self._minute and self.mids:
                self._sample((self._minute + 1) * MINUTE_NS)
            self._minute = minute
            self._minute_span = (minute * MINUTE_NS, (minute + 1) * MINUTE_NS)

    def _sample(self, ts: int) -> None:
        held = {s: q for s, q in self.positions.items() if q}
        value = sum(q * self.mids.get(s, self.last_trade.get(s, 0.0)) for s, q in held.items())
        gross = sum(abs(q) * self.mids.get(s, 0.0) for s, q in held.items())
        self.minutes.append(
            MinuteRow(ts, self.cash + value, self.cash, gross, dict(self.mids), dict(self.spreads), held)
        )

    # Per tick: the minute's span compared inline (``_tick`` only when a minute ends).
    def _on_quote(self, d: Delivery[Quote]) -> None:
        q = d.event
        ts, span = q.ts_event, self._minute_span
        if not span[0] <= ts < span[1]:
            self._tick(ts)
        bid, ask = q.bid, q.ask
        self.mids[q.symbol] = (bid + ask) * 0.5
        self.spreads[q.symbol] = ask - bid

    def _on_trade(self, d: Delivery[Trade]) -> None:
        t = d.event
        ts, span = t.ts_event, self._minute_span
        if not span[0] <= ts < span[1]:
            self._tick(ts)
        self.last_trade[t.symbol] = t.price

    def finish(self) -> None:
        if self._minute and self.mids:
            self._sample((self._minute + 1) * MINUTE_NS)

    # -- the trading record ---------------------------------------------------------------------
    def _on_order(self, d: Delivery) -> None:
        e = d.event
        if isinstance(e, OrderIntent):
            self.intents.append(e)
        elif isinstance(e, OrderApproved):
            self.approvals += 1
            self.order_intents[e.client_order_id] = e.intent_id
        elif isinstance(e, OrderDenied):
            self.denials[e.code] += 1

    def _on_order_event(self, d: Delivery) -> None:
        if isinstance(d.event, OrderEvent):
            self.orders.append(d.event)

    def _on_fill(self, d: Delivery) -> None:
        f = d.event
        if not isinstance(f, Fill):
            return
        self.fills.append(f)
        sign = 1.0 if f.side == "BUY" else -1.0
        fee = f.commission or 0.0
        self.cash -= sign * f.quantity * f.price + fee
        self.commissions += fee
        self.positions[f.symbol] = self.positions.get(f.symbol, 0.0) + sign * f.quantity

    def _on_qos(self, d: Delivery) -> None:
        if isinstance(d.event, QosScore):
            self.qos.append(d.event)

    def _on_tca(self, d: Delivery) -> None:
        if isinstance(d.event, TcaReport):
            self.tca.append(d.event)

    def _on_news(self, d: Delivery) -> None:
        if isinstance(d.event, NewsItem):
            self.news += 1

    def _on_sentiment(self, d: Delivery) -> None:
        if isinstance(d.event, SentimentScore):
            self.sentiment.append(d.event)

    def _on_alert(self, d: Delivery) -> None:
        if isinstance(d.event, Alert):
            self.alerts.append(d.event)

    def _on_control(self, d: Delivery) -> None:
        if isinstance(d.event, Control):
            self.controls.append(d.event)

    def _on_risk_state(self, d: Delivery) -> None:
        state = d.event
        if not isinstance(state, RiskState):
            return
        if not self.mode_changes or self.mode_changes[-1].mode != state.mode:
            self.mode_changes.append(state)

    # -- what determinism and parity compare -------------------------------------------------------
    def trading_record(self) -> dict[str, list[dict[str, Any]]]:
        """Orders and fills as plain data, without ``ts_init`` (when a process made an event is
        not part of what it decided)."""

        def plain(e: Any) -> dict[str, Any]:
            out = msgspec.structs.asdict(e)
            out.pop("ts_init", None)
            return out

        return {"orders": [plain(o) for o in self.orders], "fills": [plain(f) for f in self.fills]}
