"""What the broker did: order lifecycle events, fills and positions."""

from __future__ import annotations

from typing import Literal

import msgspec

from proto.base import DurableEvent, Identifier, Quantity, Side, Symbol

OrderStatus = Literal[
    "PENDING_SUBMIT",
    "SUBMITTED",
    "PARTIALLY_FILLED",
    "FILLED",
    "CANCELLED",
    "REJECTED",
    "UNRESOLVED",
]
# Order states grouped once (every service that follows orders reads these): nothing moves an
# order out of a terminal state; a live one may still trade.
TERMINAL_STATUSES: frozenset[str] = frozenset({"FILLED", "CANCELLED", "REJECTED"})
LIVE_STATUSES: frozenset[str] = frozenset({"PENDING_SUBMIT", "SUBMITTED", "PARTIALLY_FILLED", "UNRESOLVED"})


class OrderEvent(DurableEvent, frozen=True, kw_only=True):
    client_order_id: Identifier
    symbol: Symbol
    status: OrderStatus
    seq: int
    side: Side = "BUY"
    quantity: float = 0.0
    filled_quantity: float = 0.0
    avg_fill_price: float | None = None
    broker_order_id: str = ""
    reason: str = ""
    #: how it is being worked: the approved type, or the tactic chosen for it (LMT for a market
    #: order worked as a limit), and the working limit price
    order_type: str = ""
    limit_price: float | None = None

    def dedupe_key(self) -> str:
        return f"order:{self.client_order_id}:{self.seq}"


class Fill(DurableEvent, frozen=True, kw_only=True):
    exec_id: Identifier
    client_order_id: Identifier
    symbol: Symbol
    side: Side
    quantity: Quantity
    price: float
    commission: float | None = None
    venue: str = ""
    liquidity: Literal["ADD", "REMOVE", "UNKNOWN"] = "UNKNOWN"
    #: the broker order that traded, when the approved order is worked as several (slices)
    order_ref: str = ""

    def dedupe_key(self) -> str:
        return f"fill:{self.exec_id}"


class Position(msgspec.Struct, frozen=True, kw_only=True, array_like=True, gc=False):
    symbol: Symbol
    quantity: float
    avg_price: float
    mark: float
    realized_pnl: float
    unrealized_pnl: float


class PositionSnapshot(DurableEvent, frozen=True, kw_only=True):
    account: Identifier
    seq: int
    positions: list[Position]
    realized_pnl: float
    unrealized_pnl: float
    #: the process that made it (seq restarts with the process)
    instance: str = ""

    def dedupe_key(self) -> str:
        return f"positions:{self.account}:{self.instance}:{self.seq}"


BrokerState = Literal["disconnected", "reconciled", "mismatch"]


class BrokerStatus(DurableEvent, frozen=True, kw_only=True):
    """The broker link as the execution gateway sees it: ``disconnected`` (nothing can be sent or
    cancelled), ``reconciled`` (connected, and IB's book matched ours, or could not be compared),
    ``mismatch`` (IB's positions differ from ours: nobody knows what is held). The risk gate
    trades on it: DEGRADED while disconnected, EMERGENCY on a mismatch until an operator resumes."""

    broker: str  # its name and process: "ib:<started ns>"
    state: BrokerState
    seq: int
    detail: str = ""

    def dedupe_key(self) -> str:
        return f"broker:{self.broker}:{self.seq}"
