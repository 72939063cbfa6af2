"""The risk gate's core: intents in, an approval or a typed denial out. Fails closed.

Pure: no I/O; time is the events' time. It keeps its own books from what the execution gateway
reports (order events, fills) and from quotes, so it never trusts an intent's view of the world.

Every rule is configuration and every denial is a code ``CATEGORY_CONDITION`` with ``key=value``
context (``OrderDenied.describe()``). An intent is an *exit* when it only reduces the symbol's
position (never through zero); exits skip the limits that guard against adding risk and are the
only orders allowed in DEGRADED. The order of the checks puts the cheapest and the most
fundamental first; the first failing check decides.

Modes: LIVE trades; DEGRADED allows exits only (entered automatically on a stale or lost feed,
left automatically when it recovers); OBSERVE approves nothing (signals still flow), except the
exits when it is held by a cause rather than asked by an operator (every fast-lane model
quarantined); EMERGENCY approves nothing and is left only by an explicit ``resume`` (to OBSERVE)
then ``set_mode``.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from libs.common import params, signing
from libs.common.calendar import MarketCalendar
from libs.common.clock import Clock
from libs.common.config import RiskSettings
from libs.common.markettime import NEW_YORK, ny_day_ordinal
from libs.common.positions import Position
from proto.alerts import Alert, Severity
from proto.base import Event
from proto.control import ConfigChange, Control, ControlAck, ack_of, refusal
from proto.execution import (
    LIVE_STATUSES,
    TERMINAL_STATUSES,
    BrokerStatus,
    Fill,
    OrderEvent,
    PositionSnapshot,
)
from proto.market import FeedStatus, Quote
from proto.orders import (
    MarginReply,
    OrderApproved,
    OrderDenied,
    OrderIntent,
    RiskMode,
    RiskState,
    shape_problem,
)
from proto.signals import Prediction
from proto.units import BPS
from proto.units import SECOND_NS as NS
from services.risk.portfolio import MinuteCloses, Move

# The limits whose first denial of the day is an alert, with what people call them.
LIMIT_ALERTS = {
    "LOSS_DAILY_LIMIT": "daily loss limit",
    "LOSS_DRAWDOWN": "intraday drawdown limit",
    "EXPOSURE_GROSS": "gross exposure limit",
    "EXPOSURE_NET": "net exposure limit",
    "ORDERS_RATE": "order rate limit",
    "EXPOSURE_CORRELATED": "correlated exposure limit",
    "EXPOSURE_VAR": "value-at-risk limit",
}
MODE_RANK: dict[str, int] = {"LIVE": 0, "DEGRADED": 1, "OBSERVE": 2, "EMERGENCY": 3}
FEED_DOWN = frozenset({"stale", "disconnected"})
FEED_UP = frozenset({"connected", "recovered"})
Decision = OrderApproved | OrderDenied


@dataclass
class _Position(Position):
    opened_day: int = -1  # NY day ordinal the current position was opened (for day trades)
    trade_pnl: float = 0.0  # realized P&L of the round trip in progress


@dataclass
class _Order:
    symbol: str
    side: str
    quantity: float
    filled: float = 0.0  # as its latest order event says
    price: float = 0.0  # for the pending notional in buying power
    fills: float = 0.0  # the quantity of its fills seen (the gateway sends the event, then the fill)

    @property
    def signed_remaining(self) -> float:
        left = max(self.quantity - max(self.filled, self.fills), 0.0)
        return left if self.side == "BUY" else -left


@dataclass
class _Quote:
    bid: float
    ask: float
    ts: int

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2


@dataclass
class _Books:
    positions: dict[str, _Position] = field(default_factory=dict)
    orders: dict[str, _Order] = field(default_factory=dict)
    quotes: dict[str, _Quote] = field(default_factory=dict)
    atr: dict[str, float] = field(default_factory=dict)
    fills_seen: set[str] = field(default_factory=set)
    approvals: collections.deque[int] = field(default_factory=collections.deque)
    day_trades: collections.deque[int] = field(default_factory=collections.deque)  # NY day ordinals
    trade_results: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=200))
    day: int = -1
    day_realized_start: float = 0.0
    day_peak: float = 0.0
    consecutive_losses: int = 0
    cooldown_until: int = 0
    gross: float = 0.0
    net: float = 0.0
    realized: float = 0.0
    unrealized: float = 0.0


class RiskCore:
    def __init__(
        self,
        limits: RiskSettings,
        clock: Clock,
        calendar: MarketCalendar,
        instance: str = "risk",
        account: str = "SIM",
        approval_key: bytes = b"",
    ) -> None:
        self.limits = limits
        # Every approval is signed with it (libs/common/signing.py); empty: signed by nobody, and
        # the execution gateway refuses them all (fail closed).
        self.approval_key = approval_key
        self.clock = clock
        self.calendar = calendar
        self.instance = instance
        self.account = account
        self.mode: RiskMode = limits.initial_mode
        self.mode_reason = "initial"
        # The mode is the most severe of what the operator set and the active causes (a feed
        # down, per source and symbol): one cause clearing never clears another.
        self.operator_mode: RiskMode = limits.initial_mode
        self.operator_reason = "initial"
        self.causes: dict[str, tuple[RiskMode, str]] = {}
        self.models_quarantined: dict[str, bool] = {}  # fast-lane horizon -> its latest flag
        self.pending_alerts: list[Alert] = []
        # The day's activity for its summary at the close (reset after it).
        self._today: collections.Counter[str] = collections.Counter()
        self._denials_today: collections.Counter[str] = collections.Counter()
        self._summarized: set[int] = set()
        self._last_market_ns = 0  # the latest market time seen (a replay's end summarizes its day)
        self._commissions_today = 0.0
        self._limits_hit: set[tuple[str, int]] = set()  # (code, NY day) already alerted
        self.books = _Books()
        # Minute closes for the portfolio limits (risk.circuit_*, max_correlated_exposure,
        # max_var): not in risk.state, so a restarted gate learns them again (and until it has,
        # VaR is unknown and denies, a correlation unknown counts as one).
        self.closes = MinuteCloses(limits.returns_window, limits.returns_min_samples)
        self.halted: dict[str, tuple[int, Move]] = {}  # symbol -> (entries halted until, the move)
        self.seq = 0
        self.stats: collections.Counter[str] = collections.Counter()
        self._margin: MarginReply | None = None

    # -- inputs that move the books ------------------------------------------------------------
    def on_event(self, event: Event) -> list[Event]:
        """Everything the gate consumes; returns what it publishes."""
        if isinstance(event, OrderIntent):
            return [self.on_intent(event)]
        if isinstance(event, Quote):
            self.on_quote(event)
            return []
        if isinstance(event, Fill):
            return self.on_fill(event)
        if isinstance(event, OrderEvent):
            self.on_order_event(event)
            return []
        if isinstance(event, FeedStatus):
            return self.on_feed(event)
        if isinstance(event, BrokerStatus):
            return self.on_broker(event)
        if isinstance(event, Control):
            return self.on_control(event)
        if isinstance(event, Prediction):
            return self.on_prediction(event)
        if isinstance(event, ConfigChange):
            return self.on_config(event)
        return []

    def on_config(self, change: ConfigChange, restoring: bool = False) -> list[Event]:
        """Live limits (ctl.config.risk): validated whole by the settings model, applied from the
        next intent on, or refused with why; answered with a ControlAck. ``restoring``: the last
        change, read again at start (applied silently: nobody waits for its answer now)."""
        if change.section != "risk":
            return []
        limits, why = params.receive(change, self.limits)
        now = self.clock.now_ns()
        if limits is None:
            self.stats["config_refused"] += 1
            return [] if restoring else [params.ack(change, "risk", now, False, why)]
        self.limits = limits  # type: ignore[assignment]
        self.closes.resize(self.limits.returns_window, self.limits.returns_min_samples)
        self.stats["config_applied"] += 1
        if restoring:
            return []
        return [self.state(change.ts_event), params.ack(change, "risk", now, True, params.summary(change))]

    def on_quote(self, q: Quote) -> None:
        # Per quote: the symbol's _Quote updated in place (nothing keeps one past a decision).
        books, symbol = self.books, q.symbol
        quote = books.quotes.get(symbol)
        if quote is None:
            books.quotes[symbol] = _Quote(q.bid, q.ask, q.ts_event)
        else:
            quote.bid, quote.ask, quote.ts = q.bid, q.ask, q.ts_event
        self._last_market_ns = q.ts_event
        pos = books.positions.get(symbol)
        if pos is not None and pos.quantity:
            self._totals_without(pos)
            pos.mark = (q.bid + q.ask) / 2
            self._totals_with(pos)
        elif pos is not None:
            pos.mark = (q.bid + q.ask) / 2

    # Portfolio totals are kept incrementally (a check is O(1), not O(positions): each quote
    # of a held symbol moves its own contribution); ``state`` recomputes them exactly.
    def _totals_without(self, pos: _Position) -> None:
        value = pos.quantity * (pos.mark or pos.avg_price)
        b = self.books
        b.gross -= abs(value)
        b.net -= value
        b.unrealized -= pos.unrealized
        b.realized -= pos.realized

    def _totals_with(self, pos: _Position) -> None:
        value = pos.quantity * (pos.mark or pos.avg_price)
        b = self.books
        b.gross += abs(value)
        b.net += value
        b.unrealized += pos.unrealized
        b.realized += pos.realized

    def _recompute_totals(self) -> None:
        b = self.books
        b.gross = b.net = b.unrealized = b.realized = 0.0
        for pos in b.positions.values():
            self._totals_with(pos)

    def on_volatility(self, symbol: str, atr: float) -> None:
        """ATR in price units (the runtime takes it from the features' 1m vectors)."""
        if atr > 0 and math.isfinite(atr):
            self.books.atr[symbol] = atr

    def on_minute_close(self, symbol: str, ts: int, price: float) -> None:
        """A symbol's close for the minute of ``ts`` (the runtime takes it from the features' 1m
        vectors): the portfolio statistics' input, and the circuit breaker's moment."""
        if not self.closes.add(symbol, ts, price):
            self.stats["closes_refused"] += 1  # not finite, not positive, or out of order
            return
        lim = self.limits
        if lim.circuit_sigma is None:
            return
        move = self.closes.move(symbol, lim.circuit_minutes)
        if move is None or move.sigmas <= lim.circuit_sigma:
            return
        held = self.halted.get(symbol)
        until = ts + int(lim.circuit_halt_s * NS)
        self.halted[symbol] = (until, move)  # a new extreme move extends the halt
        if held is not None and held[0] > ts:
            return
        self.stats["circuit_trips"] += 1
        self.pending_alerts.append(
            Alert(
                ts_event=ts,
                ts_init=self.clock.now_ns(),
                alert_id=f"{self.instance}-circuit-{symbol}-{ts}",
                severity="warning",
                source="risk",
                title=(
                    f"circuit breaker: {symbol} moved {math.expm1(move.log_return):+.2%} in "
                    f"{move.minutes} min ({move.sigmas:.1f} sigma): entries on it halted until "
                    f"{_ny_time(until)}"
                ),
                dedupe=f"risk-circuit:{symbol}",
                labels={"symbol": symbol, "sigmas": f"{move.sigmas:.1f}", "minutes": str(move.minutes)},
            )
        )

    def on_order_event(self, e: OrderEvent) -> None:
        order = self.books.orders.get(e.client_order_id)
        if order is None:
            if e.status in LIVE_STATUSES and e.quantity > 0:
                # Still worked, yet not in these books: approved before a restart. It counts again
                # (open orders, the position in flight, the buying power it holds).
                self.books.orders[e.client_order_id] = _Order(
                    e.symbol, e.side, e.quantity, e.filled_quantity, self._order_price(e)
                )
                self.stats["orders_adopted"] += 1
            return
        order.filled = max(order.filled, e.filled_quantity)
        if e.status in TERMINAL_STATUSES:
            del self.books.orders[e.client_order_id]

    def _order_price(self, e: OrderEvent) -> float:
        quote = self.books.quotes.get(e.symbol)
        return e.limit_price or e.avg_fill_price or (quote.mid if quote else 0.0)

    def on_fill(self, f: Fill) -> list[Event]:
        if not self._take_fill(f, counted=True):
            return []
        return [self.state(f.ts_event)]

    def _take_fill(self, f: Fill, counted: bool) -> bool:
        """The fill into the books (False: seen already). ``counted``: its closed round trip moves
        the loss streak, the cool-down and the day trades (not when replayed after a restart from
        a state that counted it already)."""
        b = self.books
        if f.exec_id in b.fills_seen:
            self.stats["duplicate_fills"] += 1
            return False
        b.fills_seen.add(f.exec_id)
        self._roll_day(f.ts_event)
        self._today["fills"] += 1
        self._commissions_today += f.commission or 0.0
        order = b.orders.get(f.client_order_id)
        if order is not None:
            order.fills += f.quantity
        pos = b.positions.setdefault(f.symbol, _Position())
        signed = f.quantity if f.side == "BUY" else -f.quantity
        self._totals_without(pos)
        self._apply_fill(pos, signed, f.price, f.commission or 0.0, f.ts_event, counted)
        if not pos.mark:
            pos.mark = f.price
        self._totals_with(pos)
        return True

    def _apply_fill(
        self, pos: _Position, signed: float, price: float, commission: float, ts: int, counted: bool
    ) -> None:
        change = pos.apply(signed, price, commission)
        pos.trade_pnl += change.realized
        if change.closed:
            self._round_trip_closed(pos, ts, counted)
        if change.opened:
            pos.opened_day = ny_day_ordinal(ts)

    def _round_trip_closed(self, pos: _Position, ts: int, counted: bool) -> None:
        b, lim = self.books, self.limits
        b.trade_results.append(pos.trade_pnl)  # not in risk.state: a replay always adds it
        if counted:
            if pos.trade_pnl < 0:
                b.consecutive_losses += 1
                if b.consecutive_losses >= lim.max_consecutive_losses:
                    b.cooldown_until = ts + int(lim.loss_cooldown_s * NS)
            else:
                b.consecutive_losses = 0
            if pos.opened_day == ny_day_ordinal(ts):
                b.day_trades.append(pos.opened_day)
        pos.trade_pnl = 0.0

    def on_feed(self, s: FeedStatus) -> list[Event]:
        """A feed down (per source and symbol) is a cause for DEGRADED until that same feed is
        up again; a source's session-level recovery clears its causes (its symbols are
        resubscribed, and any still stale will be reported again)."""
        if s.state == "replay_finished" and self._last_market_ns:
            self._summarize(self._last_market_ns)  # a replay's day ends with its data, not at a bar
            return []
        source = _feed_source(s.source)
        key = f"feed:{source}:{s.symbol}"
        before = self.mode
        if s.state in FEED_DOWN:
            self.causes[key] = ("DEGRADED", f"feed {s.state}: {s.detail or s.source}")
        elif s.state in FEED_UP:
            prefix = f"feed:{source}:"
            for k in [k for k in self.causes if k == key or (not s.symbol and k.startswith(prefix))]:
                del self.causes[k]
        else:
            return []
        return self._settled(before, s.ts_event)

    def on_broker(self, b: BrokerStatus) -> list[Event]:
        """The broker link down: DEGRADED (exits only; held until it is back and reconciled). A
        reconciliation mismatch: EMERGENCY until an operator resumes (nobody knows what is held)."""
        before = self.mode
        if b.state == "disconnected":
            self.causes["broker"] = ("DEGRADED", f"broker link down: {b.detail or b.broker}")
        elif b.state == "reconciled":
            self.causes.pop("broker", None)
        else:
            self.causes.pop("broker", None)
            self.causes["broker-mismatch"] = ("EMERGENCY", f"reconciliation mismatch: {b.detail}")
        return self._settled(before, b.ts_event)

    def on_hub(self, reachable: bool, detail: str, ts: int) -> list[Event]:
        """The cloud hub (its services' heartbeats) unreachable from this on-prem gate: DEGRADED
        until it is back. Intents and signals come from there, so an entry decided on what the
        gate can no longer check is not taken; exits still pass."""
        before = self.mode
        if reachable:
            self.causes.pop("hub", None)
        else:
            self.causes["hub"] = ("DEGRADED", f"hub unreachable: {detail}")
        return self._settled(before, ts)

    def on_prediction(self, p: Prediction) -> list[Event]:
        """Every fast-lane model quarantined: OBSERVE, no entries, until one serves again. Its
        exits still pass (``_check``): the protective exits and the close's flatten are rules,
        not models, and a quarantine must not strand a position."""
        if self.models_quarantined.get(p.horizon) == p.quarantined:
            return []
        self.models_quarantined[p.horizon] = p.quarantined
        before = self.mode
        if all(self.models_quarantined.values()):
            horizons = ", ".join(sorted(self.models_quarantined, key=_horizon_order))
            self.causes["models"] = ("OBSERVE", f"every fast-lane model quarantined ({horizons})")
        else:
            self.causes.pop("models", None)
        return self._settled(before, p.ts_event)

    def on_control(self, c: Control) -> list[Event]:
        """The mode commands, each answered with what the mode is now (a ControlAck)."""
        if c.command not in ("kill", "resume", "set_mode"):
            return []
        before = self.mode
        if why := refusal(c, self.clock.now_ns()):
            self.stats["mode_change_refused"] += 1
            return [self._ack(c, False, why)]
        if c.command == "kill":  # always: its arguments cannot stop it
            self._set_mode("EMERGENCY", f"kill by {c.issued_by}")
        elif c.command == "resume" and self.mode == "EMERGENCY":
            # a kill's, or a mismatch's (which only an operator clears): OBSERVE, then set_mode
            self.causes.pop("broker-mismatch", None)
            self._set_mode("OBSERVE", f"resumed by {c.issued_by}; set_mode LIVE to trade")
        elif c.command == "resume":
            return [self._ack(c, True, f"mode stays {self.mode}: resume only leaves EMERGENCY")]
        elif self.operator_mode == "EMERGENCY":
            self.stats["mode_change_refused"] += 1
            return [self._ack(c, False, "mode stays EMERGENCY: resume first, then set_mode")]
        else:
            self._set_mode(c.args["mode"], f"set by {c.issued_by}")  # type: ignore[arg-type]
        said = f"mode {before} -> {self.mode}"
        if self.mode != self.operator_mode:  # a cause holds it more severe than asked
            said += f" (held by {self.mode_reason})"
        return [*self._mode_events(before, c.ts_event, force_state=True), self._ack(c, True, said)]

    def _ack(self, c: Control, accepted: bool, summary: str) -> ControlAck:
        return ack_of(c, "risk", self.clock.now_ns(), accepted, summary)

    def _set_mode(self, mode: RiskMode, reason: str) -> None:
        """What the operator (or a restart that found EMERGENCY) asked for."""
        self.operator_mode, self.operator_reason = mode, reason
        self._settle_mode()

    def _settle_mode(self) -> None:
        mode, reason = self.operator_mode, self.operator_reason
        for cause_mode, cause in self.causes.values():
            if MODE_RANK[cause_mode] > MODE_RANK[mode]:
                mode, reason = cause_mode, cause
        self.mode, self.mode_reason = mode, reason

    def _settled(self, before: RiskMode, ts: int) -> list[Event]:
        self._settle_mode()
        return self._mode_events(before, ts)

    def _mode_events(self, before: RiskMode, ts: int, force_state: bool = False) -> list[Event]:
        """A changed mode: the new risk.state, and an alert with its cause for people."""
        if self.mode == before:
            return [self.state(ts)] if force_state else []
        self.stats["mode_changes"] += 1
        now = self.clock.now_ns()
        severity: Severity = "critical" if self.mode == "EMERGENCY" else "warning"
        alert = Alert(
            ts_event=ts,
            ts_init=now,
            alert_id=f"{self.instance}-mode-{now}-{self.stats['mode_changes']}",
            severity=severity,
            source="risk",
            title=f"risk mode {before} -> {self.mode}: {self.mode_reason}",
            dedupe=f"risk-mode:{self.mode}",
            labels={"from": before, "to": self.mode, "cause": self.mode_reason},
        )
        return [self.state(ts), alert]

    # -- the decision ---------------------------------------------------------------------------
    def on_intent(self, intent: OrderIntent, margin: MarginReply | None = None) -> Decision:
        """``margin``: the broker's what-if for this intent, when ``broker_what_if`` is on."""
        self._margin = margin
        client_order_id = client_order_id_for(intent.intent_id)
        if client_order_id in self.books.orders:  # a redelivered intent: the same approval again
            self.stats["duplicate_intents"] += 1
            return self._approval(intent, client_order_id)
        try:
            denial = self._check(intent)
        except Exception as exc:  # fail closed: a bug in a rule denies, it never approves
            self.stats["rule_errors"] += 1
            denial = ("RISK_ERROR", {"error": type(exc).__name__})
        self._today["decisions"] += 1
        if denial is not None:
            code, context = denial
            self.stats[f"denied_{code}"] += 1
            self._denials_today[code] += 1
            self._first_hit_today(code, context, intent)
            return OrderDenied(
                ts_event=intent.ts_event,
                ts_init=self.clock.now_ns(),
                intent_id=intent.intent_id,
                symbol=intent.symbol,
                code=code,
                context={k: _fmt(v) for k, v in context.items()},
            )
        return self._approve(intent, client_order_id)

    def decide(self, intent: OrderIntent, margin: MarginReply | None = None) -> list[Event]:
        """The decision, then the state when it changed what a restart resumes from: after an
        approval (the order-rate window), or when the check moved the day's peak P&L (the
        drawdown limit's reference). The runtime publishes both."""
        peak = self.books.day_peak
        decision = self.on_intent(intent, margin)
        if isinstance(decision, OrderApproved) or self.books.day_peak != peak:
            return [decision, self.state(self.clock.now_ns())]
        return [decision]

    def on_restore(self, failed: str, ts: int) -> list[Event]:
        """The books could not be rebuilt at start (``failed`` says why): nothing is approved, not
        even an exit (what is held is not known), until they are (``failed`` empty)."""
        before = self.mode
        if failed:
            self.causes["restore"] = ("EMERGENCY", f"books not restored: {failed}")
        else:
            self.causes.pop("restore", None)
        return self._settled(before, ts)

    def _first_hit_today(self, code: str, context: dict[str, object], intent: OrderIntent) -> None:
        """A limit that matters to people (the day's loss, drawdown, exposure, order rate) is an
        alert the first time it denies each day; later denials of the day are only counted."""
        if code not in LIMIT_ALERTS or (code, self.books.day) in self._limits_hit:
            return
        self._limits_hit.add((code, self.books.day))
        now = self.clock.now_ns()
        severity: Severity = "critical" if code == "LOSS_DAILY_LIMIT" else "warning"
        what = f"{intent.side} {intent.quantity:g} {intent.symbol}"
        self.pending_alerts.append(
            Alert(
                ts_event=intent.ts_event,
                ts_init=now,
                alert_id=f"{self.instance}-limit-{code}-{self.books.day}",
                severity=severity,
                source="risk",
                title=f"{LIMIT_ALERTS[code]} hit: {code} denied {what}",
                dedupe=f"risk-limit:{code}",
                labels={k: _fmt(v) for k, v in context.items()},
            )
        )

    def on_clock(self, ts: int) -> None:
        """Market time passed ``ts`` (a bar closed): at the session's close, the day's summary for
        people, once a day, when the gate saw anything that day."""
        self._last_market_ns = max(self._last_market_ns, ts)
        session = self.calendar.session(ny_day_ordinal(ts))
        if session is not None and ts >= session.close_ns:
            self._summarize(ts)

    def _summarize(self, ts: int) -> None:
        day = ny_day_ordinal(ts)
        if day in self._summarized:
            return
        self._summarized.add(day)
        self._roll_day(ts)
        if not (self._today["fills"] or self._today["decisions"]):
            return
        b = self.books
        pnl = b.realized - b.day_realized_start
        denials = (
            ", ".join(f"{k.removeprefix('denied_')} {v}" for k, v in self._denials_today.items()) or "none"
        )
        now = self.clock.now_ns()
        self.pending_alerts.append(
            Alert(
                ts_event=ts,
                ts_init=now,
                alert_id=f"{self.instance}-day-{day}",
                severity="info",
                source="risk",
                title=(
                    f"day summary: realized P&L {pnl:+,.2f} USD, open {b.unrealized:+,.2f}; "
                    f"{self._today['fills']} fills, commissions {self._commissions_today:,.2f}; "
                    f"{self._today['approved']} approved, denials: {denials}; mode {self.mode}"
                ),
                dedupe=f"risk-day:{day}",
                labels={"positions": _fmt({s: p.quantity for s, p in b.positions.items() if p.quantity})},
            )
        )
        self._today.clear()
        self._denials_today.clear()
        self._commissions_today = 0.0

    def take_alerts(self) -> list[Alert]:
        """The alerts the decisions since the last call raised (the runtime publishes them)."""
        out, self.pending_alerts = self.pending_alerts, []
        return out

    def _check(self, i: OrderIntent) -> tuple[str, dict[str, object]] | None:
        b, lim = self.books, self.limits
        self._roll_day(i.ts_event)
        # Orders in flight count as if filled: two exits of the whole position must not both pass.
        position = b.positions.get(i.symbol, _Position()).quantity + sum(
            o.signed_remaining for o in b.orders.values() if o.symbol == i.symbol
        )
        signed = i.quantity if i.side == "BUY" else -i.quantity
        exit_only = position != 0 and (position > 0) != (signed > 0) and abs(signed) <= abs(position)
        if i.quantity <= 0 or not math.isfinite(i.quantity):
            return "SIZE_INVALID", {"quantity": i.quantity}
        problem = shape_problem(i)
        if problem:
            return "ORDER_INVALID", {"order_type": i.order_type, "problem": problem}
        age_ms = (self.clock.now_ns() - i.ts_init) / 1e6
        if age_ms > lim.max_intent_age_ms:
            return "INTENT_STALE", {"age_ms": round(age_ms), "max_ms": lim.max_intent_age_ms}
        if self.mode in ("EMERGENCY", "OBSERVE"):
            # OBSERVE held by a cause (the models' quarantine), not asked by an operator: exits pass
            by_cause = self.mode == "OBSERVE" and self.operator_mode != "OBSERVE"
            if not (by_cause and exit_only):
                allowed = {"allowed": "exits"} if by_cause else {}
                return f"MODE_{self.mode}", {"reason": self.mode_reason, **allowed}
        elif self.mode == "DEGRADED" and not exit_only:
            return "MODE_DEGRADED", {"reason": self.mode_reason, "allowed": "exits"}
        if i.symbol in lim.deny_symbols:
            return "SYMBOL_DENIED", {"symbol": i.symbol}
        if lim.allow_symbols is not None and i.symbol not in lim.allow_symbols:
            return "SYMBOL_NOT_ALLOWED", {"symbol": i.symbol}
        if not self.calendar.is_open(i.ts_event):
            window = self.calendar.window(ny_day_ordinal(i.ts_event))
            return "SESSION_CLOSED", {"window": window, "at": _ny_time(i.ts_event)}
        quote = b.quotes.get(i.symbol)
        if quote is None:
            return "PRICE_NO_QUOTE", {"symbol": i.symbol}
        age_ms = (i.ts_event - quote.ts) / 1e6
        if age_ms > lim.max_quote_age_ms:
            return "PRICE_QUOTE_STALE", {"age_ms": round(age_ms), "max_ms": lim.max_quote_age_ms}
        if i.limit_price is not None:
            distance = abs(i.limit_price - quote.mid) / quote.mid * BPS
            if distance > lim.max_limit_distance_bps:
                return "PRICE_LIMIT_FAR", {"bps": round(distance, 1), "max_bps": lim.max_limit_distance_bps}
        if len(b.approvals) and self._orders_last_minute(i.ts_event) >= lim.max_orders_per_minute:
            return "ORDERS_RATE", {"per_minute": lim.max_orders_per_minute}
        if len(b.orders) >= lim.max_open_orders:
            return "ORDERS_OPEN", {"open": len(b.orders), "max": lim.max_open_orders}
        if exit_only:
            return None  # reducing risk: the limits below guard against adding it
        return self._check_entry(i, position, signed, quote)

    def _check_entry(
        self, i: OrderIntent, position: float, signed: float, quote: _Quote
    ) -> tuple[str, dict[str, object]] | None:
        b, lim = self.books, self.limits
        price = i.limit_price or (quote.ask if signed > 0 else quote.bid)
        pnl = self._day_pnl()
        if pnl <= -lim.daily_loss_limit:
            return "LOSS_DAILY_LIMIT", {"pnl": round(pnl, 2), "limit": -lim.daily_loss_limit}
        if b.day_peak - pnl >= lim.max_drawdown:
            return "LOSS_DRAWDOWN", {"drawdown": round(b.day_peak - pnl, 2), "max": lim.max_drawdown}
        if i.ts_event < b.cooldown_until:
            left = (b.cooldown_until - i.ts_event) / NS
            return "LOSS_COOLDOWN", {"losses": b.consecutive_losses, "seconds_left": round(left)}
        halt = self.halted.get(i.symbol)
        if halt is not None and i.ts_event < halt[0]:
            until, move = halt
            return "CIRCUIT_HALTED", {
                "sigmas": round(move.sigmas, 1),
                "minutes": move.minutes,
                "until": _ny_time(until),
            }
        if lim.pdt_enabled and lim.account_equity < lim.pdt_min_equity:
            recent = self._day_trades_5d(i.ts_event)
            if recent >= lim.pdt_max_day_trades:
                return "PDT_LIMIT", {"day_trades_5d": recent, "max": lim.pdt_max_day_trades}
        opening_short = signed < 0
        if opening_short:
            if lim.shortable is not None and i.symbol not in lim.shortable:
                return "SHORT_NOT_SHORTABLE", {"symbol": i.symbol}
            if i.symbol in lim.ssr_symbols and (i.limit_price is None or i.limit_price <= quote.bid):
                return "SHORT_SSR_UPTICK", {"bid": quote.bid, "limit": i.limit_price or "market"}
        after = position + signed
        if abs(after) > lim.max_position_shares:
            return "POSITION_SHARES", {"would_be": after, "max": lim.max_position_shares}
        if abs(after) * price > lim.max_position_notional:
            return "POSITION_NOTIONAL", {
                "would_be": round(abs(after) * price),
                "max": lim.max_position_notional,
            }
        gross, net = self._exposure()
        notional = abs(signed) * price
        if gross + notional > lim.max_gross_exposure:
            return "EXPOSURE_GROSS", {"would_be": round(gross + notional), "max": lim.max_gross_exposure}
        if abs(net + signed * price) > lim.max_net_exposure:
            return "EXPOSURE_NET", {"would_be": round(net + signed * price), "max": lim.max_net_exposure}
        if lim.max_correlated_exposure is not None:
            denial = self._correlated_exposure(i.symbol, signed * price, lim.max_correlated_exposure)
            if denial is not None:
                return denial
        if lim.max_var is not None:
            denial = self._value_at_risk(i.symbol, signed * price, lim.max_var)
            if denial is not None:
                return denial
        power = lim.account_equity * lim.margin_multiplier - gross - self._pending_notional()
        if notional > power:
            return "MARGIN_BUYING_POWER", {"needed": round(notional), "available": round(power)}
        if lim.broker_what_if:
            denial = self._broker_margin()
            if denial is not None:
                return denial
        cap = self._size_cap(i.symbol, price)
        if cap is not None and abs(signed) > cap[0]:
            return f"SIZE_{cap[1]}", {"quantity": abs(signed), "max": cap[0]}
        return None

    def _held_notionals(self) -> dict[str, float]:
        return {
            s: p.quantity * (p.mark or p.avg_price) for s, p in self.books.positions.items() if p.quantity
        }

    def _correlated_exposure(
        self, symbol: str, notional: float, limit: float
    ) -> tuple[str, dict[str, object]] | None:
        """The entry's notional plus every held position correlated with it by the threshold or
        more, sign-adjusted. A pair whose correlation is not known yet adds its whole notional on
        the entry's side (fail closed)."""
        threshold = self.limits.correlation_threshold
        total, partners = notional, []
        held = {s: v for s, v in self._held_notionals().items() if s != symbol}
        rhos = self.closes.correlations(symbol, list(held))
        for other, value in held.items():
            rho = rhos[other]
            if rho is None:
                total += math.copysign(abs(value), notional)
            elif abs(rho) >= threshold:
                total += math.copysign(value, rho)
            else:
                continue
            partners.append(other if rho is None else f"{other}:{rho:.2f}")
        if abs(total) <= limit:
            return None
        return "EXPOSURE_CORRELATED", {
            "would_be": round(total),
            "max": limit,
            "with": " ".join(sorted(partners)),
        }

    def _value_at_risk(
        self, symbol: str, notional: float, limit: float
    ) -> tuple[str, dict[str, object]] | None:
        lim = self.limits
        book = self._held_notionals()
        book[symbol] = book.get(symbol, 0.0) + notional
        var = self.closes.var(book, lim.var_confidence, lim.var_horizon_minutes)
        if var is None:
            return "EXPOSURE_VAR_UNKNOWN", {
                "min_samples": lim.returns_min_samples,
                "symbols": " ".join(sorted(book)),
            }
        if var.value <= limit:
            return None
        return "EXPOSURE_VAR", {
            "var": round(var.value),
            "parametric": round(var.parametric),
            "historical": round(var.historical),
            "max": limit,
        }

    def _broker_margin(self) -> tuple[str, dict[str, object]] | None:
        m = self._margin
        if m is None or not m.known:
            return "MARGIN_UNKNOWN", {"broker": "no what-if answer", "error": m.error if m else "timeout"}
        if m.error:
            return "MARGIN_BROKER_REJECTED", {"error": m.error}
        after, equity = m.init_margin_after, m.equity_with_loan_after
        if after is not None and equity is not None and after > equity:
            return "MARGIN_WHAT_IF", {"init_margin_after": round(after), "equity_with_loan": round(equity)}
        return None

    def _size_cap(self, symbol: str, price: float) -> tuple[float, str] | None:
        """The tighter of the volatility-scaled size and the fractional-Kelly cap, in shares."""
        lim, b = self.limits, self.books
        caps: list[tuple[float, str]] = []
        atr = b.atr.get(symbol)
        if atr:
            caps.append((math.floor(lim.risk_per_trade / (lim.atr_stop_multiple * atr)), "VOLATILITY"))
        results = b.trade_results
        if lim.kelly_fraction is not None and len(results) >= lim.kelly_min_trades:
            wins = [r for r in results if r > 0]
            losses = [-r for r in results if r < 0]
            win_rate = len(wins) / len(results)
            payoff = (sum(wins) / len(wins)) / (sum(losses) / len(losses)) if wins and losses else 0.0
            kelly = win_rate - (1 - win_rate) / payoff if payoff > 0 else 0.0
            caps.append(
                (math.floor(max(kelly, 0.0) * lim.kelly_fraction * lim.account_equity / price), "KELLY")
            )
        return min(caps) if caps else None

    def _approve(self, i: OrderIntent, client_order_id: str) -> OrderApproved:
        b = self.books
        b.orders[client_order_id] = _Order(i.symbol, i.side, i.quantity, price=self._price_for(i))
        b.approvals.append(i.ts_event)
        self.stats["approved"] += 1
        self._today["approved"] += 1
        return self._approval(i, client_order_id)

    def _approval(self, i: OrderIntent, client_order_id: str) -> OrderApproved:
        """The approval, signed (its every field, libs/common/signing.py)."""
        approval = OrderApproved(
            ts_event=i.ts_event,
            ts_init=self.clock.now_ns(),
            intent_id=i.intent_id,
            client_order_id=client_order_id,
            symbol=i.symbol,
            side=i.side,
            quantity=i.quantity,
            order_type=i.order_type,
            limit_price=i.limit_price,
            stop_price=i.stop_price,
            tif=i.tif,
            valid_until_ns=self.clock.now_ns() + int(self.limits.approval_ttl_ms * 1e6),
            take_profit_price=i.take_profit_price,
            stop_loss_price=i.stop_loss_price,
            trail_amount=i.trail_amount,
            trail_percent=i.trail_percent,
        )
        return signing.signed(approval, self.approval_key)

    # -- derived numbers --------------------------------------------------------------------------
    def _price_for(self, i: OrderIntent) -> float:
        quote = self.books.quotes.get(i.symbol)
        return i.limit_price or (quote.mid if quote else 0.0)

    def _orders_last_minute(self, now: int) -> int:
        approvals = self.books.approvals
        while approvals and approvals[0] <= now - 60 * NS:
            approvals.popleft()
        return len(approvals)

    def _exposure(self) -> tuple[float, float]:
        return self.books.gross, self.books.net

    def _pending_notional(self) -> float:
        return sum(abs(o.signed_remaining) * o.price for o in self.books.orders.values())

    def _day_pnl(self) -> float:
        b = self.books
        pnl = b.realized - b.day_realized_start + b.unrealized
        b.day_peak = max(b.day_peak, pnl)
        return pnl

    def _day_trades_5d(self, now: int) -> int:
        today = ny_day_ordinal(now)
        # Five business days: today and the four before it (weekends hold no trades to count).
        window = {today - k for k in range(7)}
        weekdays = sorted((d for d in window if dt.date.fromordinal(d).weekday() < 5), reverse=True)[:5]
        return sum(1 for d in self.books.day_trades if d in weekdays)

    def _roll_day(self, ts: int) -> None:
        b = self.books
        day = ny_day_ordinal(ts)
        if day != b.day:
            b.day = day
            b.day_realized_start = b.realized
            b.day_peak = 0.0
            self._today.clear()  # a day whose close was not seen has no summary
            self._denials_today.clear()
            self._commissions_today = 0.0

    def state(self, ts: int) -> RiskState:
        self.seq += 1
        b = self.books
        self._recompute_totals()  # exact, whatever the increments accumulated
        gross, net = self._exposure()
        self._day_pnl()  # moves the day's peak
        return RiskState(
            ts_event=ts,
            ts_init=self.clock.now_ns(),
            instance=self.instance,
            seq=self.seq,
            mode=self.mode,
            mode_reason=self.mode_reason,
            realized_pnl=b.realized,
            unrealized_pnl=b.unrealized,
            day_peak_pnl=b.day_peak,
            gross_exposure=gross,
            net_exposure=net,
            open_orders=len(b.orders),
            consecutive_losses=b.consecutive_losses,
            day_trades=len(b.day_trades),
            positions={s: p.quantity for s, p in b.positions.items() if p.quantity},
            account=self.account,
            day_realized_start=b.day_realized_start,
            operator_mode=self.operator_mode,
            operator_reason=self.operator_reason,
            cooldown_until_ns=b.cooldown_until,
            day_trade_days=list(b.day_trades),
            recent_approvals_ns=list(b.approvals),
            causes={key: f"{mode}|{why}" for key, (mode, why) in self.causes.items()},
        )

    # -- restart ---------------------------------------------------------------------------------
    def _restore_mode(self, state: RiskState, done: list[str]) -> None:
        """The operator's mode comes back as it was set (OBSERVE stays OBSERVE, a kill stays
        EMERGENCY); causes are not restored: a feed still down says so again. A state from before
        the operator mode was recorded restores EMERGENCY only."""
        # A mismatch is cleared by an operator only: it holds across the restart. Other causes
        # are seen again (the feed's and the broker link's state are read back at start).
        for key, held in state.causes.items():
            mode, _, why = held.partition("|")
            if key == "broker-mismatch" and mode in MODE_RANK:
                self.causes[key] = (mode, why)  # type: ignore[assignment]
                done.append("the reconciliation mismatch")
        self._settle_mode()
        operator = state.operator_mode or ("EMERGENCY" if state.mode == "EMERGENCY" else "")
        if operator in MODE_RANK and operator != self.operator_mode:
            reason = state.operator_reason or state.mode_reason
            self._set_mode(operator, f"restored after a restart: {reason}")  # type: ignore[arg-type]
            done.append(f"{operator} mode")

    def restore(self, snapshot: PositionSnapshot | None, state: RiskState | None) -> list[str]:
        """Resume after a restart: positions from the execution gateway's last snapshot of this
        account, the day's P&L baseline, peak and loss streak from this gate's last state. A kill
        survives the restart (EMERGENCY stays EMERGENCY). Returns what was restored, for the log."""
        done: list[str] = []
        b = self.books
        if snapshot is not None and snapshot.account == self.account:
            for row in snapshot.positions:
                b.positions[row.symbol] = _Position(row.quantity, row.avg_price, row.realized_pnl, row.mark)
            done.append(f"{len(snapshot.positions)} positions from exec.position seq {snapshot.seq}")
        if state is not None and state.account == self.account:
            b.day = ny_day_ordinal(state.ts_event)
            b.day_realized_start, b.day_peak = state.day_realized_start, state.day_peak_pnl
            b.consecutive_losses = state.consecutive_losses
            b.cooldown_until = state.cooldown_until_ns
            b.day_trades.extend(state.day_trade_days)
            b.approvals.extend(state.recent_approvals_ns)
            done.append(
                f"day P&L baseline, loss streak and cool-down, day trades and the order-rate window "
                f"from risk.state {state.instance}/{state.seq}"
            )
            self._restore_mode(state, done)
        self._recompute_totals()
        return done

    def rebuild(self, stream: Sequence[tuple[int, Event]], counted_after: int) -> list[str]:
        """After ``restore``: the books again from the execution gateway's own record, the EXEC
        stream's events (with their stream sequences, in order), from the start of the day or from
        this account's last position snapshot when that is older (then first in ``stream``). Its
        snapshots set the positions as they come (what they hold wins); its fills and order
        events in between move them and the open orders, as they did live, and nothing is
        published for them. ``counted_after``: the last sequence the restored state had counted
        (the gate's executions consumer had acknowledged); the round trips that later fills close
        move the loss streak, the cool-down and the day trades, earlier ones only the books.

        The day's realized P&L is the walk's own: its baseline is the realized P&L when the walk
        entered the day (a snapshot moves both by what it changes, as its P&L counts from further
        back), not the one in the restored state, which was taken on another footing when the
        gate before had started without a snapshot. Events up to another account's snapshot
        after this account's last one were that account's (an earlier run on the same bus)."""
        b = self.books
        state_day, state_peak = b.day, b.day_peak
        mine = [seq for seq, e in stream if isinstance(e, PositionSnapshot) and e.account == self.account]
        others = [seq for seq, e in stream if isinstance(e, PositionSnapshot) and e.account != self.account]
        start_after = max([s for s in others if s > max(mine, default=0)], default=0)
        b.day = -1  # the first fill rolls the walk into its day
        fills = counted = snapshots = 0
        for seq, e in stream:
            if seq <= start_after:
                continue
            if isinstance(e, Fill):
                new = seq > counted_after
                if self._take_fill(e, counted=new):
                    fills += 1
                    if new:  # live, its state would have moved the day's peak
                        counted += 1
                        self._day_pnl()
            elif isinstance(e, OrderEvent):
                self.on_order_event(e)
            elif isinstance(e, PositionSnapshot) and e.account == self.account:
                self._take_snapshot(e)
                snapshots += 1
        self._recompute_totals()
        # The state's day when the walk ended in it; else the walk's (a later event rolls it on:
        # the state's time may be the wall clock's, where the market's is replayed).
        if b.day == state_day:
            b.day_peak = max(b.day_peak, state_peak)
        elif b.day == -1:  # no fill since the day began: its realized P&L is none so far
            b.day, b.day_realized_start, b.day_peak = state_day, b.realized, state_peak
        self._day_pnl()
        last = stream[-1][0] if stream else 0
        return [
            f"the day's P&L, positions and open orders from {fills} fills ({counted} new to the "
            f"loss streak) and {snapshots} snapshots, EXEC through seq {last}"
        ]

    def _take_snapshot(self, snap: PositionSnapshot) -> None:
        """A snapshot in a replay: each of its positions as it says. A position the walk already
        has with the same quantity keeps when it opened and its round trip's P&L so far; the
        realized P&L it counts from further back moves the day's baseline too (not today's P&L)."""
        b = self.books
        before = sum(p.realized for p in b.positions.values())
        for row in snap.positions:
            pos = b.positions.get(row.symbol)
            if pos is None or pos.quantity != row.quantity:
                pos = b.positions[row.symbol] = _Position(row.quantity)
            pos.avg_price, pos.realized = row.avg_price, row.realized_pnl
            pos.mark = row.mark or pos.mark
        b.day_realized_start += sum(p.realized for p in b.positions.values()) - before
        self._recompute_totals()


def client_order_id_for(intent_id: str) -> str:
    """Stable and short (IB's orderRef carries it): the same intent always maps to the same id,
    so a redelivered intent can never become a second order."""
    return "tf-" + hashlib.sha256(intent_id.encode()).hexdigest()[:20]


def _ny_time(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts / NS, tz=NEW_YORK).strftime("%H:%M:%S")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _horizon_order(horizon: str) -> tuple[int, str]:
    """5m before 15m before 60m (numbers first, by value), for the cause's text."""
    digits = "".join(ch for ch in horizon if ch.isdigit())
    return (int(digits) if digits else 0, horizon)


def _feed_source(source: str) -> str:
    """A feed's name without its process (md-gateway says "ib:<started ns>"): a restarted gateway
    clears what its previous process reported down."""
    name, _, instance = source.rpartition(":")
    return name if name and instance.isdigit() else source
