"""The execution core: approvals in; orders to the broker (journaled first), order events, fills
and positions out. Pure: the runtime does the journal's I/O and talks to the broker.

Every decision comes back as *actions* for the runtime, in order: a ``Journal`` record that must
be durable before the ``Send``, ``Cancel`` or ``Replace`` that follows it. After a restart the
runtime replays the journal through ``restore``: an order journaled as sent is never sent again
(its outcome is UNRESOLVED until the broker's reports or a reconciliation settle it), and an
approval that never reached the journal was never sent, so its redelivery sends it once.

Fail closed: an approval is taken only with the risk gate's signature (an HMAC over its fields,
libs/common/signing.py), checked before anything else is done with it: a forged one, or any one
when no key is configured, is refused (REJECTED), never journaled or sent, comes back as a dead
letter for the runtime to keep (``Outcome.dead_letter``) and raises a critical alert. An approval
older than its ``valid_until_ns``, or without one (0), is refused (if the risk gate is down,
nothing trades); after a kill, every approval is refused until ``resume``.

How an approved order reaches the broker:
- as approved (one broker order with the approval's client order id): every type, and market
  orders while no tactic says otherwise;
- a BRACKET is three broker orders: the entry, and its take-profit limit and stop-loss stop legs
  (``<id>.tp``, ``<id>.sl``), which the venue holds until the entry fills and which cancel each
  other (one OCA group);
- a market order with a *tactic* (from config or from TCA feedback, clamped to bounds) is worked
  as child orders ``<id>/1``, ``<id>/2``...: at most ``slice_shares`` each, one after another; in
  the LMT style each child is a limit priced from the touch, repriced (cancel/replace) to the far
  touch whenever it has waited ``chase_after_ms`` without filling. Order events and fills are
  published under the approved id (a fill names its child in ``order_ref``), so the risk gate,
  TCA and the recorder see one order.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from dataclasses import replace as copy_with
from typing import Literal

import msgspec

from libs.common import signing
from libs.common.clock import Clock
from libs.common.config import ExecutionSettings
from libs.common.positions import Position
from proto.alerts import Alert
from proto.base import Event
from proto.control import Control, ControlAck, ack_of, kill_notes, refusal
from proto.execution import LIVE_STATUSES, Fill, OrderEvent, PositionSnapshot
from proto.execution import Position as PositionRow
from proto.market import Quote
from proto.orders import OrderApproved, shape_problem
from proto.tca import TcaFeedback
from proto.units import BPS
from services.execution.broker import BrokerOrder, BrokerReport
from services.execution.orders import Order


class JournalRecord(msgspec.Struct, frozen=True, tag=True):
    """One line of the write-ahead journal (msgpack, appended and fsynced before the action)."""

    #: "done": an order's outcome (its terminal status in ``reason``), written after the fact, so a
    #: restart does not hold what the broker already settled as unresolved
    kind: Literal["send", "cancel", "replace", "done"]
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
    #: the approved order this broker order works (itself when sent as approved)
    parent: str = ""
    parent_quantity: float = 0.0


@dataclass(frozen=True)
class Send:
    order: BrokerOrder


@dataclass(frozen=True)
class Cancel:
    client_order_id: str


@dataclass(frozen=True)
class Replace:
    client_order_id: str
    quantity: float | None = None
    limit_price: float | None = None
    stop_price: float | None = None


Action = JournalRecord | Send | Cancel | Replace


@dataclass(frozen=True)
class Tactic:
    """How a market order is worked. The default sends it as approved."""

    style: Literal["MKT", "LMT"] = "MKT"
    limit_offset_bps: float = 0.0
    chase_after_ms: float = 2_000.0
    slice_shares: float = 0.0

    @property
    def plain(self) -> bool:
        return self.style == "MKT" and not self.slice_shares


UNTRUSTED_SEQ = -1  # the seq of a forged approval's REJECTED event: no order's lifecycle uses it
# An approval refused for its signature: the dead letter's reason, by what was wrong.
SIGNATURE_REFUSALS = {
    signing.MISSING: "signature_missing",
    signing.INVALID: "signature_invalid",
    signing.NO_KEY: "no_approval_key",
}


@dataclass
class Outcome:
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    #: (reason, detail): the input was refused as untrusted; the runtime keeps it as a dead letter
    dead_letter: tuple[str, str] | None = None

    def __iadd__(self, other: Outcome) -> Outcome:
        self.actions += other.actions
        self.events += other.events
        self.dead_letter = self.dead_letter or other.dead_letter
        return self


@dataclass
class Working:
    """One approved order and the broker order(s) working it."""

    order: Order
    template: BrokerOrder  # the order as approved (quantity: the whole)
    tactic: Tactic | None = None  # None: one broker order, as approved
    child: str = ""  # the broker order working it now
    child_quantity: float = 0.0
    child_filled: float = 0.0
    child_live: bool = False
    children: int = 0
    limit: float | None = None
    chase_at: int = 0
    stopping: bool = False  # a cancel was asked for: no further children
    order_type: str = "MKT"  # what we publish: the tactic's style for a worked market order


class ExecutionCore:
    """``tick``: the price grid of the limits it makes (market.tick_size). ``approval_key``: the
    risk gate's signing key (settings.signing); empty, every approval is refused."""

    def __init__(
        self, config: ExecutionSettings, clock: Clock, tick: float = 0.01, approval_key: bytes = b""
    ) -> None:
        self.cfg = config
        self.clock = clock
        self.tick = tick
        self.approval_key = approval_key
        self.default_tactic = Tactic(
            config.tactic_style, config.limit_offset_bps, config.chase_after_ms, config.slice_shares
        )
        self.orders: dict[str, Order] = {}
        self.working: dict[str, Working] = {}
        self.route: dict[str, str] = {}  # broker order id -> the approved order it works
        self.positions: dict[str, Position] = {}
        self.quotes: dict[str, Quote] = {}
        self.tactics: dict[str, Tactic] = {}  # per symbol, from TCA feedback
        # Limit children that may need a reprice: on_time runs per market event, so it looks
        # only at these, never at the day's every order.
        self.chasing: dict[str, Working] = {}
        self.killed = False
        self.snapshot_seq = 0
        self.instance = "exec"  # the runtime makes it unique per process (snapshot dedupe ids)
        self.stats: collections.Counter[str] = collections.Counter()
        self._flatten_seq = 0
        self._untrusted_seq = 0
        # The commands already obeyed: the same one twice must not flatten twice.
        self._controls_seen: collections.deque[str] = collections.deque(maxlen=1024)

    # -- approvals ------------------------------------------------------------------------------
    def on_approved(self, a: OrderApproved) -> Outcome:
        now = self.clock.now_ns()
        if why := signing.refusal(a, self.approval_key):  # first: nothing is done with a forgery
            return self._untrusted(a, now, why)
        if a.client_order_id in self.orders:
            self.stats["duplicate_approvals"] += 1  # journaled already: never a second order
            return Outcome()
        if self.killed:
            return self._refuse(a, now, "kill switch engaged")
        if a.valid_until_ns <= 0:  # unset: an approval that never expires is refused as a stale one
            return self._refuse(a, now, "approval without an expiry (valid_until_ns unset)")
        if now > a.valid_until_ns:
            return self._refuse(a, now, f"approval expired {(now - a.valid_until_ns) / 1e6:.0f} ms ago")
        problem = shape_problem(a)
        if problem:  # never quietly turned into something else
            return self._refuse(a, now, problem)
        reason = f"intent {a.intent_id}"
        if a.order_type == "BRACKET":
            return self._bracket(a, now, reason)
        template = BrokerOrder(
            a.client_order_id,
            a.symbol,
            a.side,
            a.quantity,
            a.order_type,
            a.limit_price,
            a.stop_price,
            a.tif,
            trail_amount=a.trail_amount,
            trail_percent=a.trail_percent,
        )
        tactic = self.tactic_for(a.symbol) if a.order_type == "MKT" and a.tif != "IOC" else None
        return self._start(template, now, reason, None if tactic is None or tactic.plain else tactic)

    def tactic_for(self, symbol: str) -> Tactic:
        return self.tactics.get(symbol, self.default_tactic)

    def _bracket(self, a: OrderApproved, now: int, reason: str) -> Outcome:
        cid, exit_side = a.client_order_id, "SELL" if a.side == "BUY" else "BUY"
        entry = BrokerOrder(
            cid, a.symbol, a.side, a.quantity, "LMT" if a.limit_price else "MKT", a.limit_price
        )
        entry.tif = a.tif
        legs = [
            BrokerOrder(f"{cid}.tp", a.symbol, exit_side, a.quantity, "LMT", a.take_profit_price, tif=a.tif),  # type: ignore[arg-type]
            BrokerOrder(f"{cid}.sl", a.symbol, exit_side, a.quantity, "STP", None, a.stop_loss_price, a.tif),  # type: ignore[arg-type]
        ]
        entry.transmit = legs[0].transmit = False  # IB: the bracket goes out with its last leg
        out = self._start(entry, now, reason, None)
        for leg in legs:
            leg.parent_id, leg.oca_group = cid, cid
            out += self._start(leg, now, f"bracket leg of {cid}", None)
        return out

    def _start(self, template: BrokerOrder, now: int, reason: str, tactic: Tactic | None) -> Outcome:
        cid = template.client_order_id
        order = Order(cid, template.symbol, template.side, template.quantity)
        self.orders[cid] = order
        w = Working(order, template, tactic, order_type=tactic.style if tactic else template.order_type)
        self.working[cid] = w
        self.stats["sent"] += 1
        out = self._send_child(w, now, reason)
        out.events.insert(0, self._event(w, now, reason))
        return out

    def _send_child(self, w: Working, now: int, reason: str) -> Outcome:
        """Journal and send the next broker order for ``w`` (the whole of it without a tactic)."""
        t, cid = w.tactic, w.order.client_order_id
        w.chase_at = 0
        if t is None:
            child = copy_with(w.template)
        else:
            w.children += 1
            quantity = min(w.order.remaining, t.slice_shares or w.order.remaining)
            child = copy_with(w.template, client_order_id=f"{cid}/{w.children}", quantity=quantity)
            quote = self.quotes.get(w.order.symbol)
            if t.style == "LMT" and quote is not None:
                child.order_type, child.limit_price = "LMT", self._limit_price(quote, w.order.side, t)
                w.chase_at = now + int(t.chase_after_ms * 1e6)
                self.chasing[cid] = w
            self.stats["children_sent"] += 1
        w.child, w.child_quantity, w.child_filled, w.child_live = (
            child.client_order_id,
            child.quantity,
            0.0,
            True,
        )
        w.limit = child.limit_price
        self.route[child.client_order_id] = cid
        record = JournalRecord(
            "send",
            child.client_order_id,
            now,
            child.symbol,
            child.side,
            child.quantity,
            child.order_type,
            child.limit_price,
            child.stop_price,
            child.tif,
            reason,
            parent=cid,
            parent_quantity=w.order.quantity,
        )
        return Outcome([record, Send(child)])

    def _limit_price(self, q: Quote, side: str, t: Tactic) -> float:
        """From the near touch toward the far one by the offset, never past the far touch, on the
        tick grid (rounded toward the near side: the offset is a ceiling, not a floor)."""
        mid, tick = (q.bid + q.ask) / 2, self.tick
        offset = mid * t.limit_offset_bps / BPS
        if side == "BUY":
            return _on_grid(min(q.bid + offset, q.ask), tick, down=True)
        return _on_grid(max(q.ask - offset, q.bid), tick, down=False)

    def _untrusted(self, a: OrderApproved, now: int, why: str) -> Outcome:
        """An approval the risk gate did not sign (or none can be checked: no key). Refused,
        never journaled nor sent, and not remembered as an order: a forgery that borrows a real
        order's id neither blocks the genuine approval nor contradicts that order's lifecycle
        (then no REJECTED event is published for it). Kept as a dead letter by the runtime, and
        each one is a critical alert (one dedupe key: a flood folds into one message)."""
        reason = SIGNATURE_REFUSALS[why]
        self.stats["refused"] += 1
        self.stats[f"refused_{reason}"] += 1
        self._untrusted_seq += 1
        events: list[Event] = []
        if a.client_order_id not in self.orders:
            order = Order(a.client_order_id, a.symbol, a.side, a.quantity)
            order.move("REJECTED", why)
            template = BrokerOrder(a.client_order_id, a.symbol, a.side, a.quantity)
            rejected = self._event(Working(order, template, order_type=a.order_type), now, why)
            # seq -1, outside any order's lifecycle (which counts from 0): a forgery that guessed
            # a genuine order's id before the gate approved it must not share the stream's message
            # id (order:ID:SEQ) with that order's first event, which JetStream would then drop.
            events.append(msgspec.structs.replace(rejected, seq=UNTRUSTED_SEQ))
        if why == signing.NO_KEY:
            title = "execution has no approval key: every approval is refused, nothing trades"
            dedupe = "approval-key-missing"
        else:
            what = f"{a.side} {a.quantity:g} {a.symbol} ({a.client_order_id})"
            title, dedupe = f"forged approval refused: {what}: {why}", "approval-signature"
        events.append(
            Alert(
                ts_event=now,
                ts_init=now,
                alert_id=f"{self.instance}-untrusted-{self._untrusted_seq}",
                severity="critical",
                source="execution",
                title=title,
                body="kept on dlq.execution; only the risk gate may publish order.approved "
                "(check the bus's permissions and who holds the approval key)",
                dedupe=dedupe,
                labels={
                    "client_order_id": a.client_order_id,
                    "intent_id": a.intent_id,
                    "symbol": a.symbol,
                    "reason": reason,
                },
            )
        )
        return Outcome(events=events, dead_letter=(reason, why))

    def _refuse(self, a: OrderApproved, now: int, reason: str) -> Outcome:
        self.stats["refused"] += 1
        order = Order(a.client_order_id, a.symbol, a.side, a.quantity)
        order.move("REJECTED", reason)
        self.orders[a.client_order_id] = order
        w = Working(
            order, BrokerOrder(a.client_order_id, a.symbol, a.side, a.quantity), order_type=a.order_type
        )
        return Outcome(events=[self._event(w, now, reason)])

    # -- the broker's reports --------------------------------------------------------------------
    def on_report(self, r: BrokerReport) -> Outcome:
        parent = self.route.get(r.client_order_id)
        w = self.working.get(parent) if parent else None
        if w is None:
            self.stats["reports_for_unknown_orders"] += 1
            return Outcome()
        if r.client_order_id != w.child:  # an earlier child of this order: only fills matter
            return self._fill(w, r) if r.kind == "fill" else Outcome()
        if r.kind == "fill":
            out = self._fill(w, r)
            if w.child_filled >= w.child_quantity - 1e-9:
                w.child_live = False
                out += self._next_child(w, r.ts)
            return out
        if r.kind in ("replaced", "replace_rejected"):
            return self._replaced(w, r)
        w.child_live = False
        order = w.order
        if r.kind == "ack":
            moved = order.move("SUBMITTED", r.reason) if order.status == "PENDING_SUBMIT" else False
            w.child_live = True
        elif r.kind == "rejected" and order.filled > 0:  # what filled stands: the rest is over
            moved = order.move("CANCELLED", f"rejected: {r.reason}")
        else:
            moved = order.move("CANCELLED" if r.kind == "cancelled" else "REJECTED", r.reason)
        if not moved:
            self.stats["reports_ignored"] += 1
            return Outcome()
        events: list[Event] = [self._event(w, r.ts, r.reason)]
        if r.kind == "rejected":
            events.append(self._rejected_alert(order, r))
        return Outcome(events=events)

    def _rejected_alert(self, order: Order, r: BrokerReport) -> Alert:
        """An order the broker refused is news for people (margin, permissions, a halted symbol)."""
        self.stats["broker_rejects"] += 1
        now = self.clock.now_ns()
        return Alert(
            ts_event=r.ts,
            ts_init=now,
            alert_id=f"{self.instance}-reject-{order.client_order_id}",
            severity="warning",
            source="execution",
            title=f"order {order.side} {order.quantity:g} {order.symbol} rejected by the broker: {r.reason}",
            dedupe=f"broker-reject:{order.symbol}",
            labels={"client_order_id": order.client_order_id, "reason": r.reason},
        )

    def _fill(self, w: Working, r: BrokerReport) -> Outcome:
        order = w.order
        applied = order.fill(r.exec_id, r.quantity, r.price)
        if applied <= 0:
            self.stats["fills_ignored"] += 1
            return Outcome()
        if r.client_order_id == w.child:
            w.child_filled += applied
        pos = self.positions.setdefault(order.symbol, Position())
        pos.apply(applied if order.side == "BUY" else -applied, r.price, r.commission or 0.0)
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
            order_ref="" if r.client_order_id == order.client_order_id else r.client_order_id,
        )
        return Outcome(events=[self._event(w, r.ts), fill, self.snapshot(r.ts)])

    def _next_child(self, w: Working, now: int) -> Outcome:
        if w.tactic is None or w.order.terminal or w.stopping or w.order.remaining <= 1e-9:
            return Outcome()
        return self._send_child(w, now, f"next slice of {w.order.client_order_id}")

    def _replaced(self, w: Working, r: BrokerReport) -> Outcome:
        if r.kind == "replace_rejected":
            self.stats["replaces_rejected"] += 1
            return Outcome()
        if w.tactic is None and r.quantity:  # an OCA leg reduced, or an operator's replace
            w.order.quantity = r.quantity
        w.limit = r.price or w.limit
        w.order.seq += 1  # a change worth an event, with the same status
        return Outcome(events=[self._event(w, r.ts, r.reason)])

    def on_quote(self, q: Quote) -> None:
        self.quotes[q.symbol] = q
        pos = self.positions.get(q.symbol)
        if pos is not None:
            pos.mark = (q.bid + q.ask) / 2

    def on_time(self, now: int) -> Outcome:
        """Reprice limit children that waited too long: to the far touch (cancel/replace)."""
        out = Outcome()
        if not self.chasing:
            return out
        for cid, w in list(self.chasing.items()):
            if w.order.terminal or not w.chase_at or w.tactic is None:
                del self.chasing[cid]
                continue
            if now < w.chase_at or not w.child_live:
                continue
            w.chase_at = now + int(w.tactic.chase_after_ms * 1e6)
            quote = self.quotes.get(w.order.symbol)
            if quote is None or w.stopping:
                continue
            far = quote.ask if w.order.side == "BUY" else quote.bid
            if w.limit is not None and abs(far - w.limit) < 1e-9:
                continue
            self.stats["chases"] += 1
            out.actions += [
                JournalRecord(
                    "replace", w.child, now, limit_price=far, reason="chase", parent=w.order.client_order_id
                ),
                Replace(w.child, limit_price=far),
            ]
        return out

    def on_feedback(self, fb: TcaFeedback) -> bool:
        """Apply TCA's advice within bounds; False (and counted) when feedback is off."""
        if not self.cfg.feedback:
            self.stats["feedback_ignored"] += 1
            return False
        tactic, clamped = self._clamp(fb)
        self.tactics[fb.symbol] = tactic
        self.stats["feedback_applied"] += 1
        self.stats["feedback_clamped"] += clamped
        return True

    def _clamp(self, fb: TcaFeedback) -> tuple[Tactic, bool]:
        """What TCA feedback may change, and how far: anything outside the bounds is clamped
        (and counted)."""
        x = self.cfg
        offset = min(max(fb.limit_offset_bps, 0.0), x.feedback_max_offset_bps)
        chase = min(max(fb.chase_after_ms, x.feedback_min_chase_ms), x.feedback_max_chase_ms)
        slice_shares = (
            0.0 if fb.slice_shares <= 0 else max(math.floor(fb.slice_shares), x.feedback_min_slice_shares)
        )
        tactic = Tactic(fb.style, offset, chase, slice_shares)
        clamped = (offset, chase, slice_shares) != (fb.limit_offset_bps, fb.chase_after_ms, fb.slice_shares)
        return tactic, clamped

    # -- operators: the kill switch, one order's cancel or replace --------------------------------
    def on_control(self, c: Control) -> Outcome:
        """Obey an operator command and say what was done (a ControlAck the sender waits for)."""
        now = self.clock.now_ns()
        if c.command == "set_mode":
            return Outcome()  # the risk gate's
        if c.command_id in self._controls_seen:  # a panic kill heard back, a redelivery
            self.stats["control_duplicate"] += 1
            return Outcome()
        self._controls_seen.append(c.command_id)
        if why := refusal(c, now):
            self.stats[f"control_{c.command}_refused"] += 1
            return Outcome(events=[self._ack(c, now, False, why)])
        if c.command == "resume":
            self.killed = False
            self.stats["control_resume"] += 1
            return Outcome(events=[self._ack(c, now, True, "new approvals accepted again")])
        if c.command in ("cancel", "replace"):
            return self._operator_order_command(c, now)
        out = Outcome()
        if c.command == "kill":
            self.killed = True
        cancelled = 0
        for w in self.working.values():
            if w.order.status in LIVE_STATUSES:
                out += self._cancel(w, now, c.command)
                cancelled += 1
        flatten = c.command == "flatten" or (
            c.command == "kill" and (self.cfg.flatten_on_kill or c.args.get("flatten") == "true")
        )
        flattening = []
        if flatten:
            for symbol, pos in self.positions.items():
                if pos.quantity:
                    self._flatten_seq += 1
                    cid = f"flat-{c.command_id}-{self._flatten_seq}"
                    side: Literal["BUY", "SELL"] = "SELL" if pos.quantity > 0 else "BUY"
                    out += self._start(
                        BrokerOrder(cid, symbol, side, abs(pos.quantity)),
                        now,
                        f"{c.command} by {c.issued_by}",
                        None,
                    )
                    flattening.append(f"{side} {abs(pos.quantity):g} {symbol}")
        self.stats[f"control_{c.command}"] += 1
        summary = f"{cancelled} open order(s) cancelled"
        summary += f"; flattening: {', '.join(flattening)}" if flattening else "; positions kept"
        if c.command == "kill":
            summary = "killed: new approvals refused; " + summary + kill_notes(c)
        counts = {"orders_cancelled": float(cancelled), "flatten_orders": float(len(flattening))}
        out.events.append(self._ack(c, now, True, summary, counts))
        return out

    def _ack(
        self, c: Control, now: int, accepted: bool, summary: str, counts: dict[str, float] | None = None
    ) -> ControlAck:
        return ack_of(c, "execution", now, accepted, summary, counts)

    def _cancel(self, w: Working, now: int, reason: str) -> Outcome:
        w.stopping = True
        return Outcome(
            [
                JournalRecord("cancel", w.child, now, reason=reason, parent=w.order.client_order_id),
                Cancel(w.child),
            ]
        )

    def _operator_order_command(self, c: Control, now: int) -> Outcome:
        cid = c.args["client_order_id"]
        w = self.working.get(cid)
        if w is None or w.order.terminal:
            self.stats[f"control_{c.command}_unknown_order"] += 1
            state = "unknown" if w is None else f"already {w.order.status}"
            return Outcome(events=[self._ack(c, now, False, f"order {cid} is {state}")])
        quantity = float(c.args["quantity"]) if "quantity" in c.args else None
        limit = float(c.args["limit_price"]) if "limit_price" in c.args else None
        if c.command == "replace" and (
            w.tactic is not None or (quantity is not None and quantity > w.order.quantity)
        ):
            # A worked order's children are the gateway's to price; more shares need an approval.
            self.stats["control_replace_refused"] += 1
            why = "worked by a tactic" if w.tactic is not None else "more shares need a new approval"
            return Outcome(events=[self._ack(c, now, False, f"order {cid} not replaced: {why}")])
        self.stats[f"control_{c.command}"] += 1
        if c.command == "cancel":
            out = self._cancel(w, now, f"cancel by {c.issued_by}")
            out.events.append(self._ack(c, now, True, f"cancel of {cid} sent to the broker"))
            return out
        change = ", ".join(
            f"{k} {v:g}" for k, v in (("quantity", quantity), ("limit", limit)) if v is not None
        )
        return Outcome(
            [
                JournalRecord(
                    "replace",
                    w.child,
                    now,
                    quantity=quantity or 0.0,
                    limit_price=limit,
                    reason=f"by {c.issued_by}",
                ),
                Replace(w.child, quantity=quantity, limit_price=limit),
            ],
            [self._ack(c, now, True, f"replace of {cid} sent to the broker: {change}")],
        )

    # -- restart --------------------------------------------------------------------------------------
    def restore(self, records: list[JournalRecord]) -> list[Event]:
        """Rebuild from the journal after a restart: every order sent is known (and will not be sent
        again); its outcome is UNRESOLVED until the broker's reports settle it, unless the journal
        has its outcome already (a "done" record)."""
        events: list[Event] = []
        now = self.clock.now_ns()
        settled = {rec.client_order_id for rec in records if rec.kind == "done"}
        for rec in records:
            parent = rec.parent or rec.client_order_id
            if rec.kind != "send":
                continue
            if parent in settled:  # its outcome was journaled: nothing to resolve
                self.stats["settled_before_restart"] += 1
                continue
            self.route[rec.client_order_id] = parent
            if parent in self.orders:
                continue
            quantity = rec.parent_quantity or rec.quantity
            order = Order(parent, rec.symbol, rec.side, quantity)
            order.move("UNRESOLVED", "restarted: outcome unknown until reconciled")
            self.orders[parent] = order
            template = BrokerOrder(parent, rec.symbol, rec.side, quantity)  # type: ignore[arg-type]
            w = Working(order, template, child=rec.client_order_id, order_type=rec.order_type)
            self.working[parent] = w
            events.append(self._event(w, now, order.reason))
        self.stats["restored"] = len(events)
        return events

    def restore_positions(self, snapshot: PositionSnapshot) -> bool:
        """Positions as this account's last snapshot had them (the journal knows orders, not
        fills). False, and nothing changes, for another account's snapshot."""
        if snapshot.account != self.cfg.account:
            return False
        for row in snapshot.positions:
            self.positions[row.symbol] = Position(row.quantity, row.avg_price, row.realized_pnl, row.mark)
        self.stats["positions_restored"] = len(snapshot.positions)
        return True

    # -- events ---------------------------------------------------------------------------------------
    def _event(self, w: Working, ts: int, reason: str = "") -> OrderEvent:
        order = w.order
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
            broker_order_id=w.child if w.child != order.client_order_id else "",
            reason=reason or order.reason,
            order_type=w.order_type,
            limit_price=w.limit if w.limit is not None else w.template.limit_price,
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


def _on_grid(price: float, tick: float, down: bool) -> float:
    steps = price / tick
    steps = math.floor(steps + 1e-9) if down else math.ceil(steps - 1e-9)
    return round(steps * tick, 10)
