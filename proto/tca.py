"""Transaction cost analysis: cost of each order against its arrival price."""

from __future__ import annotations

from proto.base import DurableEvent, Identifier, Side, Symbol


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
    order_type: str = "MKT"
    #: wall-clock latencies of each hop, in ns: decision->approved->submitted->acked->first fill
    latencies_ns: dict[str, int] = {}

    def dedupe_key(self) -> str:
        return f"tca:{self.client_order_id}"
