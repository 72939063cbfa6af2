"""tca runtime: intents, approvals, order events, fills and quotes in; tca.report.SYM,
tca.aggregate.SYM, tca.feedback.SYM and slippage alerts out."""

from __future__ import annotations

from typing import Any

from libs.common.bus import Delivery
from libs.common.clock import LiveClock
from libs.common.config import Settings
from libs.common.runtime import Runtime, ServiceApp
from proto.alerts import Alert
from proto.base import Event
from proto.execution import Fill, OrderEvent
from proto.market import FeedStatus, Quote
from proto.orders import OrderApproved, OrderIntent
from proto.subjects import spec
from proto.tca import TcaAggregate, TcaFeedback, TcaReport
from services.tca.core import TcaCore
from services.tca.feedback import CostBook, TcaPolicy

REPORT, AGGREGATE = spec("tca.report.{symbol}"), spec("tca.aggregate.{symbol}")
FEEDBACK, ALERT = spec("tca.feedback.{symbol}"), spec("alert.{severity}")


class TcaApp(ServiceApp):
    name = "tca"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        t = settings.tca
        self.core = TcaCore(LiveClock(), realized_after_s=t.realized_after_s)
        self.policy = TcaPolicy(
            window=t.window,
            min_samples=t.min_samples,
            alert_sigma=t.alert_sigma,
            feedback=t.feedback,
            chase_after_ms=t.chase_after_ms,
            max_offset_bps=t.max_offset_bps,
        )
        self.book = CostBook(self.policy)
        self.reports: list[TcaReport] = []
        self.published: dict[str, int] = {"feedback": 0, "alerts": 0}

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        self.core.clock = rt.clock
        self.book.namespace = f"tca{rt.started_ns}"
        await rt.subscribe("md.quote.>", self._on_event)
        await rt.subscribe("md.status", self._on_event)
        # One consumer over order.> keeps each intent ahead of its approval (the stream's order).
        await rt.subscribe("order.>", self._on_event, durable="tca-orders", new_only=True)
        await rt.subscribe("exec.>", self._on_event, durable="tca-exec", new_only=True)

    async def _on_event(self, d: Delivery) -> None:
        e = d.event
        out: list[TcaReport] = []
        if isinstance(e, Quote):
            out = self.core.on_quote(e)
        elif isinstance(e, FeedStatus) and e.state == "replay_finished":
            out = self.core.end_of_data()
        elif isinstance(e, OrderIntent):
            self.core.on_intent(e)
        elif isinstance(e, OrderApproved):
            self.core.on_approved(e)
        elif isinstance(e, Fill):
            self.core.on_fill(e)
        elif isinstance(e, OrderEvent):
            out = self.core.on_order_event(e)
        for report in out:
            self.reports.append(report)
            await self.rt.publish(REPORT.subject(symbol=report.symbol), report)
            for derived in self.book.add(report, self.rt.now_ns()):
                await self._publish_derived(derived)

    async def _publish_derived(self, e: Event) -> None:
        if isinstance(e, TcaAggregate):
            await self.rt.publish(AGGREGATE.subject(symbol=e.symbol), e)
        elif isinstance(e, TcaFeedback):
            self.published["feedback"] += 1
            await self.rt.publish(FEEDBACK.subject(symbol=e.symbol), e)
        elif isinstance(e, Alert):
            self.published["alerts"] += 1
            await self.rt.publish(ALERT.subject(severity=e.severity), e)

    def status(self) -> dict[str, Any]:
        filled = [r for r in self.reports if r.fill_ratio > 0]
        weights = sum(r.quantity for r in filled) or 1.0
        return {
            "reports": len(self.reports),
            "mean_shortfall_bps": round(sum(r.shortfall_bps * r.quantity for r in filled) / weights, 3),
            "mean_effective_spread_bps": round(
                sum(r.effective_spread_bps * r.quantity for r in filled) / weights, 3
            ),
            "commission": round(sum(r.commission for r in self.reports), 2),
            "mean_cost_bps": round(sum(r.cost_bps * r.quantity for r in filled) / weights, 3),
            **self.published,
            "aggregates": {
                f"{s}/{t}/{tod}": {"n": len(r.costs), "mean_cost_bps": round(sum(r.costs) / len(r.costs), 3)}
                for (s, t, tod), r in sorted(self.book.aggregates())
            },
            "stats": dict(self.core.stats),
        }
