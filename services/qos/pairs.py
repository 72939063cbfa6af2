"""Pairs trading: a cointegrated pair traded on its spread's z-score, both legs through the risk
gate. Pure: 1m vectors (their price) in, intents out; one ``PairTrader`` per configured pair.

Each minute both legs printed, over the last ``lookback`` such minutes: the hedge ratio and
intercept from an OLS of log A on log B, the spread (the residual) and its z-score, and an
Engle-Granger check that the spread is stationary (the ADF t-statistic of its lag-one regression
below ``adf_critical``). A cointegrated spread ``entry_z`` above its mean sells A and buys B
(beta x A's notional), below it the reverse; ``exit_z`` back toward the mean (or through it),
``max_hold_min`` or a broken cointegration closes both legs.

What each leg holds comes from the broker's fills, never from intents: a leg the gate denies
leaves the pair flat, and at the next minute whatever the other leg filled is unwound; an exit
the gate denies is asked again at the next minute. So a naked leg lives a minute at most, and an
unwind never opens what was not filled.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field

import numpy as np

from libs.common.clock import Clock, SimClock
from libs.common.config import PairSettings
from proto.orders import OrderIntent

MINUTE_NS = 60_000_000_000


@dataclass(frozen=True)
class SpreadState:
    beta: float
    z: float
    adf_t: float
    cointegrated: bool


@dataclass
class _Leg:
    symbol: str
    filled: float = 0.0  # signed, from the fills
    pending: str = ""  # an exit in flight (cleared by its denial or the leg going flat)
    entry_intent: str = ""


@dataclass
class PairTrader:
    cfg: PairSettings
    namespace: str = "qos"
    # when an intent is made (its ts_init: the gate judges an intent's age by it); the runtime's
    clock: Clock = field(default_factory=SimClock)
    prices: dict[str, dict[int, float]] = field(default_factory=dict)  # symbol -> minute -> log price
    minutes: collections.deque[int] = field(default_factory=collections.deque)  # both printed
    legs: tuple[_Leg, _Leg] = field(init=False)
    direction: int = 0  # +1 long the spread (long A, short B), -1 short it, 0 flat
    entered_at: int = 0
    last: SpreadState | None = None
    fills_seen: set[str] = field(default_factory=set)
    stats: collections.Counter[str] = field(default_factory=collections.Counter)

    def __post_init__(self) -> None:
        a, b = self.cfg.legs
        self.legs = (_Leg(a), _Leg(b))
        self.prices = {a: {}, b: {}}

    @property
    def name(self) -> str:
        return f"{self.cfg.legs[0]}/{self.cfg.legs[1]}"

    def on_fill(self, exec_id: str, symbol: str, signed_quantity: float) -> None:
        if exec_id in self.fills_seen:
            return
        self.fills_seen.add(exec_id)
        for leg in self.legs:
            if leg.symbol == symbol:
                leg.filled = round(leg.filled + signed_quantity, 9)
                if not leg.filled:
                    leg.pending = ""

    def on_price(self, symbol: str, ts: int, price: float) -> list[OrderIntent]:
        """A leg's 1m close; when both legs have this minute, the spread is judged."""
        if symbol not in self.prices or not (price > 0 and math.isfinite(price)):
            return []
        minute = ts // MINUTE_NS
        self.prices[symbol][minute] = math.log(price)
        a, b = self.cfg.legs
        if minute not in self.prices[a] or minute not in self.prices[b]:
            return []
        if self.minutes and self.minutes[-1] >= minute:
            return []
        self.minutes.append(minute)
        while len(self.minutes) > self.cfg.lookback:
            old = self.minutes.popleft()
            self.prices[a].pop(old, None)
            self.prices[b].pop(old, None)
        for series in self.prices.values():  # a leg's minutes the other never printed
            for m in [m for m in series if m < self.minutes[0]]:
                del series[m]
        if len(self.minutes) < self.cfg.lookback:
            return []
        self.last = self.spread()
        return self._decide(ts, math.exp(self.prices[a][minute]), math.exp(self.prices[b][minute]))

    def spread(self) -> SpreadState:
        a, b = self.cfg.legs
        x = np.array([self.prices[b][m] for m in self.minutes])
        y = np.array([self.prices[a][m] for m in self.minutes])
        beta, alpha = np.polyfit(x, y, 1)
        e = y - (alpha + beta * x)
        sd = float(e.std(ddof=1))
        z = float((e[-1] - e.mean()) / sd) if sd > 0 else 0.0
        t = _adf_t(e)
        return SpreadState(float(beta), z, t, t < self.cfg.adf_critical and beta > 0)

    def _decide(self, ts: int, price_a: float, price_b: float) -> list[OrderIntent]:
        s, c = self.last, self.cfg
        assert s is not None
        if self.direction != 0:
            why = self._exit_reason(ts, s)
            if not why:
                return []
            self.direction = 0
            self.stats[f"exits_{why.replace(' ', '_')}"] += 1
            return self._close(ts, s, why)
        if any(leg.filled for leg in self.legs):  # flat by intent, not yet by fills: unwind
            return self._close(ts, s, "unwind")
        if not s.cointegrated or abs(s.z) < c.entry_z:
            return []
        direction = -1 if s.z > 0 else 1  # spread rich: short A, long B; cheap: the reverse
        qty_a = math.floor(c.notional / price_a)
        qty_b = math.floor(s.beta * c.notional / price_b)
        if qty_a < 1 or qty_b < 1:
            self.stats["too_small"] += 1
            return []
        self.direction, self.entered_at = direction, ts
        self.stats["entries"] += 1
        return [
            self._intent(self.legs[0], ts, direction * qty_a, "enter", s),
            self._intent(self.legs[1], ts, -direction * qty_b, "enter", s),
        ]

    def _exit_reason(self, ts: int, s: SpreadState) -> str:
        if abs(s.z) <= self.cfg.exit_z or (s.z > 0) == (self.direction > 0):
            return "reverted"
        if (ts - self.entered_at) / MINUTE_NS >= self.cfg.max_hold_min:
            return "held too long"
        return "" if s.cointegrated else "no longer cointegrated"

    def _close(self, ts: int, s: SpreadState, why: str) -> list[OrderIntent]:
        """An exit for each leg that holds something and has none in flight."""
        out = []
        for leg in self.legs:
            if leg.filled and not leg.pending:
                intent = self._intent(leg, ts, -leg.filled, "exit", s, why)
                leg.pending = intent.intent_id
                out.append(intent)
        return out

    def _intent(
        self, leg: _Leg, ts: int, signed: float, kind: str, s: SpreadState, why: str = ""
    ) -> OrderIntent:
        intent_id = f"{self.namespace}-pair-{self.name.replace('/', '-')}-{ts}-{kind}-{leg.symbol}"
        if kind == "enter":
            leg.entry_intent = intent_id
        return OrderIntent(
            ts_event=ts,
            ts_init=self.clock.now_ns(),
            intent_id=intent_id,
            symbol=leg.symbol,
            side="BUY" if signed > 0 else "SELL",
            quantity=abs(signed),
            reason=f"pair {self.name} {kind}: spread z {s.z:+.2f}, beta {s.beta:.3f}"
            + (f", {why}" if why else ""),
            score=s.z,
            target_position=leg.filled + signed if kind == "exit" else signed,
            urgency="high" if kind == "exit" else "normal",
            components={"pair_z": s.z, "pair_beta": s.beta, "pair_adf_t": s.adf_t},
        )

    def on_denied(self, intent_id: str) -> None:
        """An entry leg refused: the pair is flat by intent (the other leg's fill, if any, is
        unwound at the next minute); an exit refused: asked again at the next minute."""
        for leg in self.legs:
            if intent_id == leg.entry_intent and self.direction:
                self.direction = 0
                self.stats["legs_denied"] += 1
            elif intent_id == leg.pending:
                leg.pending = ""
                self.stats["exits_denied"] += 1


def _adf_t(e: np.ndarray) -> float:
    """The t-statistic of gamma in diff(e) = gamma x e[t-1] + c (Dickey-Fuller, no lags)."""
    de, lag = np.diff(e), e[:-1]
    X = np.column_stack([lag, np.ones_like(lag)])
    coef, *_ = np.linalg.lstsq(X, de, rcond=None)
    resid = de - X @ coef
    dof = max(len(de) - 2, 1)
    s2 = float(resid @ resid) / dof
    var = s2 * np.linalg.inv(X.T @ X)[0, 0]
    return float(coef[0] / math.sqrt(var)) if var > 0 else 0.0
