"""qos runtime: sig.fast.*.*, news.sentiment.* and sig.policy.* in; qos.SYM scores and
order.intent.SYM intents out."""

from __future__ import annotations

from typing import Any

from libs.common.bus import Delivery
from libs.common.clock import LiveClock
from libs.common.config import Settings
from libs.common.partition import Partitioner
from libs.common.runtime import Runtime, ServiceApp
from proto.execution import Fill
from proto.features import MICRO_TIMEFRAME, AtrReader, FeatureVector
from proto.news import SentimentScore
from proto.orders import OrderDenied, OrderIntent
from proto.signals import PolicySignal, Prediction, QosScore
from proto.subjects import spec
from services.qos.core import QosConfig, QosCore
from services.qos.exits import ExitConfig, ExitManager

SCORE = spec("qos.{symbol}")
INTENT = spec("order.intent.{symbol}")


def qos_config(settings: Settings) -> QosConfig:
    return QosConfig(**settings.qos.model_dump())  # the same fields, validated by the settings


class QosApp(ServiceApp):
    name = "qos"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        # The runtime's clock replaces this one in start().
        self.core = QosCore(qos_config(settings), LiveClock())
        self.predictions_in = 0
        self.sentiment_in = 0
        self.policy_in = 0
        self.vectors_in = 0
        self.published = {"scores": 0, "intents": 0, "protective_exits": 0}
        self.exits = ExitManager(ExitConfig(), LiveClock())
        self.atr_of = AtrReader(tuple(settings.features.timeframes))
        self.owns = Partitioner(settings.partition.count, settings.partition.owned).owns
        self.other_partition = 0

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        self.core.clock = rt.clock
        self.exits.clock = rt.clock
        self.core.namespace = f"qos{rt.started_ns}"
        self.exits.namespace = f"exit{rt.started_ns}"
        await rt.subscribe("sig.fast.*.*", self._on_prediction)
        if self.core.cfg.policy == "on":
            await rt.subscribe("sig.policy.*", self._on_policy)
        # Protective exits watch every second's mid and the 1m ATR; positions come from fills.
        await rt.subscribe("feat.*.*", self._on_vector)
        await rt.subscribe("exec.fill.>", self._on_fill, durable="qos-fills", new_only=True)
        await rt.subscribe("order.denied.>", self._on_denied, durable="qos-denied", new_only=True)
        await rt.subscribe("news.sentiment.>", self._on_sentiment, durable="qos-sentiment", new_only=True)

    async def _on_vector(self, d: Delivery) -> None:
        v = d.event
        self.vectors_in += 1
        if not isinstance(v, FeatureVector) or v.price <= 0 or not self.owns(v.symbol):
            return
        if v.timeframe == "1m":
            atr = self.atr_of(v)
            if atr is not None:
                self.exits.on_volatility(v.symbol, atr)
        elif v.timeframe == MICRO_TIMEFRAME:
            intent = self.exits.on_price(v.symbol, v.ts_event, v.price)
            if intent is not None:
                self.core.on_protective_exit(v.symbol, v.ts_event)
                await self.rt.publish(INTENT.subject(symbol=intent.symbol), intent)
                self.published["intents"] += 1
                self.published["protective_exits"] += 1

    async def _on_fill(self, d: Delivery) -> None:
        if isinstance(d.event, Fill) and self.owns(d.event.symbol):
            self.exits.on_fill(d.event)

    async def _on_denied(self, d: Delivery) -> None:
        e = d.event
        if isinstance(e, OrderDenied) and self.owns(e.symbol):
            self.core.on_denied(e.symbol, e.intent_id, e.ts_event)

    async def _on_sentiment(self, d: Delivery) -> None:
        if not isinstance(d.event, SentimentScore) or not self.owns(d.event.symbol):
            return
        self.sentiment_in += 1
        await self._publish(self.core.on_sentiment(d.event))

    async def _on_policy(self, d: Delivery) -> None:
        if not isinstance(d.event, PolicySignal) or not self.owns(d.event.symbol):
            return
        self.policy_in += 1
        await self._publish(self.core.on_policy(d.event))

    async def _on_prediction(self, d: Delivery) -> None:
        if not isinstance(d.event, Prediction):
            return
        self.predictions_in += 1
        if not self.owns(d.event.symbol):
            self.other_partition += 1
            return
        await self._publish(self.core.on_prediction(d.event))

    async def _publish(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, QosScore):
                await self.rt.publish(SCORE.subject(symbol=event.symbol), event)
                self.published["scores"] += 1
            elif isinstance(event, OrderIntent):
                await self.rt.publish(INTENT.subject(symbol=event.symbol), event)
                self.published["intents"] += 1

    def status(self) -> dict[str, Any]:
        positions = {sym: s.direction * s.quantity for sym, s in self.core.symbols.items() if s.direction}
        return {
            "predictions_in": self.predictions_in,
            "sentiment_in": self.sentiment_in,
            "policy_in": self.policy_in,
            "vectors_in": self.vectors_in,
            **self.published,
            "stats": dict(self.core.stats),
            "positions": positions,
            "other_partition": self.other_partition,
        }
