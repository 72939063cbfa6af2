"""Risk checks per intent: the full rule set on a realistic book (positions, open orders, quotes),
against the bare baseline of building the intent and a denial with no rules at all; and the same
with the portfolio limits on (correlated exposure and VaR over 120 minute closes of every
symbol, services/risk/portfolio.py): between two closes (what the gate caches) and on the first
intent after a close (everything computed again)."""

from __future__ import annotations

import random
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


PORTFOLIO = {"max_correlated_exposure": 10**12, "max_var": 10**12, "circuit_sigma": 6.0}
MINUTE = 60_000_000_000


def _book(portfolio: bool = False) -> RiskCore:
    limits = RiskSettings(max_orders_per_minute=10**9, **(PORTFOLIO if portfolio else {}))
    core = RiskCore(limits, SimClock(T0), market_calendar())
    if portfolio:  # two hours of minute closes: a random walk per symbol (seeded)
        rng = random.Random(7)
        prices = [50.0 + k for k in range(len(SYMBOLS))]
        for minute in range(120):
            for k, sym in enumerate(SYMBOLS):
                prices[k] *= 1 + rng.gauss(0, 0.0005)
                core.on_minute_close(sym, T0 - (120 - minute) * MINUTE, prices[k])
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


def one_round(n: int = 20_000, portfolio: bool = False, close_every: int = 0) -> dict[str, float]:
    """``close_every`` > 0: a new minute close (of one symbol) before every that many intents."""
    core, intents = _book(portfolio), _intents(n)
    samples = []
    for k, i in enumerate(intents):
        if close_every and k % close_every == 0:
            core.on_minute_close(SYMBOLS[k % 50], T0 + k, 50.0 + k % 50)
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
    per_round = []
    for _ in range(rounds):  # each round: the three variants back to back, on the same machine state
        plain = one_round()
        cached = one_round(2_000, portfolio=True)
        fresh = one_round(200, portfolio=True, close_every=1)
        per_round.append(
            {
                **plain,
                "portfolio_p50_us": cached["p50_us"],
                "portfolio_p99_us": cached["p99_us"],
                "portfolio_after_close_p50_us": fresh["p50_us"],
                "portfolio_after_close_p99_us": fresh["p99_us"],
            }
        )
    result: dict[str, Any] = {"rounds": per_round, "held_positions": len(SYMBOLS)}
    for key in per_round[0]:
        if key.endswith("_us"):
            result[key] = median([r[key] for r in per_round])
    result["portfolio_over_plain_p50"] = round(result["portfolio_p50_us"] / result["p50_us"], 2)
    result["after_close_over_plain_p50"] = round(result["portfolio_after_close_p50_us"] / result["p50_us"], 2)
    save("risk", result)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps({k: v for k, v in run().items() if k != "rounds"}, indent=1))
