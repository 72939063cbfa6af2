"""The order path before the broker: intents, and the risk gate's approvals and denials."""

from __future__ import annotations

from typing import Literal

from proto.base import DurableEvent, Event, Identifier, Quantity, Side, Symbol

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
    #: BRACKET: the take-profit limit and stop-loss stop of the exit legs (an OCA group)
    take_profit_price: float | None = None
    stop_loss_price: float | None = None
    #: TRAIL: the stop trails the best price by an amount or a percent (one of them)
    trail_amount: float | None = None
    trail_percent: float | None = None

    def dedupe_key(self) -> str:
        return f"intent:{self.intent_id}"


class OrderApproved(DurableEvent, frozen=True, kw_only=True):
    """Only the risk gate publishes this, signed (``signature``); the execution gateway refuses
    one whose signature does not verify, or older than ``valid_until_ns`` (if the risk gate is
    down, nothing trades)."""

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
    take_profit_price: float | None = None
    stop_loss_price: float | None = None
    trail_amount: float | None = None
    trail_percent: float | None = None
    #: the risk gate's HMAC-SHA256 over every other field (libs/common/signing.py); the
    #: execution gateway refuses an approval without a valid one
    signature: str = ""

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

    def describe(self) -> str:
        """The denial as one line: ``CODE key=value ...`` (what logs and alerts show)."""
        details = " ".join(f"{k}={v}" for k, v in sorted(self.context.items()))
        return f"{self.code} {details}".strip()


RiskMode = Literal["LIVE", "DEGRADED", "OBSERVE", "EMERGENCY"]


class RiskState(DurableEvent, frozen=True, kw_only=True):
    """The risk gate's view after a change: mode and why, P&L, exposure, counters."""

    instance: Identifier
    seq: int
    mode: RiskMode
    mode_reason: str = ""
    realized_pnl: float = 0.0
    unrealized_pnl: float = 0.0
    day_peak_pnl: float = 0.0
    gross_exposure: float = 0.0
    net_exposure: float = 0.0
    open_orders: int = 0
    consecutive_losses: int = 0
    day_trades: int = 0
    positions: dict[str, float] = {}
    #: the account it guards, and the realized P&L when its day began (a restart resumes the day)
    account: str = ""
    day_realized_start: float = 0.0
    #: what a restart resumes besides: the mode the operator set (the effective ``mode`` may be
    #: held more severe by a cause that will be seen again), the loss cool-down, the NY days of
    #: recent day trades (PDT) and the approvals of the order-rate window
    operator_mode: str = ""
    operator_reason: str = ""
    cooldown_until_ns: int = 0
    day_trade_days: list[int] = []
    recent_approvals_ns: list[int] = []
    #: the causes holding the mode ("key": "MODE|why"); a restart resumes those only an operator
    #: clears (a reconciliation mismatch)
    causes: dict[str, str] = {}

    def dedupe_key(self) -> str:
        return f"risk:{self.instance}:{self.seq}"


def shape_problem(a: OrderIntent | OrderApproved) -> str:
    """What makes an order impossible to send as asked ('' when nothing): the risk gate denies it
    (ORDER_INVALID) and the execution gateway refuses it, never sending something else instead."""
    t = a.order_type
    if t in ("LMT", "STP_LMT") and not (a.limit_price and a.limit_price > 0):
        return f"{t} without a positive limit price"
    if t in ("STP", "STP_LMT") and not (a.stop_price and a.stop_price > 0):
        return f"{t} without a positive stop price"
    if t == "TRAIL" and not ((a.trail_amount or 0) > 0 or 0 < (a.trail_percent or 0) < 100):
        return "TRAIL without a positive trail amount or percent"
    if t == "BRACKET":
        tp, sl = a.take_profit_price, a.stop_loss_price
        if not (tp and sl and tp > 0 and sl > 0):
            return "BRACKET without take-profit and stop-loss prices"
        if (tp - sl) * (1 if a.side == "BUY" else -1) <= 0:
            return f"BRACKET take-profit {tp} and stop-loss {sl} on the wrong sides"
    return ""


class MarginCheck(Event, frozen=True, kw_only=True):
    """The risk gate asks the broker: what would this order do to margin? (request/reply)"""

    request_id: Identifier
    symbol: Symbol
    side: Side
    quantity: Quantity
    order_type: OrderType = "MKT"
    limit_price: float | None = None


class MarginReply(Event, frozen=True, kw_only=True):
    """The broker's what-if answer; ``known`` False when it could not say (fail closed)."""

    request_id: Identifier
    known: bool
    init_margin_change: float | None = None
    init_margin_after: float | None = None
    equity_with_loan_after: float | None = None
    commission: float | None = None
    error: str = ""
