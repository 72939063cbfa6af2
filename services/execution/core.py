"""The execution core: approvals in; orders to the broker (journaled first), order events, fills
and positions out. Pure: the runtime does the journal's I/O and talks to the broker.

Every decision comes back as *actions* for the runtime, in order: a ``Journal`` record that must
be durable before the ``Send`` or ``Cancel`` that follows it. After a restart the runtime replays
the journal through ``restore``: an order journaled as sent is never sent again (its outcome is
UNRESOLVED until the broker's reports or a reconciliation settle it), and an approval that never
reached the journal was never sent, so its redelivery sends it once.

Fail closed: an approval older than its ``valid_until_ns`` is refused (if the risk gate is down,
nothing trades); after a kill, every approval is refused until ``resume``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from libs.common.clock import Clock
from libs.common.positions import Position
from proto.base import Event
from proto.control import Control
from proto.execution import Fill, OrderEvent, PositionSnapshot
from proto.execution import Position as PositionRow
from proto.market import Quote
from proto.orders import OrderApproved
from services.execution.orders import LIVE, Order
from services.execution.simbroker import Report, SimOrder


class JournalRecord(msgspec.Struct, frozen=True, tag=True):
    """One line of the write-ahead journal (msgpack, appended and fsynced before the action)."""

    kind: Literal["send", "cancel"]
    client_order_id: str
    ts: int
    symbol: str = ""
    side: str = ""
    quantity: float = 0.0
    order_type: str = "MKT"
    limit_price: float | None = None
    stop_price: float | None = None
    tif: str = "DAY"
    reason: str = ""


@dataclass(frozen=True)
class Send:
    order: SimOrder


@dataclass(frozen=True)
class Cancel:
    client_order_id: str


Action = JournalRecord | Send | Cancel
SUPPORTED_TYPES = frozenset({"MKT", "LMT", "STP", "STP_LMT"})  # brackets and trailing stops: next


@dataclass
class ExecConfig:
    account: str = "SIM"
    flatten_on_kill: bool = False


@dataclass
class Outcome:
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def __iadd__(self, other: Outcome) -> Outcome:
        self.actions += other.actions
        self.events += other.events
        return self


class ExecutionCore:
    def __init__(self, config: ExecConfig, clock: Clock) -> None:
        self.cfg = config
        self.clock = clock
        self.orders: dict[str, Order] = {}
        self.positions: dict[str, Position] = {}
        self.killed = False
        self.snapshot_seq = 0
        self.instance = "exec"  # the runtime makes it unique per process (snapshot dedupe ids)
        self.stats: collections.Counter[str] = collections.Counter()
        self._flatten_seq = 0

    # -- approvals ------------------------------------------------------------------------------
    def on_approved(self, a: OrderApproved) -> Outcome:
        now = self.clock.now_ns()
        if a.client_order_id in self.orders:
            self.stats["duplicate_approvals"] += 1  # journaled already: never a second order
            return Outcome()
        if self.killed:
            return self._refuse(a, now, "kill switch engaged")
        if a.valid_until_ns and now > a.valid_until_ns:
            return self._refuse(a, now, f"approval expired {(now - a.valid_until_ns) / 1e6:.0f} ms ago")
        if a.order_type not in SUPPORTED_TYPES:  # never quietly turned into something else
            return self._refuse(a, now, f"order type {a.order_type} not supported by this broker")
        order = SimOrder(
            a.client_order_id,
            a.symbol,
            a.side,
            a.quantity,
            a.order_type,  # type: ignore[arg-type]
            a.limit_price,
            a.stop_price,
            a.tif,
        )
        return self._send(order, now, reason=f"intent {a.intent_id}")

    def _send(self, order: SimOrder, now: int, reason: str) -> Outcome:
        self.orders[order.client_order_id] = Order(
            order.client_order_id, order.symbol, order.side, order.quantity
        )
        record = JournalRecord(
            "send",
            order.client_order_id,
            now,
            order.symbol,
            order.side,
            order.quantity,
            order.order_type,
            order.limit_price,
            order.stop_price,
            order.tif,
            reason,
        )
        self.stats["sent"] += 1
        return Outcome([record, Send(order)], [self._event(self.orders[order.client_order_id], now, reason)])

    def _refuse(self, a: OrderApproved, now: int, reason: str) -> Outcome:
        self.stats["refused"] += 1
        order = Order(a.client_order_id, a.symbol, a.side, a.quantity)
        order.move("REJECTED", reason)
        self.orders[a.client_order_id] = order
        return Outcome(events=[self._event(order, now, reason)])

    # -- the broker's reports --------------------------------------------------------------------
    def on_report(self, r: Report) -> Outcome:
        order = self.orders.get(r.client_order_id)
        if order is None:
            self.stats["reports_for_unknown_orders"] += 1
            return Outcome()
        now = r.ts
        if r.kind == "fill":
            applied = order.fill(r.exec_id, r.quantity, r.price)
            if applied <= 0:
                self.stats["fills_ignored"] += 1
                return Outcome()
            pos = self.positions.setdefault(order.symbol, Position())
            pos.apply(applied if order.side == "BUY" else -applied, r.price, r.commission)
            pos.mark = pos.mark or r.price
            fill = Fill(
                ts_event=r.venue_ts,
                ts_init=self.clock.now_ns(),
                exec_id=r.exec_id,
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                side=order.side,  # type: ignore[arg-type]
                quantity=applied,
                price=r.price,
                commission=r.commission,
                liquidity=r.liquidity,
            )
            return Outcome(events=[self._event(order, now), fill, self.snapshot(now)])
        status = {"ack": "SUBMITTED", "cancelled": "CANCELLED", "rejected": "REJECTED"}[r.kind]
        if not order.move(status, r.reason):  # type: ignore[arg-type]
            self.stats["reports_ignored"] += 1
            return Outcome()
        return Outcome(events=[self._event(order, now, r.reason)])

    def on_quote(self, q: Quote) -> None:
        pos = self.positions.get(q.symbol)
        if pos is not None:
            pos.mark = (q.bid + q.ask) / 2

    # -- the kill switch ----------------------------------------------------------------------------
    def on_control(self, c: Control) -> Outcome:
        now = self.clock.now_ns()
        if c.command == "resume":
            self.killed = False
            return Outcome()
        if c.command not in ("kill", "cancel_all", "flatten"):
            return Outcome()
        out = Outcome()
        if c.command == "kill":
            self.killed = True
        for order in self.orders.values():
            if order.status in LIVE:
                out.actions += [
                    JournalRecord("cancel", order.client_order_id, now, reason=c.command),
                    Cancel(order.client_order_id),
                ]
        flatten = c.command == "flatten" or (
            c.command == "kill" and (self.cfg.flatten_on_kill or c.args.get("flatten") == "true")
        )
        if flatten:
            for symbol, pos in self.positions.items():
                if pos.quantity:
                    self._flatten_seq += 1
                    cid = f"flat-{c.command_id}-{self._flatten_seq}"
                    side: Literal["BUY", "SELL"] = "SELL" if pos.quantity > 0 else "BUY"
                    out += self._send(
                        SimOrder(cid, symbol, side, abs(pos.quantity)), now, f"{c.command} by {c.issued_by}"
                    )
        self.stats[f"control_{c.command}"] += 1
        return out

    # -- restart --------------------------------------------------------------------------------------
    def restore(self, records: list[JournalRecord]) -> list[Event]:
        """Rebuild from the journal after a restart: every order sent is known (and will not be sent
        again); its outcome is UNRESOLVED until the broker's reports settle it."""
        events: list[Event] = []
        now = self.clock.now_ns()
        for rec in records:
            if rec.kind == "send" and rec.client_order_id not in self.orders:
                order = Order(rec.client_order_id, rec.symbol, rec.side, rec.quantity)
                order.move("UNRESOLVED", "restarted: outcome unknown until reconciled")
                self.orders[rec.client_order_id] = order
                events.append(self._event(order, now, order.reason))
        self.stats["restored"] = len(events)
        return events

    # -- events ---------------------------------------------------------------------------------------
    def _event(self, order: Order, ts: int, reason: str = "") -> OrderEvent:
        return OrderEvent(
            ts_event=ts,
            ts_init=self.clock.now_ns(),
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            status=order.status,
            seq=order.seq,
            side=order.side,  # type: ignore[arg-type]
            quantity=order.quantity,
            filled_quantity=order.filled,
            avg_fill_price=order.avg_price or None,
            reason=reason or order.reason,
        )

    def snapshot(self, ts: int) -> PositionSnapshot:
        self.snapshot_seq += 1
        positions = [
            PositionRow(
                symbol=s,
                quantity=p.quantity,
                avg_price=p.avg_price,
                mark=p.mark,
                realized_pnl=p.realized,
                unrealized_pnl=p.unrealized,
            )
            for s, p in sorted(self.positions.items())
        ]
        return PositionSnapshot(
            ts_event=ts,
            ts_init=self.clock.now_ns(),
            account=self.cfg.account,
            seq=self.snapshot_seq,
            instance=self.instance,
            positions=positions,
            realized_pnl=sum(p.realized for p in self.positions.values()),
            unrealized_pnl=sum(p.unrealized for p in self.positions.values()),
        )
