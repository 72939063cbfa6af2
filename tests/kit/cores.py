"""Cores built the way their runtimes build them: from a settings section (defaults plus what the
test names) and the market calendar, on a simulated clock."""

from __future__ import annotations

from typing import Any

from libs.common.calendar import MarketCalendar, market_calendar
from libs.common.clock import SimClock
from libs.common.config import (
    ExecutionSettings,
    ExitSettings,
    FeaturesSettings,
    MarketSettings,
    QosSettings,
    RiskSettings,
)
from services.execution.core import ExecutionCore
from services.features.core import FeatureCore
from services.qos.core import QosCore
from services.qos.exits import ExitManager
from services.risk.core import RiskCore
from tests.kit.clocks import T0


def calendar(**market: Any) -> MarketCalendar:
    return market_calendar(MarketSettings(**market))


def risk(clock: SimClock | None = None, market: MarketCalendar | None = None, **limits: Any) -> RiskCore:
    return RiskCore(RiskSettings(**limits), clock or SimClock(T0), market or calendar())


def qos(clock: SimClock | None = None, **config: Any) -> QosCore:
    return QosCore(QosSettings(**config), clock or SimClock(T0))


def exits(clock: SimClock | None = None, market: MarketCalendar | None = None, **config: Any) -> ExitManager:
    return ExitManager(ExitSettings(**config), clock or SimClock(T0), market or calendar())


def execution(clock: SimClock | None = None, tick: float = 0.01, **config: Any) -> ExecutionCore:
    return ExecutionCore(ExecutionSettings(**config), clock or SimClock(T0), tick)


def features(
    clock: SimClock | None = None, market: MarketCalendar | None = None, **config: Any
) -> FeatureCore:
    return FeatureCore(FeaturesSettings(**config), clock or SimClock(0), market or calendar())
