"""Training data: the feature vectors the live system sees, and labels from what came after.

Vectors come from either source, with identical content:
- a LEAN data folder replayed through the very cores the fleet runs (md-gateway core, features core);
- the point-in-time feature store (the ``feature_vectors`` table the recorder writes in a run).

Labels per horizon h: the forward mid-to-mid return from a vector's time t to t + h (same symbol,
same day), net of an estimated round-trip cost (the spread observed at t plus commissions on both
sides). Up (1) when the net long return is positive, down (0) when the net short return is; a move
smaller than the cost is "neutral" and left out of training. Triple-barrier labelling is an option:
the first of +-k * ATR barriers touched within h decides; untouched, the vertical barrier does.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from libs.common.calendar import MarketCalendar, market_calendar
from libs.common.clock import SimClock
from libs.common.config import FeaturesSettings
from libs.common.markettime import ny_day_of
from models.fastlane.sequence import SequenceWindows
from proto.features import FeatureVector
from proto.units import BPS
from services.features.core import FeatureCore
from services.md_gateway.core import MarketDataCore
from services.md_gateway.providers.lean import LeanReplay


def lean_tick_dates(root: Path, symbols: Iterable[str]) -> dict[str, list[str]]:
    """date -> symbols with tick data that day, for every date any of them has."""
    by_date: dict[str, list[str]] = {}
    for sym in symbols:
        folder = Path(root) / "equity" / "usa" / "tick" / sym.lower()
        for path in sorted(folder.glob("*_trade.zip")):
            by_date.setdefault(path.name[:8], []).append(sym.upper())
    return dict(sorted(by_date.items()))


def lean_symbols(root: Path) -> list[str]:
    folder = Path(root) / "equity" / "usa" / "tick"
    return sorted(p.name.upper() for p in folder.iterdir() if p.is_dir()) if folder.exists() else []


def replay_vectors(
    root: Path,
    days: dict[str, list[str]],
    config: FeaturesSettings,
    timeframe: str = "1m",
    progress: bool = True,
    calendar: MarketCalendar | None = None,
    windows: SequenceWindows | None = None,
) -> Iterator[FeatureVector]:
    """Replay each LEAN day through the md-gateway and features cores (``windows``: also keep
    each bar vector's one-second window, for the sequence family)."""
    calendar = calendar or market_calendar()
    providers = (LeanReplay(Path(root), date, symbols, "none") for date, symbols in days.items())
    sessions = ((p.session(calendar), p.records()) for p in providers)
    return vectors_of_days(
        sessions, config, timeframe, progress, total=len(days), calendar=calendar, windows=windows
    )


def vectors_of_days(
    days: Iterable[tuple[tuple[int, int] | None, Iterable[tuple[Any, ...]]]],
    config: FeaturesSettings,
    timeframe: str = "1m",
    progress: bool = False,
    total: int | None = None,
    calendar: MarketCalendar | None = None,
    windows: SequenceWindows | None = None,
) -> Iterator[FeatureVector]:
    """Days of records (each with its regular session) through the md-gateway and features cores,
    one features core across days, as a long-running service keeps its indicator state. The
    records may come from files or the database (tradefleet/backtest/walkforward.py)."""
    from tqdm import tqdm

    clock = SimClock()
    features = FeatureCore(config, clock, calendar or market_calendar())
    bar = tqdm(total=total, desc="replaying days", unit="day", disable=not progress)
    for session, records in days:
        md = MarketDataCore(clock, 10.0, True, session)
        for record in records:
            event = md.on_record(record)
            if event is None:
                continue
            for vector in features.on_event(event):
                if windows is not None:
                    windows.see(vector)
                if vector.timeframe == timeframe:
                    yield vector
        bar.update(1)
    for vector in features.finish():
        if windows is not None:
            windows.see(vector)
        if vector.timeframe == timeframe:
            yield vector
    bar.close()


def store_days(dsn: str, feature_set: str, timeframe: str = "1m") -> list[str]:
    """The New York days (YYYYMMDD) the feature store holds vectors of this feature set for."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT DISTINCT (ts AT TIME ZONE 'America/New_York')::date FROM feature_vectors "
            "WHERE feature_set = %s AND timeframe = %s ORDER BY 1",
            (feature_set, timeframe),
        ).fetchall()
    return [r[0].strftime("%Y%m%d") for r in rows]


def vectors_from_db(
    dsn: str, feature_set: str, timeframe: str = "1m", days: list[str] | None = None
) -> list[FeatureVector]:
    """The recorded vectors of one feature set, in time order (the point-in-time store); only
    those of ``days`` (YYYYMMDD, New York) when given."""
    import psycopg

    where = "WHERE feature_set = %s AND timeframe = %s"
    params: list[Any] = [feature_set, timeframe]
    if days is not None:
        where += " AND to_char(ts AT TIME ZONE 'America/New_York', 'YYYYMMDD') = ANY(%s)"
        params.append(list(days))
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT (extract(epoch FROM ts) * 1e9)::int8, symbol, timeframe, feature_set, vals, "
            f"regime, price, (extract(epoch FROM ts_init) * 1e9)::int8 FROM feature_vectors {where} "
            "ORDER BY ts, symbol",
            params,
        ).fetchall()
    return [
        FeatureVector(
            ts_event=r[0],
            ts_init=r[7],
            symbol=r[1],
            timeframe=r[2],
            feature_set=r[3],
            values=[math.nan if v is None else v for v in r[4]],
            regime=r[5] or "",
            price=r[6] or 0.0,
        )
        for r in rows
    ]


@dataclass(frozen=True)
class CostModel:
    """Round-trip cost as a return: the spread paid crossing in and out, plus commissions."""

    commission_bps: float = 0.5  # per side; IB fixed $0.005/share is 0.25-1 bp at $50-$200
    default_spread_bps: float = 2.0  # when no quote was seen (trades-only symbols)
    spread_index: int = -1

    def round_trip(self, values: list[float]) -> float:
        spread = values[self.spread_index] if self.spread_index >= 0 else math.nan
        if math.isnan(spread) or spread <= 0:
            spread = self.default_spread_bps
        return (spread + 2 * self.commission_bps) / BPS


@dataclass
class Dataset:
    X: np.ndarray
    y: np.ndarray  # 1 up, 0 down (neutral rows removed when labelled for training)
    forward: np.ndarray  # gross forward return
    cost: np.ndarray
    ts: np.ndarray
    end_ts: np.ndarray  # when the label became known (for purging)
    symbols: np.ndarray
    neutral: int  # rows left out as smaller than their cost
    # each row's one-second window [rows, seconds, width + 1] (models/fastlane/sequence.py), when
    # the sequence family trains
    S: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)


def label(
    vectors: list[FeatureVector],
    horizon_ns: int,
    cost: CostModel,
    method: str = "fixed",
    barrier_atr: float = 1.0,
    atr_index: int = -1,
    windows: SequenceWindows | None = None,
) -> Dataset:
    by_symbol: dict[str, list[FeatureVector]] = {}
    for v in vectors:
        by_symbol.setdefault(v.symbol, []).append(v)
    rows, ys, fwd, costs, ts, ends, syms = [], [], [], [], [], [], []
    neutral = 0
    for symbol, series in by_symbol.items():
        times = [v.ts_event for v in series]
        for i, v in enumerate(series):
            if v.price <= 0:
                continue
            j = bisect.bisect_left(times, v.ts_event + horizon_ns)
            if j >= len(series) or ny_day_of(series[j].ts_event)[0] != ny_day_of(v.ts_event)[0]:
                continue  # no price a horizon later on the same day: no label
            forward = series[j].price / v.price - 1.0
            c = cost.round_trip(v.values)
            y = _label_one(series, i, j, forward, c, method, barrier_atr, atr_index)
            if y is None:
                neutral += 1
                continue
            rows.append(v.values)
            ys.append(y)
            fwd.append(forward)
            costs.append(c)
            ts.append(v.ts_event)
            ends.append(series[j].ts_event)
            syms.append(symbol)
    order = np.argsort(np.array(ts, dtype=np.int64), kind="stable")
    seq = None
    if windows is not None:
        seq = np.stack([windows.of(sym, t) for sym, t in zip(syms, ts, strict=True)])[order] if ts else None
    return Dataset(
        X=np.array(rows, dtype=np.float64).reshape(len(rows), -1)[order],
        y=np.array(ys, dtype=np.int8)[order],
        forward=np.array(fwd)[order],
        cost=np.array(costs)[order],
        ts=np.array(ts, dtype=np.int64)[order],
        end_ts=np.array(ends, dtype=np.int64)[order],
        symbols=np.array(syms)[order],
        neutral=neutral,
        S=seq,
    )


def _label_one(
    series: list[FeatureVector],
    i: int,
    j: int,
    forward: float,
    cost: float,
    method: str,
    barrier_atr: float,
    atr_index: int,
) -> int | None:
    if method == "triple-barrier" and atr_index >= 0:
        atr_bps = series[i].values[atr_index]
        if not math.isnan(atr_bps) and atr_bps > 0:
            width = max(barrier_atr * atr_bps / BPS, cost)
            base = series[i].price
            for k in range(i + 1, j + 1):
                move = series[k].price / base - 1.0
                if move >= width:
                    return 1
                if move <= -width:
                    return 0
    if forward - cost > 0:
        return 1
    if -forward - cost > 0:
        return 0
    return None
