"""Transaction cost analysis: cost of each order against its arrival price, rolling aggregates,
and the feedback the execution gateway applies to how it works orders."""

from __future__ import annotations

from typing import Literal

from proto.base import DurableEvent, Event, Identifier, Side, Symbol


class TcaReport(DurableEvent, frozen=True, kw_only=True):
    client_order_id: Identifier
    symbol: Symbol
    side: Side
    quantity: float
    arrival_price: float
    avg_fill_price: float
    slippage_bps: float
    commission: float = 0.0
    spread_bps_at_arrival: float = 0.0
    fill_ratio: float = 1.0
    latency_ns: int = 0
    #: implementation shortfall of the whole intended quantity: the filled part's slippage plus
    #: the unfilled part's opportunity cost (mid at the end vs arrival), in bps of paper notional
    shortfall_bps: float = 0.0
    opportunity_bps: float = 0.0
    effective_spread_bps: float = 0.0
    realized_spread_bps: float | None = None
    #: how the order was worked (the execution's tactic: MKT, or LMT for a market order worked
    #: as a limit); the intent's own type is ``intent_order_type``
    order_type: str = "MKT"
    #: wall-clock latencies of each hop, in ns: decision->approved->submitted->acked->first fill
    latencies_ns: dict[str, int] = {}
    intent_order_type: str = "MKT"
    #: share of the filled quantity that provided liquidity (fills as the maker)
    passive_ratio: float = 0.0
    #: all-in cost: shortfall plus commissions, in bps of the paper notional
    cost_bps: float = 0.0
    #: per child order, when execution worked the order as several (slices): its slippage
    #: against the intent's arrival price, in bps, and its filled quantity
    child_slippage_bps: dict[str, float] = {}
    child_filled: dict[str, float] = {}

    def dedupe_key(self) -> str:
        return f"tca:{self.client_order_id}"


class TcaAggregate(Event, frozen=True, kw_only=True):
    """Rolling cost of the last ``window`` orders of one symbol, order type and time of day."""

    symbol: Symbol
    order_type: str
    time_of_day: Literal["open", "midday", "close"]
    count: int
    mean_cost_bps: float
    std_cost_bps: float
    mean_fill_ratio: float
    mean_passive_ratio: float


class TcaFeedback(DurableEvent, frozen=True, kw_only=True):
    """How the execution gateway should work this symbol's market orders, learnt from their
    measured cost. The gateway clamps every number to its own configured bounds."""

    feedback_id: Identifier
    symbol: Symbol
    style: Literal["MKT", "LMT"]
    #: LMT: price from the near touch toward the far one, in bps of the mid
    limit_offset_bps: float = 0.0
    #: LMT: reprice to the far touch when not filled this long after the last (re)price
    chase_after_ms: float = 2_000.0
    #: the most shares one child order takes (0: no slicing)
    slice_shares: float = 0.0
    reason: str = ""
    samples: dict[str, int] = {}

    def dedupe_key(self) -> str:
        return f"tcafb:{self.feedback_id}"
