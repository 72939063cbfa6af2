"""Protective exits for open positions: ATR stop-loss and take-profit, an R-multiple trailing stop,
and flattening before the session ends. Pure; time and prices are the events'.

Each exit is an ``OrderIntent`` like any other (urgency high), so it passes the same risk gate,
which allows exits even in DEGRADED. One exit intent per position at a time: the manager waits for
the position to change before it asks again.

R is the initial risk per share: ``stop_atr x ATR`` at entry. The stop starts at entry -+ R; once
the price has gone ``trail_after_r`` R in the position's favour, the stop trails the best price by
``trail_r`` R (and never moves back).
"""

from __future__ import annotations

from dataclasses import dataclass

from libs.common.calendar import MarketCalendar
from libs.common.clock import Clock
from libs.common.config import ExitSettings
from proto.execution import Fill
from proto.orders import OrderIntent
from proto.units import BPS
from proto.units import SECOND_NS as NS


@dataclass
class _Held:
    quantity: float = 0.0
    entry: float = 0.0
    stop: float = 0.0
    target: float = 0.0
    r: float = 0.0
    best: float = 0.0
    pending: bool = False


class ExitManager:
    def __init__(
        self,
        config: ExitSettings,
        clock: Clock,
        calendar: MarketCalendar,
        namespace: str = "exit",
        hedged: set[str] | None = None,
    ) -> None:
        # legs of a pair: hedged by the other leg, so no stop of their own; flattened at the end
        self.hedged = hedged or set()
        self.cfg = config
        self.clock = clock
        self.calendar = calendar
        self.namespace = namespace  # distinct per run, like QOS's intent ids
        self.held: dict[str, _Held] = {}
        self.atr: dict[str, float] = {}
        self.seen: set[str] = set()

    def on_volatility(self, symbol: str, atr: float) -> None:
        if atr > 0:
            self.atr[symbol] = atr

    def on_fill(self, f: Fill) -> None:
        """Positions come from the broker's fills (deduplicated), never from intents."""
        if f.exec_id in self.seen:
            return
        self.seen.add(f.exec_id)
        h = self.held.setdefault(f.symbol, _Held())
        signed = f.quantity if f.side == "BUY" else -f.quantity
        before = h.quantity
        h.quantity = before + signed
        h.pending = False
        if abs(h.quantity) < 1e-9:
            del self.held[f.symbol]
            return
        if before == 0 or (before > 0) != (h.quantity > 0):  # a new position (or flipped): set its levels
            atr = self.atr.get(f.symbol) or f.price * self.cfg.default_atr_bps / BPS
            side = 1 if h.quantity > 0 else -1
            h.entry, h.best, h.r = f.price, f.price, self.cfg.stop_atr * atr
            h.stop = f.price - side * h.r
            h.target = f.price + side * self.cfg.take_profit_atr * atr

    def on_price(self, symbol: str, ts: int, price: float) -> OrderIntent | None:
        h = self.held.get(symbol)
        if h is None or h.pending:
            return None
        side = 1 if h.quantity > 0 else -1
        if (price - h.best) * side > 0:
            h.best = price
            if (h.best - h.entry) * side >= self.cfg.trail_after_r * h.r:
                trailed = h.best - side * self.cfg.trail_r * h.r
                if (trailed - h.stop) * side > 0:
                    h.stop = trailed
        reason = None
        if symbol in self.hedged:
            reason = "exit: session end" if self._closing(ts) else None
        elif (price - h.stop) * side <= 0:
            kind = "trailing stop" if (h.stop - h.entry) * side > -h.r + 1e-12 else "stop-loss"
            reason = f"exit: {kind} at {h.stop:.4f}"
        elif (price - h.target) * side >= 0:
            reason = f"exit: take-profit at {h.target:.4f}"
        elif self._closing(ts):
            reason = "exit: session end"
        if reason is None:
            return None
        h.pending = True
        return OrderIntent(
            ts_event=ts,
            ts_init=self.clock.now_ns(),
            intent_id=f"{self.namespace}-{symbol}-{ts}",
            symbol=symbol,
            side="SELL" if side > 0 else "BUY",
            quantity=abs(h.quantity),
            reason=reason,
            target_position=0.0,
            urgency="high",
        )

    def _closing(self, ts: int) -> bool:
        """Within ``flatten_before_close_s`` of the day's close (or past it): the session's own
        close, early closes included. A day without a session has no close to flatten before."""
        session = self.calendar.session_at(ts)
        if session is None:
            return False
        return (session.close_ns - ts // NS * NS) / NS <= self.cfg.flatten_before_close_s
