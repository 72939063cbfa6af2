"""What the RL policy sees: one fixed-layout vector per QOS score, built the same way in training
(models/policy/env.py) and in the service (services/policy), so the two cannot drift apart.

Per symbol, from the events the policy service consumes:
- the latest 1m feature vector (the fast lane's inputs), NaN and inf as 0;
- per fast-lane horizon: its signal, probability - 0.5, and whether it is quarantined;
- the QOS score: score, peak, the entry it proposes (+1, -1 or 0), the sentiment term;
- the position and the day's P&L from the fills, marked at the vector's price: direction, exposure
  (a fraction of QOS's order notional), unrealized, realized (net of commissions) and drawdown from
  the day's best, in bps of the order notional, and the day's round trips;
- the time of day as a fraction of the regular session.
Scaling to unit variance is the model's business (the exported graph carries its normalizer).
Pure: no I/O, no clock; time is the events' time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from libs.common.markettime import ny_minute_facts
from proto.execution import Fill
from proto.features import FeatureVector
from proto.signals import Prediction, QosScore
from proto.units import BPS

SESSION_OPEN_MIN, SESSION_MINUTES = 9 * 60 + 30, 390
HORIZON_FIELDS = ("signal", "probability", "quarantined")
QOS_FIELDS = ("qos_score", "qos_peak", "qos_proposal", "qos_sentiment")
BOOK_FIELDS = ("position", "exposure", "unrealized_bps", "realized_bps", "drawdown_bps", "round_trips")
CLOCK_FIELDS = ("session_fraction",)
LIMIT = 1e6  # a feature this large is an outlier, not information


@dataclass(frozen=True)
class ObservationSpec:
    """The layout: recorded in a trained policy's metadata and checked before it is served."""

    feature_set: str
    feature_names: tuple[str, ...]
    horizons: tuple[str, ...]
    order_notional: float

    def names(self) -> list[str]:
        horizon = [f"{h}.{f}" for h in self.horizons for f in HORIZON_FIELDS]
        return [
            *(f"feat.{n}" for n in self.feature_names),
            *horizon,
            *QOS_FIELDS,
            *BOOK_FIELDS,
            *CLOCK_FIELDS,
        ]

    @property
    def size(self) -> int:
        return len(self.feature_names) + 3 * len(self.horizons) + len(QOS_FIELDS) + len(BOOK_FIELDS) + 1

    def to_meta(self) -> dict[str, Any]:
        return {
            "feature_set": self.feature_set,
            "feature_names": list(self.feature_names),
            "horizons": list(self.horizons),
            "order_notional": self.order_notional,
            "names": self.names(),
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> ObservationSpec:
        return cls(
            feature_set=str(meta["feature_set"]),
            feature_names=tuple(meta["feature_names"]),
            horizons=tuple(meta["horizons"]),
            order_notional=float(meta["order_notional"]),
        )


@dataclass
class SymbolBook:
    """One symbol's position and the day's P&L, from fills; marked at the latest vector price."""

    quantity: float = 0.0
    avg_price: float = 0.0
    realized: float = 0.0  # the day's, net of commissions
    mark: float = 0.0
    best_equity: float = 0.0
    round_trips: int = 0
    day: int = -1

    def roll(self, day: int) -> None:
        if day != self.day:  # a new session: the day's P&L starts again; a carried position stays
            self.day, self.realized, self.round_trips = day, 0.0, 0
            self.best_equity = self.unrealized()

    def on_fill(self, f: Fill) -> None:
        self.roll(ny_minute_facts(f.ts_event)[0])
        signed = f.quantity if f.side == "BUY" else -f.quantity
        self.realized -= f.commission or 0.0
        if self.quantity == 0 or (self.quantity > 0) == (signed > 0):
            total = self.quantity + signed
            self.avg_price = (self.avg_price * self.quantity + f.price * signed) / total
            self.quantity = total
        else:
            closed = min(abs(signed), abs(self.quantity))
            direction = 1.0 if self.quantity > 0 else -1.0
            self.realized += closed * (f.price - self.avg_price) * direction
            self.quantity += signed
            if abs(self.quantity) < 1e-9:
                self.quantity, self.avg_price = 0.0, 0.0
                self.round_trips += 1
            elif (self.quantity > 0) != (direction > 0):  # flipped through flat
                self.avg_price = f.price
                self.round_trips += 1
        self.mark = self.mark or f.price
        self.best_equity = max(self.best_equity, self.equity())

    def unrealized(self) -> float:
        return self.quantity * (self.mark - self.avg_price) if self.quantity and self.mark > 0 else 0.0

    def equity(self) -> float:
        """The day's P&L so far: realized net of commissions plus the open position marked."""
        return self.realized + self.unrealized()

    def on_mark(self, price: float, ts: int) -> None:
        self.roll(ny_minute_facts(ts)[0])
        if price > 0 and math.isfinite(price):
            self.mark = price
            self.best_equity = max(self.best_equity, self.equity())

    def drawdown(self) -> float:
        return max(0.0, self.best_equity - self.equity())


@dataclass
class _Inputs:
    vector: FeatureVector | None = None
    predictions: dict[str, Prediction] = field(default_factory=dict)
    book: SymbolBook = field(default_factory=SymbolBook)


class ObservationBuilder:
    def __init__(self, spec: ObservationSpec) -> None:
        self.spec = spec
        self.symbols: dict[str, _Inputs] = {}
        self._horizon_at = {h: i for i, h in enumerate(spec.horizons)}
        self._nf = len(spec.feature_names)

    def _of(self, symbol: str) -> _Inputs:
        s = self.symbols.get(symbol)
        if s is None:
            s = self.symbols[symbol] = _Inputs()
        return s

    def on_vector(self, v: FeatureVector) -> bool:
        """Keeps a vector of the spec's feature set; says whether it was kept."""
        if v.feature_set != self.spec.feature_set or len(v.values) != self._nf:
            return False
        s = self._of(v.symbol)
        s.vector = v
        s.book.on_mark(v.price, v.ts_event)
        return True

    def on_prediction(self, p: Prediction) -> None:
        if p.horizon in self._horizon_at:
            self._of(p.symbol).predictions[p.horizon] = p

    def on_fill(self, f: Fill) -> None:
        self._of(f.symbol).book.on_fill(f)

    def adopt_book(self, symbol: str, book: SymbolBook) -> None:
        """Take over a position and its day's P&L (a policy with another layout was installed)."""
        self._of(symbol).book = book

    def book(self, symbol: str) -> SymbolBook:
        return self._of(symbol).book

    def observe(self, q: QosScore) -> np.ndarray:
        """The vector for this score (float32, the spec's layout). Built as one Python list and
        converted once: a dozen small numpy operations cost more than the arithmetic, and the
        service calls this cold (once a minute per symbol)."""
        spec = self.spec
        s = self._of(q.symbol)
        isfinite = math.isfinite
        if s.vector is not None:
            row = [min(LIMIT, max(-LIMIT, v)) if isfinite(v) else 0.0 for v in s.vector.values]
        else:
            row = [0.0] * self._nf
        predictions = s.predictions
        for h in spec.horizons:
            p = predictions.get(h)
            if p is None:
                row += (0.0, 0.0, 0.0)
            else:
                row += (p.signal, p.probability - 0.5, 1.0 if p.quarantined else 0.0)
        proposal = (1.0 if q.score > 0 else -1.0) if q.action == "propose" else 0.0
        row += (q.score, q.peak, proposal, q.components.get("sentiment", 0.0))
        book, notional = s.book, spec.order_notional
        bps = BPS / notional
        position = 1.0 if book.quantity > 0 else -1.0 if book.quantity < 0 else 0.0
        row += (
            position,
            book.quantity * book.mark / notional if book.mark > 0 else 0.0,
            book.unrealized() * bps,
            book.realized * bps,
            book.drawdown() * bps,
            book.round_trips / 10.0,
        )
        minute = ny_minute_facts(q.ts_event)[1]
        row.append(min(1.0, max(0.0, (minute - SESSION_OPEN_MIN) / SESSION_MINUTES)))
        return np.clip(np.array(row, dtype=np.float32), -LIMIT, LIMIT)
