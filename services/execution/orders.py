"""The order state machine: one order's lifecycle, whatever the broker says and in whatever order.

    PENDING_SUBMIT -> SUBMITTED -> PARTIALLY_FILLED -> FILLED
                  \\-> REJECTED     \\-> CANCELLED
    any live state -> UNRESOLVED (an ambiguous outcome: a send whose ack never came, a lost
                      connection); UNRESOLVED -> whatever reconciliation finds.

FILLED, CANCELLED and REJECTED are terminal: nothing moves an order out of them, a late duplicate
report is ignored and counted. Fills are deduplicated by exec id and can never take the filled
quantity past the order's quantity (an overfill is refused and reported, never applied).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proto.execution import TERMINAL_STATUSES, OrderStatus

# Status changes a broker report may cause (fills move to PARTIALLY_FILLED / FILLED themselves).
ALLOWED: dict[str, frozenset[str]] = {
    "PENDING_SUBMIT": frozenset({"SUBMITTED", "REJECTED", "CANCELLED", "UNRESOLVED"}),
    "SUBMITTED": frozenset({"CANCELLED", "REJECTED", "UNRESOLVED"}),
    "PARTIALLY_FILLED": frozenset({"CANCELLED", "UNRESOLVED"}),
    "UNRESOLVED": frozenset({"SUBMITTED", "CANCELLED", "REJECTED"}),
}


@dataclass
class Order:
    client_order_id: str
    symbol: str
    side: str
    quantity: float
    status: OrderStatus = "PENDING_SUBMIT"
    filled: float = 0.0
    avg_price: float = 0.0
    seq: int = 0
    reason: str = ""
    exec_ids: set[str] = field(default_factory=set)

    @property
    def remaining(self) -> float:
        return max(self.quantity - self.filled, 0.0)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def move(self, status: OrderStatus, reason: str = "") -> bool:
        """Apply a broker's status report. False, and nothing changes, for a report that cannot
        move this order: after it ended, a repeat, a regression (IB keeps saying "Submitted" while
        an order fills), or FILLED / PARTIALLY_FILLED, which only executions establish."""
        if self.terminal or status not in ALLOWED[self.status]:
            return False
        self.status = status
        self.reason = reason or self.reason
        self.seq += 1
        return True

    def fill(self, exec_id: str, quantity: float, price: float) -> float:
        """Apply an execution; returns the quantity applied: 0 for a repeated exec id, and never
        more than remains (a broker reporting more than the order is an error to raise upstream,
        not a position to take). A fill that arrives after a cancel or reject still happened: it
        counts, and the order stays in its terminal state."""
        if exec_id in self.exec_ids or not quantity > 1e-9:  # a zero (or NaN) execution is no fill
            return 0.0
        self.exec_ids.add(exec_id)
        applied = min(quantity, self.remaining)
        if applied <= 0:
            return 0.0
        self.avg_price = (self.avg_price * self.filled + price * applied) / (self.filled + applied)
        self.filled += applied
        if not self.terminal:
            self.status = "FILLED" if self.remaining <= 1e-9 else "PARTIALLY_FILLED"
        self.seq += 1
        return applied
