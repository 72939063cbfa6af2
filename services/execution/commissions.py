"""IB US-equity commission models, fixed and tiered, with the fees each passes through.

From IB's published schedule (interactivebrokers.com, "Commissions Stocks", United States); every
rate is a parameter because IB changes them. Fixed: USD 0.005 a share, at least USD 1.00 and at
most 1% of the trade value, plus the transaction fees on sales. Tiered: a per-share rate by the
month's share volume, at least USD 0.35 and at most 1% of value, plus clearing, exchange,
pass-through and regulatory fees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

TIERS: tuple[tuple[float, float], ...] = (  # (monthly shares up to, USD per share)
    (300_000, 0.0035),
    (3_000_000, 0.0020),
    (20_000_000, 0.0015),
    (100_000_000, 0.0010),
    (float("inf"), 0.0005),
)


@dataclass(frozen=True)
class RegulatoryFees:
    sec_rate: float = 0.0000278  # x value of sales
    finra_taf_per_share: float = 0.000166  # x quantity sold
    finra_taf_max: float = 8.30
    cat_per_share: float = 0.000072  # x quantity

    def on(self, side: str, quantity: float, price: float) -> float:
        fees = self.cat_per_share * quantity
        if side == "SELL":
            fees += self.sec_rate * quantity * price
            fees += min(self.finra_taf_per_share * quantity, self.finra_taf_max)
        return fees


class CommissionModel(Protocol):
    @property
    def name(self) -> str: ...

    def commission(
        self, side: str, quantity: float, price: float, liquidity: Literal["ADD", "REMOVE", "UNKNOWN"]
    ) -> float: ...


@dataclass(frozen=True)
class IbFixed:
    """Fixed: commissions include exchange and most regulatory fees; transaction fees on sales
    are passed through."""

    per_share: float = 0.005
    minimum: float = 1.00
    max_pct_of_value: float = 0.01
    regulatory: RegulatoryFees = RegulatoryFees(cat_per_share=0.0)
    name: str = "ib-fixed"

    def commission(
        self,
        side: str,
        quantity: float,
        price: float,
        liquidity: Literal["ADD", "REMOVE", "UNKNOWN"] = "UNKNOWN",
    ) -> float:
        value = quantity * price
        base = min(max(self.per_share * quantity, self.minimum), self.max_pct_of_value * value)
        return round(base + self.regulatory.on(side, quantity, price), 6)


@dataclass
class IbTiered:
    """Tiered: the rate falls with the month's volume (tracked here, reset with ``new_month``)."""

    minimum: float = 0.35
    max_pct_of_value: float = 0.01
    clearing_per_share: float = 0.00020
    exchange_remove_per_share: float = 0.0030
    exchange_add_per_share: float = -0.0020  # a rebate for adding liquidity
    nyse_pass_through: float = 0.000175  # x commission
    finra_pass_through: float = 0.000563  # x commission
    regulatory: RegulatoryFees = RegulatoryFees()
    month_volume: float = 0.0
    name: str = "ib-tiered"

    def rate(self) -> float:
        return next(rate for limit, rate in TIERS if self.month_volume < limit)

    def commission(
        self,
        side: str,
        quantity: float,
        price: float,
        liquidity: Literal["ADD", "REMOVE", "UNKNOWN"] = "UNKNOWN",
    ) -> float:
        value = quantity * price
        base = min(max(self.rate() * quantity, self.minimum), self.max_pct_of_value * value)
        exchange = (
            self.exchange_add_per_share if liquidity == "ADD" else self.exchange_remove_per_share
        ) * quantity
        pass_through = base * (self.nyse_pass_through + self.finra_pass_through)
        self.month_volume += quantity
        total = base + pass_through + self.clearing_per_share * quantity + exchange
        return round(total + self.regulatory.on(side, quantity, price), 6)

    def new_month(self) -> None:
        self.month_volume = 0.0


def commission_model(name: str) -> CommissionModel:
    if name == "ib-fixed":
        return IbFixed()
    if name == "ib-tiered":
        return IbTiered()
    raise ValueError(f"unknown commission model {name!r} (ib-fixed, ib-tiered)")
