"""Backtest throughput beside backtrader and NautilusTrader, same run, same ticks, same strategy.

The strategy (identical in the three): 1-minute bars built from the trade ticks; EMA(10) and
EMA(30) of the closes; long 200 shares when the fast crosses above the slow, flat when it crosses
below; market orders; commission $0.005 a share (IB fixed: 200 shares is its $1 minimum).

The ticks: the shipped day's IBM and BAC tick quotes and trades, cleaned once by the md-gateway
core (consolidated quotes, regular session), untimed. Each engine is timed from its own prepared
input to its last fill:
- ours: the backtest engine (in-process bus, simulated clock) with the EMA cross as its strategy
  app, the real risk gate and execution gateway, and the SimBroker filling against the quotes
  with its latency; every quote and trade goes through the bus;
- NautilusTrader: BacktestEngine (Rust core) with QuoteTick and TradeTick data, bars aggregated
  internally from trades, a netting margin account, a per-share fee model;
- backtrader: the trade ticks as a data feed resampled to 1-minute bars (backtrader has no quote
  model, so it consumes the trades only), COMM_FIXED per share.
Fill models differ (ours walks the quoted size after a 5 ms latency; Nautilus fills at the touch;
backtrader at the next bar's open), so P&L is not compared here: speed is.

Also: the full spine (every core, the trained models) on the same day, ticks per second.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import platform
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import median, save
from libs.common.bus import Delivery
from libs.common.calendar import MarketCalendar, market_calendar
from libs.common.clock import SimClock
from libs.common.config import Settings, load_settings
from libs.common.runtime import Runtime, ServiceApp
from proto.market import Quote, Trade
from proto.orders import OrderIntent
from proto.subjects import spec
from services.features.indicators import Ema
from services.md_gateway.core import MarketDataCore
from services.md_gateway.providers.lean import LeanReplay
from tradefleet.backtest.engine import Backtest, clean_day
from tradefleet.backtest.sources import CleanedDay, DaySource

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "lean"
DAY = "20131008"
FAST, SLOW, SHARES, PER_SHARE = 10, 30, 200, 0.005
MINUTE = 60_000_000_000
INTENT = spec("order.intent.{symbol}")
NEWS = REPO / "data" / "sample" / "news" / "20131008.jsonl"


def cleaned_events(symbols: list[str]) -> list[Quote | Trade]:
    provider = LeanReplay(SAMPLE, DAY, symbols, "none")
    md = MarketDataCore(SimClock(), 10.0, True, provider.session())
    return [e for e in map(md.on_record, provider.records()) if isinstance(e, (Quote, Trade))]


# -- ours ------------------------------------------------------------------------------------------
@dataclass
class _Symbol:
    fast: Ema
    slow: Ema
    minute: int = 0
    close: float = 0.0
    above: bool | None = None
    long: bool = False


class EmaCrossApp(ServiceApp):
    """The strategy under test as a service app: trades in, 1-minute closes, intents out."""

    name = "ema-cross"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.symbols: dict[str, _Symbol] = {}
        self.intents = 0

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        await rt.subscribe("md.trade.>", self._on_trade, sync=True)

    def _on_trade(self, d: Delivery) -> Awaitable[None] | None:
        """Per tick (sync, as the services' per-tick handlers): a coroutine only at a close."""
        t = d.event
        assert isinstance(t, Trade)
        s = self.symbols.get(t.symbol)
        if s is None:
            s = self.symbols[t.symbol] = _Symbol(Ema(FAST), Ema(SLOW))
        minute = t.ts_event // MINUTE
        pending = None
        if s.minute and minute != s.minute:
            pending = self._on_close(t.symbol, s, (s.minute + 1) * MINUTE)
        s.minute, s.close = minute, t.price
        return pending

    def _on_close(self, symbol: str, s: _Symbol, ts: int) -> Awaitable[None] | None:
        """The minute's close: the EMAs now; the intent's publish, when it crosses, returned."""
        fast, slow = s.fast.update(s.close), s.slow.update(s.close)
        if math.isnan(slow):
            return None
        above = fast > slow
        crossed = s.above is not None and above != s.above
        s.above = above
        if not (crossed and above != s.long):
            return None
        s.long = above
        self.intents += 1
        side = "BUY" if above else "SELL"
        intent = OrderIntent(
            ts_event=ts,
            ts_init=self.rt.now_ns(),
            intent_id=f"ema-{symbol}-{ts}",
            symbol=symbol,
            side=side,
            quantity=SHARES,
            target_position=SHARES if above else 0.0,
            reason=f"EMA{FAST} {'above' if above else 'below'} EMA{SLOW}",
        )
        return self.rt.publish(INTENT.subject(symbol=symbol), intent)


class _Prepared:
    """A day whose records are the cleaned events (as the core's record tuples)."""

    origin, root = "bench", ""

    def __init__(self, events: list[Quote | Trade], symbols: list[str]) -> None:
        self.date, self.symbols = DAY, tuple(symbols)
        self.rows = [
            ("Q", e.ts_event, e.symbol, e.bid, e.bid_size, e.ask, e.ask_size, e.venue, False)
            if isinstance(e, Quote)
            else ("T", e.ts_event, e.symbol, e.price, e.size, e.venue, e.conditions, False, e.aggressor)
            for e in events
        ]

    def session(self, calendar: MarketCalendar | None = None) -> tuple[int, int]:
        found = (calendar or market_calendar()).session_on(self.date)
        assert found is not None, f"{self.date} is not a trading day"
        return found.open_ns, found.close_ns

    def session_start_ns(self, calendar: MarketCalendar | None = None) -> int:
        return self.session(calendar)[0]

    def records(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)


def _bench_settings() -> Settings:
    # No day-loss or notional limit gets in the EMA cross's way; IB fixed commission.
    return load_settings(
        None,
        execution={"sim": {"commission": "ib-fixed"}},
        risk={
            "max_consecutive_losses": 1_000_000,
            "loss_cooldown_s": 0,
            "daily_loss_limit": 1e9,
            "max_drawdown": 1e9,
            "max_orders_per_minute": 10_000,
            "max_position_notional": 1e9,
            "max_quote_age_ms": 3_600_000,
        },
    )


def _ema_apps(settings: Settings) -> list[ServiceApp]:
    from tradefleet.services import RUNNABLE

    return [RUNNABLE["execution"](settings), RUNNABLE["risk"](settings), EmaCrossApp(settings)]


def prepared_day(events: list[Quote | Trade], symbols: list[str]) -> CleanedDay:
    """The ticks as the backtest's own prepared input: cleaned once, in memory (untimed, like
    Nautilus's tick objects and its add_data)."""
    return clean_day(_bench_settings(), _Prepared(events, symbols))  # type: ignore[arg-type]


def run_ours(
    events: list[Quote | Trade], symbols: list[str], day: CleanedDay | None = None
) -> dict[str, Any]:
    """From the prepared day (as Nautilus runs from its prepared ticks); without one, from the
    record tuples, every tick cleaned again by the md-gateway core inside the timer."""
    source = day if day is not None else _Prepared(events, symbols)
    bt = Backtest(_bench_settings(), [source], apps=_ema_apps)  # type: ignore[list-item]
    t0 = time.perf_counter()
    result = asyncio.run(bt.run())
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "ticks": len(events), "fills": len(result.ledger.fills)}


# -- NautilusTrader --------------------------------------------------------------------------------
def run_nautilus(events: list[Quote | Trade], symbols: list[str]) -> dict[str, Any]:
    from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
    from nautilus_trader.backtest.models import PerContractFeeModel
    from nautilus_trader.config import LoggingConfig, StrategyConfig
    from nautilus_trader.indicators.averages import ExponentialMovingAverage
    from nautilus_trader.model.currencies import USD
    from nautilus_trader.model.data import Bar, BarType, QuoteTick, TradeTick
    from nautilus_trader.model.enums import AccountType, AggressorSide, OmsType, OrderSide
    from nautilus_trader.model.identifiers import InstrumentId, TradeId, TraderId, Venue
    from nautilus_trader.model.objects import Money, Price, Quantity
    from nautilus_trader.test_kit.providers import TestInstrumentProvider
    from nautilus_trader.trading.strategy import Strategy

    class Config(StrategyConfig, frozen=True):
        symbols: tuple[str, ...]

    class EmaCross(Strategy):  # type: ignore[misc]
        def __init__(self, config: Config) -> None:
            super().__init__(config)
            self.emas: dict[str, tuple[Any, Any]] = {}
            self.crossing: dict[str, list[Any]] = {}

        def on_start(self) -> None:
            for sym in self.config.symbols:
                bar_type = BarType.from_str(f"{sym}.XNAS-1-MINUTE-LAST-INTERNAL")
                fast, slow = ExponentialMovingAverage(FAST), ExponentialMovingAverage(SLOW)
                self.register_indicator_for_bars(bar_type, fast)
                self.register_indicator_for_bars(bar_type, slow)
                self.emas[sym] = (fast, slow)
                self.crossing[sym] = [None, False]
                self.subscribe_bars(bar_type)

        def on_bar(self, bar: Bar) -> None:
            sym = bar.bar_type.instrument_id.symbol.value
            fast, slow = self.emas[sym]
            if not slow.initialized:
                return
            above = fast.value > slow.value
            state = self.crossing[sym]
            crossed = state[0] is not None and above != state[0]
            state[0] = above
            if crossed and above != state[1]:
                state[1] = above
                order = self.order_factory.market(
                    instrument_id=bar.bar_type.instrument_id,
                    order_side=OrderSide.BUY if above else OrderSide.SELL,
                    quantity=Quantity.from_int(SHARES),
                )
                self.submit_order(order)

    engine = BacktestEngine(
        BacktestEngineConfig(trader_id=TraderId("BENCH-001"), logging=LoggingConfig(bypass_logging=True))
    )
    venue = Venue("XNAS")
    engine.add_venue(
        venue=venue,
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=USD,
        starting_balances=[Money(1_000_000, USD)],
        fee_model=PerContractFeeModel(Money(PER_SHARE, USD)),
        bar_execution=False,
    )
    ids = {}
    for sym in symbols:
        instrument = TestInstrumentProvider.equity(symbol=sym, venue="XNAS")
        engine.add_instrument(instrument)
        ids[sym] = InstrumentId.from_str(f"{sym}.XNAS")
    data: list[Any] = []
    for i, e in enumerate(events):
        if isinstance(e, Quote):
            data.append(
                QuoteTick(
                    ids[e.symbol],
                    Price(e.bid, 2),
                    Price(e.ask, 2),
                    Quantity(max(e.bid_size, 1), 0),
                    Quantity(max(e.ask_size, 1), 0),
                    e.ts_event,
                    e.ts_event,
                )
            )
        else:
            data.append(
                TradeTick(
                    ids[e.symbol],
                    Price(e.price, 2),
                    Quantity(max(e.size, 1), 0),
                    AggressorSide.NO_AGGRESSOR,
                    TradeId(str(i)),
                    e.ts_event,
                    e.ts_event,
                )
            )
    engine.add_data(data)
    engine.add_strategy(EmaCross(Config(symbols=tuple(symbols))))
    t0 = time.perf_counter()
    engine.run()
    seconds = time.perf_counter() - t0
    fills = len(engine.trader.generate_fills_report())
    engine.dispose()
    return {"seconds": seconds, "ticks": len(events), "fills": fills}


# -- backtrader ------------------------------------------------------------------------------------
def run_backtrader(events: list[Quote | Trade], symbols: list[str]) -> dict[str, Any]:
    import backtrader as bt
    import pandas as pd

    class EmaCross(bt.Strategy):  # type: ignore[misc]
        def __init__(self) -> None:
            self.fills = 0
            self.cross = {}
            for data in self.datas:
                fast, slow = bt.ind.EMA(data.close, period=FAST), bt.ind.EMA(data.close, period=SLOW)
                self.cross[data._name] = bt.ind.CrossOver(fast, slow)

        def next(self) -> None:
            for data in self.datas:
                signal = self.cross[data._name][0]
                held = self.getposition(data).size
                if signal > 0 and not held:
                    self.buy(data=data, size=SHARES)
                elif signal < 0 and held:
                    self.close(data=data)

        def notify_trade(self, trade: Any) -> None:
            self.fills += 1 if trade.isclosed else 0

        def notify_order(self, order: Any) -> None:
            if order.status == order.Completed:
                self.fills += 1

    cerebro = bt.Cerebro(stdstats=False)
    trades = 0
    for sym in symbols:
        rows = [e for e in events if isinstance(e, Trade) and e.symbol == sym]
        trades += len(rows)
        frame = pd.DataFrame(
            {
                "open": [t.price for t in rows],
                "high": [t.price for t in rows],
                "low": [t.price for t in rows],
                "close": [t.price for t in rows],
                "volume": [t.size for t in rows],
            },
            index=pd.to_datetime([t.ts_event for t in rows], unit="ns"),
        )
        feed = bt.feeds.PandasData(dataname=frame, timeframe=bt.TimeFrame.Ticks, name=sym)
        cerebro.resampledata(feed, timeframe=bt.TimeFrame.Minutes, compression=1, name=sym)
    cerebro.addstrategy(EmaCross)
    cerebro.broker.setcash(1_000_000)
    cerebro.broker.setcommission(commission=PER_SHARE, commtype=bt.CommInfoBase.COMM_FIXED, stocklike=True)
    t0 = time.perf_counter()
    (strategy,) = cerebro.run()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "ticks": trades, "fills": strategy.fills}


# -- the full spine --------------------------------------------------------------------------------
def spine_day(symbols: list[str]) -> CleanedDay:
    from tradefleet.backtest.sources import find_days

    return clean_day(load_settings(), find_days(str(SAMPLE), symbols, DAY, DAY)[0])


def run_spine(symbols: list[str], day: CleanedDay | None = None) -> dict[str, Any]:
    """Every core and model over the day: from its prepared (cleaned) ticks, or without ``day``
    from the LEAN files, read and cleaned inside the timer (ticks: the raw records then)."""
    from tradefleet.backtest.sources import find_days

    days: list[DaySource] = [day] if day is not None else find_days(str(SAMPLE), symbols, DAY, DAY)
    t0 = time.perf_counter()
    result = asyncio.run(Backtest(load_settings(), days, news=[NEWS]).run())
    seconds = time.perf_counter() - t0
    ticks = len(day.events) if day is not None else result.records
    return {"seconds": seconds, "ticks": ticks, "fills": len(result.ledger.fills)}


def run(rounds: int = 3, symbols: list[str] | None = None) -> dict[str, Any]:
    symbols = symbols or ["IBM", "BAC"]
    events = cleaned_events(symbols)
    prepared, spine = prepared_day(events, symbols), spine_day(symbols)
    assert len(spine.events) == len(events), "the spine's day and the peers' ticks differ"
    engines: dict[str, Callable[[], dict[str, Any]]] = {
        "ours": lambda: run_ours(events, symbols, prepared),
        "nautilus_trader": lambda: run_nautilus(events, symbols),
        "backtrader": lambda: run_backtrader(events, symbols),
        "ours_cleaning_in_timer": lambda: run_ours(events, symbols),
        "ours_full_spine": lambda: run_spine(symbols, spine),
        "ours_full_spine_from_files": lambda: run_spine(symbols),
    }
    per: dict[str, list[dict[str, Any]]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, fn in engines.items():
            per[name].append(fn())
    table = {}
    for name, runs in per.items():
        rates = [r["ticks"] / r["seconds"] for r in runs]
        table[name] = {
            "ticks": runs[0]["ticks"],
            "ticks_per_s_median": round(median(rates)),
            "seconds_median": round(median([r["seconds"] for r in runs]), 3),
            "fills": runs[0]["fills"],
        }

    def vs(name: str, peer: str) -> float:
        return round(table[name]["ticks_per_s_median"] / table[peer]["ticks_per_s_median"], 2)

    out = {
        "machine": platform.node(),
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "rounds": rounds,
        "symbols": symbols,
        "day": DAY,
        "events": len(events),
        "engines": table,
        "ours_vs_backtrader": vs("ours", "backtrader"),
        "ours_vs_nautilus": vs("ours", "nautilus_trader"),
        "ours_cleaning_in_timer_vs_nautilus": vs("ours_cleaning_in_timer", "nautilus_trader"),
        # the same 486,581 ticks: every core and model vs Nautilus's EMA cross
        "full_spine_vs_nautilus": vs("ours_full_spine", "nautilus_trader"),
    }
    save("backtest_peers", out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--symbols", default="IBM,BAC")
    ns = parser.parse_args()
    out = run(ns.rounds, ns.symbols.split(","))
    print(f"\n== backtest throughput, same ticks ({out['events']:,} events), medians of {ns.rounds} ==")
    for name, row in out["engines"].items():
        rate, ticks = row["ticks_per_s_median"], row["ticks"]
        print(f"{name:26s} {rate:>10,} ticks/s  ({ticks:,} ticks, {row['fills']} fills)")
    print(f"ours / backtrader {out['ours_vs_backtrader']}  ours / nautilus {out['ours_vs_nautilus']}")
    print(
        f"cleaning in the timer / nautilus {out['ours_cleaning_in_timer_vs_nautilus']}  "
        f"full spine / nautilus's EMA cross {out['full_spine_vs_nautilus']}"
    )


if __name__ == "__main__":
    main()
