"""One position's accounting from fills: average price, realized and unrealized P&L. Shared by the
risk gate and the execution gateway so the two can never disagree on a number."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PositionChange:
    realized: float  # P&L this fill realized, commission included
    opened: bool  # it opened a position (from flat, or the remainder after a flip)
    closed: bool  # it closed a position (to flat, or through zero)


@dataclass
class Position:
    quantity: float = 0.0
    avg_price: float = 0.0
    realized: float = 0.0
    mark: float = 0.0

    def apply(self, signed: float, price: float, commission: float = 0.0) -> PositionChange:
        before = self.quantity
        realized = -commission
        if before == 0 or (before > 0) == (signed > 0):  # opening or adding
            self.avg_price = (self.avg_price * before + price * signed) / (before + signed)
            self.quantity = before + signed
            self.realized += realized
            return PositionChange(realized, opened=before == 0, closed=False)
        closing = min(abs(signed), abs(before))
        realized += (price - self.avg_price) * closing * (1 if before > 0 else -1)
        self.quantity = before + signed
        self.realized += realized
        flipped = self.quantity != 0 and (self.quantity > 0) != (before > 0)
        if flipped:
            self.avg_price = price  # the remainder opened at this price
        return PositionChange(realized, opened=flipped, closed=self.quantity == 0 or flipped)

    @property
    def unrealized(self) -> float:
        return (self.mark - self.avg_price) * self.quantity if self.quantity and self.mark else 0.0
