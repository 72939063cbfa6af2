"""The trade table: round trips built from the ledger's fills, first in first out per symbol.

A fill that opens (or adds to) a position opens a lot; a fill against the position closes the
oldest lots first, and each lot it closes (in whole or in part) is one round trip, so a partial
close splits a lot into two trades. A fill that goes through flat closes every lot and opens a
new one with what is left. Commissions are split by quantity, so the round trips' net P&L adds up
to the account's: realized cash less every commission, plus what is still open marked to the
last mid.

Why each side happened is read from the order that filled: the intent it was approved for (QOS
entries and exits, protective stops and take-profits, the flatten before the close), or, for an
order no intent asked for (a kill's or an operator's flatten, a bracket's exit legs), the reason
its first order event gave. Slippage is against the arrival mid TCA measured for that order
(positive is a cost); an order without a TCA report has none.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass

from proto.execution import Fill
from proto.units import BPS
from tradefleet.backtest.ledger import Ledger
from tradefleet.backtest.metrics import NS_PER_MIN

OPEN_AT_END = "open at the end (marked to the mid)"
QUANTITY_EPS = 1e-9  # shares: what is left of a float subtraction, not a position
BRACKET_LEGS = {".tp": "take-profit leg of a bracket", ".sl": "stop-loss leg of a bracket"}


@dataclass(frozen=True)
class RoundTrip:
    symbol: str
    direction: int  # +1 long, -1 short
    quantity: float
    entry_ts: int
    exit_ts: int
    entry_price: float
    exit_price: float
    commission: float  # the entry's and the exit's share
    entry_reason: str
    exit_reason: str
    entry_slippage: float | None  # USD, against the arrival mid (positive: paid)
    exit_slippage: float | None
    open_at_end: bool = False

    @property
    def side(self) -> str:
        return "long" if self.direction > 0 else "short"

    @property
    def notional(self) -> float:
        return self.quantity * self.entry_price

    @property
    def pnl(self) -> float:
        """Net of commissions (slippage is already in the prices)."""
        return self.direction * (self.exit_price - self.entry_price) * self.quantity - self.commission

    @property
    def pnl_bps(self) -> float | None:
        return self.pnl / self.notional * BPS if self.notional else None

    @property
    def holding_min(self) -> float:
        return (self.exit_ts - self.entry_ts) / NS_PER_MIN

    @property
    def slippage(self) -> float | None:
        if self.entry_slippage is None or self.exit_slippage is None:
            return None
        return self.entry_slippage + self.exit_slippage

    @property
    def slippage_bps(self) -> float | None:
        slip = self.slippage
        return slip / self.notional * BPS if slip is not None and self.notional else None


@dataclass
class _Lot:
    """What is still open of one opening fill."""

    ts: int
    direction: int
    remaining: float
    price: float
    fee_per_share: float
    slip_per_share: float | None
    reason: str


@dataclass(frozen=True)
class _Side:
    """One fill as the matching sees it: signed, with its cost per share and why it happened."""

    ts: int
    symbol: str
    signed_qty: float
    price: float
    fee_per_share: float
    slip_per_share: float | None
    reason: str


def order_reasons(ledger: Ledger) -> dict[str, str]:
    """client_order_id -> why the order was sent."""
    intents = {i.intent_id: i.reason or f"intent {i.intent_id}" for i in ledger.intents}
    reasons: dict[str, str] = {}
    for event in ledger.orders:  # the first event of an order says why it was sent
        reasons.setdefault(event.client_order_id, event.reason)
    for cid in reasons:
        for suffix, leg in BRACKET_LEGS.items():
            if cid.endswith(suffix):
                reasons[cid] = leg
    for cid, intent_id in ledger.order_intents.items():
        reasons[cid] = intents.get(intent_id, f"intent {intent_id}")
    return reasons


def arrival_prices(ledger: Ledger) -> dict[str, float]:
    """client_order_id -> the mid when its intent was decided (TCA's arrival price)."""
    return {r.client_order_id: r.arrival_price for r in ledger.tca if r.arrival_price > 0}


def _sides(fills: Iterable[Fill], reasons: dict[str, str], arrivals: dict[str, float]) -> list[_Side]:
    out = []
    for f in fills:
        if f.quantity <= 0:
            continue
        sign = 1 if f.side == "BUY" else -1
        arrival = arrivals.get(f.client_order_id)
        out.append(
            _Side(
                ts=f.ts_event,
                symbol=f.symbol,
                signed_qty=sign * f.quantity,
                price=f.price,
                fee_per_share=(f.commission or 0.0) / f.quantity,
                slip_per_share=None if arrival is None else sign * (f.price - arrival),
                reason=reasons.get(f.client_order_id, "") or f.client_order_id,
            )
        )
    return out


def round_trips(
    fills: Iterable[Fill],
    reasons: dict[str, str],
    arrivals: dict[str, float],
    last_mid: dict[str, float],
    end_ts: int,
) -> list[RoundTrip]:
    """Every round trip of these fills (in time order), the lots still open marked to the mid."""
    lots: dict[str, collections.deque[_Lot]] = collections.defaultdict(collections.deque)
    trips: list[RoundTrip] = []
    last_price: dict[str, float] = {}
    for side in _sides(fills, reasons, arrivals):
        trips += _apply(side, lots[side.symbol])
        last_price[side.symbol] = side.price
    for symbol, open_lots in lots.items():
        # No mid seen (a symbol whose quotes ended): the last fill's price, never 0 (a total loss)
        mark = last_mid.get(symbol) or last_price[symbol]
        for lot in open_lots:
            trips.append(_closed(symbol, lot, lot.remaining, end_ts, mark, 0.0, 0.0, OPEN_AT_END, True))
    trips.sort(key=lambda t: (t.entry_ts, t.exit_ts, t.symbol))
    return trips


def _apply(side: _Side, lots: collections.deque[_Lot]) -> list[RoundTrip]:
    """One fill against a symbol's open lots: the round trips it closes (oldest lot first), and
    a new lot for what it opens."""
    direction = 1 if side.signed_qty > 0 else -1
    left = abs(side.signed_qty)
    trips = []
    while lots and lots[0].direction != direction and left > QUANTITY_EPS:
        lot = lots[0]
        matched = min(lot.remaining, left)
        trips.append(
            _closed(
                side.symbol,
                lot,
                matched,
                side.ts,
                side.price,
                side.fee_per_share,
                side.slip_per_share,
                side.reason,
                False,
            )
        )
        lot.remaining -= matched
        left -= matched
        if lot.remaining <= QUANTITY_EPS:
            lots.popleft()
    if left > QUANTITY_EPS:
        lots.append(
            _Lot(side.ts, direction, left, side.price, side.fee_per_share, side.slip_per_share, side.reason)
        )
    return trips


def _closed(
    symbol: str,
    lot: _Lot,
    quantity: float,
    ts: int,
    price: float,
    exit_fee_per_share: float,
    exit_slip_per_share: float | None,
    reason: str,
    still_open: bool,
) -> RoundTrip:
    return RoundTrip(
        symbol=symbol,
        direction=lot.direction,
        quantity=quantity,
        entry_ts=lot.ts,
        exit_ts=ts,
        entry_price=lot.price,
        exit_price=price,
        commission=(lot.fee_per_share + exit_fee_per_share) * quantity,
        entry_reason=lot.reason,
        exit_reason=reason,
        entry_slippage=None if lot.slip_per_share is None else lot.slip_per_share * quantity,
        exit_slippage=None if exit_slip_per_share is None else exit_slip_per_share * quantity,
        open_at_end=still_open,
    )


def ledger_round_trips(ledger: Ledger) -> list[RoundTrip]:
    end_ts = ledger.minutes[-1].ts if ledger.minutes else 0
    return round_trips(ledger.fills, order_reasons(ledger), arrival_prices(ledger), ledger.mids, end_ts)
