"""qos runtime: sig.fast.*.* in; qos.SYM scores and order.intent.SYM intents out."""

from __future__ import annotations

from typing import Any

from libs.common.bus import Delivery
from libs.common.clock import LiveClock
from libs.common.config import Settings
from libs.common.partition import Partitioner
from libs.common.runtime import Runtime, ServiceApp
from proto.orders import OrderIntent
from proto.signals import Prediction, QosScore
from proto.subjects import spec
from services.qos.core import QosConfig, QosCore

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
        self.published = {"scores": 0, "intents": 0}
        self.owns = Partitioner(settings.partition.count, settings.partition.owned).owns
        self.other_partition = 0

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        self.core.clock = rt.clock
        await rt.subscribe("sig.fast.*.*", self._on_prediction)

    async def _on_prediction(self, d: Delivery) -> None:
        if not isinstance(d.event, Prediction):
            return
        self.predictions_in += 1
        if not self.owns(d.event.symbol):
            self.other_partition += 1
            return
        for event in self.core.on_prediction(d.event):
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
            **self.published,
            "stats": dict(self.core.stats),
            "positions": positions,
            "other_partition": self.other_partition,
        }
