"""The simulated venue on scripted markets: latency, walking the book, queue position, stops, TIF, rejects."""

from __future__ import annotations

import pytest

from libs.common.config import SimSettings
from services.execution.broker import BrokerReport as Report
from services.execution.simbroker import SimOrder
from services.execution.simbroker import SimVenue as SimBroker

T = 1_381_240_800_000_000_000  # 2013-10-08 10:00 New York
MS = 1_000_000


def broker(**cfg: object) -> SimBroker:
    b = SimBroker(SimSettings(commission="ib-fixed", **cfg))  # type: ignore[arg-type]
    b.on_quote("IBM", T, 99.99, 100.00, 500, 300)
    return b


def fills(reports: list[Report]) -> list[tuple[float, float]]:
    return [(r.quantity, r.price) for r in reports if r.kind == "fill"]


def test_an_order_meets_the_market_as_it_is_when_it_arrives_and_hears_back_later() -> None:
    b = broker()
    b.submit(SimOrder("c1", "IBM", "BUY", 100), T + MS)  # arrives at T + 6 ms
    assert b.on_quote("IBM", T + 3 * MS, 100.01, 100.02, 500, 300) == []  # before it arrives
    out = b.on_quote("IBM", T + 10 * MS, 100.04, 100.05, 500, 300)  # after: reports are due
    assert [r.kind for r in out] == ["ack", "fill"]
    assert fills(out) == [(100, 100.02)]  # the ask when it arrived, not the newer 100.05
    assert out[1].venue_ts == T + 6 * MS and out[1].ts == T + 8 * MS
    assert out[1].commission == pytest.approx(1.00) and out[1].liquidity == "REMOVE"


def test_market_orders_walk_the_displayed_size() -> None:
    b = broker()
    b.submit(SimOrder("c1", "IBM", "BUY", 700), T)
    out = b.advance(T + 100 * MS)
    assert fills(out) == [(300, 100.00), (300, 100.01), (100, 100.02)]


def test_a_marketable_limit_takes_only_up_to_its_price_and_rests_the_rest() -> None:
    b = broker()
    b.submit(SimOrder("c1", "IBM", "BUY", 700, "LMT", limit_price=100.01), T)
    out = b.advance(T + 100 * MS)
    assert fills(out) == [(300, 100.00), (300, 100.01)]
    assert b.orders["c1"].remaining == 100


def test_a_resting_limit_waits_for_the_queue_ahead_then_fills_on_trade_through() -> None:
    b = broker()
    b.submit(SimOrder("c1", "IBM", "BUY", 400, "LMT", limit_price=99.99), T)  # joins 500 on the bid
    b.advance(T + 10 * MS)
    assert b.orders["c1"].queue_ahead == 500
    assert fills(b.on_trade("IBM", T + 20 * MS, 99.99, 300)) == []  # 200 still ahead
    b.on_trade("IBM", T + 30 * MS, 99.99, 350)  # 150 beyond the queue: ours
    assert fills(b.advance(T + 40 * MS)) == [(150, 99.99)]
    out = b.on_trade("IBM", T + 50 * MS, 99.98, 100)  # traded through: the rest is done at 99.99
    out += b.advance(T + 60 * MS)
    assert fills(out) == [(250, 99.99)] and "c1" not in b.orders
    assert all(r.liquidity == "ADD" for r in out if r.kind == "fill")


def test_a_quote_moving_through_a_resting_limit_fills_it_at_its_own_price() -> None:
    b = broker()
    b.submit(SimOrder("c1", "IBM", "BUY", 100, "LMT", limit_price=99.95), T)
    b.advance(T + 10 * MS)
    b.on_quote("IBM", T + 20 * MS, 99.90, 99.93, 100, 100)
    assert fills(b.advance(T + 30 * MS)) == [(100, 99.95)]  # not at the better 99.93


def test_stops_trigger_on_a_trade_at_or_through_the_stop() -> None:
    b = broker()
    b.submit(SimOrder("c1", "IBM", "SELL", 100, "STP", stop_price=99.50), T)
    b.advance(T + 10 * MS)
    assert fills(b.on_trade("IBM", T + 20 * MS, 99.60, 100)) == []
    b.on_quote("IBM", T + 30 * MS, 99.49, 99.51, 800, 800)
    b.on_trade("IBM", T + 40 * MS, 99.50, 100)
    assert fills(b.advance(T + 50 * MS)) == [(100, 99.49)]  # triggered: a market sell at the bid


def test_ioc_and_day_and_cancel() -> None:
    b = broker()
    b.submit(SimOrder("c1", "IBM", "BUY", 100, "LMT", limit_price=99.90, tif="IOC"), T)
    assert [(r.kind, r.reason) for r in b.advance(T + 10 * MS)] == [
        ("ack", ""),
        ("cancelled", "IOC remainder"),
    ]
    day = SimBroker(SimSettings(), session_end_ns=T + 60_000 * MS)
    day.on_quote("IBM", T, 99.99, 100.00, 500, 300)
    day.submit(SimOrder("d1", "IBM", "BUY", 100, "LMT", limit_price=99.90), T)
    day.submit(SimOrder("g1", "IBM", "BUY", 100, "LMT", limit_price=99.90, tif="GTC"), T)
    out = day.advance(T + 61_000 * MS)
    assert [(r.client_order_id, r.kind) for r in out if r.kind == "cancelled"] == [("d1", "cancelled")]
    assert "g1" in day.orders
    day.cancel("g1", T + 61_000 * MS)
    assert [r.kind for r in day.advance(T + 62_000 * MS)] == ["cancelled"]
    day.cancel("g1", T + 62_000 * MS)
    day.advance(T + 63_000 * MS)
    assert day.stats["cancel_unknown_or_done"] == 1


@pytest.mark.parametrize(
    ("order", "reason"),
    [
        (SimOrder("r1", "XYZ", "BUY", 100), "unknown symbol"),
        (SimOrder("r2", "IBM", "BUY", 0), "bad size"),
        (SimOrder("r3", "IBM", "BUY", 10.5), "bad size"),
        (SimOrder("r4", "IBM", "BUY", 1_000_000), "bad size"),
        (SimOrder("r5", "IBM", "BUY", 100, "LMT"), "limit price"),
        (SimOrder("r6", "IBM", "SELL", 100, "STP"), "stop price"),
    ],
)
def test_rejects(order: SimOrder, reason: str) -> None:
    b = broker()
    b.submit(order, T)
    out = b.advance(T + 10 * MS)
    assert [r.kind for r in out] == ["rejected"] and reason in out[0].reason


def test_tiered_commission_is_charged_per_fill() -> None:
    b = SimBroker(SimSettings(commission="ib-tiered"))
    b.on_quote("IBM", T, 99.99, 100.00, 500, 300)
    b.submit(SimOrder("c1", "IBM", "BUY", 100), T)
    (fill,) = [r for r in b.advance(T + 10 * MS) if r.kind == "fill"]
    assert fill.commission > 0.35 and fill.exec_id.startswith("sim-")


def test_the_end_of_the_data_ends_what_is_still_working() -> None:
    b = broker()
    b.submit(SimOrder("rest", "IBM", "BUY", 100, "LMT", limit_price=99.50), T)
    b.advance(T + 10 * MS)
    b.submit(SimOrder("late", "IBM", "BUY", 100), T + 10 * MS)  # sent; the data ends before it arrives
    out = b.end_of_data()
    assert {(r.client_order_id, r.kind) for r in out} == {("rest", "cancelled"), ("late", "rejected")}
    assert not b.orders


def test_bracket_legs_wait_for_the_parent_and_work_only_what_it_filled() -> None:
    b = broker()
    b.submit(SimOrder("p", "IBM", "BUY", 400, "LMT", limit_price=99.99), T)  # joins 500 on the bid
    b.submit(SimOrder("p.tp", "IBM", "SELL", 400, "LMT", 100.50, parent_id="p", oca_group="p"), T)
    b.submit(SimOrder("p.sl", "IBM", "SELL", 400, "STP", None, 99.50, parent_id="p", oca_group="p"), T)
    b.advance(T + 10 * MS)
    assert b.orders["p.tp"].held and b.orders["p.sl"].held
    b.on_trade("IBM", T + 20 * MS, 99.99, 600)  # 100 beyond the queue: the parent fills 100
    b.cancel("p", T + 30 * MS)  # the rest of the parent is cancelled
    out = b.advance(T + 50 * MS)
    assert [(r.client_order_id, r.kind, r.quantity) for r in out if r.kind in ("replaced", "cancelled")] == [
        ("p", "cancelled", 0.0),
        ("p.tp", "replaced", 100),
        ("p.sl", "replaced", 100),
    ]
    assert b.orders["p.tp"].live and b.orders["p.tp"].quantity == 100


def test_oca_legs_reduce_each_other_fill_by_fill() -> None:
    b = broker()
    b.submit(SimOrder("p", "IBM", "BUY", 300), T)
    b.submit(SimOrder("p.tp", "IBM", "SELL", 300, "LMT", 100.05, parent_id="p", oca_group="p"), T)
    b.submit(SimOrder("p.sl", "IBM", "SELL", 300, "STP", None, 99.50, parent_id="p", oca_group="p"), T)
    b.advance(T + 10 * MS)
    b.on_quote("IBM", T + 20 * MS, 100.04, 100.06, 500, 300)
    b.on_trade("IBM", T + 21 * MS, 100.05, 100)  # touches the take-profit: nobody ahead, 100 fill
    assert b.orders["p.tp"].filled == 100 and b.orders["p.sl"].quantity == 200
    b.on_quote("IBM", T + 30 * MS, 100.06, 100.08, 500, 300)  # through it: the rest fills
    out = b.advance(T + 40 * MS)
    assert "p.sl" not in b.orders and any(r.kind == "cancelled" and "OCA" in r.reason for r in out)


def test_a_leg_whose_parent_never_fills_is_cancelled() -> None:
    b = broker()
    b.submit(SimOrder("p", "IBM", "BUY", 100, "LMT", limit_price=99.00), T)
    b.submit(SimOrder("p.tp", "IBM", "SELL", 100, "LMT", 100.50, parent_id="p", oca_group="p"), T)
    b.advance(T + 10 * MS)
    b.cancel("p", T + 10 * MS)
    out = b.advance(T + 30 * MS)
    assert [(r.client_order_id, r.kind) for r in out] == [("p", "cancelled"), ("p.tp", "cancelled")]


def test_a_replace_reprices_losing_the_queue_and_never_goes_below_the_filled() -> None:
    b = broker()
    b.submit(SimOrder("c1", "IBM", "BUY", 400, "LMT", limit_price=99.98), T)  # below the bid
    b.advance(T + 10 * MS)
    b.on_trade("IBM", T + 15 * MS, 99.97, 100)  # traded through: fills whole at 99.98
    b.submit(SimOrder("c2", "IBM", "BUY", 400, "LMT", limit_price=99.98), T + 20 * MS)
    b.advance(T + 30 * MS)
    b.replace("c2", T + 30 * MS, limit_price=99.99)  # joins the bid's 500: at the back
    b.advance(T + 40 * MS)
    assert b.orders["c2"].queue_ahead == 500
    b.replace("c2", T + 40 * MS, limit_price=100.00)  # through the ask: takes the 300 shown
    out = b.advance(T + 60 * MS)
    assert fills(out) == [(300, 100.00)] and b.orders["c2"].remaining == 100
    b.replace("c2", T + 60 * MS, quantity=200)  # below the 300 filled: refused
    b.replace("gone", T + 60 * MS, quantity=100)
    out = b.advance(T + 80 * MS)
    assert [r.kind for r in out] == ["replace_rejected", "replace_rejected"]
    assert b.orders["c2"].quantity == 400
