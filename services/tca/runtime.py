"""tca runtime: intents, approvals, order events, fills and quotes in; tca.report.SYM,
tca.aggregate.SYM, tca.feedback.SYM and slippage alerts out."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from libs.common.bus import Delivery
from libs.common.clock import LiveClock
from libs.common.config import Settings
from libs.common.metrics import Kpi
from libs.common.runtime import Runtime, ServiceApp
from proto.execution import Fill, OrderEvent
from proto.market import FeedStatus, Quote
from proto.orders import OrderApproved, OrderIntent
from proto.tca import TcaReport
from services.tca.core import TcaCore
from services.tca.feedback import CostBook


class TcaApp(ServiceApp):
    name = "tca"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.core = TcaCore(settings.tca, LiveClock())
        self.book = CostBook(settings.tca)
        self.reports: list[TcaReport] = []

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        self.core.clock = rt.clock
        self.book.namespace = f"tca{rt.started_ns}"
        await rt.subscribe("md.quote.>", self._on_quote, sync=True, types=Quote)
        await rt.subscribe("md.status", self._on_status, types=FeedStatus)
        # One consumer over order.> keeps each intent ahead of its approval (the stream's order).
        await rt.subscribe(
            "order.>",
            {OrderIntent: self._on_intent, OrderApproved: self._on_approved},
            durable="tca-orders",
            new_only=True,
        )
        await rt.subscribe(
            "exec.>",
            {Fill: self._on_fill, OrderEvent: self._on_order_event},
            durable="tca-exec",
            new_only=True,
        )

    def _on_quote(self, d: Delivery[Quote]) -> Awaitable[None] | None:
        """Per tick (sync): a coroutine only when the quote makes reports due."""
        reports = self.core.on_quote(d.event)
        return self._report(reports) if reports else None

    async def _on_status(self, d: Delivery[FeedStatus]) -> None:
        if d.event.state == "replay_finished":
            await self._report(self.core.end_of_data())

    async def _on_intent(self, d: Delivery[OrderIntent]) -> None:
        self.core.on_intent(d.event)

    async def _on_approved(self, d: Delivery[OrderApproved]) -> None:
        self.core.on_approved(d.event)

    async def _on_fill(self, d: Delivery[Fill]) -> None:
        self.core.on_fill(d.event)

    async def _on_order_event(self, d: Delivery[OrderEvent]) -> None:
        await self._report(self.core.on_order_event(d.event))

    async def _report(self, reports: list[TcaReport]) -> None:
        for report in reports:
            self.reports.append(report)
            await self.rt.emit(report)
            await self.rt.emit_all(self.book.add(report, self.rt.now_ns()))

    def kpis(self) -> list[Kpi]:
        """Slippage for people: the quantity-weighted means over the filled reports (the same
        figures as status()), and how many reports and alerts there were."""
        st = self.status()
        return [
            Kpi(
                "tf_tca_reports_total",
                "TCA reports (one per parent order done)",
                st["reports"],
                kind="counter",
            ),
            Kpi(
                "tf_tca_shortfall_bps",
                "Mean implementation shortfall of filled orders (bps)",
                st["mean_shortfall_bps"],
            ),
            Kpi("tf_tca_cost_bps", "Mean all-in cost of filled orders (bps)", st["mean_cost_bps"]),
            Kpi(
                "tf_tca_effective_spread_bps",
                "Mean effective spread of filled orders (bps)",
                st["mean_effective_spread_bps"],
            ),
            Kpi(
                "tf_tca_commission_usd",
                "Commissions of the reported orders (USD)",
                st["commission"],
                kind="counter",
            ),
        ]

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
            "feedback": self.emitted["TcaFeedback"],
            "alerts": self.emitted["Alert"],
            "aggregates": {
                f"{s}/{t}/{tod}": {"n": len(r.costs), "mean_cost_bps": round(sum(r.costs) / len(r.costs), 3)}
                for (s, t, tod), r in sorted(self.book.aggregates())
            },
            "stats": dict(self.core.stats),
        }
