"""IB configuration: paper unless opted in; reset windows say when a disconnect is expected."""

from __future__ import annotations

import datetime as dt

import pytest

from libs.common.config import ConfigError, load_settings
from libs.common.ib.session import classify
from libs.common.ib.windows import NY, expected_until, parse_windows


def test_live_ports_need_an_explicit_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEFLEET_IB__PORT", "7496")
    with pytest.raises(ConfigError, match="live-trading port"):
        load_settings(None)
    monkeypatch.setenv("TRADEFLEET_IB__ALLOW_LIVE", "true")
    assert load_settings(None).ib.port == 7496
    monkeypatch.delenv("TRADEFLEET_IB__ALLOW_LIVE")
    monkeypatch.setenv("TRADEFLEET_IB__PORT", "4002")  # Gateway paper: fine
    assert load_settings(None).ib.port == 4002


def at(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=NY).timestamp()


def test_a_disconnect_in_the_nightly_reset_is_expected_until_it_ends() -> None:
    windows = parse_windows(["00:15-01:45", "Fri 23:00-Sat 03:00"])
    start = at("2026-11-18 00:30")  # a Wednesday, inside the daily reset
    assert expected_until(start, windows, 120) == at("2026-11-18 01:45") + 120
    friday = at("2026-11-20 23:30")  # the weekend maintenance
    assert expected_until(friday, windows, 120) == at("2026-11-21 03:00") + 120
    noon = at("2026-11-18 12:00")  # outside any window: only the grace period
    assert expected_until(noon, windows, 120) == noon + 120
    with pytest.raises(ValueError, match="reset window"):
        parse_windows(["midnight"])


def test_error_codes_are_classified_once() -> None:
    kinds = {c: classify(c) for c in (1100, 1300, 2110, 1101, 1102, 2104, 100, 162, 10167, 201, 326, 9999)}
    assert kinds == {
        1100: "connectivity",
        1300: "connectivity",
        2110: "connectivity",
        1101: "restored",
        1102: "restored",
        2104: "farm",
        100: "pacing",
        162: "pacing",
        10167: "permission",
        201: "order",
        326: "client_id",
        9999: "other",
    }
