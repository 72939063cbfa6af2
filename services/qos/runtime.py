"""qos runtime: sig.fast.*.*, news.sentiment.*, sig.ext.* and sig.policy.* in; qos.SYM scores and
order.intent.SYM intents out; the protective exits beside it (1-second prices, fills). Live
parameters of qos and exits (ctl.config.*) are applied without a restart and answered on ack.qos."""

from __future__ import annotations

from typing import Any

from libs.common import params
from libs.common.bus import Delivery
from libs.common.calendar import market_calendar
from libs.common.clock import LiveClock
from libs.common.config import ExitSettings, QosSettings, Settings
from libs.common.logging import get_logger
from libs.common.partition import Partitioner
from libs.common.runtime import Runtime, ServiceApp
from proto.control import ConfigChange
from proto.execution import Fill
from proto.features import MICRO_TIMEFRAME, AtrReader, FeatureVector
from proto.news import SentimentScore
from proto.orders import OrderDenied
from proto.signals import ExternalSignal, PolicySignal, Prediction
from services.qos.core import QosCore
from services.qos.exits import ExitManager
from services.qos.pairs import PairTrader

log = get_logger(__name__)


class QosApp(ServiceApp):
    name = "qos"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        # The runtime's clock replaces these in start().
        self.core = QosCore(settings.qos, LiveClock(), feature_names=list(settings.features.names))
        self.pairs = [PairTrader(p) for p in settings.qos.pairs]
        self.pair_of = {leg: trader for trader in self.pairs for leg in trader.cfg.legs}
        # a pair's legs: no stop of their own (the pair exits both), the session-end flatten only
        self.exits = ExitManager(
            settings.qos.exits, LiveClock(), market_calendar(settings.market), hedged=set(self.pair_of)
        )
        self.predictions_in = 0
        self.sentiment_in = 0
        self.policy_in = 0
        self.vectors_in = 0
        self.protective_exits = 0
        self.atr_of = AtrReader(tuple(settings.features.timeframes))
        self.owns = Partitioner(settings.partition.count, settings.partition.owned).owns
        self.other_partition = 0
        self.external_in = 0
        self.config_seq: dict[str, int] = {}  # section -> CONTROL stream seq of what is applied
        self.config_applied = 0
        self.config_refused = 0

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        self.core.clock = rt.clock
        self.exits.clock = rt.clock
        self.core.namespace = f"qos{rt.started_ns}"
        for trader in self.pairs:
            trader.namespace, trader.clock = self.core.namespace, rt.clock
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
        await rt.subscribe("sig.ext.*", self._on_external, types=ExternalSignal)
        # Live parameters of qos and exits; the last of each, read again after subscribing.
        await rt.subscribe(
            "ctl.config.>", self._on_config, types=ConfigChange, durable="qos-config", new_only=True
        )
        for section in ("qos", "exits"):
            last = await rt.last(f"ctl.config.{section}", ConfigChange)
            if last is not None and last[1] > self.config_seq.get(section, 0):
                self.config_seq[section] = last[1]
                self._apply(last[0])
                log.warning("live parameters restored", section=section, change_id=last[0].change_id)

    async def _on_config(self, d: Delivery[ConfigChange]) -> None:
        change = d.event
        if change.section not in ("qos", "exits"):
            return
        if d.seq and d.seq <= self.config_seq.get(change.section, 0):
            return  # older than what is applied (restored at start)
        self.config_seq[change.section] = max(self.config_seq.get(change.section, 0), d.seq or 0)
        why = self._apply(change)
        accepted = not why
        await self.rt.emit(
            params.ack(change, "qos", self.rt.now_ns(), accepted, why or params.summary(change))
        )

    def _apply(self, change: ConfigChange) -> str:
        """Validate whole and apply; "" when applied, else why not (nothing is applied then)."""
        base = self.exits.cfg if change.section == "exits" else self.core.cfg
        model, why = params.receive(change, base)
        if model is None:
            self.config_refused += 1
            return why
        if isinstance(model, ExitSettings):
            self.exits.cfg = model
            self.core.cfg = self.core.cfg.model_copy(update={"exits": model})
        elif isinstance(model, QosSettings):
            refused = self.core.reconfigure(model.model_copy(update={"exits": self.exits.cfg}))
            if refused:
                self.config_refused += 1
                return f"refused: {refused}"
        self.config_applied += 1
        return ""

    async def _on_external(self, d: Delivery[ExternalSignal]) -> None:
        if not self.owns(d.event.symbol):
            return
        self.external_in += 1
        await self.rt.emit_all(self.core.on_external(d.event))

    async def _on_vector(self, d: Delivery[FeatureVector]) -> None:
        v = d.event
        self.vectors_in += 1
        pair = self.pair_of.get(v.symbol)
        traded = pair is not None and v.timeframe == "1m" and self.owns(pair.cfg.legs[0])
        if traded and pair is not None and (legs := pair.on_price(v.symbol, v.ts_event, v.price)):
            await self.rt.emit_all(legs)
        if v.price <= 0 or not self.owns(v.symbol):
            return
        if v.timeframe == "1m":
            atr = self.atr_of(v)
            if atr is not None:
                self.exits.on_volatility(v.symbol, atr)
            if out := self.core.on_vector(v):  # the rule strategies, when weighted
                await self.rt.emit_all(out)
        elif v.timeframe == MICRO_TIMEFRAME:
            intent = self.exits.on_price(v.symbol, v.ts_event, v.price)
            if intent is not None:
                self.core.on_protective_exit(v.symbol, v.ts_event)
                self.protective_exits += 1
                await self.rt.emit(intent)

    async def _on_fill(self, d: Delivery[Fill]) -> None:
        f = d.event
        pair = self.pair_of.get(f.symbol)
        if pair is not None and self.owns(pair.cfg.legs[0]):
            pair.on_fill(f.exec_id, f.symbol, f.quantity if f.side == "BUY" else -f.quantity)
        if self.owns(f.symbol):
            self.exits.on_fill(f)

    async def _on_denied(self, d: Delivery[OrderDenied]) -> None:
        e = d.event
        pair = self.pair_of.get(e.symbol)
        if pair is not None and "-pair-" in e.intent_id:
            if self.owns(pair.cfg.legs[0]):
                pair.on_denied(e.intent_id)
            return
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
            "external_in": self.external_in,
            "entries_off": self.core.cfg.entries_off,
            "pairs": {
                p.name: {
                    "direction": p.direction,
                    "legs": {leg.symbol: leg.filled for leg in p.legs},
                    "spread": None if p.last is None else p.last.__dict__,
                    "stats": dict(p.stats),
                }
                for p in self.pairs
            },
            "config": {"applied": self.config_applied, "refused": self.config_refused},
        }
