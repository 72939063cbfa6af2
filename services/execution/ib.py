"""The Interactive Brokers broker for the execution gateway, on the official ibapi client
(libs/common/ib/session.py), behind the Broker seam (broker.py): orders in (``submit``,
``cancel``, ``replace``), ``BrokerReport`` objects out through the sink given to ``start``, since
IB answers when it answers.

The rules it keeps (../shared/reference/ib-api.md, section 6, "Execution gateway"):
- a fixed client id (IB binds orders to the client id that placed them);
- order id = max(nextValidId, last used + 1), persisted (fsync) before the order is sent, with
  the client order id it carries: a nextValidId rolled back by a Gateway restart never makes a
  reused id (103), and reports map back to client order ids after our own restart;
- orderRef = client order id on every order; eTradeOnly and firmQuoteOnly False (9.81's defaults
  are rejected by current TWS with 10268);
- brackets as native IB orders: legs carry the entry's parentId, share an OCA group, and only the
  last one transmits; trailing stops as TRAIL with an amount (auxPrice) or a percent;
- the lifecycle: PreSubmitted/Submitted -> ack; Cancelled or 202 -> cancelled; Inactive -> rejected
  with the 201 reason (unless held for a short-sale locate: still live); 103 -> rejected, ids
  re-synced with reqIds, never retried blindly; 10147/10148 on a cancel are counted;
- fills keyed by execId (deduplicated), commissions joined by execId: a fill waits up to
  ``commission_wait_s`` for its commission report, then goes out with the commission unknown
  (an unset value, 1.797e308, is unknown too);
- reconcile on every (re)connect before anything is sent: positions, open orders, then
  executions; a query that fails or times out is *unknown*, never *empty*; fills missed while
  away are recovered from the executions; no order is resubmitted;
- the kill switch sends reqGlobalCancel.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ibapi.client import EClient
from ibapi.contract import Contract
from ibapi.execution import ExecutionFilter
from ibapi.order import Order as IbOrder

from libs.common.config import IbSettings
from libs.common.ib.session import IbSession
from libs.common.logging import get_logger
from proto.base import Event
from services.execution.broker import BrokerOrder, BrokerReport, MarginPreview, ReportSink

log = get_logger(__name__)
UNSET = 1.7e308
IB_TYPES = {"MKT": "MKT", "LMT": "LMT", "STP": "STP", "STP_LMT": "STP LMT", "TRAIL": "TRAIL"}


class OrderIds:
    """The order-id allocator and the client order id <-> IB order id map, on disk: one JSON line
    per id, appended and fsynced before the order it numbers is sent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.last_used = 0
        self.by_client: dict[str, int] = {}
        self.by_ib: dict[int, str] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a torn last line: that order was never sent
                self._remember(str(row["cid"]), int(row["id"]))

    def _remember(self, cid: str, order_id: int) -> None:
        self.by_client[cid], self.by_ib[order_id] = order_id, cid
        self.last_used = max(self.last_used, order_id)

    def allocate(self, cid: str, next_valid_id: int) -> int:
        order_id = max(next_valid_id, self.last_used + 1)
        with self.path.open("a") as f:
            f.write(json.dumps({"cid": cid, "id": order_id}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._remember(cid, order_id)
        return order_id


@dataclass
class Reconciliation:
    """What IB said after a (re)connect; ``None`` for a query that failed: unknown, not empty."""

    positions: dict[str, float] | None = None
    open_orders: set[str] | None = None  # client order ids IB still works
    executions: int | None = None  # executions IB reported
    account: dict[str, float] | None = None  # account summary tags (NetLiquidation, BuyingPower...)
    recovered_fills: int = 0
    at: float = 0.0
    ours: dict[str, float] | None = None  # our positions when IB's answered


def _ib_number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if value >= UNSET else value


@dataclass
class _PendingFill:
    report: BrokerReport
    deadline: float


@dataclass
class _Query:
    req_id: int = -1  # the request's id, where it has one (errors name it)
    rows: list[Any] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class IbBroker:
    """``settings``: the ``ib`` section; the session uses ``exec_client_id`` (IB binds orders to the
    client id that placed them) unless ``client_id`` says otherwise."""

    name = "ib"

    def __init__(
        self,
        settings: IbSettings,
        ids_path: Path,
        *,
        client_id: int | None = None,
        commission_wait_s: float = 1.0,
        query_timeout_s: float = 10.0,
        send_timeout_s: float = 5.0,
        wall_ns: Callable[[], int] = time.time_ns,
        our_positions: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self.settings = settings
        self.ib = IbSession(
            settings, settings.exec_client_id if client_id is None else client_id, self.on_event
        )
        self.our_positions = our_positions
        self.ids = OrderIds(ids_path)
        self.account = settings.account
        self.commission_wait_s = commission_wait_s
        self.query_timeout_s = query_timeout_s
        self.send_timeout_s = send_timeout_s
        self.wall_ns = wall_ns
        self.reports: asyncio.Queue[BrokerReport] = asyncio.Queue()
        self.orders: dict[str, BrokerOrder] = {}  # what we sent, by client order id
        self.acked: set[str] = set()
        self.ended: set[str] = set()
        self.exec_ids: set[str] = set()
        self.filled: dict[str, float] = collections.defaultdict(float)  # client order id -> shares
        self.pending: dict[str, _PendingFill] = {}  # exec id -> fill waiting for its commission
        self.commissions: dict[str, float | None] = {}  # exec id -> commission that came first
        self.reject_reasons: dict[int, str] = {}
        self.reconciled = asyncio.Event()
        self.last_reconciliation: Reconciliation | None = None
        self.stats: collections.Counter[str] = collections.Counter()
        self._queries: dict[str, _Query] = {}
        self._previews: dict[int, asyncio.Future[MarginPreview]] = {}
        self._refresh = False  # 1101/1102: connectivity came back; reconcile and re-read the account
        self._what_if_seq = 0
        self.pending_cancels: set[str] = set()
        self._req_ids = iter(range(90_000, 10**9))
        self._tasks: list[asyncio.Task[None]] = []
        self._positions_lock = asyncio.Lock()

    # -- the Broker seam ---------------------------------------------------------------------------
    async def start(self, reports: ReportSink, namespace: str = "") -> None:
        """Connect and stay connected, reconcile after every connection and every
        ``reconcile_every_s``, and hand every report to ``reports`` as IB makes it."""
        self._tasks = [
            asyncio.create_task(self.ib.run(), name="ib-session"),
            asyncio.create_task(self.keep_reconciled(self.settings.reconcile_every_s), name="ib-reconcile"),
            asyncio.create_task(self._pump(reports), name="ib-reports"),
        ]

    async def stop(self) -> None:
        await self.ib.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _pump(self, sink: ReportSink) -> None:
        while True:
            try:
                report = await asyncio.wait_for(self.reports.get(), 0.25)
            except TimeoutError:
                self.on_event("tick", ())  # fills whose commission never came go out now
                continue
            await sink(report)

    def now_ns(self) -> int:
        return self.wall_ns()

    def on_market(self, event: Event) -> list[BrokerReport]:
        return []  # IB trades against its own market; ours only marks positions

    def due(self) -> list[BrokerReport]:
        return []  # IB reports on its own time, through the sink

    async def cancel_all(self) -> None:
        self.global_cancel()

    async def positions(self) -> dict[str, float] | None:
        """IB's positions now (reqPositions); None when the query fails or times out. IB's position
        rows name no request: one positions query at a time, or rows would mix."""
        async with self._positions_lock:
            rows = await self._query("positions", lambda c: c.reqPositions())
        if rows is None:
            return None
        held: collections.defaultdict[str, float] = collections.defaultdict(float)
        for symbol, quantity in rows:
            held[symbol] += quantity
        return {k: v for k, v in held.items() if v}

    # -- orders ------------------------------------------------------------------------------------
    async def submit(self, order: BrokerOrder) -> None:
        """Number it (durably), then send it: never before the reconciliation after a connect,
        and never late: an order that cannot go within ``send_timeout_s`` is rejected unsent
        (an approval is a decision about the market as it was, not as it will be)."""
        try:
            await asyncio.wait_for(self.reconciled.wait(), self.send_timeout_s)
        except TimeoutError:
            self._end(order.client_order_id, "rejected", "IB not connected and reconciled: not sent")
            return
        order_id = self.ids.allocate(order.client_order_id, self.ib.next_valid_id)
        self.orders[order.client_order_id] = order
        parent_id = self.ids.by_client.get(order.parent_id, 0) if order.parent_id else 0
        contract, ib_order = _contract(order.symbol), self._ib_order(order, parent_id)
        try:
            await self.ib.send(lambda c: c.placeOrder(order_id, contract, ib_order))
        except ConnectionError:  # the socket closed before the order was written: never sent
            self._end(order.client_order_id, "rejected", "IB connection lost before sending: not sent")
            return
        self.stats["sent"] += 1

    async def cancel(self, client_order_id: str) -> None:
        order_id = self.ids.by_client.get(client_order_id)
        if order_id is None:
            self.stats["cancel_unknown"] += 1
            return
        try:
            await self.ib.send(lambda c: c.cancelOrder(order_id))
        except ConnectionError:  # a cancel is always safe to repeat: again after reconnecting
            self.pending_cancels.add(client_order_id)
            self.stats["cancels_deferred"] += 1

    async def _resend_cancels(self) -> None:
        for cid in sorted(self.pending_cancels):
            self.pending_cancels.discard(cid)
            if cid not in self.ended:
                await self.cancel(cid)

    async def replace(
        self,
        client_order_id: str,
        quantity: float | None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
    ) -> None:
        """IB modifies an order by placing it again under the same id."""
        order, order_id = self.orders.get(client_order_id), self.ids.by_client.get(client_order_id)
        if order is None or order_id is None:
            self._report("replace_rejected", client_order_id, reason="unknown order")
            return
        order.quantity = quantity or order.quantity
        order.limit_price = limit_price if limit_price is not None else order.limit_price
        order.stop_price = stop_price if stop_price is not None else order.stop_price
        parent_id = self.ids.by_client.get(order.parent_id, 0) if order.parent_id else 0
        contract, ib_order = _contract(order.symbol), self._ib_order(order, parent_id)
        await self.ib.send(lambda c: c.placeOrder(order_id, contract, ib_order))
        self._report("replaced", client_order_id, quantity=order.quantity, price=order.limit_price or 0.0)

    def global_cancel(self) -> bool:
        """The kill switch: IB cancels every open order of the account (not paced: one message)."""
        self.stats["global_cancels"] += 1
        return self.ib.send_now(lambda c: c.reqGlobalCancel())

    async def what_if(self, order: BrokerOrder, timeout_s: float = 5.0) -> MarginPreview | None:
        """IB's margin and commission preview of ``order`` (never routed). A fresh order id, kept
        like any other (TWS counts it as used). None when IB does not answer in time: unknown.
        IB's first answer can carry numbers not to trust; the one with a commission currency counts."""
        await asyncio.wait_for(self.reconciled.wait(), self.send_timeout_s)
        self._what_if_seq += 1
        ref = f"whatif-{self._what_if_seq}-{order.client_order_id}"
        order_id = self.ids.allocate(ref, self.ib.next_valid_id)
        future: asyncio.Future[MarginPreview] = asyncio.get_running_loop().create_future()
        self._previews[order_id] = future
        ib_order = self._ib_order(order, 0)
        ib_order.whatIf, ib_order.orderRef = True, ""
        contract = _contract(order.symbol)
        await self.ib.send(lambda c: c.placeOrder(order_id, contract, ib_order))
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            self.stats["what_if_timeouts"] += 1
            return None
        finally:
            self._previews.pop(order_id, None)

    def _ib_order(self, o: BrokerOrder, parent_id: int) -> IbOrder:
        ib = IbOrder()
        ib.action, ib.totalQuantity, ib.orderType = o.side, o.quantity, IB_TYPES[o.order_type]
        ib.tif, ib.orderRef, ib.account = o.tif, o.client_order_id, self.account
        ib.eTradeOnly = ib.firmQuoteOnly = False  # 10268 otherwise (9.81 defaults them to True)
        if o.order_type in ("LMT", "STP_LMT"):
            ib.lmtPrice = o.limit_price
        if o.order_type in ("STP", "STP_LMT"):
            ib.auxPrice = o.stop_price
        if o.order_type == "TRAIL":
            if o.trail_amount:
                ib.auxPrice = o.trail_amount
            else:
                ib.trailingPercent = o.trail_percent
        ib.parentId, ib.ocaGroup = parent_id, o.oca_group
        if o.oca_group:
            ib.ocaType = 2  # reduce the other legs by each fill (IB's bracket behaviour)
        ib.transmit = o.transmit
        return ib

    # -- IB's callbacks --------------------------------------------------------------------------
    def on_event(self, name: str, args: tuple[Any, ...]) -> None:
        handler = getattr(self, f"_on_{name}", None)
        if handler is not None:
            handler(*args)
        self._flush_pending()

    def _on_orderStatus(
        self, order_id: int, status: str, filled: float, remaining: float, *rest: Any
    ) -> None:
        cid = self.ids.by_ib.get(order_id)
        if cid is None or cid in self.ended:
            return
        why_held = str(rest[5]) if len(rest) > 5 else ""
        if status in ("PreSubmitted", "Submitted") and cid not in self.acked:
            self.acked.add(cid)
            self._report("ack", cid)
        elif status in ("Cancelled", "ApiCancelled"):
            self._end(cid, "cancelled", "cancelled at IB")
        elif status == "Inactive":
            if why_held == "locate":  # held for a short-sale locate: still alive
                self.stats["held_for_locate"] += 1
                return
            self._end(cid, "rejected", self.reject_reasons.get(order_id, "inactive at IB"))

    def _on_error(self, req_id: int, code: int, text: str) -> None:
        cid = self.ids.by_ib.get(req_id)
        if code in {201, 10268}:
            self.reject_reasons[req_id] = f"{code} {text}"
            if code == 10268 and cid is not None:
                self._end(cid, "rejected", f"{code} {text}")
        elif code == 202 and cid is not None:
            self._end(cid, "cancelled", text)
        elif code == 103 and cid is not None:
            # Duplicate id: this order never reached the book. Re-sync ids; never resend blindly.
            self._end(cid, "rejected", "103 duplicate order id (ids re-synced; not resent)")
            self.ib.send_now(lambda c: c.reqIds(-1))
        elif code in (10147, 10148):
            self.stats[f"cancel_error_{code}"] += 1
        preview = self._previews.get(req_id)
        if preview is not None and not preview.done() and code not in range(2100, 2200):
            preview.set_result(MarginPreview(None, None, None, None, None, error=f"{code} {text}"))
        if code in (1101, 1102):
            self._refresh = True
        for q in self._queries.values():
            if q.req_id == req_id and req_id >= 0:  # a failed query: unknown, not empty
                q.rows = [None]
                q.done.set()

    def _on_execDetails(self, req_id: int, contract: Any, execution: Any) -> None:
        query = self._queries.get("executions")
        if query is not None and req_id != -1:
            query.rows.append((contract, execution))
        self._execution(contract, execution, listed=req_id != -1)

    def _execution(self, contract: Any, execution: Any, listed: bool = False) -> bool:
        """``listed``: from a reqExecutions answer, which lists what we may have seen already."""
        cid = execution.orderRef or self.ids.by_ib.get(execution.orderId)
        exec_id = str(execution.execId)
        if exec_id in self.exec_ids:
            self.stats["executions_listed_again" if listed else "duplicate_executions"] += 1
            return False
        if not cid or cid not in self.ids.by_client:
            self.stats["executions_not_ours"] += 1
            return False
        self.exec_ids.add(exec_id)
        self.filled[cid] += float(execution.shares)
        now = self.wall_ns()
        report = BrokerReport(
            kind="fill",
            client_order_id=cid,
            ts=now,
            venue_ts=now,
            quantity=float(execution.shares),
            price=float(execution.price),
            exec_id=exec_id,
            commission=None,
            liquidity={1: "ADD", 2: "REMOVE"}.get(
                int(getattr(execution, "lastLiquidity", 0) or 0), "UNKNOWN"
            ),  # type: ignore[arg-type]
        )
        if exec_id in self.commissions:
            self._put(dataclasses.replace(report, commission=self.commissions.pop(exec_id)))
        else:
            self.pending[exec_id] = _PendingFill(report, time.monotonic() + self.commission_wait_s)
        return True

    def _on_commissionReport(self, cr: Any) -> None:
        exec_id = str(cr.execId)
        value = None if cr.commission is None or cr.commission >= UNSET else float(cr.commission)
        pending = self.pending.pop(exec_id, None)
        if pending is not None:
            self._put(dataclasses.replace(pending.report, commission=value))
        elif exec_id in self.exec_ids:
            self.stats["late_commissions"] += 1  # its fill went out with the commission unknown
            log.warning("commission after its fill was published", exec_id=exec_id, commission=value)
        else:
            self.commissions[exec_id] = value  # before its execution (it happens)

    def _flush_pending(self) -> None:
        now = time.monotonic()
        for exec_id, p in list(self.pending.items()):
            if now >= p.deadline:
                del self.pending[exec_id]
                self.stats["fills_without_commission"] += 1
                self._put(p.report)

    def _on_position(self, account: str, contract: Any, position: float, avg_cost: float) -> None:
        q = self._queries.get("positions")
        if q is not None:
            q.rows.append((contract.symbol, float(position)))

    def _on_positionEnd(self) -> None:
        self._done("positions")

    def _on_openOrder(self, order_id: int, contract: Any, order: Any, state: Any) -> None:
        if getattr(order, "whatIf", False):
            future = self._previews.get(order_id)
            if future is not None and not future.done() and state.commissionCurrency:
                future.set_result(
                    MarginPreview(
                        init_margin_change=_ib_number(state.initMarginChange),
                        maint_margin_change=_ib_number(state.maintMarginChange),
                        equity_with_loan_after=_ib_number(state.equityWithLoanAfter),
                        init_margin_after=_ib_number(state.initMarginAfter),
                        commission=_ib_number(state.commission),
                        warning=state.warningText or "",
                    )
                )
            return
        q = self._queries.get("open_orders")
        if q is not None:
            q.rows.append(order.orderRef or self.ids.by_ib.get(order_id, ""))

    def _on_openOrderEnd(self) -> None:
        self._done("open_orders")

    def _on_execDetailsEnd(self, req_id: int) -> None:
        self._done("executions")

    def _on_accountSummary(self, req_id: int, account: str, tag: str, value: str, currency: str) -> None:
        q = self._queries.get("account")
        if q is not None and (not self.account or account == self.account):
            number = _ib_number(value)
            if number is not None:
                q.rows.append((tag, number))

    def _on_accountSummaryEnd(self, req_id: int) -> None:
        self._done("account")

    def _on_nextValidId(self, order_id: int) -> None:
        if order_id <= self.ids.last_used:
            self.stats["next_valid_id_behind_used"] += 1  # a rollback: our persisted ids win

    def _on_disconnected(self) -> None:
        self.reconciled.clear()

    def _on_connectionClosed(self) -> None:
        self.reconciled.clear()

    def _done(self, name: str) -> None:
        q = self._queries.get(name)
        if q is not None:
            q.done.set()

    # -- reconciliation ------------------------------------------------------------------------------
    async def keep_reconciled(self, every_s: float = 60.0) -> None:
        """After every connection: reconcile, then let orders go; and again every ``every_s``
        while connected, so drift between our books and IB's shows within a minute."""
        last = 0.0
        while True:
            await self.ib.ready.wait()
            if not self.reconciled.is_set() or self._refresh or time.monotonic() - last >= every_s:
                self._refresh = False
                self.last_reconciliation = await self.reconcile()
                last = time.monotonic()
                self.reconciled.set()
                await self._resend_cancels()
            await asyncio.sleep(0.05)
            if not self.ib.ready.is_set():
                self.reconciled.clear()

    def summary(self) -> dict[str, Any]:
        """For status and the run summary: did IB's book match ours at the last reconciliation
        (``None``: unknown), and what was recovered."""
        r = self.last_reconciliation
        theirs = None if r is None else r.positions
        ours = None if r is None else r.ours
        return {
            "connected": self.ib.ready.is_set(),
            "reconciliations": self.stats["reconciliations"],
            "positions_at_ib": theirs,
            "positions_ours": ours,
            "positions_match": None if theirs is None or ours is None else theirs == ours,
            "account": None if r is None else r.account,
            "recovered_fills": 0 if r is None else r.recovered_fills,
            "duplicate_executions": self.stats["duplicate_executions"],
            "fills_without_commission": self.stats["fills_without_commission"],
            "late_commissions": self.stats["late_commissions"],
            "session": dict(self.ib.stats),
        }

    async def reconcile(self) -> Reconciliation:
        r = Reconciliation(at=time.time())
        r.positions = await self.positions()
        if r.positions is not None and self.our_positions is not None:
            r.ours = {k: v for k, v in self.our_positions().items() if v}
        opened = await self._query("open_orders", lambda c: c.reqOpenOrders())
        r.open_orders = None if opened is None else {cid for cid in opened if cid}
        before = len(self.exec_ids)
        req_id = next(self._req_ids)
        executions = await self._query(
            "executions", lambda c: c.reqExecutions(req_id, ExecutionFilter()), req_id
        )
        r.executions = None if executions is None else len(executions)
        r.recovered_fills = len(self.exec_ids) - before
        summary_id = next(self._req_ids)
        tags = "NetLiquidation,BuyingPower,AvailableFunds,GrossPositionValue"
        account = await self._query(
            "account", lambda c: c.reqAccountSummary(summary_id, "All", tags), summary_id
        )
        if account is not None:
            r.account = dict(account)
            await self.ib.send(lambda c: c.cancelAccountSummary(summary_id))
        self._settle_missing(r)
        self.stats["reconciliations"] += 1
        log.info(
            "ib reconciled",
            positions=r.positions,
            open_orders=None if r.open_orders is None else len(r.open_orders),
            executions=r.executions,
            recovered_fills=r.recovered_fills,
        )
        return r

    def _settle_missing(self, r: Reconciliation) -> None:
        """Orders IB still works are live (an order restored UNRESOLVED from the journal hears
        so); one we sent that IB no longer works and that did not fill whole is over. Only when
        both queries answered: an unknown never settles anything."""
        if r.open_orders is None or r.executions is None:
            return
        for cid in self.ids.by_client:
            if cid in self.ended or cid.startswith("whatif-"):  # previews are never orders
                continue
            if cid in r.open_orders:
                if cid not in self.acked:
                    self.acked.add(cid)
                    self._report("ack", cid, reason="working at IB (reconciled)")
                continue
            order = self.orders.get(cid)
            quantity = order.quantity if order is not None else None
            if quantity is not None and self.filled[cid] >= quantity - 1e-9:
                continue  # filled: the executions said so
            self._end(cid, "cancelled", "not working at IB after reconnect (reconciled)")

    async def _query(
        self, name: str, request: Callable[[EClient], None], req_id: int = -1
    ) -> list[Any] | None:
        q = self._queries[name] = _Query(req_id)
        try:
            await self.ib.send(request)
            await asyncio.wait_for(q.done.wait(), self.query_timeout_s)
        except (TimeoutError, ConnectionError):
            self.stats[f"query_failed_{name}"] += 1
            return None
        finally:
            self._queries.pop(name, None)
        return None if q.rows == [None] else q.rows

    # -- reports ---------------------------------------------------------------------------------------
    def _end(self, cid: str, kind: str, reason: str) -> None:
        if cid in self.ended:
            return
        self.ended.add(cid)
        self._report(kind, cid, reason=reason)

    def _report(self, kind: str, cid: str, **fields: Any) -> None:
        now = self.wall_ns()
        self._put(BrokerReport(kind=kind, client_order_id=cid, ts=now, venue_ts=now, **fields))  # type: ignore[arg-type]

    def _put(self, report: BrokerReport) -> None:
        self.stats[f"report_{report.kind}"] += 1
        self.reports.put_nowait(report)


def _contract(symbol: str) -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, "STK", "SMART", "USD"
    return c
