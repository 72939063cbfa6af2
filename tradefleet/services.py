"""Which services this build can run, and how to build each one's app from the settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI reads this table for its choices: no runtime (aiohttp, NATS) imported
    from libs.common.config import Settings
    from libs.common.runtime import ServiceApp


def _md_gateway(settings: Settings) -> ServiceApp:
    from services.md_gateway.runtime import MdGatewayApp

    return MdGatewayApp(settings)


def _recorder(settings: Settings) -> ServiceApp:
    from services.recorder.runtime import RecorderApp

    if not settings.db.url:
        raise SystemExit("recorder needs a database: set TRADEFLEET_DB_URL or db.url")
    return RecorderApp(settings, settings.db.url)


def _features(settings: Settings) -> ServiceApp:
    from services.features.runtime import FeaturesApp

    return FeaturesApp(settings)


def _fastlane(settings: Settings) -> ServiceApp:
    from services.fastlane.runtime import FastlaneApp

    return FastlaneApp(settings)


def _qos(settings: Settings) -> ServiceApp:
    from services.qos.runtime import QosApp

    return QosApp(settings)


def _policy(settings: Settings) -> ServiceApp:
    from services.policy.runtime import PolicyApp

    return PolicyApp(settings)


def _risk(settings: Settings) -> ServiceApp:
    from services.risk.runtime import RiskApp

    return RiskApp(settings)


def _execution(settings: Settings) -> ServiceApp:
    from services.execution.runtime import ExecutionApp

    return ExecutionApp(settings)


def _tca(settings: Settings) -> ServiceApp:
    from services.tca.runtime import TcaApp

    return TcaApp(settings)


def _sentiment(settings: Settings) -> ServiceApp:
    from services.sentiment.runtime import SentimentApp

    return SentimentApp(settings)


def _control(settings: Settings) -> ServiceApp:
    from services.control.runtime import ControlApp

    return ControlApp(settings)


def _alerts(settings: Settings) -> ServiceApp:
    from services.alerts.runtime import AlertsApp

    return AlertsApp(settings)


# Services of the catalog (proto/subjects.py SERVICES) whose runtime exists in this build.
RUNNABLE: dict[str, Callable[[Settings], ServiceApp]] = {
    "md-gateway": _md_gateway,
    "recorder": _recorder,
    "features": _features,
    "fastlane": _fastlane,
    "policy": _policy,
    "qos": _qos,
    "risk": _risk,
    "execution": _execution,
    "tca": _tca,
    "sentiment": _sentiment,
    "alerts": _alerts,
    "control": _control,
}
BATCHING = {"md-gateway"}
