"""What the control API shows: the fleet's latest state, built from the events it publishes.

Pure: events in, JSON-able snapshots out (and, per event, the WebSocket messages it makes). Every
collection is bounded. The view is a cache of the bus, never a source of truth: a restarted control
service rebuilds it from JetStream's last messages and from what flows next.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import msgspec

from libs.common.config import RiskSettings
from proto.alerts import Alert
from proto.base import Event
from proto.control import ConfigChange, Heartbeat
from proto.execution import TERMINAL_STATUSES, BrokerStatus, Fill, OrderEvent, PositionSnapshot
from proto.market import DepthUpdate, FeedStatus, Quote
from proto.news import NewsItem, SentimentScore
from proto.orders import OrderApproved, OrderDenied, OrderIntent, RiskState
from proto.signals import ExternalSignal, Prediction, QosScore
from proto.tca import TcaAggregate, TcaReport
from proto.units import SECOND_NS

Message = tuple[str, dict[str, Any]]  # a WebSocket message: (type, data)
BOOK_LEVELS = 10


def plain(event: msgspec.Struct) -> dict[str, Any]:
    """An event as a JSON object (events travel as arrays: array_like)."""
    out: dict[str, Any] = msgspec.to_builtins({f: getattr(event, f) for f in event.__struct_fields__})
    return out


@dataclass
class _Book:
    bids: list[tuple[float, int]] = field(default_factory=list)  # best first
    asks: list[tuple[float, int]] = field(default_factory=list)
    ts: int = 0
    depth: bool = False  # levels from L2 (DepthUpdate), not only the top of book

    def body(self, symbol: str) -> dict[str, Any]:
        return {
            "symbol": symbol,
            "bids": [list(level) for level in self.bids[:BOOK_LEVELS]],
            "asks": [list(level) for level in self.asks[:BOOK_LEVELS]],
            "ts": self.ts,
            "depth": self.depth,
        }


@dataclass
class _Model:
    model_version: str
    quarantined: bool
    last_ts: int
    predictions: int = 0
    drift: dict[str, str] = field(default_factory=dict)  # the drift alert's worst feature, PSI


class FleetView:
    def __init__(self, keep: int = 500) -> None:
        self.keep = keep
        self.risk: RiskState | None = None
        self.snapshot: PositionSnapshot | None = None
        self.orders: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.equity: collections.deque[dict[str, float]] = collections.deque(maxlen=5000)
        self.qos: dict[str, dict[str, Any]] = {}
        self.models: dict[str, _Model] = {}
        self.predictions: dict[tuple[str, str], dict[str, Any]] = {}
        self.external: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self.intents: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.denials: collections.Counter[str] = collections.Counter()
        self.alerts: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self.news: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.tca: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self.tca_aggregates: dict[str, dict[str, Any]] = {}
        self.heartbeats: dict[str, tuple[int, bool]] = {}  # who -> (when seen, stopping)
        self.feeds: dict[str, str] = {}
        self.broker: BrokerStatus | None = None
        self.books: dict[str, _Book] = {}
        self.params: dict[str, ConfigChange] = {}
        self.market_ns = 0
        self.stats: collections.Counter[str] = collections.Counter()
        self._handlers: dict[type, Any] = {
            RiskState: self._risk,
            PositionSnapshot: self._positions,
            OrderEvent: self._order,
            Fill: self._fill,
            QosScore: self._qos,
            Prediction: self._prediction,
            ExternalSignal: self._external,
            OrderIntent: self._intent,
            OrderApproved: self._approved,
            OrderDenied: self._denied,
            Alert: self._alert,
            NewsItem: self._news,
            SentimentScore: self._sentiment,
            TcaReport: self._tca,
            TcaAggregate: self._tca_aggregate,
            FeedStatus: self._feed,
            BrokerStatus: self._broker,
            Quote: self._quote,
            DepthUpdate: self._depth,
            ConfigChange: self._config,
        }

    # -- events in ----------------------------------------------------------------------------
    def on_event(self, event: Event, now_ns: int = 0) -> list[Message]:
        """Take an event; what the WebSocket clients are told of it."""
        if isinstance(event, Heartbeat):
            who = f"{event.service}[{event.replica}]" if event.replica else event.service
            self.heartbeats[who] = (now_ns or event.ts_init, event.stopping)
            return []
        handler = self._handlers.get(type(event))
        if handler is None:
            return []
        self.stats[type(event).__name__] += 1
        return handler(event)

    def _risk(self, e: RiskState) -> list[Message]:
        self.risk = e
        return [("risk", plain(e))]

    def _positions(self, e: PositionSnapshot) -> list[Message]:
        self.snapshot = e
        point = {
            "ts": e.ts_event,
            "realized": e.realized_pnl,
            "unrealized": e.unrealized_pnl,
            "total": e.realized_pnl + e.unrealized_pnl,
        }
        if not self.equity or self.equity[-1] != point:
            self.equity.append(point)
        return [("position", self._position(p)) for p in e.positions] + [("pnl", point)]

    @staticmethod
    def _position(p: Any) -> dict[str, Any]:
        return {
            "symbol": p.symbol,
            "quantity": p.quantity,
            "avg_price": p.avg_price,
            "mark": p.mark,
            "unrealized": p.unrealized_pnl,
            "realized": p.realized_pnl,
        }

    def _order(self, e: OrderEvent) -> list[Message]:
        row = self.orders.get(e.client_order_id)
        if row is None:
            row = self.orders[e.client_order_id] = {"fills": [], "reason": e.reason}
            while len(self.orders) > 4 * self.keep:
                self.orders.popitem(last=False)
        row.update(
            {
                "client_order_id": e.client_order_id,
                "symbol": e.symbol,
                "side": e.side,
                "quantity": e.quantity,
                "filled": e.filled_quantity,
                "avg_fill_price": e.avg_fill_price,
                "status": e.status,
                "order_type": e.order_type,
                "limit_price": e.limit_price,
                "ts": e.ts_event,
            }
        )
        if e.reason:
            row["reason"] = e.reason
        return [("order", {k: v for k, v in row.items() if k != "fills"})]

    def _fill(self, e: Fill) -> list[Message]:
        data = {
            "exec_id": e.exec_id,
            "client_order_id": e.client_order_id,
            "symbol": e.symbol,
            "side": e.side,
            "quantity": e.quantity,
            "price": e.price,
            "commission": e.commission,
            "ts": e.ts_event,
        }
        row = self.orders.get(e.client_order_id)
        if row is not None and all(f["exec_id"] != e.exec_id for f in row["fills"]):
            row["fills"].append(data)
        return [("fill", data)]

    def _qos(self, e: QosScore) -> list[Message]:
        data = {
            "symbol": e.symbol,
            "score": e.score,
            "peak": e.peak,
            "regime": e.regime,
            "components": dict(e.components),
            "weights": dict(e.weights),
            "action": e.action,
            "ts": e.ts_event,
        }
        self.qos[e.symbol] = data
        return [("qos", data)]

    def _prediction(self, e: Prediction) -> list[Message]:
        model = self.models.get(e.horizon)
        if model is None or model.model_version != e.model_version:
            model = self.models[e.horizon] = _Model(e.model_version, e.quarantined, e.ts_event)
        model.quarantined, model.last_ts = e.quarantined, e.ts_event
        model.predictions += 1
        self.market_ns = max(self.market_ns, e.ts_event)
        data = {
            "symbol": e.symbol,
            "horizon": e.horizon,
            "model_version": e.model_version,
            "probability": e.probability,
            "signal": e.signal,
            "quarantined": e.quarantined,
            "ts": e.ts_event,
        }
        self.predictions[(e.symbol, e.horizon)] = data
        return [("prediction", data)]

    def _external(self, e: ExternalSignal) -> list[Message]:
        self.external.appendleft(plain(e))
        return []

    def _intent(self, e: OrderIntent) -> list[Message]:
        self.intents[e.intent_id] = {
            "intent_id": e.intent_id,
            "symbol": e.symbol,
            "side": e.side,
            "quantity": e.quantity,
            "reason": e.reason,
            "score": e.score,
            "components": dict(e.components),
            "ts": e.ts_event,
            "decision": "",
            "denial": "",
        }
        while len(self.intents) > self.keep:
            self.intents.popitem(last=False)
        return []

    def _approved(self, e: OrderApproved) -> list[Message]:
        if (row := self.intents.get(e.intent_id)) is not None:
            row["decision"] = "approved"
        return []

    def _denied(self, e: OrderDenied) -> list[Message]:
        self.denials[e.code] += 1
        if (row := self.intents.get(e.intent_id)) is not None:
            row["decision"], row["denial"] = "denied", e.describe()
        return []

    def _alert(self, e: Alert) -> list[Message]:
        data = {
            "ts": e.ts_event,
            "severity": e.severity,
            "source": e.source,
            "title": e.title,
            "body": e.body,
            "labels": dict(e.labels),
        }
        self.alerts.appendleft(data)
        horizon = e.labels.get("horizon", "")
        if e.source == "fastlane" and horizon in self.models and "worst_feature" in e.labels:
            keys = ("worst_feature", "max_psi")
            self.models[horizon].drift = {k: e.labels[k] for k in keys if k in e.labels}
        return [("alert", data)]

    def _news(self, e: NewsItem) -> list[Message]:
        data = self.news.get(e.news_id)
        if data is None:
            data = self.news[e.news_id] = {"sentiment": None}
        data.update(
            {"ts": e.ts_event, "news_id": e.news_id, "headline": e.headline, "symbols": list(e.symbols)}
        )
        data["source"] = e.source
        while len(self.news) > self.keep:
            self.news.popitem(last=False)
        return [("news", dict(data))]

    def _sentiment(self, e: SentimentScore) -> list[Message]:
        confidence = max(e.probabilities or [abs(e.polarity)])
        sentiment = {"label": e.label, "score": confidence, "polarity": e.polarity}
        data = self.news.get(e.news_id)
        if data is None:  # a score before its headline (two subjects): the headline is in the score
            data = self.news[e.news_id] = {
                "ts": e.ts_event,
                "news_id": e.news_id,
                "headline": e.headline,
                "symbols": [e.symbol],
                "source": e.source,
            }
        data["sentiment"] = sentiment
        return [("sentiment", {"news_id": e.news_id, "symbol": e.symbol, **sentiment})]

    def _tca(self, e: TcaReport) -> list[Message]:
        self.tca.appendleft(plain(e))
        return []

    def _tca_aggregate(self, e: TcaAggregate) -> list[Message]:
        self.tca_aggregates[f"{e.symbol}:{e.order_type}:{e.time_of_day}"] = plain(e)
        return []

    def _feed(self, e: FeedStatus) -> list[Message]:
        self.feeds[f"{e.source}:{e.symbol}" if e.symbol else e.source] = e.state
        return []

    def _broker(self, e: BrokerStatus) -> list[Message]:
        self.broker = e
        return []

    def _quote(self, e: Quote) -> list[Message]:
        self.market_ns = max(self.market_ns, e.ts_event)
        book = self.books.setdefault(e.symbol, _Book())
        if book.depth:  # L2 draws this book: the top of book is its first level already
            return []
        book.bids, book.asks, book.ts = [(e.bid, e.bid_size)], [(e.ask, e.ask_size)], e.ts_event
        return []  # quotes are many: clients read books at their own pace (GET /api/book)

    def _depth(self, e: DepthUpdate) -> list[Message]:
        """IB's updateMktDepth semantics: an insert shifts the levels below down, a delete up. A
        negative position (IB sends none) is counted and left out: as a list index it would
        address the levels from the other end, or fail."""
        if e.position < 0:
            self.stats["depth_bad_position"] += 1
            return []
        book = self.books.setdefault(e.symbol, _Book())
        if not book.depth:
            book.bids, book.asks, book.depth = [], [], True
        levels = book.bids if e.side == "BID" else book.asks
        level = (e.price, e.size)
        if e.operation == "INSERT":
            levels.insert(min(e.position, len(levels)), level)
        elif e.operation == "DELETE":
            if e.position < len(levels):
                del levels[e.position]
        elif e.position < len(levels):
            levels[e.position] = level
        else:
            levels.append(level)
        del levels[4 * BOOK_LEVELS :]
        book.ts = e.ts_event
        return []

    def _config(self, e: ConfigChange) -> list[Message]:
        self.params[e.section] = e
        return []

    # -- snapshots out --------------------------------------------------------------------------
    def status(self, now_ns: int, limits: RiskSettings) -> dict[str, Any]:
        services = []
        for who, (seen, stopping) in sorted(self.heartbeats.items()):
            service, _, replica = who.partition("[")
            services.append(
                {
                    "service": service,
                    "replica": replica.rstrip("]"),
                    "heartbeat_age_s": round((now_ns - seen) / SECOND_NS, 1),
                    "stopped": stopping,
                }
            )
        return {
            "services": services,
            "risk": plain(self.risk) if self.risk is not None else None,
            "limits": self.limit_usage(limits),
            "feeds": dict(self.feeds),
            "broker": {"state": self.broker.state, "detail": self.broker.detail} if self.broker else None,
            "denials": dict(self.denials),
            "market_ns": self.market_ns,
        }

    def limit_usage(self, lim: RiskSettings) -> dict[str, dict[str, float]]:
        r = self.risk
        if r is None:
            return {}
        day_pnl = r.realized_pnl - r.day_realized_start + r.unrealized_pnl
        return {
            "daily_loss": {"used": max(0.0, -day_pnl), "limit": lim.daily_loss_limit},
            "drawdown": {"used": max(0.0, r.day_peak_pnl - day_pnl), "limit": lim.max_drawdown},
            "gross_exposure": {"used": r.gross_exposure, "limit": lim.max_gross_exposure},
            "net_exposure": {"used": abs(r.net_exposure), "limit": lim.max_net_exposure},
            "open_orders": {"used": r.open_orders, "limit": lim.max_open_orders},
            "consecutive_losses": {"used": r.consecutive_losses, "limit": lim.max_consecutive_losses},
            "day_trades": {"used": r.day_trades, "limit": lim.pdt_max_day_trades},
        }

    def positions(self) -> dict[str, Any]:
        s = self.snapshot
        if s is None:
            return {"positions": [], "ts": 0}
        return {"positions": [self._position(p) for p in s.positions], "ts": s.ts_event}

    def orders_view(self) -> dict[str, Any]:
        today = list(reversed(self.orders.values()))
        return {"open": [o for o in today if o["status"] not in TERMINAL_STATUSES], "today": today}

    def pnl(self) -> dict[str, Any]:
        last = self.equity[-1] if self.equity else {"realized": 0.0, "unrealized": 0.0, "total": 0.0}
        return {
            "realized": last["realized"],
            "unrealized": last["unrealized"],
            "total": last["total"],
            "equity": list(self.equity),
        }

    def qos_view(self, thresholds: dict[str, float], entries_off: list[str]) -> dict[str, Any]:
        everything = "*" in entries_off
        return {
            "symbols": [
                {**q, "entries_stopped": everything or sym in entries_off}
                for sym, q in sorted(self.qos.items())
            ],
            "thresholds": thresholds,
            "entries_stopped_all": everything,
            "entries_off": list(entries_off),
        }

    def models_view(self) -> dict[str, Any]:
        return {
            "models": [
                {
                    "horizon": h,
                    "model_version": m.model_version,
                    "quarantined": m.quarantined,
                    "last_ts": m.last_ts,
                    "predictions": m.predictions,
                    "drift": m.drift or None,
                    "max_psi": float(m.drift["max_psi"]) if "max_psi" in m.drift else None,
                }
                for h, m in sorted(self.models.items())
            ]
        }

    def signals(self) -> dict[str, Any]:
        return {
            "predictions": [self.predictions[k] for k in sorted(self.predictions)],
            "external": list(self.external),
            "intents": list(reversed(self.intents.values())),
        }

    def alerts_view(self) -> dict[str, Any]:
        return {"alerts": list(self.alerts)}

    def news_view(self) -> dict[str, Any]:
        return {"news": [dict(n) for n in reversed(self.news.values())]}

    def book(self, symbol: str) -> dict[str, Any] | None:
        b = self.books.get(symbol)
        return b.body(symbol) if b is not None else None

    def tca_view(self) -> dict[str, Any]:
        return {"reports": list(self.tca), "aggregates": dict(self.tca_aggregates)}
