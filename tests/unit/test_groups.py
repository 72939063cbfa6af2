"""Process groups' configuration: fleet.groups validated, a NATS user per group with exactly its
members' rights, `up`'s layout of processes, and `tradefleet service` refusing a service that
runs in a group."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.common import natsauth
from libs.common.config import ConfigError, load_settings
from libs.common.group import member_order
from tradefleet.fleet import Fleet


def test_fleet_groups_are_validated() -> None:
    ok = load_settings(None, fleet={"groups": [" features + fastlane ", "qos+risk"]})
    assert ok.fleet.groups == ["features+fastlane", "qos+risk"]
    assert ok.fleet.group_of("risk") == "qos+risk" and ok.fleet.group_of("execution") is None
    for groups, why in (
        (["features"], "two services or more"),
        (["features+nosuch"], "no such service nosuch"),
        (["features+features"], "names a service twice"),
        (["features+qos", "qos+risk"], "qos is in two groups"),
    ):
        with pytest.raises(ConfigError, match=why):
            load_settings(None, fleet={"groups": groups})


def test_a_groups_nats_user_may_do_what_its_members_may_and_no_more(tmp_path: Path) -> None:
    users = natsauth.users(["features+fastlane+qos+risk"])
    group = users["features+fastlane+qos+risk"]
    members = [users[m] for m in ("features", "fastlane", "qos", "risk")]
    assert set(group.publish) == {p for m in members for p in m.publish}
    assert set(group.subscribe) == {p for m in members for p in m.subscribe}
    assert "order.approved.*" in group.publish  # risk's
    assert not any(p.startswith("exec.") for p in group.publish)  # only execution's
    files = natsauth.write(tmp_path, groups=["features+fastlane+qos+risk"])
    assert files["features+fastlane+qos+risk"].name == "features+fastlane+qos+risk.nk"
    conf = (tmp_path / "nats-server.conf").read_text()
    assert "# features+fastlane+qos+risk" in conf


def test_a_group_starts_its_consumers_before_the_md_gateway() -> None:
    assert member_order(["md-gateway", "features", "fastlane"]) == ["features", "fastlane", "md-gateway"]


def _layout(tmp_path: Path, groups: list[str], replicas: int = 1) -> dict[str, list[str]]:
    settings = load_settings(None, fleet={"groups": groups})
    fleet = Fleet(settings, None, tmp_path, live_table=False, replicas=replicas)
    fleet._plan()
    return fleet.layout


def test_up_runs_a_group_as_one_process_and_replicates_a_partitioned_one(tmp_path: Path) -> None:
    layout = _layout(tmp_path, ["features+fastlane+qos+risk"])
    assert layout["features+fastlane+qos+risk"] == ["features", "fastlane", "qos", "risk"]
    assert "features" not in layout and layout["execution"] == ["execution"]
    assert sum(len(m) for m in layout.values()) == len({m for ms in layout.values() for m in ms})
    # a group of partitioned services: one process per partition, owning it for all members
    replicated = _layout(tmp_path, ["features+fastlane+qos"], replicas=2)
    assert replicated["features+fastlane+qos-1"] == ["features-1", "fastlane-1", "qos-1"]
    assert "features-0" not in replicated
    with pytest.raises(RuntimeError, match="only groups of partitioned services"):
        _layout(tmp_path, ["features+fastlane+qos+risk"], replicas=2)
    # a group member that does not run (the policy is off by default) leaves its partner alone
    assert _layout(tmp_path, ["qos+policy"])["qos"] == ["qos"]


def test_a_service_that_runs_in_a_group_is_not_started_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from tradefleet.cli import app

    monkeypatch.setenv("TRADEFLEET_FLEET__GROUPS", '["features+fastlane+qos"]')
    alone = CliRunner().invoke(app, ["service", "fastlane"])
    assert alone.exit_code == 2
    assert "fastlane runs in the process group features+fastlane+qos" in alone.output
    unknown = CliRunner().invoke(app, ["service", "features+nosuch"])
    assert unknown.exit_code == 2 and "'nosuch' is not one of" in unknown.output
