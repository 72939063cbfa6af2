"""The order path before the broker: intents, and the risk gate's approvals and denials."""

from __future__ import annotations

from typing import Literal

from proto.base import DurableEvent, Identifier, Quantity, Side, Symbol

OrderType = Literal["MKT", "LMT", "STP", "STP_LMT", "TRAIL", "BRACKET"]
TimeInForce = Literal["DAY", "GTC", "IOC"]


class OrderIntent(DurableEvent, frozen=True, kw_only=True):
    intent_id: Identifier
    symbol: Symbol
    side: Side
    quantity: Quantity
    order_type: OrderType = "MKT"
    limit_price: float | None = None
    stop_price: float | None = None
    tif: TimeInForce = "DAY"
    reason: str = ""
    score: float = 0.0
    #: the signed position the strategy wants after this order (0 = flat)
    target_position: float = 0.0
    urgency: Literal["low", "normal", "high"] = "normal"
    #: what drove it (QOS terms per horizon and input), for explanation and audit
    components: dict[str, float] = {}

    def dedupe_key(self) -> str:
        return f"intent:{self.intent_id}"


class OrderApproved(DurableEvent, frozen=True, kw_only=True):
    """Only the risk gate publishes this; the execution gateway refuses one older than
    ``valid_until_ns`` (if the risk gate is down, nothing trades)."""

    intent_id: Identifier
    client_order_id: Identifier
    symbol: Symbol
    side: Side
    quantity: Quantity
    order_type: OrderType = "MKT"
    limit_price: float | None = None
    stop_price: float | None = None
    tif: TimeInForce = "DAY"
    valid_until_ns: int = 0

    def dedupe_key(self) -> str:
        return f"approved:{self.client_order_id}"


class OrderDenied(DurableEvent, frozen=True, kw_only=True):
    """``code`` is CATEGORY_CONDITION (e.g. POSITION_LIMIT); ``context`` its key=value details."""

    intent_id: Identifier
    symbol: Symbol
    code: str
    context: dict[str, str] = {}

    def dedupe_key(self) -> str:
        return f"denied:{self.intent_id}"
