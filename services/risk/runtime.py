"""risk runtime: intents, executions, quotes, feed status and operator commands in; approvals,
denials and risk.state out. Only this service publishes order.approved."""

from __future__ import annotations

from typing import Any

from libs.common.bus import Delivery
from libs.common.clock import LiveClock
from libs.common.config import Settings
from libs.common.logging import get_logger
from libs.common.runtime import Runtime, ServiceApp
from proto.execution import PositionSnapshot
from proto.features import AtrReader, FeatureVector
from proto.orders import MarginCheck, MarginReply, OrderApproved, OrderDenied, OrderIntent, RiskState
from proto.subjects import spec
from services.risk.core import RiskCore, RiskLimits

log = get_logger(__name__)
APPROVED, DENIED, STATE = spec("order.approved.{symbol}"), spec("order.denied.{symbol}"), spec("risk.state")


def risk_limits(settings: Settings) -> RiskLimits:
    values = settings.risk.model_dump()
    for key in ("shortable", "allow_symbols"):
        values[key] = None if values[key] is None else frozenset(values[key])
    for key in ("ssr_symbols", "deny_symbols"):
        values[key] = frozenset(values[key])
    return RiskLimits(**values)


class RiskApp(ServiceApp):
    name = "risk"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        # the runtime's clock in start(); the account is the execution gateway's (its snapshots)
        self.core = RiskCore(risk_limits(settings), LiveClock(), account=settings.execution.account)
        self.skip_exec_through = 0  # EXEC stream seq already in the restored snapshot
        self.atr_of = AtrReader(tuple(settings.features.timeframes))
        self.decisions = {"approved": 0, "denied": 0}

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        self.core.clock = rt.clock
        self.core.instance = f"risk-{rt.started_ns}"
        await self._restore(rt)
        await rt.subscribe("md.quote.>", self._on_market)
        await rt.subscribe("md.status", self._on_event)
        await rt.subscribe("feat.1m.*", self._on_vector)
        await rt.subscribe("exec.>", self._on_exec, durable="risk-exec", new_only=True)
        await rt.subscribe("ctl.>", self._on_event, durable="risk-ctl", new_only=True)
        await rt.subscribe("order.intent.>", self._on_intent, durable="risk-intents", new_only=True)
        await self._publish([self.core.state(rt.now_ns())])

    async def _restore(self, rt: Runtime) -> None:
        """A restarted gate starts from what is known, not from flat: the last position snapshot
        and its own last state (docs/ARCHITECTURE.md, Order path)."""
        snapshot = await rt.last("exec.position")
        state = await rt.last("risk.state")
        snap = snapshot[0] if snapshot and isinstance(snapshot[0], PositionSnapshot) else None
        last_state = state[0] if state and isinstance(state[0], RiskState) else None
        done = self.core.restore(snap, last_state)
        if snap is not None and snapshot is not None and snap.account == self.core.account:
            self.skip_exec_through = snapshot[1]  # fills up to it are in the snapshot already
        if done:
            log.warning("risk gate restored its books", restored=done, mode=self.core.mode)

    async def _on_exec(self, d: Delivery) -> None:
        if d.seq and d.seq <= self.skip_exec_through:
            self.core.stats["exec_events_in_restored_snapshot"] += 1
            return
        await self._on_event(d)

    async def _on_market(self, d: Delivery) -> None:
        self.core.on_event(d.event)

    async def _on_vector(self, d: Delivery) -> None:
        v = d.event
        if isinstance(v, FeatureVector) and (atr := self.atr_of(v)) is not None:
            self.core.on_volatility(v.symbol, atr)

    async def _on_event(self, d: Delivery) -> None:
        await self._publish(self.core.on_event(d.event))

    async def _on_intent(self, d: Delivery) -> None:
        intent = d.event
        if not isinstance(intent, OrderIntent):
            return
        margin = await self._what_if(intent) if self.core.limits.broker_what_if else None
        await self._publish([self.core.on_intent(intent, margin)])

    async def _what_if(self, i: OrderIntent) -> MarginReply | None:
        """The broker's margin preview (IB what-if through the execution gateway); None when no
        answer comes in time, which the gate denies (MARGIN_UNKNOWN)."""
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
        answer = await self.rt.request("broker.whatif", check, self.core.limits.what_if_timeout_ms / 1000)
        return answer if isinstance(answer, MarginReply) else None

    async def _publish(self, events: list[Any]) -> None:
        for e in events:
            if isinstance(e, OrderApproved):
                self.decisions["approved"] += 1
                await self.rt.publish(APPROVED.subject(symbol=e.symbol), e)
            elif isinstance(e, OrderDenied):
                self.decisions["denied"] += 1
                log.info("intent denied", intent_id=e.intent_id, denial=e.describe())
                await self.rt.publish(DENIED.subject(symbol=e.symbol), e)
            elif isinstance(e, RiskState):
                await self.rt.publish(STATE.subject(), e)

    def status(self) -> dict[str, Any]:
        denials = {
            k.removeprefix("denied_"): v for k, v in self.core.stats.items() if k.startswith("denied_")
        }
        return {
            "mode": self.core.mode,
            "mode_reason": self.core.mode_reason,
            **self.decisions,
            "denials": denials,
        }
