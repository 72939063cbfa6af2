"""risk runtime: intents, executions, quotes, feed status and operator commands in; approvals,
denials and risk.state out. Only this service publishes order.approved."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import time
from typing import Any, get_args

import nats.errors
import nats.js.errors
from nats.js import api as js_api

from libs.common import codec
from libs.common.bus import Delivery
from libs.common.calendar import market_calendar
from libs.common.clock import LiveClock
from libs.common.config import Settings
from libs.common.logging import get_logger
from libs.common.markettime import NEW_YORK
from libs.common.metrics import Kpi
from libs.common.nats_bus import NatsBus, PublishFailed
from libs.common.runtime import Runtime, ServiceApp
from proto.base import Event
from proto.control import ConfigChange, Control, Heartbeat
from proto.events import Batch
from proto.execution import BrokerStatus, Fill, OrderEvent, PositionSnapshot
from proto.features import AtrReader, FeatureVector
from proto.market import FeedStatus, Quote
from proto.orders import (
    MarginCheck,
    MarginReply,
    OrderDenied,
    OrderIntent,
    RiskMode,
    RiskState,
)
from proto.signals import Prediction
from proto.subjects import stream_of_pattern
from services.risk.core import RiskCore

log = get_logger(__name__)

EXEC_STREAM = stream_of_pattern("exec.>") or "EXEC"
EXEC_DURABLE = "risk-exec"
REPLAYED = (Fill, OrderEvent, PositionSnapshot)  # what a restart reads back from the EXEC stream
RESTORE_RETRY_MAX_S = 30.0


@dataclasses.dataclass
class _Found:
    """What a restart read back: the last position snapshot and its stream sequence, the gate's
    last state, the broker link's last word; the EXEC stream's last sequence, and (None: not
    read) its executions to replay, of which those through ``counted_after`` the state counted."""

    snapshot: tuple[PositionSnapshot, int] | None
    state: RiskState | None
    broker: BrokerStatus | None
    through: int = 0
    stream: list[tuple[int, Event]] | None = None
    counted_after: int = 0


def _ny_midnight(ts: int) -> str:
    """The start of the New York day of ``ts`` (wall time, as the stream stamps messages), in
    the RFC 3339 form JetStream takes."""
    day = dt.datetime.fromtimestamp(ts / 1e9, NEW_YORK).date()
    return dt.datetime.combine(day, dt.time(), NEW_YORK).astimezone(dt.UTC).isoformat()


def _decoded(data: bytes, seq: int) -> list[Event]:
    try:
        obj = codec.decode(data)
    except codec.DecodeFailure as failure:
        log.error("a stored execution is unreadable: skipped", seq=seq, reason=failure.reason)
        return []
    events = obj.events if isinstance(obj, Batch) else [obj]
    return [e for e in events if isinstance(e, REPLAYED)]


# What a publish raises while the bus cannot take it (the hub behind a cut leaf link answers no
# JetStream publish): the event is kept and sent, in order, once it can be.
UNSENT_ERRORS = (PublishFailed, nats.errors.Error, TimeoutError, ConnectionError)
UNSENT_MAX = 100_000


class RiskApp(ServiceApp):
    name = "risk"
    restore_retry_s = 1.0  # the first wait before reading the books back again, doubled each time

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        # the runtime's clock in start(); the account is the execution gateway's (its snapshots)
        self.core = RiskCore(
            settings.risk,
            LiveClock(),
            market_calendar(settings.market),
            account=settings.execution.account,
            approval_key=settings.signing.key(),
        )
        self.skip_exec_through = 0  # EXEC stream seq already in the restored snapshot
        self.config_seq = 0  # CONTROL stream seq of the live limits applied
        self.atr_of = AtrReader(tuple(settings.features.timeframes))
        # Events the bus did not take yet, oldest first (sent before anything newer).
        self.unsent: collections.deque[Event] = collections.deque()
        self.unsent_dropped = 0
        self._flusher: asyncio.Task[None] | None = None
        self.hub_heard: dict[str, float] = {}  # hub service -> monotonic time of its last heartbeat
        self.hub_reachable = True
        self._hub_watch: asyncio.Task[None] | None = None
        # Set once the books are rebuilt (_restore): executions and operator commands wait for it,
        # and no risk.state goes out before (it would overwrite the last good one).
        self.restored = asyncio.Event()
        self.restore_error = ""
        self._acked: int | None = None  # the executions consumer's ack floor when we started
        self._retry: asyncio.Task[None] | None = None

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        self.core.clock = rt.clock
        self.core.instance = f"risk-{rt.started_ns}"
        if not self.core.approval_key:
            log.error(
                "no approval key (TRADEFLEET_SIGNING__APPROVAL_KEY or signing.approval_key_file): "
                "approvals go out unsigned and the execution gateway refuses every one"
            )
        # What the gate before had taken, read before the subscription below (which creates the
        # consumer on a first start); that subscription comes before the books are rebuilt, so
        # nothing published meanwhile is missed (its handler waits for the rebuild).
        self._acked = await self._exec_acked(rt)
        # One consumer over exec.> keeps each order's events and fills in the stream's order.
        await rt.subscribe(
            "exec.>",
            self._on_exec,
            types=(OrderEvent, Fill, BrokerStatus),
            durable=EXEC_DURABLE,
            new_only=True,
        )
        await self._restore(rt)
        await rt.subscribe("md.quote.>", self._on_quote, sync=True, types=Quote)
        await rt.subscribe("md.status", self._on_event, types=FeedStatus)
        await rt.subscribe("feat.1m.*", self._on_vector, types=FeatureVector)
        # The quarantine flags: every model out of service holds the gate in OBSERVE.
        await rt.subscribe("sig.fast.>", self._on_event, types=Prediction)
        await rt.subscribe(
            "ctl.>", self._on_ctl, types=(Control, ConfigChange), durable="risk-ctl", new_only=True
        )
        # Intents last: none is decided before the books are rebuilt (they wait in the consumer),
        # and while they cannot be, each is denied (EMERGENCY, with why) instead.
        await rt.subscribe(
            "order.intent.>", self._on_intent, types=OrderIntent, durable="risk-intents", new_only=True
        )
        await self._restore_config(rt)
        await self._publish([self.core.state(rt.now_ns())])
        await self._watch_the_hub(rt)

    async def _watch_the_hub(self, rt: Runtime) -> None:
        """On-prem, behind a leaf node: the hub's services' heartbeats say the link is up
        (risk.hub_services). Not in a lockstep replay, where nobody beats."""
        hub = self.settings.risk.hub_services
        if not hub or self.settings.nats.sync or self.settings.telemetry.heartbeat_s <= 0:
            return
        started = time.monotonic()
        self.hub_heard = dict.fromkeys(hub, started)  # a grace of hub_silence_s from the start
        await rt.subscribe("hb.*", self._on_heartbeat, types=Heartbeat)
        self._hub_watch = asyncio.create_task(self._hub_loop(), name="hub-watch")

    async def _on_heartbeat(self, d: Delivery[Heartbeat]) -> None:
        if d.event.service in self.hub_heard:
            self.hub_heard[d.event.service] = time.monotonic()

    async def _hub_loop(self) -> None:
        silence = self.settings.risk.hub_silence_s
        while True:
            await asyncio.sleep(min(0.5, silence / 4))
            now = time.monotonic()
            reachable = any(now - heard <= silence for heard in self.hub_heard.values())
            if reachable == self.hub_reachable:
                continue
            self.hub_reachable = reachable
            names = ", ".join(sorted(self.hub_heard))
            detail = f"no heartbeat from {names} for {silence:g} s" if not reachable else ""
            log.warning("the hub is " + ("back" if reachable else "unreachable"), services=names)
            await self._publish(
                [*self.core.on_hub(reachable, detail, self.rt.now_ns()), *self.core.take_alerts()]
            )

    async def _restore_config(self, rt: Runtime) -> None:
        """The live limits last set (ctl.config.risk), read after subscribing: a change sent
        meanwhile is not missed, and the stream sequence keeps an older one from undoing it."""
        last = await rt.last("ctl.config.risk", ConfigChange)
        if last is None or last[1] <= self.config_seq:
            return
        self.config_seq = last[1]
        self.core.on_config(last[0], restoring=True)
        log.warning("live risk limits restored", change_id=last[0].change_id, by=last[0].issued_by)

    async def _on_ctl(self, d: Delivery[Event]) -> None:
        # After the rebuild, which restores the operator's mode as last set: a command taken
        # before would be undone by it.
        await self.restored.wait()
        if isinstance(d.event, ConfigChange):
            if d.seq and d.seq <= self.config_seq:
                return  # older than what is applied (restored at start)
            self.config_seq = max(self.config_seq, d.seq or 0)
        await self._on_event(d)

    async def _restore(self, rt: Runtime) -> None:
        """A restarted gate starts from what is known, not from flat (docs/ARCHITECTURE.md, Order
        path): the last position snapshot, its own last state, and the executions since, read
        back from the EXEC stream. When that cannot be read, the gate approves nothing and says
        why until it can (retried in the background)."""
        try:
            found = await self._gather(rt)
        except Exception as exc:
            self.restore_error = f"{type(exc).__name__}: {exc}"[:300]
            log.error(
                "the risk gate could not rebuild its books: it approves nothing until it does",
                error=self.restore_error,
            )
            await self._publish(
                [*self.core.on_restore(self.restore_error, rt.now_ns()), *self.core.take_alerts()]
            )
            self._retry = asyncio.create_task(self._retry_restore(rt), name="risk-restore")
            return
        self._apply(found)

    async def _retry_restore(self, rt: Runtime) -> None:
        delay = self.restore_retry_s
        while True:
            await asyncio.sleep(delay)
            try:
                found = await self._gather(rt)
            except Exception as exc:
                self.restore_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("books still not restored", error=self.restore_error, retry_s=delay)
                delay = min(delay * 2, RESTORE_RETRY_MAX_S)
                continue
            self._apply(found)
            now = rt.now_ns()
            events = [*self.core.on_restore("", now), *self.core.take_alerts()]
            if not any(isinstance(e, RiskState) for e in events):
                events.append(self.core.state(now))
            await self._publish(events)
            return

    async def _gather(self, rt: Runtime) -> _Found:
        """Everything a restart resumes from, read (nothing applied: a failure changes nothing)."""
        snapshot = await rt.last("exec.position", PositionSnapshot)
        state = await rt.last("risk.state", RiskState)
        broker = await rt.last("exec.broker", BrokerStatus)
        account = self.core.account
        mine = snapshot if snapshot is not None and snapshot[0].account == account else None
        found = _Found(snapshot, state[0] if state else None, broker[0] if broker else None)
        bus = rt.bus
        if not isinstance(bus, NatsBus):  # in-process (a backtest): no stream to read back
            return found
        info = await bus.js.stream_info(EXEC_STREAM)
        found.through = int(info.state.last_seq or 0)
        ours = found.state is not None and found.state.account == account
        if mine is None and not ours:
            return found  # this account's first start: from now on, not from the stream's history
        # The executions of the day (and from the account's last snapshot, when older), or from
        # the day of the first one the gate before had not taken, when older still.
        since = time.time_ns()
        if ours and self._acked is not None and self._acked < found.through:
            seq = max(self._acked + 1, int(info.state.first_seq or 1))
            with contextlib.suppress(nats.js.errors.NotFoundError):
                untaken = await bus.js.get_msg(EXEC_STREAM, seq)
                if untaken.time is not None:
                    since = min(since, int(untaken.time.timestamp() * 1e9))
        stream = await self._read_exec(bus.js, found.through, opt_start_time=_ny_midnight(since))
        first = stream[0][0] if stream else found.through + 1
        if mine is not None and mine[1] < first:
            stream = await self._read_exec(bus.js, first - 1, opt_start_seq=mine[1]) + stream
        found.stream = stream
        # What the state had counted: what the consumer had acknowledged; all of it when there
        # was no consumer (the state is all there is); nothing without a state of this account.
        found.counted_after = (self._acked if self._acked is not None else found.through) if ours else 0
        return found

    def _apply(self, found: _Found) -> None:
        replaying = found.stream is not None
        snap = found.snapshot[0] if found.snapshot else None
        done = self.core.restore(None if replaying else snap, found.state)
        if found.stream is not None:
            done += self.core.rebuild(found.stream, found.counted_after)
        if found.broker is not None and found.broker.state == "disconnected":  # still down, as last said
            self.core.on_broker(found.broker)
            done.append("the broker link down, from exec.broker")
        if found.through:
            # Everything stored when we started is in the rebuilt books (or, on a first start, in
            # the stream's history): the live consumer takes what comes after.
            self.skip_exec_through = found.through
        elif snap is not None and found.snapshot is not None and snap.account == self.core.account:
            self.skip_exec_through = found.snapshot[1]  # fills up to it are in the snapshot already
        self.restore_error = ""
        self.restored.set()
        if done:
            log.warning("risk gate restored its books", restored=done, mode=self.core.mode)

    async def _exec_acked(self, rt: Runtime) -> int | None:
        """The stream sequence the executions consumer had acknowledged through (None: there is
        no such consumer yet, or not on this bus)."""
        bus = rt.bus
        if not isinstance(bus, NatsBus):
            return None
        try:
            info = await bus.js.consumer_info(EXEC_STREAM, rt._replica_durable(EXEC_DURABLE))
        except nats.js.errors.NotFoundError:
            return None
        return int(info.ack_floor.stream_seq or 0)

    async def _read_exec(self, js: Any, through: int, **start: Any) -> list[tuple[int, Event]]:
        """The EXEC stream's fills, order events and position snapshots from ``start`` (a time
        or a sequence) through ``through``, each with its sequence: an ephemeral consumer that
        nothing acknowledges, deleted after."""
        policy = js_api.DeliverPolicy.BY_START_TIME if "opt_start_time" in start else None
        config = js_api.ConsumerConfig(
            deliver_policy=policy or js_api.DeliverPolicy.BY_START_SEQUENCE,
            ack_policy=js_api.AckPolicy.NONE,
            filter_subject="exec.>",
            inactive_threshold=60.0,
            mem_storage=True,
            num_replicas=1,
            **start,
        )
        psub = await js.pull_subscribe("exec.>", stream=EXEC_STREAM, config=config)
        out: list[tuple[int, Event]] = []
        name = ""
        try:
            info = await psub.consumer_info()
            name, pending = info.name, int(info.num_pending or 0)
            while pending:
                # Never more than is waiting: a pull for more waits out its timeout.
                for msg in await psub.fetch(min(pending, 256), timeout=5.0):
                    seq, pending = msg.metadata.sequence.stream, int(msg.metadata.num_pending or 0)
                    if seq > through:
                        return out
                    out.extend((seq, e) for e in _decoded(msg.data, seq))
                    if seq >= through:
                        return out
            return out
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
            if name:
                with contextlib.suppress(Exception):
                    await js.delete_consumer(EXEC_STREAM, name)

    async def _on_exec(self, d: Delivery[Event]) -> None:
        await self.restored.wait()
        if d.seq and d.seq <= self.skip_exec_through:
            self.core.stats["exec_events_in_restored_books"] += 1
            return
        await self._on_event(d)

    def _on_quote(self, d: Delivery[Quote]) -> None:  # sync: per tick, never awaits
        self.core.on_quote(d.event)

    async def _on_vector(self, d: Delivery[FeatureVector]) -> None:
        v = d.event
        if (atr := self.atr_of(v)) is not None:
            self.core.on_volatility(v.symbol, atr)
        if v.price > 0:  # 0.0: no price known yet
            self.core.on_minute_close(v.symbol, v.ts_event, v.price)  # the portfolio limits' input
        self.core.on_clock(v.ts_event)  # a bar at the close: the day's summary
        if alerts := self.core.take_alerts():
            await self._publish(list(alerts))

    async def _on_event(self, d: Delivery[Event]) -> None:
        await self._publish([*self.core.on_event(d.event), *self.core.take_alerts()])

    async def _on_intent(self, d: Delivery[OrderIntent]) -> None:
        intent = d.event
        margin = await self._what_if(intent) if self.core.limits.broker_what_if else None
        decision, *state = self.core.decide(intent, margin)
        # The state first (after an approval: the order-rate window a restart resumes from): a
        # gate killed between the two then counts the approval once more, never once less.
        await self._publish([*state, decision, *self.core.take_alerts()])

    async def _what_if(self, i: OrderIntent) -> MarginReply | None:
        """The broker's margin preview (through the execution gateway); None when no answer comes
        in time, which the gate denies (MARGIN_UNKNOWN)."""
        now = self.rt.now_ns()
        check = MarginCheck(
            ts_event=i.ts_event,
            ts_init=now,
            request_id=i.intent_id,
            symbol=i.symbol,
            side=i.side,
            quantity=i.quantity,
            order_type=i.order_type,
            limit_price=i.limit_price,
        )
        timeout_s = self.core.limits.what_if_timeout_ms / 1000
        return await self.rt.request("broker.whatif", check, timeout_s, MarginReply)

    async def _publish(self, events: list[Event]) -> None:
        """Publish in order; what the bus cannot take now (the hub unreachable) is kept and sent
        in order once it can be, never dropped while there is room (approvals kept this way are
        refused by execution once expired: late is safe, lost is not)."""
        for e in events:
            if type(e) is RiskState and not self.restored.is_set():
                continue  # books not rebuilt: it would overwrite the last state that was right
            if self.unsent:
                self._keep(e)
                continue
            try:
                await self.rt.emit(e)
            except UNSENT_ERRORS as exc:
                log.warning(
                    "publish failed: kept until the bus takes it", kind=type(e).__name__, error=repr(exc)
                )
                self._keep(e)
        for e in events:  # said once the decision is out: a log line costs tens of microseconds
            if type(e) is OrderDenied:
                log.info("intent denied", intent_id=e.intent_id, denial=e.describe())

    def _keep(self, e: Event) -> None:
        if len(self.unsent) >= UNSENT_MAX:
            self.unsent_dropped += 1
            return
        self.unsent.append(e)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_unsent(), name="risk-unsent")

    async def _flush_unsent(self) -> None:
        delay = 0.2
        while self.unsent:
            try:
                await self.rt.emit(self.unsent[0])
            except UNSENT_ERRORS:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self.unsent.popleft()
            delay = 0.2
        log.info("kept events sent")

    def busy(self) -> bool:
        return bool(self.unsent)

    async def stop(self) -> None:
        for task in (self._hub_watch, self._flusher, self._retry):
            if task is not None:
                task.cancel()
        if self.unsent:
            log.error("stopped with events the bus never took", unsent=len(self.unsent))

    def status(self) -> dict[str, Any]:
        denials = {
            k.removeprefix("denied_"): v for k, v in self.core.stats.items() if k.startswith("denied_")
        }
        return {
            "mode": self.core.mode,
            "mode_reason": self.core.mode_reason,
            "restored": self.restored.is_set(),
            "restore_error": self.restore_error,
            "hub_reachable": self.hub_reachable,
            # seconds since each watched hub service's last heartbeat (risk.hub_services)
            "hub_heard_ago_s": {s: round(time.monotonic() - t, 1) for s, t in self.hub_heard.items()},
            "unsent": len(self.unsent),
            "unsent_dropped": self.unsent_dropped,
            "approved": self.emitted["OrderApproved"],
            "denied": self.emitted["OrderDenied"],
            "denials": denials,
            # symbols whose entries a circuit breaker halts, and until when (market time, ns)
            "circuit_halted": {s: until for s, (until, _) in self.core.halted.items()},
            "book": self._book(),
            "day_pnl": round(
                self.core.books.realized - self.core.books.day_realized_start + self.core.books.unrealized, 2
            ),
        }

    def kpis(self) -> list[Kpi]:
        """The gate's view for people: mode, P&L, positions, how much of each limit is used and
        the denials by code. Read only: the day's P&L is computed here as status() does, not
        through the core's _day_pnl (which moves the day's peak)."""
        core, b, lim = self.core, self.core.books, self.core.limits
        day_pnl = b.realized - b.day_realized_start + b.unrealized
        out = [
            Kpi(
                "tf_risk_mode",
                "1 for the risk gate's current mode",
                1.0 if core.mode == m else 0.0,
                {"mode": m},
            )
            for m in get_args(RiskMode)
        ]
        out += [
            Kpi("tf_pnl_realized_usd", "Realized P&L, commissions included (USD)", b.realized),
            Kpi("tf_pnl_unrealized_usd", "Open P&L at the last mids the gate saw (USD)", b.unrealized),
            Kpi("tf_pnl_day_usd", "The day's P&L: realized since the day began plus open (USD)", day_pnl),
        ]
        out += [
            Kpi("tf_position_shares", "Signed position per symbol", p.quantity, {"symbol": s})
            for s, p in sorted(b.positions.items())
        ]
        # The limits the gate checks each entry against, as a share of each (1 = at the limit).
        usage = {
            "daily_loss": max(0.0, -day_pnl) / lim.daily_loss_limit,
            "gross_exposure": b.gross / lim.max_gross_exposure,
            "net_exposure": abs(b.net) / lim.max_net_exposure,
            "open_orders": len(b.orders) / lim.max_open_orders,
        }
        out += [
            Kpi("tf_limit_usage_ratio", "Share of a risk limit in use (1 = at the limit)", v, {"limit": k})
            for k, v in usage.items()
        ]
        out += [
            Kpi(
                "tf_denials_total",
                "Intents denied, by code",
                n,
                {"code": k.removeprefix("denied_")},
                "counter",
            )
            for k, n in sorted(core.stats.items())
            if k.startswith("denied_")
        ]
        out.append(
            Kpi("tf_approvals_total", "Intents approved", self.emitted["OrderApproved"], kind="counter")
        )
        return out

    def _book(self) -> dict[str, dict[str, float]]:
        """Each symbol the gate has a position or P&L in, marked at the last mid it saw."""
        return {
            symbol: {
                "quantity": p.quantity,
                "avg_price": round(p.avg_price, 4),
                "mark": round(p.mark, 4),
                "realized": round(p.realized, 2),
                "unrealized": round(p.unrealized, 2),
            }
            for symbol, p in sorted(self.core.books.positions.items())
            if p.quantity or p.realized
        }
