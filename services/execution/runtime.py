"""execution runtime: approvals and operator commands in; orders to the broker (journaled first),
order events, fills and positions out.

The venue is one ``Broker`` (broker.py: ``execution.broker`` says which). This runtime never asks
which: it hands the broker market data, sends what the core decides, and acts on every report the
broker makes, whether it returns it (a simulated venue, on market time) or delivers it later (a
real one, after reconciling on every connection)."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from libs.common import codec
from libs.common.bus import Delivery
from libs.common.clock import LiveClock
from libs.common.config import Settings
from libs.common.ib.windows import parse_windows
from libs.common.logging import get_logger
from libs.common.metrics import Kpi
from libs.common.runtime import Runtime, ServiceApp
from proto.alerts import Alert
from proto.base import Event
from proto.control import Control
from proto.execution import TERMINAL_STATUSES, OrderEvent, PositionSnapshot
from proto.market import FeedStatus, Quote, Trade
from proto.orders import MarginCheck, MarginReply, OrderApproved
from proto.tca import TcaFeedback
from services.execution.broker import Broker, BrokerOrder, BrokerReport, make_broker
from services.execution.core import (
    SIGNATURE_REFUSALS,
    Cancel,
    ExecutionCore,
    JournalRecord,
    Outcome,
    Replace,
    Send,
)
from services.execution.health import BrokerHealth, BrokerWatch
from services.execution.journal import Journal

log = get_logger(__name__)
HEALTH_EVERY_S = 0.5  # how often the broker link is looked at


class ExecutionApp(ServiceApp):
    name = "execution"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        x = settings.execution
        self.settings = settings
        self.core = ExecutionCore(
            x, LiveClock(), settings.market.tick_size, approval_key=settings.signing.key()
        )
        self.broker: Broker = make_broker(settings, self._positions)
        self.journal = Journal(x.journal)
        self._lock = asyncio.Lock()  # one decision at a time: journal, send, publish
        self._panic: asyncio.Task[None] | None = None
        self._health: asyncio.Task[None] | None = None
        # Tracing on only: approved order -> the context its approval was handled in, so that
        # its reports (acks and fills on later market data, or a broker's callbacks) continue
        # that trace (back to a sampled tick, when the intent came from one) until it is over.
        self._order_traces: dict[str, otel_context.Context] = {}

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        self.core.clock = rt.clock
        self.core.instance = f"exec{rt.started_ns}"
        if not self.core.approval_key:
            log.error(
                "no approval key (TRADEFLEET_SIGNING__APPROVAL_KEY or signing.approval_key_file): "
                "every approval will be refused and dead-lettered; nothing trades"
            )
        restored = self.core.restore(self.journal.read())
        if restored:
            log.warning("restored orders from the journal; outcomes unresolved", orders=len(restored))
        await rt.emit_all(restored)
        await self.broker.start(self._on_report, namespace=str(rt.started_ns))
        await rt.serve("broker.whatif", self._what_if)
        last = await rt.last("exec.position", PositionSnapshot)
        if last is not None and self.core.restore_positions(last[0]):
            log.warning("positions restored from the last snapshot", positions=len(last[0].positions))
        await rt.subscribe("md.>", self._on_market, sync=True, types=(Quote, Trade, FeedStatus))
        await rt.subscribe("ctl.>", self._on_control, types=Control, durable="execution-ctl", new_only=True)
        # An approval fetched but not journaled when the process died comes back after the ack
        # wait: no longer than the approval's TTL (a later one could only be refused as expired).
        await rt.subscribe(
            "order.approved.>",
            self._on_approved,
            types=OrderApproved,
            durable="execution",
            new_only=True,
            ack_wait_s=self.settings.approval_ack_wait_s,
        )
        # Every feedback the stream keeps, oldest first: after a restart the latest per symbol wins.
        await rt.subscribe("tca.feedback.>", self._on_feedback, types=TcaFeedback)
        if self.settings.execution.panic_file is not None:
            self._panic = asyncio.create_task(self._watch_panic(self.settings.execution.panic_file))
        if self.settings.execution.broker == "ib":  # a link to lose; the simulated venue has none
            self._health = asyncio.create_task(self._watch_broker(self.broker.summary), name="broker-health")

    async def _watch_broker(self, summary: Callable[[], dict[str, Any]]) -> None:
        """The link's changes as BrokerStatus for the risk gate and alerts for people."""
        ib = self.settings.ib
        watch = BrokerWatch(
            f"{self.broker.name}:{self.rt.started_ns}", parse_windows(ib.reset_windows), ib.max_disconnect_s
        )
        while True:
            for event in watch.observe(BrokerHealth.of(summary()), time.time()):
                if isinstance(event, Alert):
                    log.warning(event.title, severity=event.severity)
                try:
                    await self.rt.emit(event)
                except Exception as exc:  # the bus down too: the next change says it again
                    log.error("broker health not published", error=repr(exc))
            await asyncio.sleep(HEALTH_EVERY_S)

    async def _what_if(self, request: Event) -> Event:
        """The risk gate's margin question, answered by the broker's what-if (never routed)."""
        assert isinstance(request, MarginCheck)
        order = BrokerOrder(
            f"wi-{request.request_id}",
            request.symbol,
            request.side,
            request.quantity,
            "LMT" if request.limit_price else "MKT",
            request.limit_price,
        )
        try:
            preview = await self.broker.what_if(order)
        except (TimeoutError, ConnectionError) as exc:
            preview, error = None, repr(exc)
        else:
            error = "" if preview is not None else f"no what-if answer from {self.broker.name}"
        known = preview is not None and not preview.error
        return MarginReply(
            ts_event=request.ts_event,
            ts_init=self.rt.now_ns(),
            request_id=request.request_id,
            known=known,
            init_margin_change=preview.init_margin_change if preview else None,
            init_margin_after=preview.init_margin_after if preview else None,
            equity_with_loan_after=preview.equity_with_loan_after if preview else None,
            commission=preview.commission if preview else None,
            error=(preview.error if preview else error),
        )

    def _positions(self) -> dict[str, float]:
        return {s: p.quantity for s, p in self.core.positions.items()}

    async def _on_report(self, report: BrokerReport) -> None:
        """A report the broker made on its own time (a real venue's callbacks)."""
        async with self._lock:
            await self._report(report)

    async def _report(self, report: BrokerReport) -> None:
        if not self._order_traces:  # tracing off (or nothing traced working): nothing added
            await self._handle(self.core.on_report(report))
            return
        parent = self.core.route.get(report.client_order_id, "")
        context = self._order_traces.get(parent)
        if context is None:
            await self._handle(self.core.on_report(report))
            return
        with self.rt.tracing.tracer.start_as_current_span(
            f"broker {report.kind}",
            context=context,
            attributes={"tf.client_order_id": report.client_order_id, "tf.report": report.kind},
        ):
            await self._handle(self.core.on_report(report))
        order = self.core.orders.get(parent)
        if order is None or order.terminal:
            self._order_traces.pop(parent, None)

    def _on_market(self, d: Delivery[Quote | Trade | FeedStatus]) -> Awaitable[None] | None:
        """Per tick (sync): a coroutine only when the broker reports or a child is chased."""
        e = d.event
        if type(e) is Quote:
            self.core.on_quote(e)  # marks positions; limit children are priced from it
        reports = self.broker.on_market(e)
        if not reports and not self.core.chasing:
            return None  # the common tick: nothing due, nothing to reprice, no lock taken
        return self._on_market_due(reports)

    async def _on_market_due(self, reports: list[BrokerReport]) -> None:
        async with self._lock:
            for report in reports:
                await self._report(report)  # a next slice is journaled and sent
            await self._handle(self.core.on_time(self.broker.now_ns()))

    async def _on_approved(self, d: Delivery[OrderApproved]) -> None:
        a, cid = d.event, d.event.client_order_id
        async with self._lock:
            out = self.core.on_approved(a)  # the signature first: a forgery goes no further
            if out.dead_letter is not None:
                # Kept whole on dlq.execution (as decoded, re-encoded: the same fields and
                # signature), counted in tf_events_dropped_total by its reason.
                reason, detail = out.dead_letter
                await self.rt.on_dropped(d.subject, reason, detail, codec.encode(a), d.headers)
                await self._handle(out)
                return
            traced = self.rt.tracing.enabled and trace.get_current_span().is_recording()
            if traced:  # its reports continue the trace its approval was handled in
                self._order_traces[cid] = otel_context.get_current()
            await self._handle(out)
            if traced:
                order = self.core.orders.get(cid)
                if order is None or order.terminal:  # refused, or over at once
                    self._order_traces.pop(cid, None)

    async def _on_feedback(self, d: Delivery[TcaFeedback]) -> None:
        if self.core.on_feedback(d.event):
            log.info(
                "tca feedback applied",
                symbol=d.event.symbol,
                tactic=str(self.core.tactic_for(d.event.symbol)),
            )

    async def _on_control(self, d: Delivery[Control]) -> None:
        await self._control(d.event)

    async def _control(self, c: Control) -> None:
        async with self._lock:
            out = self.core.on_control(c)  # first: a kill refuses approvals whatever the broker does
            if c.command == "kill":
                try:
                    await self.broker.cancel_all()  # everything at the venue, ours or not yet known
                except Exception as exc:  # the per-order cancels below still go out
                    log.error("kill: the broker's cancel-all failed", error=repr(exc))
            await self._handle(out)

    async def _handle(self, out: Outcome) -> None:
        """Act on a decision, then on whatever the broker reports at once because of it (a
        simulated venue whose data has ended rejects at once what can no longer trade)."""
        await self._act(out)
        for report in self.broker.due():
            await self._report(report)

    async def _act(self, out: Outcome) -> None:
        """Journal, then act: a crash between the two leaves a journaled order that restart marks
        UNRESOLVED, never an order sent and forgotten."""
        for action in out.actions:
            if isinstance(action, JournalRecord):
                await asyncio.to_thread(self.journal.append, action)
            elif isinstance(action, Send):
                await self.broker.submit(action.order)
            elif isinstance(action, Cancel):
                await self.broker.cancel(action.client_order_id)
            elif isinstance(action, Replace):
                await self.broker.replace(
                    action.client_order_id, action.quantity, action.limit_price, action.stop_price
                )
        await self.rt.emit_all(out.events)
        # Outcomes too, once said: a restart then settles what the broker already settled instead
        # of holding it UNRESOLVED (a crash before this line leaves it UNRESOLVED: the safe side).
        # (Only orders that were sent: a refused approval never was, nothing to resolve.)
        ended = [e for e in out.events if type(e) is OrderEvent and e.status in TERMINAL_STATUSES]
        if ended:
            sent = set(self.core.route.values())
            for event in ended:
                if event.client_order_id in sent:
                    done = JournalRecord("done", event.client_order_id, event.ts_event, reason=event.status)
                    await asyncio.to_thread(self.journal.append, done)

    async def _watch_panic(self, path: Path) -> None:
        # Polling is the point: a panic file works from any shell (`touch`), on any filesystem.
        while not path.exists():  # noqa: ASYNC110, ASYNC240 - a stat every 200 ms
            await asyncio.sleep(0.2)
        log.error("panic file found: kill switch and flatten", path=str(path))
        now = self.rt.now_ns()
        kill = Control(
            ts_event=now,
            ts_init=now,
            command_id=f"panic-{now}",
            command="kill",
            issued_by=f"panic-file:{path}",
            args={"flatten": "true"},
        )
        # Here first: a panic must act even with the bus down. Then on the bus, so the risk gate
        # goes to EMERGENCY as for ctl.kill (this gateway sees its own kill again and skips it).
        await self._control(kill)
        try:
            await self.rt.emit(kill)
        except Exception as exc:
            log.error("panic: the kill could not be published for the risk gate", error=repr(exc))

    async def stop(self) -> None:
        await self.broker.stop()
        for task in (self._panic, self._health):
            if task is not None:
                task.cancel()
        self.journal.close()

    def kpis(self) -> list[Kpi]:
        """The gateway's own books for people: fills, orders, the kill switch, positions and
        P&L as the venue filled them (the risk gate's view is on its own /metrics)."""
        core = self.core
        out = [
            Kpi("tf_fills_total", "Fills published", self.emitted["Fill"], kind="counter"),
            Kpi("tf_orders_sent_total", "Orders sent to the broker", core.stats["sent"], kind="counter"),
            Kpi(
                "tf_broker_rejects_total",
                "Orders the broker rejected",
                core.stats["broker_rejects"],
                kind="counter",
            ),
            Kpi(
                "tf_orders_open",
                "Orders not yet terminal",
                sum(1 for o in core.orders.values() if not o.terminal),
            ),
            Kpi("tf_kill_switch", "1 while the kill switch holds", 1.0 if core.killed else 0.0),
            Kpi(
                "tf_approvals_untrusted_total",
                "Approvals refused for their signature (missing, invalid, or no key to check it)",
                sum(core.stats[f"refused_{r}"] for r in SIGNATURE_REFUSALS.values()),
                kind="counter",
            ),
            Kpi(
                "tf_pnl_realized_usd",
                "Realized P&L, commissions included (USD)",
                sum(p.realized for p in core.positions.values()),
            ),
            Kpi(
                "tf_pnl_unrealized_usd",
                "Open P&L at the last quotes (USD)",
                sum(p.unrealized for p in core.positions.values()),
            ),
        ]
        out += [
            Kpi("tf_position_shares", "Signed position per symbol", p.quantity, {"symbol": s})
            for s, p in sorted(core.positions.items())
        ]
        return out

    def status(self) -> dict[str, Any]:
        positions = {s: p.quantity for s, p in self.core.positions.items() if p.quantity}
        return {
            "orders": self.emitted["OrderEvent"],
            "fills": self.emitted["Fill"],
            "positions_published": self.emitted["PositionSnapshot"],
            "killed": self.core.killed,
            "open_orders": sum(1 for o in self.core.orders.values() if not o.terminal),
            "orders_by_symbol": dict(collections.Counter(o.symbol for o in self.core.orders.values())),
            "positions": positions,
            "realized_pnl": round(sum(p.realized for p in self.core.positions.values()), 2),
            "stats": dict(self.core.stats),
            "tactics": {s: str(t) for s, t in sorted(self.core.tactics.items())},
            "broker": self.broker.name,
            self.broker.name: self.broker.summary(),
            "journal": str(self.journal.path),
        }
