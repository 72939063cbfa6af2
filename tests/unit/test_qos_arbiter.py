"""Across horizons: the HorizonArbiter drops a horizon whose expected move does not pay its round
trip, and Exp3-IX moves weight away from a horizon whose calls keep missing."""

from __future__ import annotations

import math

import pytest

from libs.common.config import FeaturesSettings
from proto.base import Event
from proto.signals import QosScore
from services.qos.arbiter import Exp3IX, HorizonArbiter
from tests.kit import stubs
from tests.kit.clocks import MINUTE as MIN
from tests.kit.clocks import OPEN as T0
from tests.kit.scripts import HORIZONS, qos

NAMES = list(FeaturesSettings().names)


def _spread_vector(spread_bps: float, m: int = 0) -> object:
    values = [0.0] * len(NAMES)
    values[NAMES.index("spread_bps")] = spread_bps
    return stubs.vector(values=values, ts=T0 + m * MIN)


def _score(core: object, m: int, expected: dict[str, float], signal: float = 0.6) -> QosScore:
    out: list[Event] = []
    for h in HORIZONS:
        out += core.on_prediction(  # type: ignore[attr-defined]
            stubs.prediction(
                horizon=h,
                ts=T0 + m * MIN,
                probability=0.6,
                signal=signal,
                price=100.0,
                batch=len(HORIZONS),
                regime="range/mid",
                expected_return=expected[h],
            )
        )
    return [e for e in out if isinstance(e, QosScore)][-1]


def test_the_round_trip_is_the_spread_and_both_commissions() -> None:
    arbiter = HorizonArbiter(1.0, 0.5)
    assert arbiter.round_trip(3.0) == pytest.approx(4.0 / 1e4)
    assert arbiter.round_trip(math.nan) == pytest.approx(3.0 / 1e4)  # no quote: the labels' 2 bps
    assert arbiter.clears(-4.0e-4, 3.0) and not arbiter.clears(3.9e-4, 3.0)
    assert not arbiter.clears(math.nan, 3.0)
    assert HorizonArbiter(0.0, 0.5).clears(0.0, 3.0)  # off


def test_a_horizon_whose_move_does_not_pay_its_cost_weighs_nothing_and_says_so() -> None:
    core = qos(arbiter_cost_multiple=1.0, arbiter_commission_bps=0.5)
    core.on_vector(_spread_vector(3.0))  # round trip 4 bps
    expected = {"5m": 1e-4, "15m": 5e-4, "30m": -6e-4, "60m": 2e-4}
    score = _score(core, 0, expected)
    assert score.weights["5m"] == 0.0 and score.weights["60m"] == 0.0
    assert score.components["5m"] == 0.0
    assert score.weights["15m"] == pytest.approx(0.3 / 0.5) and score.weights["30m"] == pytest.approx(
        0.2 / 0.5
    )
    assert core.stats["arbiter_cut"] == 2
    # a wider spread: nothing clears, the score is 0 with every weight 0 (not "no live inputs")
    core.on_vector(_spread_vector(20.0, 1))
    flat = _score(core, 1, expected)
    assert flat.score == 0.0 and set(flat.weights) == set(HORIZONS) and not any(flat.weights.values())
    # off (the default): the weights are the configured ones whatever the expected move
    plain = _score(qos(), 0, expected)
    assert plain.weights["5m"] == pytest.approx(0.4)


def test_exp3ix_learns_away_from_a_horizon_that_keeps_missing() -> None:
    bandit = Exp3IX(["a", "b"], eta=0.5, gamma=0.05)
    prior = {"a": 0.5, "b": 0.5}
    assert bandit.factors() == {"a": 1.0, "b": 1.0} and bandit.probabilities(prior) == prior
    for _ in range(10):
        pi = bandit.probabilities(prior)
        bandit.update("a", 1.0, pi["a"])  # a misses
        bandit.update("b", 0.0, pi["b"])  # b hits
    pi = bandit.probabilities(prior)
    assert pi["b"] > 0.9 and pi["a"] > 0.0  # never starved to exactly nothing
    # the implicit exploration: the same miss costs an arm weighted little less than a favourite
    fresh = Exp3IX(["a"], eta=1.0, gamma=0.05)
    fresh.update("a", 1.0, 0.05)
    assert fresh.losses["a"] == pytest.approx(0.5)
    fresh.update("a", 1.0, 0.95)
    assert fresh.losses["a"] == pytest.approx(0.5 + 0.95 / 1.0)


def test_qos_with_exp3ix_shifts_weight_to_the_horizon_that_is_right() -> None:
    """5m is always wrong (its signal says up, the price falls), 60m's hits are scored the same
    way: after the predictions mature, 5m's share of the weights has fallen below its prior."""
    core = qos(online_weighting="exp3ix", exp3_eta=0.3, weights={"5m": 0.5, "60m": 0.5, "sentiment": 0.0})
    first = None
    for m in range(40):
        price = 100.0 - 0.05 * m  # falling
        out: list[Event] = []
        for h, signal in (("5m", 0.6), ("60m", -0.6)):
            out += core.on_prediction(
                stubs.prediction(
                    horizon=h, ts=T0 + m * MIN, signal=signal, price=price, batch=2, regime="range/mid"
                )
            )
        score = [e for e in out if isinstance(e, QosScore)][-1]
        first = first or score
    assert first.weights == {"5m": 0.5, "60m": 0.5}
    assert score.weights["5m"] < 0.2 and score.weights["60m"] > 0.8
    losses = core.symbols["IBM"].exp3.losses
    assert losses["5m"] > 0 and losses["60m"] == 0.0
