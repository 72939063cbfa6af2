"""execution runtime: approvals and operator commands in; orders to the broker (journaled first),
order events, fills and positions out. The SimBroker trades against the market data this service
receives, on market time; the IB broker (``execution.broker: ib``) sends to TWS and hears back
through its own queue, after reconciling on every connection."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from libs.common.bus import Delivery
from libs.common.clock import LiveClock
from libs.common.config import Settings
from libs.common.logging import get_logger
from libs.common.runtime import Runtime, ServiceApp
from proto.base import Event
from proto.control import Control
from proto.execution import Fill, OrderEvent, PositionSnapshot
from proto.market import FeedStatus, Quote, Trade
from proto.orders import MarginCheck, MarginReply, OrderApproved
from proto.subjects import spec
from proto.tca import TcaFeedback
from services.execution.core import (
    Cancel,
    ExecConfig,
    ExecutionCore,
    FeedbackBounds,
    JournalRecord,
    Outcome,
    Replace,
    Send,
    Tactic,
)
from services.execution.journal import Journal

if TYPE_CHECKING:
    from libs.common.ib.session import IbSession
    from services.execution.ib import IbBroker
from services.execution.simbroker import SimBroker, SimConfig, SimOrder

log = get_logger(__name__)
ORDER, FILL, POSITION = spec("exec.order.{symbol}"), spec("exec.fill.{symbol}"), spec("exec.position")


class ExecutionApp(ServiceApp):
    name = "execution"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        x = settings.execution
        self.settings = settings
        tactic = Tactic(x.tactic_style, x.limit_offset_bps, x.chase_after_ms, x.slice_shares)
        bounds = FeedbackBounds(
            x.feedback, x.feedback_max_offset_bps, x.feedback_min_chase_ms, x.feedback_max_chase_ms
        )
        self.core = ExecutionCore(ExecConfig(x.account, x.flatten_on_kill, tactic, bounds), LiveClock())
        self.broker = SimBroker(
            SimConfig(
                submit_latency_ms=x.sim_submit_latency_ms,
                report_latency_ms=x.sim_report_latency_ms,
                commission=x.sim_commission,
            )
        )
        self.journal = Journal(x.journal)
        self.ib: IbBroker | None = None
        self.ib_session: IbSession | None = None
        self._ib_tasks: list[asyncio.Task[None]] = []
        self.market_ns = 0  # the broker's time: the latest market data seen
        self.published: dict[str, int] = {"orders": 0, "fills": 0, "positions": 0}
        self._lock = asyncio.Lock()  # one decision at a time: journal, send, publish
        self._panic: asyncio.Task[None] | None = None
        self.replay_finished = False

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        self.core.clock = rt.clock
        self.broker.exec_prefix = f"sim{rt.started_ns}"
        self.core.instance = f"exec{rt.started_ns}"
        restored = self.core.restore(self.journal.read())
        if restored:
            log.warning("restored orders from the journal; outcomes unresolved", orders=len(restored))
        await self._publish(restored)
        if self.settings.execution.broker == "ib":
            self._start_ib()
            await rt.serve("broker.whatif", self._what_if)
        last = await rt.last("exec.position")
        if (
            last is not None
            and isinstance(last[0], PositionSnapshot)
            and self.core.restore_positions(last[0])
        ):
            log.warning("positions restored from the last snapshot", positions=len(last[0].positions))
        await rt.subscribe("md.>", self._on_market)
        await rt.subscribe("ctl.>", self._on_control, durable="execution-ctl", new_only=True)
        # An approval fetched but not journaled when the process died comes back after ack_wait:
        # short, because approvals expire (a late one is refused, never sent stale).
        await rt.subscribe(
            "order.approved.>", self._on_approved, durable="execution", new_only=True, ack_wait_s=2.0
        )
        # Every feedback the stream keeps, oldest first: after a restart the latest per symbol wins.
        await rt.subscribe("tca.feedback.>", self._on_feedback)
        if self.settings.execution.panic_file is not None:
            self._panic = asyncio.create_task(self._watch_panic(self.settings.execution.panic_file))

    def _start_ib(self) -> None:
        from libs.common.ib.session import IbSession, session_config
        from services.execution.ib import IbBroker

        ib = self.settings.ib
        config = session_config(ib, ib.exec_client_id)
        self.ib_session = IbSession(config, self._on_ib_event)
        ids = self.settings.execution.journal.parent / "ib-order-ids.jsonl"
        self.ib = IbBroker(self.ib_session, ids, account=ib.account, our_positions=self._positions)
        self._ib_tasks = [
            asyncio.create_task(self.ib_session.run(), name="ib-session"),
            asyncio.create_task(self.ib.keep_reconciled(ib.reconcile_every_s), name="ib-reconcile"),
            asyncio.create_task(self._pump_ib_reports(), name="ib-reports"),
        ]

    async def _what_if(self, request: Event) -> Event:
        """The risk gate's margin question, answered by IB's what-if (never routed)."""
        assert self.ib is not None and isinstance(request, MarginCheck)
        now = self.rt.now_ns()
        order = SimOrder(
            f"wi-{request.request_id}",
            request.symbol,
            request.side,
            request.quantity,
            "LMT" if request.limit_price else "MKT",
            request.limit_price,
        )
        try:
            preview = await self.ib.what_if(order)
        except (TimeoutError, ConnectionError) as exc:
            preview, error = None, repr(exc)
        else:
            error = "" if preview is not None else "no what-if answer from IB"
        known = preview is not None and not preview.error
        return MarginReply(
            ts_event=request.ts_event,
            ts_init=now,
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

    def _on_ib_event(self, name: str, args: tuple[Any, ...]) -> None:
        assert self.ib is not None
        self.ib.on_event(name, args)

    async def _pump_ib_reports(self) -> None:
        assert self.ib is not None
        while True:
            try:
                report = await asyncio.wait_for(self.ib.reports.get(), 0.25)
            except TimeoutError:
                self.ib.on_event("tick", ())  # fills whose commission never came go out now
                continue
            async with self._lock:
                await self._act(self.core.on_report(report))

    async def _on_market(self, d: Delivery) -> None:
        e = d.event
        if self.ib is not None:  # the venue is IB: market data only marks positions
            if isinstance(e, Quote):
                self.core.on_quote(e)
            return
        if isinstance(e, Quote):
            self.market_ns = max(self.market_ns, e.ts_event)
            self.core.on_quote(e)
            reports = self.broker.on_quote(e.symbol, e.ts_event, e.bid, e.ask, e.bid_size, e.ask_size)
        elif isinstance(e, Trade):
            self.market_ns = max(self.market_ns, e.ts_event)
            reports = self.broker.on_trade(e.symbol, e.ts_event, e.price, e.size)
        elif isinstance(e, FeedStatus) and e.state == "replay_finished":
            self.replay_finished = True
            reports = self.broker.end_of_data()
        else:
            return
        if not reports and not self.core.chasing:
            return  # the common tick: nothing due, nothing to reprice, no lock taken
        async with self._lock:
            for report in reports:
                await self._act(self.core.on_report(report))  # a next slice is journaled and sent
            await self._act(self.core.on_time(self.market_ns))

    async def _on_approved(self, d: Delivery) -> None:
        if isinstance(d.event, OrderApproved):
            async with self._lock:
                await self._act(self.core.on_approved(d.event))
                if self.replay_finished and self.ib is None:  # no market data will come to trade it against
                    for report in self.broker.end_of_data():
                        await self._act(self.core.on_report(report))

    async def _on_feedback(self, d: Delivery) -> None:
        if isinstance(d.event, TcaFeedback) and self.core.on_feedback(d.event):
            log.info(
                "tca feedback applied",
                symbol=d.event.symbol,
                tactic=str(self.core.tactic_for(d.event.symbol)),
            )

    async def _on_control(self, d: Delivery) -> None:
        if isinstance(d.event, Control):
            async with self._lock:
                if d.event.command == "kill" and self.ib is not None:
                    self.ib.global_cancel()  # everything at IB, ours or not yet known to us
                await self._act(self.core.on_control(d.event))

    async def _act(self, out: Outcome) -> None:
        """Journal, then act: a crash between the two leaves a journaled order that restart marks
        UNRESOLVED, never an order sent and forgotten."""
        for action in out.actions:
            if isinstance(action, JournalRecord):
                await asyncio.to_thread(self.journal.append, action)
            elif self.ib is not None:
                await self._act_ib(action)
            elif isinstance(action, Send):
                self.broker.submit(action.order, self.market_ns)
            elif isinstance(action, Cancel):
                self.broker.cancel(action.client_order_id, self.market_ns)
            elif isinstance(action, Replace):
                self.broker.replace(
                    action.client_order_id,
                    self.market_ns,
                    action.quantity,
                    action.limit_price,
                    action.stop_price,
                )
        await self._publish(out.events)

    async def _act_ib(self, action: Send | Cancel | Replace) -> None:
        assert self.ib is not None
        now = self.rt.now_ns()
        if isinstance(action, Send):
            await self.ib.submit(action.order, now)
        elif isinstance(action, Cancel):
            await self.ib.cancel(action.client_order_id, now)
        else:
            await self.ib.replace(
                action.client_order_id, now, action.quantity, action.limit_price, action.stop_price
            )

    async def _publish(self, events: list[Event]) -> None:
        for e in events:
            if isinstance(e, OrderEvent):
                await self.rt.publish(ORDER.subject(symbol=e.symbol), e)
                self.published["orders"] += 1
            elif isinstance(e, Fill):
                await self.rt.publish(FILL.subject(symbol=e.symbol), e)
                self.published["fills"] += 1
            elif isinstance(e, PositionSnapshot):
                await self.rt.publish(POSITION.subject(), e)
                self.published["positions"] += 1

    async def _watch_panic(self, path: Path) -> None:
        # Polling is the point: a panic file works from any shell (`touch`), on any filesystem.
        while not path.exists():  # noqa: ASYNC110, ASYNC240 - a stat every 200 ms
            await asyncio.sleep(0.2)
        log.error("panic file found: kill switch", path=str(path))
        now = self.rt.now_ns()
        kill = Control(
            ts_event=now, ts_init=now, command_id=f"panic-{now}", command="kill", issued_by="panic-file"
        )
        async with self._lock:
            await self._act(self.core.on_control(kill))

    async def stop(self) -> None:
        if self.ib_session is not None:
            await self.ib_session.stop()
        for task in self._ib_tasks:
            task.cancel()
        if self._panic is not None:
            self._panic.cancel()
        self.journal.close()

    def status(self) -> dict[str, Any]:
        positions = {s: p.quantity for s, p in self.core.positions.items() if p.quantity}
        return {
            **self.published,
            "killed": self.core.killed,
            "open_orders": sum(1 for o in self.core.orders.values() if not o.terminal),
            "positions": positions,
            "realized_pnl": round(sum(p.realized for p in self.core.positions.values()), 2),
            "stats": dict(self.core.stats),
            "tactics": {s: str(t) for s, t in sorted(self.core.tactics.items())},
            **({"ib": self.ib.summary()} if self.ib is not None else {}),
            "journal": str(self.journal.path),
        }
