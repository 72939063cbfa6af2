"""qos runtime: sig.fast.*.*, news.sentiment.* and sig.policy.* in; qos.SYM scores and
order.intent.SYM intents out; the protective exits beside it (1-second prices, fills)."""

from __future__ import annotations

from typing import Any

from libs.common.bus import Delivery
from libs.common.calendar import market_calendar
from libs.common.clock import LiveClock
from libs.common.config import Settings
from libs.common.partition import Partitioner
from libs.common.runtime import Runtime, ServiceApp
from proto.execution import Fill
from proto.features import MICRO_TIMEFRAME, AtrReader, FeatureVector
from proto.news import SentimentScore
from proto.orders import OrderDenied
from proto.signals import PolicySignal, Prediction
from services.qos.core import QosCore
from services.qos.exits import ExitManager


class QosApp(ServiceApp):
    name = "qos"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        # The runtime's clock replaces these in start().
        self.core = QosCore(settings.qos, LiveClock())
        self.exits = ExitManager(settings.qos.exits, LiveClock(), market_calendar(settings.market))
        self.predictions_in = 0
        self.sentiment_in = 0
        self.policy_in = 0
        self.vectors_in = 0
        self.protective_exits = 0
        self.atr_of = AtrReader(tuple(settings.features.timeframes))
        self.owns = Partitioner(settings.partition.count, settings.partition.owned).owns
        self.other_partition = 0

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        self.core.clock = rt.clock
        self.exits.clock = rt.clock
        self.core.namespace = f"qos{rt.started_ns}"
        self.exits.namespace = f"exit{rt.started_ns}"
        await rt.subscribe("sig.fast.*.*", self._on_prediction, types=Prediction)
        if self.core.cfg.policy == "on":
            await rt.subscribe("sig.policy.*", self._on_policy, types=PolicySignal)
        # Protective exits watch every second's mid and the 1m ATR; positions come from fills.
        await rt.subscribe("feat.*.*", self._on_vector, types=FeatureVector)
        await rt.subscribe("exec.fill.>", self._on_fill, types=Fill, durable="qos-fills", new_only=True)
        await rt.subscribe(
            "order.denied.>", self._on_denied, types=OrderDenied, durable="qos-denied", new_only=True
        )
        await rt.subscribe(
            "news.sentiment.>",
            self._on_sentiment,
            types=SentimentScore,
            durable="qos-sentiment",
            new_only=True,
        )

    async def _on_vector(self, d: Delivery[FeatureVector]) -> None:
        v = d.event
        self.vectors_in += 1
        if v.price <= 0 or not self.owns(v.symbol):
            return
        if v.timeframe == "1m":
            atr = self.atr_of(v)
            if atr is not None:
                self.exits.on_volatility(v.symbol, atr)
        elif v.timeframe == MICRO_TIMEFRAME:
            intent = self.exits.on_price(v.symbol, v.ts_event, v.price)
            if intent is not None:
                self.core.on_protective_exit(v.symbol, v.ts_event)
                self.protective_exits += 1
                await self.rt.emit(intent)

    async def _on_fill(self, d: Delivery[Fill]) -> None:
        if self.owns(d.event.symbol):
            self.exits.on_fill(d.event)

    async def _on_denied(self, d: Delivery[OrderDenied]) -> None:
        e = d.event
        if self.owns(e.symbol):
            self.core.on_denied(e.symbol, e.intent_id, e.ts_event)

    async def _on_sentiment(self, d: Delivery[SentimentScore]) -> None:
        if not self.owns(d.event.symbol):
            return
        self.sentiment_in += 1
        await self.rt.emit_all(self.core.on_sentiment(d.event))

    async def _on_policy(self, d: Delivery[PolicySignal]) -> None:
        if not self.owns(d.event.symbol):
            return
        self.policy_in += 1
        await self.rt.emit_all(self.core.on_policy(d.event))

    async def _on_prediction(self, d: Delivery[Prediction]) -> None:
        self.predictions_in += 1
        if not self.owns(d.event.symbol):
            self.other_partition += 1
            return
        await self.rt.emit_all(self.core.on_prediction(d.event))

    def status(self) -> dict[str, Any]:
        positions = {sym: s.direction * s.quantity for sym, s in self.core.symbols.items() if s.direction}
        return {
            "predictions_in": self.predictions_in,
            "sentiment_in": self.sentiment_in,
            "policy_in": self.policy_in,
            "vectors_in": self.vectors_in,
            "scores": self.emitted["QosScore"],
            "intents": self.emitted["OrderIntent"],
            "protective_exits": self.protective_exits,
            "stats": dict(self.core.stats),
            "positions": positions,
            "other_partition": self.other_partition,
        }
