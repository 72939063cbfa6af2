"""TCA on a small scripted order, every number checked by hand."""

from __future__ import annotations

import pytest

from libs.common.clock import SimClock
from libs.common.config import TcaSettings
from proto.execution import Fill, OrderEvent
from proto.orders import OrderApproved, OrderIntent
from services.tca.core import TcaCore
from tests.kit import stubs

T = 1_381_240_800_000_000_000
S = 1_000_000_000


def q(tca: TcaCore, ts: int, bid: float, ask: float) -> list:  # type: ignore[type-arg]
    return tca.on_quote(stubs.quote(ts=ts, bid=bid, ask=ask))


def test_a_partly_filled_buy_by_hand() -> None:
    tca = TcaCore(TcaSettings(realized_after_s=5.0), SimClock(0))
    q(tca, T, 99.98, 100.02)  # mid 100.00, spread 4 bps
    tca.on_intent(
        OrderIntent(ts_event=T + S, ts_init=1000, intent_id="i1", symbol="IBM", side="BUY", quantity=300)
    )
    tca.on_approved(
        OrderApproved(
            ts_event=T + S,
            ts_init=2000,
            intent_id="i1",
            client_order_id="c1",
            symbol="IBM",
            side="BUY",
            quantity=300,
        )
    )
    ev = {"client_order_id": "c1", "symbol": "IBM", "side": "BUY", "quantity": 300.0}
    tca.on_order_event(OrderEvent(ts_event=T + S, ts_init=3000, status="PENDING_SUBMIT", seq=0, **ev))  # type: ignore[arg-type]
    tca.on_order_event(OrderEvent(ts_event=T + S, ts_init=4000, status="SUBMITTED", seq=1, **ev))  # type: ignore[arg-type]
    q(tca, T + 2 * S, 100.00, 100.04)  # mid 100.02
    tca.on_fill(
        Fill(
            ts_event=T + 2 * S + S // 2,
            ts_init=5000,
            exec_id="e1",
            client_order_id="c1",
            symbol="IBM",
            side="BUY",
            quantity=200,
            price=100.04,
            commission=1.0,
        )
    )
    q(tca, T + 3 * S, 100.06, 100.10)  # mid 100.08
    assert (
        tca.on_order_event(
            OrderEvent(ts_event=T + 4 * S, ts_init=6000, status="CANCELLED", seq=3, filled_quantity=200, **ev)
        )
        == []
    )  # type: ignore[arg-type]
    assert q(tca, T + 7 * S, 100.06, 100.10) == []  # 5 s after the fill is 7.5 s: not yet
    (r,) = q(tca, T + 8 * S, 100.10, 100.14)

    assert r.arrival_price == pytest.approx(100.00)
    assert r.avg_fill_price == pytest.approx(100.04)
    assert r.slippage_bps == pytest.approx(4.0)  # (100.04 - 100.00) / 100.00
    assert r.opportunity_bps == pytest.approx(8.0)  # the 100 unfilled: mid 100.08 at the cancel
    assert r.shortfall_bps == pytest.approx((4.0 * 200 + 8.0 * 100) / 300)  # 5.333
    assert r.effective_spread_bps == pytest.approx(2 * 0.02 / 100.02 * 1e4)  # 3.9992: fill vs mid 100.02
    assert r.realized_spread_bps == pytest.approx(2 * (100.04 - 100.08) / 100.02 * 1e4)  # -7.998: mid 5 s on
    assert r.spread_bps_at_arrival == pytest.approx(4.0)
    assert r.fill_ratio == pytest.approx(2 / 3) and r.commission == 1.0
    assert r.latencies_ns == {
        "decision_to_approved": 1000,
        "approved_to_submitted": 1000,
        "submitted_to_acked": 1000,
        "acked_to_first_fill": 1000,
    }
    assert r.latency_ns == 4000
    assert r.cost_bps == pytest.approx(5.3333 + 1.0 / (300 * 100.00) * 1e4, abs=1e-3)  # + $1 commission
    assert r.passive_ratio == 0.0 and r.order_type == r.intent_order_type == "MKT"


def test_a_sell_that_improves_is_a_negative_cost() -> None:
    tca = TcaCore(TcaSettings(realized_after_s=1.0), SimClock(0))
    q(tca, T, 99.98, 100.02)
    tca.on_intent(OrderIntent(ts_event=T, ts_init=0, intent_id="i1", symbol="IBM", side="SELL", quantity=100))
    tca.on_approved(
        OrderApproved(
            ts_event=T,
            ts_init=0,
            intent_id="i1",
            client_order_id="c1",
            symbol="IBM",
            side="SELL",
            quantity=100,
        )
    )
    tca.on_fill(
        Fill(
            ts_event=T + S,
            ts_init=0,
            exec_id="e1",
            client_order_id="c1",
            symbol="IBM",
            side="SELL",
            quantity=100,
            price=100.03,
            liquidity="ADD",
        )
    )
    tca.on_order_event(
        OrderEvent(
            ts_event=T + S,
            ts_init=0,
            client_order_id="c1",
            symbol="IBM",
            status="FILLED",
            seq=2,
            side="SELL",
            quantity=100,
            filled_quantity=100,
            order_type="LMT",  # execution worked the market order as a limit
        )
    )
    (r,) = q(tca, T + 3 * S, 99.98, 100.02)
    assert (r.order_type, r.intent_order_type, r.passive_ratio) == ("LMT", "MKT", 1.0)
    assert r.slippage_bps == pytest.approx(-3.0) and r.shortfall_bps == pytest.approx(-3.0)
    assert r.fill_ratio == 1.0 and r.opportunity_bps == 0.0


def test_the_end_of_the_data_releases_what_waits_for_later_prices() -> None:
    tca = TcaCore(TcaSettings(realized_after_s=5.0), SimClock(0))
    q(tca, T, 99.98, 100.02)
    tca.on_intent(OrderIntent(ts_event=T, ts_init=0, intent_id="i1", symbol="IBM", side="BUY", quantity=100))
    tca.on_approved(
        OrderApproved(
            ts_event=T,
            ts_init=0,
            intent_id="i1",
            client_order_id="c1",
            symbol="IBM",
            side="BUY",
            quantity=100,
        )
    )
    tca.on_fill(
        Fill(
            ts_event=T + S,
            ts_init=0,
            exec_id="e1",
            client_order_id="c1",
            symbol="IBM",
            side="BUY",
            quantity=100,
            price=100.02,
        )
    )
    assert (
        tca.on_order_event(
            OrderEvent(
                ts_event=T + S,
                ts_init=0,
                client_order_id="c1",
                symbol="IBM",
                status="FILLED",
                seq=2,
                quantity=100,
                filled_quantity=100,
            )
        )
        == []
    )
    (r,) = tca.end_of_data()
    assert r.slippage_bps == pytest.approx(2.0) and r.realized_spread_bps is None
