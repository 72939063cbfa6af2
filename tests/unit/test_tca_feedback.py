"""TCA's rolling aggregates, N-sigma alerts and feedback; and, on the shipped recorded day, that
the feedback loop lowers what the same orders cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.common.config import TcaSettings
from proto.alerts import Alert
from proto.tca import TcaAggregate, TcaFeedback, TcaReport
from services.tca.feedback import CostBook, time_of_day
from tradefleet.costlab import compare

T = 1_381_240_800_000_000_000  # 2013-10-08 10:00 New York
S = 1_000_000_000
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "lean"


def report(cost: float, worked: str = "MKT", k: int = 0, **kw: float) -> TcaReport:
    fields: dict = {"passive_ratio": 0.0, "effective_spread_bps": 1.0, "spread_bps_at_arrival": 1.0, **kw}
    return TcaReport(
        ts_event=T + k * S,
        ts_init=0,
        client_order_id=f"c{k}",
        symbol="IBM",
        side="BUY",
        quantity=200,
        arrival_price=100.0,
        avg_fill_price=100.0,
        slippage_bps=cost,
        order_type=worked,
        intent_order_type="MKT",
        cost_bps=cost,
        **fields,
    )


def test_time_of_day_buckets() -> None:
    assert [time_of_day(T + m * 60 * S) for m in (-29, 0, 329, 330)] == ["open", "midday", "midday", "close"]


def test_aggregates_roll_and_a_cost_far_above_its_peers_alerts() -> None:
    book = CostBook(TcaSettings(min_samples=8, alert_sigma=3.0, feedback=False))
    for k, cost in enumerate([1.0, 1.2, 0.8, 1.1, 0.9, 1.0, 1.3, 0.7]):
        out = book.add(report(cost, k=k), 0)
        assert [type(e) for e in out] == [TcaAggregate]
    agg = out[0]
    assert isinstance(agg, TcaAggregate) and (agg.count, agg.time_of_day) == (8, "midday")
    assert agg.mean_cost_bps == pytest.approx(1.0)
    quiet = book.add(report(1.4, k=8), 0)  # within 3 sigma (sigma 0.187)
    assert not any(isinstance(e, Alert) for e in quiet)
    loud = book.add(report(4.0, k=9), 0)
    (alert,) = [e for e in loud if isinstance(e, Alert)]
    assert alert.source == "tca" and "sigma" in alert.title and alert.labels["order_type"] == "MKT"


def test_feedback_measures_market_orders_then_tries_limits_then_keeps_the_cheaper() -> None:
    book = CostBook(TcaSettings(min_samples=4, window=10))
    styles = []
    for k in range(4):
        styles += [e.style for e in book.add(report(3.0, "MKT", k), 0) if isinstance(e, TcaFeedback)]
    assert styles == ["MKT", "LMT"]  # after 4 market orders: try limits
    for k in range(4, 8):  # limits that mostly fill passively and cost less
        book.add(report(1.0, "LMT", k, passive_ratio=0.5), 0)
    assert book.tactics["IBM"].style == "LMT"
    for k in range(8, 18):  # then limits get expensive: back to market orders
        book.add(report(9.0, "LMT", k, passive_ratio=0.5), 0)
    assert book.tactics["IBM"].style == "MKT"


def test_the_limit_offset_moves_with_the_passive_share_within_bounds() -> None:
    policy = TcaSettings(min_samples=1, offset_step_bps=1.0, max_offset_bps=2.0)
    book = CostBook(policy)
    book.add(report(3.0, "MKT", 0), 0)
    for k in range(1, 10):  # never filled passively: lean toward the far touch, up to the bound
        book.add(report(2.0, "LMT", k, passive_ratio=0.0), 0)
    assert book.tactics["IBM"].offset_bps == 2.0
    for k in range(10, 30):  # always passive: back toward the near touch, down to 0
        book.add(report(0.5, "LMT", k, passive_ratio=1.0), 0)
    assert book.tactics["IBM"].offset_bps == 0.0


def test_market_orders_that_walk_the_book_get_sliced() -> None:
    book = CostBook(TcaSettings(min_samples=50, walk_threshold_bps=1.0))
    for k in range(4):
        book.add(report(6.0, "MKT", k, effective_spread_bps=5.0, spread_bps_at_arrival=1.0), 0)
    assert book.tactics["IBM"].slice_shares == 100  # half the 200-share orders


def test_unfilled_orders_teach_nothing() -> None:
    book = CostBook(TcaSettings())
    assert book.add(report(3.0, fill_ratio=0.0), 0) == [] and book.stats["unfilled_or_unpriced"] == 1


@pytest.fixture(scope="module")
def day() -> dict:  # type: ignore[type-arg]
    return compare(SAMPLE, "20131008", ["IBM", "BAC"])


def test_on_the_recorded_day_feedback_lowers_the_cost_of_the_same_orders(day: dict) -> None:  # type: ignore[type-arg]
    off, on = day["off"], day["on"]
    assert len(off.reports) == len(on.reports) == 242  # every scheduled order, both runs
    assert {r.order_type for r in off.reports} == {"MKT"} and not off.chases
    worked = [r.order_type for r in on.reports]
    assert worked.count("LMT") > len(worked) / 2 and on.chases > 0  # the feedback was applied
    assert {f.symbol for f in on.feedback} == {"IBM", "BAC"}
    chased = next(r for r in on.reports if r.order_type == "LMT" and r.fill_ratio == 1)
    assert sum(chased.child_filled.values()) == chased.quantity  # per child order, too
    assert set(chased.child_slippage_bps) == set(chased.child_filled)
    # All-in cost (shortfall, the unfilled part at its opportunity cost, and commissions).
    assert on.mean_cost_bps < off.mean_cost_bps - 0.1, (on.summary(), off.summary())


def test_the_cost_loop_is_deterministic() -> None:
    def key(reports: list[TcaReport]) -> list[tuple[str, str, float, float]]:
        return [(r.client_order_id, r.order_type, r.avg_fill_price, r.cost_bps) for r in reports]

    first, second = (compare(SAMPLE, "20131008", ["IBM"])["on"] for _ in range(2))
    assert key(first.reports) == key(second.reports) and len(first.reports) == 121
