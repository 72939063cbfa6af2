"""Across horizons: the HorizonArbiter (cost-aware: a horizon whose expected move does not clear
its round-trip cost says nothing worth trading) and Exp3-IX, an online re-weighting of the
horizons from their realized outcomes (seed 003). Pure: numbers in, numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from proto.units import BPS

DEFAULT_SPREAD_BPS = 2.0  # the labels' own assumption when no quote was seen (models/fastlane/dataset.py)


class HorizonArbiter:
    """A horizon contributes only when |expected return| >= ``cost_multiple`` x the round trip:
    the symbol's quoted spread (its latest 1m vector's ``spread_bps``) plus the commission on both
    sides, the cost its labels were net of. ``cost_multiple`` 0 turns it off."""

    def __init__(self, cost_multiple: float, commission_bps: float) -> None:
        self.cost_multiple = cost_multiple
        self.commission_bps = commission_bps

    @property
    def on(self) -> bool:
        return self.cost_multiple > 0

    def round_trip(self, spread_bps: float) -> float:
        """The round-trip cost as a return."""
        spread = spread_bps if math.isfinite(spread_bps) and spread_bps > 0 else DEFAULT_SPREAD_BPS
        return (spread + 2 * self.commission_bps) / BPS

    def clears(self, expected_return: float, spread_bps: float) -> bool:
        if not self.on:
            return True
        if not math.isfinite(expected_return):
            return False
        return abs(expected_return) >= self.cost_multiple * self.round_trip(spread_bps)


class Exp3IX:
    """Exp3 with implicit exploration (Neu, 2015) over a symbol's horizons.

    Each matured prediction is a round of its horizon (the arm): loss 1 when its signal's sign
    missed the move, 0 when it hit. Exp3-IX samples one arm a round and estimates the played
    arm's loss as loss / (pi + gamma), gamma being the implicit exploration. Here every horizon's
    outcome is seen, so nothing needs sampling: each arm takes that estimate's expectation over
    the sampling, loss * pi / (pi + gamma), with pi the probability the arm had when its
    prediction was made. That keeps IX's optimism toward arms weighted little (they are not
    starved by a few misses) without its sampling noise. The arm's factor is
    exp(-eta * (L_h - min L)), which multiplies its configured weight; QOS renormalises it with
    the other inputs. Before any outcome every factor is 1: the configured weights."""

    __slots__ = ("eta", "gamma", "losses", "rounds")

    def __init__(self, arms: Iterable[str], eta: float, gamma: float) -> None:
        self.eta, self.gamma = eta, gamma
        self.losses = dict.fromkeys(arms, 0.0)
        self.rounds = 0

    def factors(self) -> dict[str, float]:
        least = min(self.losses.values(), default=0.0)
        return {arm: math.exp(-self.eta * (loss - least)) for arm, loss in self.losses.items()}

    def probabilities(self, prior: dict[str, float]) -> dict[str, float]:
        """pi: the configured weights times the factors, normalised over the arms."""
        raw = {arm: prior.get(arm, 0.0) * f for arm, f in self.factors().items()}
        total = sum(raw.values())
        return {arm: w / total for arm, w in raw.items()} if total > 0 else raw

    def update(self, arm: str, loss: float, played_probability: float) -> None:
        pi = min(max(played_probability, 0.0), 1.0)
        self.losses[arm] += loss * pi / (pi + self.gamma) if pi + self.gamma > 0 else 0.0
        self.rounds += 1
