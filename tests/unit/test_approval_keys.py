"""Where the approval key comes from when none is configured: `tradefleet up` makes one per run
for the risk gate and the execution gateway only, the in-process backtest one per run for its
settings; a configured key is used as it is."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from libs.common.config import Settings, SigningSettings
from tradefleet.backtest.engine import backtest_settings
from tradefleet.fleet import Fleet

ENV = "TRADEFLEET_SIGNING__APPROVAL_KEY"


@pytest.fixture(autouse=True)
def _no_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)


def _env(fleet: Fleet, name: str) -> dict[str, str]:
    fleet.ports[name] = 0
    return fleet._env(name)


def test_up_gives_risk_and_execution_one_random_key_per_run_and_nobody_else(tmp_path: Path) -> None:
    fleet = Fleet(Settings(), None, tmp_path)
    risk, execution = _env(fleet, "risk")[ENV], _env(fleet, "execution")[ENV]
    assert risk == execution and len(risk) == 64 and int(risk, 16) >= 0
    assert ENV not in _env(fleet, "qos") and ENV not in _env(fleet, "md-gateway")
    assert _env(Fleet(Settings(), None, tmp_path), "risk")[ENV] != risk  # another run, another key


def test_up_leaves_a_configured_key_to_the_services(tmp_path: Path) -> None:
    configured = Settings(signing=SigningSettings(approval_key=SecretStr("from-a-secret")))
    fleet = Fleet(configured, None, tmp_path)
    assert ENV not in _env(fleet, "risk") and ENV not in _env(fleet, "execution")


def test_the_backtest_makes_a_key_per_run_unless_one_is_configured(tmp_path: Path) -> None:
    first = backtest_settings(Settings(), tmp_path).signing.key()
    second = backtest_settings(Settings(), tmp_path).signing.key()
    assert len(first) == 64 and first != second
    configured = Settings(signing=SigningSettings(approval_key=SecretStr("from-a-secret")))
    assert backtest_settings(configured, tmp_path).signing.key() == b"from-a-secret"
