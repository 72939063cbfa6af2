"""The TCA core: what an order cost against the price when it was decided. Pure; time is the
events' time (market time for prices, each hop's own ``ts_init`` for latencies).

Per order, once it has ended and the market has moved on by ``realized_after``:
- arrival price: the mid when the intent was decided (the last quote at or before its time);
- slippage: signed distance of the average fill from the arrival price, in bps (positive = cost);
- implementation shortfall: of the whole intended quantity, the filled part's slippage plus the
  unfilled part's opportunity cost (mid at the end against arrival), in bps of the paper notional;
- effective spread: 2 x signed distance of each fill from the mid at that moment, volume-weighted;
- realized spread: the same against the mid ``realized_after`` later (what was left after the
  price moved: the liquidity provider's real take);
- fill ratio, commissions, and the wall-clock latency of every hop.
"""

from __future__ import annotations

import array
import bisect
import collections
from dataclasses import dataclass, field

from libs.common.clock import Clock
from libs.common.config import TcaSettings
from proto.execution import TERMINAL_STATUSES, Fill, OrderEvent
from proto.market import Quote
from proto.orders import OrderApproved, OrderIntent
from proto.tca import TcaReport
from proto.units import BPS
from proto.units import SECOND_NS as NS


@dataclass
class _Mids:
    """A symbol's mid over time (bounded), to look up the mid at or before a moment. Typed arrays:
    8 bytes a value instead of a Python object each (a full symbol holds 24 bytes per quote,
    about 5 MB, not about 20)."""

    ts: array.array[int] = field(default_factory=lambda: array.array("q"))
    mid: array.array[float] = field(default_factory=lambda: array.array("d"))
    spread_bps: array.array[float] = field(default_factory=lambda: array.array("d"))
    keep: int = 200_000

    def add(self, ts: int, bid: float, ask: float) -> None:
        mid = (bid + ask) / 2
        self.ts.append(ts)
        self.mid.append(mid)
        self.spread_bps.append((ask - bid) / mid * BPS)
        if len(self.ts) > self.keep:
            cut = self.keep // 2
            del self.ts[:cut], self.mid[:cut], self.spread_bps[:cut]

    def _index(self, ts: int) -> int:
        return bisect.bisect_right(self.ts, ts) - 1

    def at(self, ts: int) -> float | None:
        k = self._index(ts)
        return self.mid[k] if k >= 0 else None

    def spread_at(self, ts: int) -> float:
        k = self._index(ts)
        return self.spread_bps[k] if k >= 0 else 0.0

    @property
    def last_ts(self) -> int:
        return self.ts[-1] if self.ts else 0


@dataclass
class _OrderCost:
    intent: OrderIntent
    arrival: float | None
    client_order_id: str = ""
    approved_init: int = 0
    submitted_init: int = 0
    acked_init: int = 0
    fills: list[Fill] = field(default_factory=list)
    ended_ts: int = 0
    status: str = ""
    worked_as: str = ""  # the execution's tactic (its order events say), else the intent's type


class TcaCore:
    def __init__(self, settings: TcaSettings, clock: Clock) -> None:
        self.clock = clock
        self.realized_after = int(settings.realized_after_s * NS)
        self.mids: dict[str, _Mids] = collections.defaultdict(_Mids)
        self.by_intent: dict[str, _OrderCost] = {}
        self.by_order: dict[str, _OrderCost] = {}
        self.waiting: list[_OrderCost] = []
        # At the end of a replay no later market data will come: report at once, realized
        # spread unknown where the market did not move on far enough.
        self.data_ended = False
        self.stats: collections.Counter[str] = collections.Counter()

    def on_quote(self, q: Quote) -> list[TcaReport]:
        self.mids[q.symbol].add(q.ts_event, q.bid, q.ask)
        return self._due(q.symbol, q.ts_event)

    def on_intent(self, i: OrderIntent) -> None:
        self.by_intent[i.intent_id] = _OrderCost(i, self.mids[i.symbol].at(i.ts_event))

    def on_approved(self, a: OrderApproved) -> None:
        cost = self.by_intent.get(a.intent_id)
        if cost is None:
            self.stats["approval_without_intent"] += 1
            return
        cost.client_order_id, cost.approved_init = a.client_order_id, a.ts_init
        self.by_order[a.client_order_id] = cost

    def on_order_event(self, e: OrderEvent) -> list[TcaReport]:
        cost = self.by_order.get(e.client_order_id)
        if cost is None:
            return []
        if e.order_type and not cost.worked_as:
            cost.worked_as = e.order_type
        if e.status == "PENDING_SUBMIT" and not cost.submitted_init:
            cost.submitted_init = e.ts_init
        elif e.status == "SUBMITTED" and not cost.acked_init:
            cost.acked_init = e.ts_init
        if e.status in TERMINAL_STATUSES and not cost.status:
            cost.status, cost.ended_ts = e.status, max(e.ts_event, self.mids[cost.intent.symbol].last_ts)
            self.waiting.append(cost)
            return self._due(cost.intent.symbol, self.mids[cost.intent.symbol].last_ts)
        return []

    def on_fill(self, f: Fill) -> None:
        cost = self.by_order.get(f.client_order_id)
        if cost is not None and all(x.exec_id != f.exec_id for x in cost.fills):
            cost.fills.append(f)

    def _due(self, symbol: str, now: int) -> list[TcaReport]:
        if not self.waiting:
            return []  # the common quote: no order waiting for its report
        out, still = [], []
        for cost in self.waiting:
            last_fill = max((f.ts_event for f in cost.fills), default=cost.ended_ts)
            if self.data_ended or (cost.intent.symbol == symbol and now >= last_fill + self.realized_after):
                out.append(self.report(cost))
            else:
                still.append(cost)
        self.waiting = still
        return out

    def end_of_data(self) -> list[TcaReport]:
        self.data_ended = True
        return self._due("", 0)

    def report(self, c: _OrderCost) -> TcaReport:
        i, mids = c.intent, self.mids[c.intent.symbol]
        sign = 1 if i.side == "BUY" else -1
        filled = sum(f.quantity for f in c.fills)
        arrival = c.arrival or (c.fills[0].price if c.fills else 0.0)
        avg = sum(f.quantity * f.price for f in c.fills) / filled if filled else 0.0
        slippage = sign * (avg - arrival) / arrival * BPS if filled and arrival else 0.0
        end_mid = mids.at(c.ended_ts) or arrival
        unfilled = max(i.quantity - filled, 0.0)
        opportunity = sign * (end_mid - arrival) / arrival * BPS if arrival else 0.0
        shortfall = (slippage * filled + opportunity * unfilled) / i.quantity if i.quantity else 0.0
        effective = realized = 0.0
        realized_known = bool(c.fills)
        for f in c.fills:
            at = mids.at(f.ts_event) or f.price
            # Known only once the market has been seen past fill + delta (not the last old quote).
            later = (
                mids.at(f.ts_event + self.realized_after)
                if mids.last_ts >= f.ts_event + self.realized_after
                else None
            )
            effective += 2 * sign * (f.price - at) / at * BPS * f.quantity
            if later is None:
                realized_known = False
            else:
                realized += 2 * sign * (f.price - later) / at * BPS * f.quantity
        spread_at_arrival = mids.spread_at(i.ts_event)
        commission = sum(f.commission or 0.0 for f in c.fills)
        paper = i.quantity * arrival
        passive = sum(f.quantity for f in c.fills if f.liquidity == "ADD")
        first = c.fills[0] if c.fills else None
        latencies = {
            "decision_to_approved": c.approved_init - i.ts_init if c.approved_init else 0,
            "approved_to_submitted": c.submitted_init - c.approved_init if c.submitted_init else 0,
            "submitted_to_acked": c.acked_init - c.submitted_init if c.acked_init and c.submitted_init else 0,
            "acked_to_first_fill": first.ts_init - c.acked_init if first and c.acked_init else 0,
        }
        self.stats["reports"] += 1
        return TcaReport(
            ts_event=c.ended_ts,
            ts_init=self.clock.now_ns(),
            client_order_id=c.client_order_id,
            symbol=i.symbol,
            side=i.side,
            quantity=i.quantity,
            arrival_price=arrival,
            avg_fill_price=avg,
            slippage_bps=slippage,
            commission=commission,
            spread_bps_at_arrival=spread_at_arrival,
            fill_ratio=filled / i.quantity if i.quantity else 0.0,
            latency_ns=(first.ts_init - i.ts_init) if first else 0,
            shortfall_bps=shortfall,
            opportunity_bps=opportunity if unfilled else 0.0,
            effective_spread_bps=effective / filled if filled else 0.0,
            realized_spread_bps=realized / filled if filled and realized_known else None,
            order_type=c.worked_as or i.order_type,
            latencies_ns=latencies,
            intent_order_type=i.order_type,
            passive_ratio=passive / filled if filled else 0.0,
            cost_bps=shortfall + (commission / paper * BPS if paper else 0.0),
            **self._children(c.fills, sign, arrival),
        )

    @staticmethod
    def _children(fills: list[Fill], sign: int, arrival: float) -> dict[str, dict[str, float]]:
        """Per child order (fills name theirs in ``order_ref``): slippage vs arrival, quantity."""
        qty: dict[str, float] = collections.defaultdict(float)
        notional: dict[str, float] = collections.defaultdict(float)
        for f in fills:
            if f.order_ref:
                qty[f.order_ref] += f.quantity
                notional[f.order_ref] += f.quantity * f.price
        if not qty or not arrival:
            return {}
        slippage = {k: sign * (notional[k] / q - arrival) / arrival * BPS for k, q in qty.items()}
        return {"child_slippage_bps": slippage, "child_filled": dict(qty)}
