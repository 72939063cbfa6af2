"""tca runtime: intents, approvals, order events, fills and quotes in; tca.report.SYM out."""

from __future__ import annotations

from typing import Any

from libs.common.bus import Delivery
from libs.common.clock import LiveClock
from libs.common.config import Settings
from libs.common.runtime import Runtime, ServiceApp
from proto.execution import Fill, OrderEvent
from proto.market import FeedStatus, Quote
from proto.orders import OrderApproved, OrderIntent
from proto.subjects import spec
from proto.tca import TcaReport
from services.tca.core import TcaCore

REPORT = spec("tca.report.{symbol}")


class TcaApp(ServiceApp):
    name = "tca"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.core = TcaCore(LiveClock())
        self.reports: list[TcaReport] = []

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        self.core.clock = rt.clock
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
            "stats": dict(self.core.stats),
        }
