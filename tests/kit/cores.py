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
from tests.kit.stubs import TEST_APPROVAL_KEY

KEY = TEST_APPROVAL_KEY.encode()


def calendar(**market: Any) -> MarketCalendar:
    return market_calendar(MarketSettings(**market))


def risk(clock: SimClock | None = None, market: MarketCalendar | None = None, **limits: Any) -> RiskCore:
    """Signs its approvals with the tests' key, as ``execution`` verifies them."""
    return RiskCore(RiskSettings(**limits), clock or SimClock(T0), market or calendar(), approval_key=KEY)


def qos(clock: SimClock | None = None, **config: Any) -> QosCore:
    return QosCore(QosSettings(**config), clock or SimClock(T0))


def exits(clock: SimClock | None = None, market: MarketCalendar | None = None, **config: Any) -> ExitManager:
    return ExitManager(ExitSettings(**config), clock or SimClock(T0), market or calendar())


def execution(
    clock: SimClock | None = None, tick: float = 0.01, approval_key: bytes = KEY, **config: Any
) -> ExecutionCore:
    """Takes the approvals ``stubs.approved`` signs (the tests' key unless told)."""
    return ExecutionCore(ExecutionSettings(**config), clock or SimClock(T0), tick, approval_key=approval_key)


def features(
    clock: SimClock | None = None, market: MarketCalendar | None = None, **config: Any
) -> FeatureCore:
    return FeatureCore(FeaturesSettings(**config), clock or SimClock(0), market or calendar())
