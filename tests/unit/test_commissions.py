"""IB commission models against IB's own published examples and hand arithmetic."""

from __future__ import annotations

import pytest

from services.execution.commissions import IbFixed, IbTiered, RegulatoryFees, commission_model


@pytest.mark.parametrize(
    ("quantity", "price", "expected"),
    [(100, 25.0, 1.00), (1_000, 25.0, 5.00), (1_000, 0.25, 2.50)],  # IB's "Fixed Examples"
)
def test_fixed_matches_ibs_examples_on_buys(quantity: int, price: float, expected: float) -> None:
    assert IbFixed().commission("BUY", quantity, price) == pytest.approx(expected)


def test_fixed_passes_transaction_fees_through_on_sales() -> None:
    # 1,000 @ 25 sold: 5.00 + SEC 0.0000278 x 25,000 (0.695) + FINRA TAF 0.000166 x 1,000 (0.166)
    assert IbFixed().commission("SELL", 1_000, 25.0) == pytest.approx(5.0 + 0.695 + 0.166)


def test_tiered_by_hand_and_its_volume_tiers() -> None:
    m = IbTiered(regulatory=RegulatoryFees(cat_per_share=0.0))
    # 1,000 @ 50 bought, removing liquidity: 3.50 + pass-through 3.50 x 0.000738 + clearing 0.20
    # + exchange 3.00
    assert m.commission("BUY", 1_000, 50.0, "REMOVE") == pytest.approx(
        3.5 + 3.5 * 0.000738 + 0.2 + 3.0, abs=1e-6
    )
    # 100 @ 50 adding liquidity: the minimum 0.35, clearing 0.02, a 0.20 rebate
    assert m.commission("BUY", 100, 50.0, "ADD") == pytest.approx(
        0.35 + 0.35 * 0.000738 + 0.02 - 0.2, abs=1e-6
    )
    m.month_volume = 300_000
    assert m.rate() == 0.0020
    m.month_volume = 150_000_000
    assert m.rate() == 0.0005
    m.new_month()
    assert m.rate() == 0.0035


def test_the_one_percent_cap_and_the_taf_cap() -> None:
    assert IbTiered(
        regulatory=RegulatoryFees(cat_per_share=0.0),
        clearing_per_share=0.0,
        exchange_remove_per_share=0.0,
        nyse_pass_through=0.0,
        finra_pass_through=0.0,
    ).commission("BUY", 10_000, 0.01) == pytest.approx(1.0)  # 1% of $100
    assert RegulatoryFees(sec_rate=0.0, cat_per_share=0.0).on("SELL", 1_000_000, 10.0) == pytest.approx(8.30)


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="ib-fixed, ib-tiered"):
        commission_model("flat")
