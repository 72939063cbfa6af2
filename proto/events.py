"""The tagged union of every event, the micro-batch envelope, and the registry of types."""

from __future__ import annotations

from typing import Union

import msgspec

from proto.alerts import Alert, DeadLetter
from proto.base import DurableEvent, Event
from proto.control import ConfigChange, Control, ControlAck, Heartbeat, SyncProbe, SyncReply
from proto.execution import BrokerStatus, Fill, OrderEvent, PositionSnapshot
from proto.features import FeatureVector
from proto.market import Bar, DepthUpdate, FeedStatus, GapRequest, Quote, Trade
from proto.news import NewsItem, SentimentScore
from proto.orders import MarginCheck, MarginReply, OrderApproved, OrderDenied, OrderIntent, RiskState
from proto.signals import ExternalSignal, PolicySignal, Prediction, QosScore
from proto.tca import TcaAggregate, TcaFeedback, TcaReport

EVENT_TYPES: tuple[type[Event], ...] = (
    Quote,
    Trade,
    DepthUpdate,
    Bar,
    FeedStatus,
    FeatureVector,
    Prediction,
    QosScore,
    OrderIntent,
    OrderApproved,
    OrderDenied,
    RiskState,
    MarginCheck,
    MarginReply,
    OrderEvent,
    Fill,
    PositionSnapshot,
    BrokerStatus,
    TcaReport,
    TcaAggregate,
    TcaFeedback,
    NewsItem,
    SentimentScore,
    Control,
    ControlAck,
    Heartbeat,
    Alert,
    DeadLetter,
    SyncProbe,
    SyncReply,
    PolicySignal,
    ConfigChange,
    ExternalSignal,
    GapRequest,
)

AnyEvent = Union[  # noqa: UP007 - a runtime union object msgspec can decode into
    Quote,
    Trade,
    DepthUpdate,
    Bar,
    FeedStatus,
    FeatureVector,
    Prediction,
    QosScore,
    OrderIntent,
    OrderApproved,
    OrderDenied,
    RiskState,
    MarginCheck,
    MarginReply,
    OrderEvent,
    Fill,
    PositionSnapshot,
    BrokerStatus,
    TcaReport,
    TcaAggregate,
    TcaFeedback,
    NewsItem,
    SentimentScore,
    Control,
    ControlAck,
    Heartbeat,
    Alert,
    DeadLetter,
    SyncProbe,
    SyncReply,
    PolicySignal,
    ConfigChange,
    ExternalSignal,
    GapRequest,
]


class Batch(msgspec.Struct, frozen=True, tag=True, array_like=True, gc=False):
    """Micro-batch of events for one subject: one NATS message instead of hundreds, because the
    nats-py receive path costs ~10 us per message whatever its size."""

    events: list[AnyEvent]


EVENT_TAGS: frozenset[str] = frozenset(t.__name__ for t in EVENT_TYPES)
EVENTS_BY_NAME: dict[str, type[Event]] = {t.__name__: t for t in EVENT_TYPES}

__all__ = ["EVENTS_BY_NAME", "EVENT_TAGS", "EVENT_TYPES", "AnyEvent", "Batch", "DurableEvent", "Event"]
