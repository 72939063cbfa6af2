"""The order path's cost loop in one process, on a recorded day: execution with the SimBroker, TCA,
and (optionally) TCA's feedback to execution. The cores are the fleet's own; only the wiring is
here. It answers one question with real data: does the feedback lower what orders cost?

Market orders come from a fixed schedule (the same in every run: what differs is only how they
are worked), so two runs compare like with like.
"""

from __future__ import annotations

import secrets
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from libs.common import signing
from libs.common.clock import SimClock
from libs.common.config import ExecutionSettings, SimSettings, TcaSettings
from libs.common.markettime import ny_midnight_ns
from proto.alerts import Alert
from proto.base import Event
from proto.execution import Fill, OrderEvent
from proto.market import Quote, Trade
from proto.orders import OrderApproved, OrderIntent
from proto.tca import TcaFeedback, TcaReport
from proto.units import SECOND_NS as NS
from services.execution.broker import BrokerReport
from services.execution.core import (
    Cancel,
    ExecutionCore,
    JournalRecord,
    Outcome,
    Replace,
    Send,
)
from services.execution.simbroker import SimVenue
from services.md_gateway.core import MarketDataCore
from services.md_gateway.providers.lean import LeanReplay
from services.tca.core import TcaCore
from services.tca.feedback import CostBook


@dataclass(frozen=True)
class Schedule:
    """Alternating buys and sells of ``quantity`` shares every ``every_s`` seconds per symbol."""

    start: str = "09:45"
    end: str = "15:45"
    every_s: int = 180
    quantity: float = 200

    def intents(self, date: str, symbols: list[str]) -> list[OrderIntent]:
        day = ny_midnight_ns(date)
        h0, m0 = map(int, self.start.split(":"))
        h1, m1 = map(int, self.end.split(":"))
        out = []
        for k, t in enumerate(range((h0 * 60 + m0) * 60, (h1 * 60 + m1) * 60 + 1, self.every_s)):
            for j, symbol in enumerate(symbols):
                ts = day + t * NS + j * 1000  # symbols a microsecond apart: a stable order
                side: Literal["BUY", "SELL"] = "BUY" if k % 2 == 0 else "SELL"
                out.append(
                    OrderIntent(
                        ts_event=ts,
                        ts_init=ts,
                        intent_id=f"lab-{symbol}-{k}",
                        symbol=symbol,
                        side=side,
                        quantity=self.quantity,
                    )
                )
        return out


@dataclass
class CostRun:
    reports: list[TcaReport] = field(default_factory=list)
    feedback: list[TcaFeedback] = field(default_factory=list)
    alerts: int = 0
    orders_sent: int = 0
    chases: int = 0

    @property
    def mean_cost_bps(self) -> float:
        """Quantity-weighted all-in cost (shortfall + commissions) over every scheduled order."""
        weight = sum(r.quantity for r in self.reports)
        return sum(r.cost_bps * r.quantity for r in self.reports) / weight if weight else 0.0

    def summary(self) -> dict[str, object]:
        by_type: dict[str, list[float]] = {}
        for r in self.reports:
            by_type.setdefault(r.order_type, []).append(r.cost_bps)
        return {
            "orders": len(self.reports),
            "mean_cost_bps": round(self.mean_cost_bps, 4),
            "by_worked_type": {
                k: (len(v), round(statistics.fmean(v), 4)) for k, v in sorted(by_type.items())
            },
            "mean_fill_ratio": round(statistics.fmean(r.fill_ratio for r in self.reports), 4)
            if self.reports
            else 0.0,
            "feedback_events": len(self.feedback),
            "alerts": self.alerts,
            "chases": self.chases,
        }


def lean_market(root: Path, date: str, symbols: list[str]) -> Iterator[Event]:
    """The recorded day's quotes and trades, cleaned by the md-gateway core, in time order."""
    provider = LeanReplay(root, date, symbols, "none")
    md = MarketDataCore(SimClock(), 10.0, True, provider.session())
    for record in provider.records():
        event = md.on_record(record)
        if isinstance(event, (Quote, Trade)):
            yield event


class CostLab:
    def __init__(
        self, feedback: bool, policy: TcaSettings | None = None, sim: SimSettings | None = None
    ) -> None:
        self.clock = SimClock(0)
        # The lab approves its intents itself, as the risk gate would: signed, with its own key.
        self.approval_key = secrets.token_bytes(32)
        self.execution = ExecutionCore(
            ExecutionSettings(feedback=feedback), self.clock, approval_key=self.approval_key
        )
        self.broker = SimVenue(sim or SimSettings())
        self.tca = TcaCore(TcaSettings(), self.clock)
        self.book = CostBook(policy or TcaSettings())
        self.run = CostRun()

    def replay(self, market: Iterable[Event], intents: list[OrderIntent]) -> CostRun:
        pending = sorted(intents, key=lambda i: i.ts_event)
        k = 0
        for event in market:
            while k < len(pending) and pending[k].ts_event <= event.ts_event:
                self._intent(pending[k])
                k += 1
            self.clock.set(event.ts_event)
            if isinstance(event, Quote):
                self._reports(self.tca.on_quote(event))
                self.execution.on_quote(event)
                self._broker(
                    self.broker.on_quote(
                        event.symbol, event.ts_event, event.bid, event.ask, event.bid_size, event.ask_size
                    )
                )
            elif isinstance(event, Trade):
                self._broker(self.broker.on_trade(event.symbol, event.ts_event, event.price, event.size))
            self._act(self.execution.on_time(event.ts_event))
        self._broker(self.broker.end_of_data())
        self._reports(self.tca.end_of_data())
        self.run.chases = self.execution.stats["chases"]
        return self.run

    def _intent(self, i: OrderIntent) -> None:
        self.clock.set(i.ts_event)
        self.tca.on_intent(i)
        unsigned = OrderApproved(
            ts_event=i.ts_event,
            ts_init=i.ts_event,
            intent_id=i.intent_id,
            client_order_id=f"c-{i.intent_id}",
            symbol=i.symbol,
            side=i.side,
            quantity=i.quantity,
            valid_until_ns=i.ts_event + NS,
        )
        approval = signing.signed(unsigned, self.approval_key)
        self.tca.on_approved(approval)
        self._act(self.execution.on_approved(approval))

    def _broker(self, reports: list[BrokerReport]) -> None:
        for report in reports:
            self._act(self.execution.on_report(report))

    def _act(self, out: Outcome) -> None:
        now = self.clock.now_ns()
        for action in out.actions:
            if isinstance(action, Send):
                self.run.orders_sent += 1
                self.broker.submit(action.order, now)
            elif isinstance(action, Cancel):
                self.broker.cancel(action.client_order_id, now)
            elif isinstance(action, Replace):
                self.broker.replace(action.client_order_id, now, action.quantity, action.limit_price)
            else:
                assert isinstance(action, JournalRecord)  # nothing to make durable in a lab
        for event in out.events:
            if isinstance(event, Fill):
                self.tca.on_fill(event)
            elif isinstance(event, OrderEvent):
                self._reports(self.tca.on_order_event(event))

    def _reports(self, reports: list[TcaReport]) -> None:
        for report in reports:
            self.run.reports.append(report)
            for derived in self.book.add(report, self.clock.now_ns()):
                if isinstance(derived, TcaFeedback):
                    self.run.feedback.append(derived)
                    self.execution.on_feedback(derived)
                elif isinstance(derived, Alert):
                    self.run.alerts += 1


def compare(
    root: Path, date: str, symbols: list[str], schedule: Schedule | None = None
) -> dict[str, CostRun]:
    """The same day and schedule with feedback off and on."""
    schedule = schedule or Schedule()
    intents = schedule.intents(date, symbols)
    market = list(lean_market(root, date, symbols))
    return {name: CostLab(feedback=on).replay(market, intents) for name, on in (("off", False), ("on", True))}
