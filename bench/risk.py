"""Risk checks per intent: the full rule set on a realistic book (positions, open orders, quotes),
against the bare baseline of building the intent and a denial with no rules at all."""

from __future__ import annotations

import time
from typing import Any

from bench.common import median, percentile, save
from libs.common.calendar import market_calendar
from libs.common.clock import SimClock
from libs.common.config import RiskSettings
from proto.execution import Fill, OrderEvent
from proto.market import Quote
from proto.orders import OrderApproved, OrderDenied, OrderIntent
from services.risk.core import RiskCore

T0 = 1_381_240_800_000_000_000  # 2013-10-08 10:00 New York
SYMBOLS = [f"S{k:03d}" for k in range(50)]


def _book() -> RiskCore:
    core = RiskCore(RiskSettings(max_orders_per_minute=10**9), SimClock(T0), market_calendar())
    for k, sym in enumerate(SYMBOLS):
        core.on_event(
            Quote(
                ts_event=T0, ts_init=T0, symbol=sym, bid=50.0 + k, ask=50.02 + k, bid_size=100, ask_size=100
            )
        )
        core.on_event(
            Fill(
                ts_event=T0,
                ts_init=T0,
                exec_id=f"e{k}",
                client_order_id="x",
                symbol=sym,
                side="BUY",
                quantity=10,
                price=50.01 + k,
            )
        )
        core.on_volatility(sym, 0.2)
    return core


def _intents(n: int) -> list[OrderIntent]:
    return [
        OrderIntent(
            ts_event=T0 + k, ts_init=T0 + k, intent_id=f"i{k}", symbol=SYMBOLS[k % 50], side="BUY", quantity=5
        )
        for k in range(n)
    ]


def one_round(n: int = 20_000) -> dict[str, float]:
    core, intents = _book(), _intents(n)
    samples = []
    for i in intents:
        t0 = time.perf_counter_ns()
        decision = core.on_intent(i)
        samples.append((time.perf_counter_ns() - t0) / 1000)
        if isinstance(decision, OrderApproved):  # the order ends (not timed): the book stays realistic
            core.on_order_event(
                OrderEvent(
                    ts_event=i.ts_event,
                    ts_init=0,
                    client_order_id=decision.client_order_id,
                    symbol=i.symbol,
                    status="CANCELLED",
                    seq=2,
                )
            )
    bare = []
    for i in intents:
        t0 = time.perf_counter_ns()
        OrderDenied(
            ts_event=i.ts_event, ts_init=0, intent_id=i.intent_id, symbol=i.symbol, code="X", context={}
        )
        bare.append((time.perf_counter_ns() - t0) / 1000)
    return {
        "p50_us": percentile(samples, 0.5),
        "p99_us": percentile(samples, 0.99),
        "bare_p50_us": percentile(bare, 0.5),
        "approved": core.stats["approved"],
    }


def run(rounds: int = 3) -> dict[str, Any]:
    per_round = [one_round() for _ in range(rounds)]
    result: dict[str, Any] = {"rounds": per_round}
    for key in ("p50_us", "p99_us", "bare_p50_us"):
        result[key] = median([r[key] for r in per_round])
    save("risk", result)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps({k: v for k, v in run().items() if k != "rounds"}, indent=1))
