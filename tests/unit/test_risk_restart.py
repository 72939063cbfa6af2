"""The risk gate killed at every point of a losing day: restarted from only what its runtime would
find (its last published risk.state, the execution gateway's last position snapshot and the EXEC
stream after it, replayed as RiskApp._restore does), it decides every later intent as a gate that
never stopped would have. With a snapshot after every fill, with snapshots missing for some
fills, and with none at all; and killed with the last executions stored but not yet taken."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import msgspec
import pytest

from libs.common.clock import SimClock
from libs.common.markettime import ny_day_ordinal
from libs.common.positions import Position
from proto.base import Event
from proto.control import Control
from proto.execution import Fill, OrderEvent, PositionSnapshot
from proto.execution import Position as PositionRow
from proto.market import Quote
from proto.orders import OrderApproved, OrderDenied, OrderIntent, RiskState
from services.risk.core import RiskCore, client_order_id_for
from tests.kit import cores, stubs
from tests.kit.clocks import MINUTE, T0, S

DAY = 24 * 60 * MINUTE
ACCOUNT = "SIM"
LIMITS: dict[str, Any] = {
    "daily_loss_limit": 600.0,
    # The day's peak moves on every check, and a quote's mark between a restart and the next
    # intent is the market's, not the books': the drawdown rule is not what this is about.
    "max_drawdown": 1e9,
    "max_consecutive_losses": 3,
    "loss_cooldown_s": 600,
    "pdt_enabled": True,
    "account_equity": 20_000,
    "pdt_max_day_trades": 5,
    "max_orders_per_minute": 3,
    "max_open_orders": 3,
}
EXEC = (Fill, OrderEvent, PositionSnapshot)
APPROVED = "APPROVED"


@dataclasses.dataclass
class Day:
    """The day as the bus carries it to the gate, the execution gateway's part played here: each
    approved order's SUBMITTED, then per fill its order event, the fill and (``snapshots``) a
    position snapshot, in the gateway's order. ``expected``: what each intent must get."""

    snapshots: str  # "every" | "gaps" | "none"
    events: list[Event] = dataclasses.field(default_factory=list)
    expected: dict[str, str] = dataclasses.field(default_factory=dict)
    t: int = T0
    mids: dict[str, float] = dataclasses.field(default_factory=dict)
    book: dict[str, Position] = dataclasses.field(default_factory=dict)
    orders: dict[str, tuple[str, str, float, float]] = dataclasses.field(default_factory=dict)
    fills: int = 0
    snaps: int = 0

    def at(self, ts: int) -> Day:
        self.t = ts
        return self

    def quotes(self, **mids: float) -> None:
        self.mids.update(mids)
        for symbol, mid in sorted(self.mids.items()):
            self.events.append(stubs.quote(symbol, self.t, round(mid - 0.01, 2), round(mid + 0.01, 2)))
        for symbol, pos in self.book.items():
            pos.mark = self.mids.get(symbol, pos.mark)

    def intent(self, iid: str, symbol: str, side: str, qty: float, expect: str, **kw: Any) -> None:
        self.quotes()  # the market just before
        self.events.append(stubs.intent(symbol, side, qty, self.t, intent_id=iid, **kw))
        self.expected[iid] = expect
        if expect == APPROVED:
            self.orders[iid] = (symbol, side, qty, kw.get("limit_price") or 0.0)
            self._order(iid, "SUBMITTED", 0.0)

    def _order(self, iid: str, status: Any, filled: float) -> None:
        symbol, side, qty, limit = self.orders[iid]
        self.events.append(
            stubs.order_event(
                client_order_id_for(iid),
                status,
                seq=sum(isinstance(e, OrderEvent) for e in self.events) + 1,
                symbol=symbol,
                ts=self.t,
                side=side,
                quantity=qty,
                filled_quantity=filled,
                limit_price=limit or None,
            )
        )

    def fill(self, iid: str, qty: float, price: float, last: bool = True, snapshot: bool = True) -> None:
        symbol, side, _, _ = self.orders[iid]
        done = sum(
            f.quantity
            for f in self.events
            if isinstance(f, Fill) and f.client_order_id == client_order_id_for(iid)
        )
        self._order(iid, "FILLED" if last else "PARTIALLY_FILLED", done + qty)
        self.fills += 1
        f = stubs.fill(
            symbol,
            side,
            qty,
            price,
            self.t,
            exec_id=f"x-{self.fills}",
            client_order_id=client_order_id_for(iid),
            commission=1.0,
        )
        self.events.append(f)
        pos = self.book.setdefault(symbol, Position())
        pos.apply(qty if side == "BUY" else -qty, price, 1.0)
        pos.mark = self.mids.get(symbol, price)
        keep = {"every": True, "none": False, "gaps": self.fills % 3 != 0 and self.t < T0 + 1100 * S}
        if snapshot and keep[self.snapshots]:
            self.snaps += 1
            self.events.append(self.snapshot())

    def again(self, exec_id: str) -> None:
        """The same execution reported twice (a broker resends it): counted once."""
        (first,) = [f for f in self.events if isinstance(f, Fill) and f.exec_id == exec_id]
        self.events.append(msgspec.structs.replace(first, ts_init=self.t))

    def cancel(self, iid: str) -> None:
        self._order(iid, "CANCELLED", 0.0)

    def snapshot(self) -> PositionSnapshot:
        rows = [
            PositionRow(
                symbol=s,
                quantity=p.quantity,
                avg_price=p.avg_price,
                mark=p.mark,
                realized_pnl=p.realized,
                unrealized_pnl=p.unrealized,
            )
            for s, p in sorted(self.book.items())
        ]
        return PositionSnapshot(
            ts_event=self.t,
            ts_init=self.t,
            account=ACCOUNT,
            seq=self.snaps,
            instance="exec-1",
            positions=rows,
            realized_pnl=sum(p.realized for p in self.book.values()),
            unrealized_pnl=sum(p.unrealized for p in self.book.values()),
        )

    def mode(self, mode: str) -> None:
        self.events.append(
            Control(
                ts_event=self.t,
                ts_init=self.t,
                command_id=f"ops-{self.t}",
                command="set_mode",
                issued_by="ops",
                args={"mode": mode},
            )
        )


def losing_day(snapshots: str) -> Day:
    """Monday: one winning day trade. Tuesday: three losing round trips (the third trips the
    cool-down), a burst that meets the order-rate and open-order limits, the operator's OBSERVE,
    a winning round trip that brings the fifth day trade in five days (PDT), then a position whose
    fall crosses the daily loss limit: entries denied, exits (a partial one too) approved."""
    d = Day(snapshots)
    mon = T0 - DAY
    d.at(mon).quotes(IBM=100.0)
    d.intent("m1", "IBM", "BUY", 100, APPROVED)
    d.fill("m1", 100, 100.01)
    d.at(mon + 60 * S).quotes(IBM=100.5)
    d.intent("m2", "IBM", "SELL", 100, APPROVED)
    d.fill("m2", 100, 100.49)

    def s(seconds: int) -> Day:
        return d.at(T0 + seconds * S)

    s(0).quotes(IBM=100.0, MSFT=50.0)
    s(10).intent("a1", "IBM", "BUY", 100, APPROVED)
    d.fill("a1", 100, 100.01)
    s(70).quotes(IBM=99.5)
    d.intent("a2", "IBM", "SELL", 100, APPROVED)  # the first loss
    d.fill("a2", 100, 99.49)
    s(130).quotes(MSFT=50.0)
    d.intent("b1", "MSFT", "BUY", 200, APPROVED)
    d.fill("b1", 120, 50.01, last=False)
    d.fill("b1", 80, 50.01)
    d.again("x-6")  # reported twice: one fill
    s(190).quotes(MSFT=49.5)
    d.intent("b2", "MSFT", "SELL", 200, APPROVED)  # the second loss
    d.fill("b2", 200, 49.49)

    s(250).quotes(IBM=100.0, MSFT=50.0)
    d.intent("c1", "IBM", "BUY", 10, APPROVED, order_type="LMT", limit_price=99.9)  # rests
    d.intent("c2", "MSFT", "BUY", 10, APPROVED, order_type="LMT", limit_price=49.9)  # rests
    s(255).intent("c3", "IBM", "BUY", 10, APPROVED)
    d.fill("c3", 10, 100.01)
    s(260).intent("c4", "MSFT", "BUY", 5, "ORDERS_RATE")  # three in the minute
    s(320).quotes(IBM=100.0)
    d.intent("c5", "MSFT", "BUY", 5, APPROVED, order_type="LMT", limit_price=49.9)
    s(325).intent("c6", "IBM", "BUY", 5, "ORDERS_OPEN")  # c1, c2 and c5 rest
    s(330).cancel("c1")
    d.cancel("c2")
    d.cancel("c5")
    s(380).quotes(IBM=99.0)
    d.intent("c7", "IBM", "SELL", 10, APPROVED)  # the third loss: the cool-down starts
    d.fill("c7", 10, 98.99)

    s(400).quotes(IBM=99.0)
    d.intent("e1", "IBM", "BUY", 100, "LOSS_COOLDOWN")
    s(420).mode("OBSERVE")
    s(430).quotes(IBM=99.0)
    d.intent("e2", "IBM", "BUY", 100, "MODE_OBSERVE")
    s(500).mode("LIVE")
    s(510).quotes(MSFT=50.0)
    d.intent("e3", "MSFT", "BUY", 100, "LOSS_COOLDOWN")

    s(1000).quotes(IBM=100.0, MSFT=50.0)
    d.intent("f1", "IBM", "BUY", 100, APPROVED)  # the cool-down is over
    d.fill("f1", 100, 100.01)
    s(1010).quotes(MSFT=50.0)
    d.intent("f2", "MSFT", "BUY", 100, APPROVED)
    d.fill("f2", 100, 50.01)
    s(1060).quotes(IBM=101.0)
    d.intent("f3", "IBM", "SELL", 100, APPROVED)  # a win, and the fifth day trade in five days
    d.fill("f3", 100, 100.99)
    s(1070).quotes(IBM=101.0)
    d.intent("f4", "IBM", "BUY", 50, "PDT_LIMIT")
    s(1130).quotes(IBM=101.0, MSFT=44.0)  # MSFT's fall: the day's P&L under -600
    d.intent("f5", "IBM", "BUY", 10, "LOSS_DAILY_LIMIT")
    s(1140).quotes(MSFT=44.0)
    d.intent("f6", "MSFT", "SELL", 50, APPROVED)  # a partial exit
    d.fill("f6", 20, 43.99, last=False)
    s(1145).quotes(MSFT=44.0)
    d.intent("f7", "MSFT", "SELL", 55, "LOSS_DAILY_LIMIT")  # 80 held, 30 in flight: 55 is an entry
    d.fill("f6", 30, 43.99)
    s(1150).quotes(MSFT=44.0)
    d.intent("f8", "MSFT", "BUY", 10, "LOSS_DAILY_LIMIT")
    s(1160).quotes(MSFT=44.0)
    d.intent("f9", "MSFT", "SELL", 50, APPROVED)  # the rest: a loss
    d.fill("f9", 50, 43.99)
    s(1170).quotes(IBM=101.0, MSFT=44.0)
    d.intent("f10", "IBM", "BUY", 1, "LOSS_DAILY_LIMIT")  # realized now: still under the limit
    return d


def gate(now: int) -> RiskCore:
    return cores.risk(SimClock(now), shortable=frozenset({"IBM"}), **LIMITS)


class Process:
    """What RiskApp does with each event, and what it publishes that a restart reads back: the
    risk.state after start, after each change the core reports, after an approval or a decision
    that moved the day's peak (RiskCore.decide). Position snapshots are not the gate's to take."""

    def __init__(self, core: RiskCore, now: int) -> None:
        self.core = core
        self.state: RiskState | None = None
        self.decisions: dict[str, tuple[str, str]] = {}
        self._published([core.state(now)])

    def _published(self, events: list[Event]) -> None:
        for e in events:
            if isinstance(e, RiskState):
                self.state = e
            elif isinstance(e, OrderApproved):
                self.decisions[e.intent_id] = (APPROVED, "")
            elif isinstance(e, OrderDenied):
                self.decisions[e.intent_id] = ("DENIED", e.code)
        self.core.take_alerts()

    def take(self, e: Event) -> None:
        clock = self.core.clock
        assert isinstance(clock, SimClock)
        clock.set(max(clock.now_ns(), e.ts_event))
        if isinstance(e, OrderIntent):
            self._published(self.core.decide(e))
        elif isinstance(e, Quote):
            self.core.on_quote(e)
        elif not isinstance(e, PositionSnapshot):
            self._published(self.core.on_event(e))


def stored(events: list[Event]) -> list[tuple[int, Event]]:
    """The EXEC stream: the executions in the order published, numbered from 1."""
    return list(enumerate((e for e in events if isinstance(e, EXEC)), start=1))


def restarted(events: list[Event], taken: int, published: int, state: RiskState | None, now: int) -> Process:
    """A fresh gate restored as RiskApp._restore does: its last state; the EXEC stream as stored
    when it died (the first ``published`` events), read from the start of the day or from the
    account's last snapshot when that is older; what it had acknowledged (``taken`` events) is
    counted by the state already. The live consumer then skips what the replay read (the stored
    executions it had not taken come back, already applied)."""
    stream = stored(events[:published])
    through = stream[-1][0] if stream else 0
    acked = len(stored(events[:taken]))
    snapshot = max(
        (seq for seq, e in stream if isinstance(e, PositionSnapshot) and e.account == ACCOUNT), default=None
    )
    # From the start of the day, or of the day of the first execution the gate had not taken.
    day = ny_day_ordinal(now if acked >= through else min(now, stream[acked][1].ts_event))
    start = min((seq for seq, e in stream if ny_day_ordinal(e.ts_event) >= day), default=through + 1)
    if snapshot is not None:
        start = min(start, snapshot)  # or from the account's last snapshot, when older
    core = gate(now)
    core.restore(None, state)
    if state is not None or snapshot is not None:
        core.rebuild(stream[start - 1 :], acked if state is not None else 0)
    return Process(core, now)


def run_through(day: Day) -> Process:
    rt = Process(gate(day.events[0].ts_event - MINUTE), day.events[0].ts_event - MINUTE)
    for e in day.events:
        rt.take(e)
    return rt


@pytest.mark.parametrize("snapshots", ["every", "gaps", "none"])
def test_the_uninterrupted_day_decides_as_designed(snapshots: str) -> None:
    day = losing_day(snapshots)
    got = run_through(day).decisions
    assert {i: (c or a) for i, (a, c) in got.items()} == day.expected


def cuts(events: list[Event]) -> list[tuple[int, int]]:
    """Every (taken, published): killed after ``taken`` events, with the executions after them up
    to ``published`` stored but not yet taken (a gate behind its consumer)."""
    out = []
    for k in range(1, len(events)):
        j = k
        while True:
            out.append((j, k))
            if j == 0 or not isinstance(events[j - 1], EXEC):
                break
            j -= 1
    return out


@pytest.mark.parametrize("snapshots", ["every", "gaps", "none"])
def test_killed_at_any_point_the_restarted_gate_decides_as_the_one_that_never_stopped(snapshots: str) -> None:
    day = losing_day(snapshots)
    events = day.events
    reference = run_through(day).decisions
    checked = 0
    for taken, published in cuts(events):
        before = Process(gate(events[0].ts_event - MINUTE), events[0].ts_event - MINUTE)
        for e in events[:taken]:
            before.take(e)
        now = events[published].ts_event
        after = restarted(events, taken, published, before.state, now)
        # Market data is seen again at once: the latest quote of each symbol.
        latest = {e.symbol: e for e in events[:published] if isinstance(e, Quote)}
        for q in latest.values():
            after.take(q)
        live = events[published:]
        for e in live:
            after.take(e)
        later = {e.intent_id for e in live if isinstance(e, OrderIntent)}
        want = {i: d for i, d in reference.items() if i in later}
        got = {i: d for i, d in after.decisions.items() if i in later}
        assert got == want, (
            f"killed after event {taken} ({published} published): {type(events[taken - 1]).__name__}"
        )
        checked += 1
    assert checked > len(events)


async def test_a_gate_that_cannot_read_its_books_back_denies_everything_and_says_why() -> None:
    """The EXEC stream unreachable at start: no approval from flat books. Every intent is denied
    (EMERGENCY, with why), no risk.state overwrites the last good one, and once the books are
    read back the gate trades again."""
    from libs.common.bus import Delivery, InProcessBus
    from libs.common.config import Settings
    from libs.common.runtime import Runtime as ServiceRuntime
    from proto.alerts import Alert
    from services.risk import runtime as risk_runtime

    app = risk_runtime.RiskApp(Settings())
    app.restore_retry_s = 0.01
    reachable = False
    real_gather = app._gather

    async def gather(rt: ServiceRuntime) -> risk_runtime._Found:
        if not reachable:
            raise ConnectionError("EXEC stream unreachable")
        return await real_gather(rt)

    app._gather = gather  # type: ignore[method-assign]
    bus = InProcessBus()
    heard: list[Event] = []

    async def hear(d: Delivery[Event]) -> None:
        heard.append(d.event)

    for pattern in ("order.>", "risk.state", "alert.>"):
        await bus.subscribe(pattern, hear)
    rt = ServiceRuntime("risk", Settings(), bus=bus, clock=SimClock(T0))
    await app.start(rt)
    await bus.publish("md.quote.IBM", stubs.quote(ts=T0))
    await bus.publish("order.intent.IBM", stubs.intent(ts=T0, intent_id="early"))
    (denial,) = [e for e in heard if isinstance(e, OrderDenied)]
    assert denial.code == "MODE_EMERGENCY"
    assert denial.context["reason"] == "books not restored: ConnectionError: EXEC stream unreachable"
    assert not [e for e in heard if isinstance(e, RiskState)]  # the last good state stays the last
    assert [a for a in heard if isinstance(a, Alert) and a.severity == "critical"]
    assert app.status()["restored"] is False and "unreachable" in app.status()["restore_error"]

    reachable = True
    for _ in range(200):
        if app.restored.is_set():
            break
        await asyncio.sleep(0.01)
    assert app.core.mode == "LIVE" and [e for e in heard if isinstance(e, RiskState)]
    await bus.publish("order.intent.IBM", stubs.intent(ts=T0, intent_id="later"))
    assert [e for e in heard if isinstance(e, OrderApproved) and e.intent_id == "later"]
    await app.stop()
