"""The features core: quotes, trades and depth in; feature vectors out. Pure: no I/O, clock passed in.

Per tick the work is O(1) and independent of how many timeframes are configured: a tick updates
the symbol's quote or its one base bar (the greatest common divisor of the timeframes, 1m by
default) and the current second's accumulators. Higher timeframes are folded from base bars when
those close, and indicators update only on bar closes.

Time is event time: a bar [B - tf, B) closes when the first event at or after B arrives (from any
symbol), before that event is applied, so a vector never sees data from after its close. Live
runtimes also call ``on_time`` from a timer so a quiet market still closes its bars.

The work of a jump in time is bounded, however far it goes (a night, a weekend, a tick stamped
2100-01-01): the bars open when it starts close on their grid, then the empty rest, where the grid
would give no vector, is crossed in one step.
"""

from __future__ import annotations

import collections
import math

from libs.common.calendar import MarketCalendar
from libs.common.clock import Clock
from libs.common.config import FeaturesSettings
from libs.common.markettime import ny_day_of, ny_day_ordinal
from proto.base import Event
from proto.features import (
    MICRO,
    MICRO_FEATURE_SET,
    MICRO_TIMEFRAME,
    MICRO_VECTOR,
    TECHNICAL,
    FeatureVector,
    bar_feature_names,
    bar_feature_set,
)
from proto.market import DepthUpdate, Quote, Trade
from proto.units import BPS
from proto.units import SECOND_NS as NS
from services.features import indicators as ind

NAN = math.nan


class _Accum:
    """What a bar (or a second) accumulates from trades and 1-second mid returns."""

    __slots__ = (
        "blocks",
        "buy_trades",
        "buy_volume",
        "close",
        "high",
        "low",
        "open",
        "r2",
        "sell_trades",
        "sell_volume",
        "trades",
        "volume",
    )

    def __init__(self) -> None:
        self.open = self.high = self.low = self.close = NAN
        self.volume = self.buy_volume = self.sell_volume = 0.0
        self.trades = self.buy_trades = self.sell_trades = self.blocks = 0
        self.r2 = 0.0

    def add_trade(self, price: float, size: float, sign: int, block: bool) -> None:
        if self.trades == 0:
            self.open = self.high = self.low = price
        elif price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.close = price
        self.volume += size
        self.trades += 1
        if sign > 0:
            self.buy_volume += size
            self.buy_trades += 1
        elif sign < 0:
            self.sell_volume += size
            self.sell_trades += 1
        if block:
            self.blocks += 1

    def merge(self, other: _Accum) -> None:
        """Fold a later base bar into this one (higher timeframes are built this way)."""
        self.r2 += other.r2
        if other.trades == 0:
            return
        if self.trades == 0:
            self.open, self.high, self.low = other.open, other.high, other.low
        else:
            self.high = max(self.high, other.high)
            self.low = min(self.low, other.low)
        self.close = other.close
        self.volume += other.volume
        self.buy_volume += other.buy_volume
        self.sell_volume += other.sell_volume
        self.trades += other.trades
        self.buy_trades += other.buy_trades
        self.sell_trades += other.sell_trades
        self.blocks += other.blocks


class _Technicals:
    """Indicator state of one symbol on one timeframe, and its latest normalized outputs."""

    def __init__(self, cfg: FeaturesSettings) -> None:
        self.ema12, self.ema26, self.sma20 = ind.Ema(12), ind.Ema(26), ind.Sma(20)
        self.macd = ind.Macd(12, 26, 9)
        self.rsi = ind.Rsi(14)
        self.adx = ind.Adx(14)
        self.atr = ind.Atr(14)
        self.roc = ind.Roc(10)
        self.bb = ind.Bollinger(20, 2.0)
        self.stoch = ind.Stochastic(14, 3, 3)
        self.volume_stats = ind.RollingStats(cfg.burst_window)
        self.vol_rank = ind.PercentileRank(cfg.vol_rank_window)
        self.accum = _Accum()  # the bar being built from base bars
        self.prev_close = NAN
        self.values: dict[str, float] = {}
        self.trend = NAN
        self.roc_value = NAN


class _Book:
    """Level-2 book by position, as IB's updateMktDepth delivers it."""

    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids: list[list[float]] = []
        self.asks: list[list[float]] = []

    def apply(self, d: DepthUpdate) -> bool:
        """IB's updateMktDepth semantics; False (nothing applied) for a negative position, which
        IB never sends and which as a list index would address the other end, or fail."""
        side = self.bids if d.side == "BID" else self.asks
        pos = d.position
        if pos < 0:
            return False
        if d.operation == "INSERT":
            side.insert(min(pos, len(side)), [d.price, float(d.size)])
        elif d.operation == "UPDATE":
            if pos < len(side):
                side[pos] = [d.price, float(d.size)]
            else:
                side.append([d.price, float(d.size)])
        elif pos < len(side):
            del side[pos]
        return True

    def imbalance(self, levels: int) -> float:
        bid = sum(size for _, size in self.bids[:levels])
        ask = sum(size for _, size in self.asks[:levels])
        return (bid - ask) / (bid + ask) if bid + ask > 0 else NAN


class _Symbol:
    def __init__(self, cfg: FeaturesSettings, symbol: str) -> None:
        self.symbol = symbol
        self.bid = self.ask = NAN
        self.bid_size = self.ask_size = 0.0
        self.last_price = NAN
        self.last_sign = 0
        self.base = _Accum()
        self.second = _Accum()
        self.second_touched = False
        self.second_mid = NAN
        self.realized: collections.deque[float] = collections.deque(maxlen=cfg.realized_window_s)
        self.realized_sum = 0.0
        self.second_volume = ind.RollingStats(300)
        self.vwap = ind.SessionVwap()
        self.book: _Book | None = None
        self.tech = [_Technicals(cfg) for _ in cfg.timeframes]

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2.0

    def classify(self, price: float, aggressor: int) -> int:
        """Lee-Ready against the prevailing quote, the tick rule at the mid or without a quote;
        an exact aggressor flag (LOBSTER) wins."""
        if aggressor:
            sign = aggressor
        else:
            mid = self.mid  # NaN before the first quote: both comparisons are then False
            if price > mid:
                sign = 1
            elif price < mid:
                sign = -1
            elif price > self.last_price:
                sign = 1
            elif price < self.last_price:
                sign = -1
            else:
                sign = self.last_sign
        self.last_price = price
        self.last_sign = sign
        return sign

    def spread_bps(self) -> float:
        mid = self.mid
        return (self.ask - self.bid) / mid * BPS if mid > 0 else NAN

    def quote_imbalance(self) -> float:
        total = self.bid_size + self.ask_size
        return (self.bid_size - self.ask_size) / total if total > 0 else NAN

    def realized_vol_bps(self) -> float:
        # max(): a running sum of squares can drift a hair below zero after removals
        return math.sqrt(max(self.realized_sum, 0.0)) * BPS if self.realized else NAN


class FeatureCore:
    def __init__(self, config: FeaturesSettings, clock: Clock, calendar: MarketCalendar) -> None:
        self.cfg = config
        self.clock = clock
        self.calendar = calendar
        timeframes = tuple(config.timeframes)
        self.names = bar_feature_names(timeframes)
        self.feature_set = bar_feature_set(timeframes)
        self.micro_feature_set = MICRO_FEATURE_SET
        self.timeframe_ns, self.base_ns = config.timeframe_ns, config.base_ns
        # A jump closes bars on the grid for this long past the first boundary it crosses (each
        # timeframe closes once in its span); after that nothing is open: see _skip_idle.
        self.settle_ns = max(self.timeframe_ns)
        # What every tick or second reads, as plain attributes: a pydantic model's attribute costs
        # about 2.5x a plain one, and this is the fleet's hottest loop.
        self.block_min_shares, self.block_min_notional = config.block_min_shares, config.block_min_notional
        self.emit_micro, self.depth_levels = config.emit_micro, config.depth_levels
        self.include_names = config.include_names
        self.symbols: dict[str, _Symbol] = {}
        self.next_second = 0
        self.next_base = 0
        self.day_start = self.day_end = 0
        self.anchor = 0  # the day's open: the bar grid starts there
        self.close = 0  # the day's close: always a bar boundary
        self.closed_until = 0  # every second and bar ending at or before this is closed
        self.stats: collections.Counter[str] = collections.Counter()

    # -- events in ----------------------------------------------------------------------------
    def on_event(self, event: Event) -> list[FeatureVector]:
        if type(event) is Quote:
            return self.on_quote(event)
        if type(event) is Trade:
            return self.on_trade(event)
        if type(event) is DepthUpdate:
            return self.on_depth(event)
        return []

    def on_quote(self, q: Quote) -> list[FeatureVector]:
        out = self._advance(q.ts_event) if q.ts_event >= self.next_second else []
        s = self.symbols.get(q.symbol) or self._add_symbol(q.symbol)
        s.bid, s.ask, s.bid_size, s.ask_size = q.bid, q.ask, float(q.bid_size), float(q.ask_size)
        s.second_touched = True
        return out

    def on_trade(self, t: Trade) -> list[FeatureVector]:
        if t.ts_event >= self.next_second:
            out = self._advance(t.ts_event)
        else:
            out = []
            if t.ts_event < self.closed_until:
                # Its bar already closed: it counts in the open one, and the count says so.
                self.stats["late_trades"] += 1
        s = self.symbols.get(t.symbol) or self._add_symbol(t.symbol)
        price, size = t.price, float(t.size)
        sign = s.classify(price, t.aggressor)
        block = size >= self.block_min_shares or price * size >= self.block_min_notional
        s.base.add_trade(price, size, sign, block)
        s.second.add_trade(price, size, sign, block)
        s.second_touched = True
        s.vwap.add(price, size)
        return out

    def on_depth(self, d: DepthUpdate) -> list[FeatureVector]:
        out = self._advance(d.ts_event) if d.ts_event >= self.next_second else []
        s = self.symbols.get(d.symbol) or self._add_symbol(d.symbol)
        if s.book is None:
            s.book = _Book()
        if not s.book.apply(d):
            self.stats["depth_bad_position"] += 1
        return out

    def on_time(self, now_ns: int) -> list[FeatureVector]:
        """Close what is due by ``now_ns`` without an event (live timer; end of a replay)."""
        return self._advance(now_ns) if now_ns >= self.next_second and self.next_second else []

    def finish(self) -> list[FeatureVector]:
        """End of data: close the open bars at their natural boundaries."""
        if not self.next_second:
            return []
        longest = max(self.timeframe_ns)
        return self._advance(self.next_base + longest)

    # -- time ---------------------------------------------------------------------------------
    def _add_symbol(self, symbol: str) -> _Symbol:
        state = _Symbol(self.cfg, symbol)
        self.symbols[symbol] = state
        return state

    def _advance(self, ts: int) -> list[FeatureVector]:
        """Close every second and bar that ends at or before ``ts``."""
        if self.next_second == 0:
            self._start_day(ts)
            self.next_second = (ts // NS + 1) * NS
            self.next_base = self._next_boundary(ts)
            return []
        out: list[FeatureVector] = []
        settled = self.next_base + self.settle_ns
        # Seconds with activity close one by one (each is a sample for realized volatility);
        # idle gaps are skipped in one step, and so are idle bars once every open bar has closed.
        while self.next_second <= ts:
            boundary = self.next_second
            if boundary > settled:
                self._skip_idle(ts)
                break
            out += self._close_second(boundary)  # the second's return belongs to the bar it ends
            if self.next_base <= boundary:
                out += self._close_base(self.next_base)
            self.closed_until = boundary
            self.next_second = max(boundary + NS, min(self.next_base, (ts // NS) * NS))
        if self.next_base <= ts:
            out += self._close_base(self.next_base)
        if ts >= self.day_end:
            self._start_day(ts)
            self.next_base = self._next_boundary(ts)
        return out

    def _skip_idle(self, ts: int) -> None:
        """Cross the seconds and bars from here to ``ts`` in one step, to where closing them one
        by one would have left the grid. Called only when nothing is open: no second was touched,
        every base bar and every timeframe's bar closed since the last event, so closing the rest
        would give no vector and change nothing but these three marks."""
        last = ts // NS * NS  # the last second boundary at or before ts
        self.closed_until = last
        self.next_second = last + NS
        self.next_base = self._next_boundary(last)
        self.stats["idle_skips"] += 1

    def _start_day(self, ts: int) -> None:
        self.day_start, self.day_end = ny_day_of(ts)
        hours = self.calendar.hours(ny_day_ordinal(ts))
        self.anchor, self.close = hours.open_ns, hours.close_ns
        for s in self.symbols.values():
            s.vwap.reset()

    def _next_boundary(self, ts: int) -> int:
        """The first base-bar boundary after ts: on the grid anchored at the day's open, with the
        close a boundary too (the bars in progress end there, early closes included)."""
        span = self.base_ns
        grid = self.anchor + ((ts - self.anchor) // span + 1) * span
        return self.close if ts < self.close < grid else grid

    def _close_second(self, boundary: int) -> list[FeatureVector]:
        out: list[FeatureVector] = []
        for s in self.symbols.values():
            if not s.second_touched:
                continue
            s.second_touched = False
            mid = s.mid
            if mid > 0 and s.second_mid > 0:
                r = math.log(mid / s.second_mid)
                r2 = r * r
                if len(s.realized) == s.realized.maxlen:
                    s.realized_sum -= s.realized[0]
                s.realized.append(r2)
                s.realized_sum += r2
                s.base.r2 += r2
            if mid > 0:
                s.second_mid = mid
            sec = s.second
            volume_z = s.second_volume.zscore_then_add(sec.volume) if sec.trades else NAN
            if self.emit_micro:
                out.append(self._micro_vector(s, boundary, volume_z))
            s.second = _Accum()
        return out

    def _micro_vector(self, s: _Symbol, boundary: int, volume_z: float) -> FeatureVector:
        sec = s.second
        values = [
            s.spread_bps(),
            s.quote_imbalance(),
            s.book.imbalance(self.depth_levels) if s.book else NAN,
            (sec.buy_trades - sec.sell_trades) / sec.trades if sec.trades else NAN,
            sec.buy_volume - sec.sell_volume,
            sec.volume,
            volume_z,
            float(sec.blocks),
            s.realized_vol_bps(),
            float(sec.trades),
        ]
        return FeatureVector(
            ts_event=boundary,
            ts_init=self.clock.now_ns(),
            symbol=s.symbol,
            timeframe=MICRO_TIMEFRAME,
            feature_set=self.micro_feature_set,
            values=values,
            names=list(MICRO_VECTOR) if self.include_names else None,
            price=s.mid if s.mid > 0 else s.last_price,
        )

    # -- bars ---------------------------------------------------------------------------------
    def _close_base(self, boundary: int) -> list[FeatureVector]:
        """Fold the base bars that end at ``boundary`` into every timeframe; close the timeframes
        whose boundary this is; then build their vectors (index symbol first, so relative strength
        sees the index's bar at the same boundary)."""
        self.next_base = self._next_boundary(boundary)
        at_close = boundary == self.close
        closing = [
            i for i, span in enumerate(self.timeframe_ns) if at_close or (boundary - self.anchor) % span == 0
        ]
        ordered = sorted(self.symbols.values(), key=lambda s: (s.symbol != self.cfg.index_symbol, s.symbol))
        for s in ordered:
            base = s.base
            for tech in s.tech:
                tech.accum.merge(base)
            s.base = _Accum()
        closed: list[tuple[_Symbol, int]] = []
        for i in closing:
            for s in ordered:
                tech = s.tech[i]
                bar, tech.accum = tech.accum, _Accum()
                if bar.trades:
                    self._update_technicals(s, i, bar)
                    closed.append((s, i))
        return [self._bar_vector(s, i, boundary) for s, i in closed]

    def _update_technicals(self, s: _Symbol, i: int, bar: _Accum) -> None:
        t = s.tech[i]
        h, lo, c = bar.high, bar.low, bar.close
        ema12, ema26, sma20 = t.ema12.update(c), t.ema26.update(c), t.sma20.update(c)
        macd, signal, hist = t.macd.update(c)
        rsi = t.rsi.update(c)
        plus_di, minus_di, adx = t.adx.update(h, lo, c)
        atr = t.atr.update(h, lo, c)
        t.roc_value = roc = t.roc.update(c)
        upper, middle, lower = t.bb.update(c)
        k, d = t.stoch.update(h, lo, c)
        vwap = s.vwap.value
        ret = math.log(c / t.prev_close) * BPS if t.prev_close > 0 else NAN
        t.prev_close = c
        atr_bps = atr / c * BPS
        t.trend = self._trend(adx, plus_di, minus_di, ema12, ema26)
        width = upper - lower
        index = self.symbols.get(self.cfg.index_symbol)
        index_roc = index.tech[i].roc_value if index is not None else NAN
        t.values = {
            "ret_bps": ret,
            "ema12_dist_bps": (c / ema12 - 1) * BPS,
            "ema26_dist_bps": (c / ema26 - 1) * BPS,
            "sma20_dist_bps": (c / sma20 - 1) * BPS,
            "macd_bps": macd / c * BPS,
            "macd_signal_bps": signal / c * BPS,
            "macd_hist_bps": hist / c * BPS,
            "rsi14": rsi,
            "vwap_dist_bps": (c / vwap - 1) * BPS,
            "adx14": adx,
            "plus_di14": plus_di,
            "minus_di14": minus_di,
            "roc10": roc,
            "bb_pctb": (c - lower) / width if width > 0 else NAN,
            "bb_width": width / middle if middle > 0 else NAN,
            "atr14_bps": atr_bps,
            "stoch_k": k,
            "stoch_d": d,
            "spread_bps": s.spread_bps(),
            "quote_imbalance": s.quote_imbalance(),
            "depth_imbalance": s.book.imbalance(self.cfg.depth_levels) if s.book else NAN,
            "aggression": (bar.buy_trades - bar.sell_trades) / bar.trades,
            "signed_volume_ratio": (bar.buy_volume - bar.sell_volume) / bar.volume if bar.volume else NAN,
            "volume_z": t.volume_stats.zscore_then_add(bar.volume),
            "block_trades": float(bar.blocks),
            "realized_vol_bps": math.sqrt(bar.r2) * BPS,
            "vol_pctile": t.vol_rank.rank_then_add(atr_bps),
            "trend": t.trend,
            "rel_strength": roc - index_roc if s.symbol != self.cfg.index_symbol else 0.0,
        }

    def _trend(self, adx: float, plus_di: float, minus_di: float, fast: float, slow: float) -> float:
        """+1 / -1 when ADX says trending and the DIs and EMAs agree on the direction; 0 otherwise."""
        if math.isnan(adx) or math.isnan(fast) or math.isnan(slow):
            return NAN
        if adx < self.cfg.trend_adx:
            return 0.0
        if plus_di > minus_di and fast > slow:
            return 1.0
        if minus_di > plus_di and fast < slow:
            return -1.0
        return 0.0

    def _bar_vector(self, s: _Symbol, i: int, boundary: int) -> FeatureVector:
        own = s.tech[i].values
        minutes = (boundary - self.anchor) / (60 * NS)
        values = [own[name] for name in TECHNICAL + MICRO]
        values += [own["vol_pctile"], own["trend"], own["rel_strength"], minutes]
        for tech in s.tech:
            ctx = tech.values
            values += [ctx.get("rsi14", NAN), ctx.get("macd_hist_bps", NAN), ctx.get("trend", NAN)]
        return FeatureVector(
            ts_event=boundary,
            ts_init=self.clock.now_ns(),
            symbol=s.symbol,
            timeframe=self.cfg.timeframes[i],
            feature_set=self.feature_set,
            values=[float(v) for v in values],
            names=list(self.names) if self.include_names else None,
            regime=regime_label(own["trend"], own["vol_pctile"]),
            price=s.mid if s.mid > 0 else s.tech[i].prev_close,
        )


def regime_label(trend: float, vol_pctile: float) -> str:
    direction = "unknown" if math.isnan(trend) else {1.0: "up", -1.0: "down"}.get(trend, "range")
    if math.isnan(vol_pctile):
        vol = "unknown"
    else:
        vol = "low" if vol_pctile < 1 / 3 else "high" if vol_pctile > 2 / 3 else "mid"
    return f"{direction}/{vol}"
