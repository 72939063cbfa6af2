"""Scripted inputs that drive a core through a scenario, one call per step."""

from __future__ import annotations

from libs.common.clock import SimClock
from proto.base import Event
from proto.orders import OrderIntent
from proto.signals import QosScore
from services.qos.core import QosCore
from tests.kit import cores, stubs
from tests.kit.clocks import MINUTE as MIN
from tests.kit.clocks import OPEN as T0

HORIZONS = ("5m", "15m", "30m", "60m")


def qos(**kw: object) -> QosCore:
    """The settings' defaults, without sentiment or regime tilt unless a test asks."""
    base = {
        "weights": {"5m": 0.4, "15m": 0.3, "30m": 0.2, "60m": 0.1, "sentiment": 0.0},
        "cooldown_s": 300.0,
        "min_hold_s": 60.0,
        "regime_tilt": 0.0,
    }
    return cores.qos(SimClock(0), **{**base, **kw})


def minute(
    core: QosCore,
    m: int,
    signal: float,
    price: float = 100.0,
    quarantined: frozenset[str] = frozenset(),
    regime: str = "range/mid",
    horizons: tuple[str, ...] = HORIZONS,
) -> tuple[QosScore | None, list[OrderIntent]]:
    out: list[Event] = []
    for h in horizons:
        out += core.on_prediction(
            stubs.prediction(
                horizon=h,
                ts=T0 + m * MIN,
                probability=0.5,
                signal=signal,
                price=price,
                quarantined=h in quarantined,
                batch=len(horizons),
                regime=regime,
            )
        )
    scores = [e for e in out if isinstance(e, QosScore)]
    return (scores[-1] if scores else None), [e for e in out if isinstance(e, OrderIntent)]
