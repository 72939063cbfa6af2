"""What an operator sees when something is wrong: every mistake and every dead dependency is one
clear line and exit code 2, before anything is sent or started (issue 17's cases, each driven
through the real command line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from libs.common.localinfra import NatsServer, start_nats
from tradefleet.cli import app
from tradefleet.reach import Target, Unreachable, find, read_state

REPO = Path(__file__).resolve().parents[2]
DEAD_NATS = "nats://127.0.0.1:1"
DEAD_DB = "postgresql://tf:secret@127.0.0.1:1/tradefleet"


@pytest.fixture(autouse=True)
def _no_tradefleet_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in os.environ if n.startswith("TRADEFLEET_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no ./var/fleet.json of the developer's own fleet


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "240"})


def one_line_error(result: Result) -> str:
    """The only thing printed, on stderr, with exit code 2."""
    assert result.exit_code == 2, result.output
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- finding the fleet ----------------------------------------------------------------------------
def test_a_named_var_dir_without_a_running_fleet_is_refused_not_guessed(tmp_path: Path) -> None:
    for command in (["ctl", "kill"], ["tap", "md.>"]):
        line = one_line_error(invoke(*command, "--var-dir", str(tmp_path / "elsewhere")))
        assert f"no fleet is running in {tmp_path / 'elsewhere'}" in line and "fleet.json is missing" in line


def test_the_environment_names_the_var_dir_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEFLEET_VAR_DIR", str(tmp_path / "gone"))
    assert "no fleet is running in" in one_line_error(invoke("ctl", "resume"))
    # ...but an explicit --nats-url beats the environment (here: a dead one, said as such)
    assert "cannot reach NATS at" in one_line_error(invoke("ctl", "resume", "--nats-url", DEAD_NATS))


def test_a_stale_state_file_is_said_to_be_stale(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "fleet.json").write_text(json.dumps({"nats_url": DEAD_NATS, "supervisor_pid": dead.pid}))
    line = one_line_error(invoke("ctl", "kill", "--var-dir", str(tmp_path)))
    assert "is stale" in line and str(dead.pid) in line


def test_the_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from libs.common.config import Settings

    settings = Settings()
    fleet_dir = tmp_path / "fleet"
    fleet_dir.mkdir()
    (fleet_dir / "fleet.json").write_text(
        json.dumps({"nats_url": "nats://10.0.0.1:4222", "supervisor_pid": os.getpid()})
    )
    assert find(fleet_dir, None, settings) == Target("nats://10.0.0.1:4222", f"the fleet in {fleet_dir}")
    with pytest.raises(Unreachable, match="is not the NATS of the fleet"):
        find(fleet_dir, "nats://10.0.0.2:4222", settings)
    assert find(None, "nats://h:1", settings).source == "--nats-url"
    monkeypatch.setenv("TRADEFLEET_NATS_URL", "nats://env:4222")
    assert find(None, None, settings) == Target("nats://env:4222", "TRADEFLEET_NATS_URL")
    monkeypatch.delenv("TRADEFLEET_NATS_URL")
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "fleet.json").write_text(json.dumps({"nats_url": "nats://local:1"}))
    assert find(None, None, settings).url == "nats://local:1"  # ./var, from where `up` runs
    (tmp_path / "var" / "fleet.json").unlink()
    found = find(None, None, settings)
    assert found.url == settings.nats.url and "no fleet state found" in found.source
    assert read_state(fleet_dir)["nats_url"] == "nats://10.0.0.1:4222"


# -- a dead or wrong server ---------------------------------------------------------------------
@pytest.mark.parametrize("command", [["ctl", "kill"], ["tap", "md.>"]])
def test_a_dead_nats_is_one_line_within_seconds(command: list[str]) -> None:
    # A subprocess bounded by its timeout: retrying forever would fail the test, not hang it.
    done = subprocess.run(
        [sys.executable, "-m", "tradefleet", *command, "--nats-url", DEAD_NATS],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert (
        done.stderr.strip()
        == f"cannot reach NATS at {DEAD_NATS} (--nats-url): nats: no servers available for connection"
    )


@pytest.fixture(scope="module")
def bare_nats(tmp_path_factory: pytest.TempPathFactory) -> NatsServer:
    """A NATS with no fleet on it (no streams): what a wrong --nats-url finds."""
    server = start_nats(tmp_path_factory.mktemp("bare-nats"))
    yield server  # type: ignore[misc]
    server.stop()


def test_ctl_on_a_nats_without_a_fleet_says_so_and_stores_nothing(bare_nats: NatsServer) -> None:
    line = one_line_error(invoke("ctl", "kill", "--nats-url", bare_nats.url))
    assert line == f"no fleet on {bare_nats.url} (--nats-url): nothing there stores ctl.* (no CONTROL stream)"


# -- arguments checked before connecting --------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["set_mode", "-a", "mode=LIVEE"], "mode must be one of LIVE, DEGRADED, OBSERVE, not 'LIVEE'"),
        (["set_mode"], "mode must be one of LIVE, DEGRADED, OBSERVE, not None"),
        (["kill", "-a", "flatten=yes"], "flatten must be true or false, not 'yes'"),
        (["cancel"], "cancel needs client_order_id"),
        (["replace", "-a", "client_order_id=x"], "replace needs quantity and/or limit_price"),
        (["replace", "-a", "client_order_id=x", "-a", "quantity=-3"], "quantity must be a positive number"),
        (["resume", "-a", "mode=LIVE"], "resume takes no argument 'mode'"),
        (["kill", "-a", "flatten"], "--arg takes KEY=VALUE, not 'flatten'"),
    ],
)
def test_ctl_checks_its_arguments_before_connecting(args: list[str], said: str) -> None:
    # The dead server proves it: a connection attempt would be a different error.
    assert said in one_line_error(invoke("ctl", *args, "--nats-url", DEAD_NATS))


@pytest.mark.parametrize(
    ("since", "said"),
    [("yesterday", "'yesterday' is not a time"), ("-5x", "'-5x' is not a time")],
)
def test_tap_since_that_is_not_a_time(since: str, said: str) -> None:
    line = one_line_error(invoke("tap", "md.status", "--since", since, "--nats-url", DEAD_NATS))
    assert line.startswith("--since: ") and said in line


def test_tap_since_on_a_core_subject_is_refused(bare_nats: NatsServer) -> None:
    line = one_line_error(invoke("tap", "md.quote.>", "--since", "-5m", "--nats-url", bare_nats.url))
    assert "--since needs a JetStream subject" in line


# -- `up`: every flag checked before anything starts ---------------------------------------------
@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (
            ["--speed", "-1"],
            "up: --speed (md_gateway.replay.speed): Input should be greater than or equal to 0",
        ),
        (["--nats-url", "http://x"], "up: --nats-url (nats.url): Value error, must start with nats://"),
        (["--nats-url", DEAD_NATS], f"up: cannot reach NATS at {DEAD_NATS}"),
        (["--start", "25:00"], "up: --start (md_gateway.replay.start): String should match pattern"),
        (["--date", "2013-10-09"], "up: cannot replay 20131009 for IBM,BAC"),
        (["--date", "08/10/2013"], "up: --date: not a date: '08/10/2013'"),
        (["--symbols", "IBM,XYZ"], "no LEAN tick data for: data/sample/lean/equity/usa/tick/xyz/20131008_"),
        (["--duration", "0"], "up: --duration must be more than 0 seconds, not 0"),
        (["--start", "10:00"], "up: --start keeps time from HH:MM in a paced replay"),  # speed 0
        (["--mode", "paper", "--ib-port", "7496"], "port 7496 is a live port but --mode paper"),
    ],
)
def test_up_refuses_bad_flags_before_starting_anything(
    flags: list[str], said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # the default replay data is relative to the repository
    var = tmp_path / "var"
    line = one_line_error(invoke("up", "--no-live", "--var-dir", str(var), *flags))
    assert said in line
    assert not var.exists()  # no NATS, no PostgreSQL, no service, not even a log folder


# -- a dead database -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [
        ["db", "prune", "--db-url", DEAD_DB],
        ["db", "migrate", "--db-url", DEAD_DB],
        ["backfill", "--symbols", "IBM", "--start", "2026-01-05", "--end", "20260106", "--db-url", DEAD_DB],
    ],
)
def test_a_dead_database_is_one_line_with_the_password_masked(command: list[str]) -> None:
    line = one_line_error(invoke(*command))
    assert line.startswith("cannot use the database at postgresql://tf:***@127.0.0.1:1/tradefleet: ")
    assert "secret" not in line and "Connection refused" in line


@pytest.mark.parametrize(
    "args",
    [
        ["backfill", "--symbols", "IBM", "--start", "2026-13-05", "--end", "20260106"],
        ["backtest", "--start", "13/10/2013"],
        ["train", "fastlane", "--data", "x", "--dates", "2013-10-8x"],
        ["faketws", "--date", "2013/10/08"],
    ],
)
def test_every_command_takes_both_date_forms_and_names_a_bad_one(args: list[str]) -> None:
    line = one_line_error(invoke(*args))
    assert "not a date" in line and "(expected YYYY-MM-DD or YYYYMMDD)" in line


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.startswith("tradefleet ")


def test_a_tap_ends_quietly_when_the_fleet_goes_away(tmp_path: Path) -> None:
    """A fleet shutting down under a tap used to print hundreds of nats-py tracebacks."""
    server = start_nats(tmp_path / "nats")
    tap = subprocess.Popen(
        [sys.executable, "-m", "tradefleet", "tap", "md.>", "--nats-url", server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert tap.stderr is not None
    assert tap.stderr.readline().startswith(f"tapping md.> on {server.url}")  # connected
    server.stop()
    out, err = tap.communicate(timeout=20)
    assert tap.returncode == 0 and out == ""
    assert err.strip() == f"{server.url} went away: the tap ends"


def test_up_refuses_a_var_dir_whose_fleet_is_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    var = tmp_path / "var"
    var.mkdir()
    (var / "fleet.json").write_text(json.dumps({"nats_url": DEAD_NATS, "supervisor_pid": os.getpid()}))
    line = one_line_error(invoke("up", "--no-live", "--var-dir", str(var)))
    assert line.startswith(f"up: a fleet is already running in {var} (pid {os.getpid()})")
    assert sorted(p.name for p in var.iterdir()) == ["fleet.json"]  # nothing started beside it
