"""The command line: choices listed in --help and refused by the parser before anything starts, and
`config show` / `config schema` with secrets masked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import SecretStr
from typer.testing import CliRunner, Result

import tradefleet.commands.common
from libs.common.config import Settings
from proto.control import Command
from tradefleet.cli import app
from tradefleet.commands.admin import MASK, mask_secrets, mask_url
from tradefleet.services import RUNNABLE

REPO = Path(__file__).resolve().parents[2]
SECTIONS = list(Settings.model_fields)


@pytest.fixture(autouse=True)
def _no_tradefleet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: the machine's TRADEFLEET_* must not leak into the output checked."""
    for name in [n for n in os.environ if n.startswith("TRADEFLEET_")]:
        monkeypatch.delenv(name)


def invoke(*args: str) -> Result:
    # Wide enough that rich never wraps a choice list inside its column.
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "240", "TERMINAL_WIDTH": "240"})


def flat(text: str) -> str:
    """Output without rich's box drawing, whitespace collapsed."""
    return " ".join(text.replace("│", " ").split())


@pytest.mark.parametrize(
    ("command", "choices"),
    [
        (["up"], ["<replay|paper|live>"]),
        (["backfill"], ["<1min|5s|ticks>"]),
        (["train", "fastlane"], ["<fixed|triple-barrier>", "<gate|force|never>"]),
        (["train", "policy"], ["<ppo|sac|ddpg>", "<gate|force|never>"]),
        (["train", "sentiment"], ["<gate|force|never>"]),
        (["backtest"], ["<gate|force>", "<on|off|both>"]),
        (["sentiment", "score"], ["<auto|onnx-int8|onnx|torch>"]),
        (["ctl"], ["<" + "|".join(get_args(Command)) + ">"]),
        (["service"], [*(f"{name}:" for name in RUNNABLE), "features+fastlane+qos+risk"]),
    ],
)
def test_help_lists_the_choices(command: list[str], choices: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    for choice in choices:
        assert choice in flat(result.output)


@pytest.mark.parametrize(
    ("args", "bad"),
    [
        (["up", "--mode", "livee"], "livee"),
        (["ctl", "killl"], "killl"),
        (["service", "md-gatway"], "md-gatway"),
        (["backfill", "--symbols", "IBM", "--start", "20260105", "--end", "20260109", "--bar", "1m"], "1m"),
        (["train", "fastlane", "--data", "x", "--labels", "fixd"], "fixd"),
        (["train", "fastlane", "--data", "x", "--promote", "always"], "always"),
        (["train", "policy", "--algorithm", "a2c"], "a2c"),
        (["train", "sentiment", "--promote", "maybe"], "maybe"),
        (["backtest", "--promote", "never"], "never"),
        (["backtest", "--policy", "sometimes"], "sometimes"),
        (["sentiment", "score", "--engine", "gpu"], "gpu"),
    ],
)
def test_a_bad_choice_is_refused_before_anything_starts(
    args: list[str], bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def started(*_: object, **__: object) -> Settings:
        raise AssertionError("the command ran: it loaded its settings")

    # Every command loads its settings before it starts NATS, a database or a model.
    monkeypatch.setattr(tradefleet.commands.common, "load_settings", started)
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert f"{bad!r} is not one of" in flat(result.output)


def test_ctl_refuses_an_arg_without_a_value_before_connecting() -> None:
    result = invoke("ctl", "kill", "-a", "flatten", "--nats-url", "nats://127.0.0.1:1")
    assert result.exit_code == 2
    assert "--arg takes KEY=VALUE, not 'flatten'" in result.output


def test_completion_is_on() -> None:
    assert "--install-completion" in invoke("--help").output


def test_config_show_prints_every_section_with_secrets_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "fleet.yaml"
    cfg.write_text("md_gateway: {replay: {speed: 3}}\nrecorder: {batch_rows: 10}\n")
    monkeypatch.setenv("TRADEFLEET_DB_URL", "postgresql://trader:hunter2@db:5432/fleet")
    monkeypatch.setenv("TRADEFLEET_SENTIMENT__WEBHOOK_TOKEN", "s3cr3t-token")
    monkeypatch.setenv("TRADEFLEET_RECORDER__BATCH_ROWS", "20")
    result = invoke("config", "show", "--config", str(cfg))
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert list(shown) == SECTIONS
    assert shown["db"]["url"] == "postgresql://trader:***@db:5432/fleet"
    assert shown["sentiment"]["webhook_token"] == MASK
    assert "hunter2" not in result.output and "s3cr3t-token" not in result.output
    assert shown["md_gateway"]["replay"]["speed"] == 3  # from the file
    assert shown["recorder"]["batch_rows"] == 20  # the environment over the file
    assert shown["nats"]["url"] == "nats://127.0.0.1:4222"  # a default


def test_config_show_without_secrets_is_a_config_file_that_loads_the_same(tmp_path: Path) -> None:
    from libs.common.config import load_settings

    result = invoke("config", "show")
    assert result.exit_code == 0, result.output
    again = tmp_path / "shown.yaml"
    again.write_text(result.output)
    assert load_settings(again) == load_settings()


def test_config_show_with_a_bad_environment_lists_the_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEFLEET_MD_GATEWAY__REPLAY__SPEED", "-1")
    monkeypatch.setenv("TRADEFLEET_NATS_URL", "http://x")
    result = invoke("config", "show")
    assert result.exit_code == 2
    assert "invalid configuration (2 problem(s))" in result.output
    assert "md_gateway.replay.speed" in result.output and "nats.url" in result.output


def test_config_schema_is_json_with_every_section() -> None:
    result = invoke("config", "schema")
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    assert list(schema["properties"]) == SECTIONS
    assert schema["properties"]["db"]["default"]["storage_mode"] == "auto"


def test_the_console_module_runs() -> None:
    """`python -m tradefleet` (what the fleet and the tests start services with) still reaches the app."""
    proc = subprocess.run(
        [sys.executable, "-m", "tradefleet", "config", "schema"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRADEFLEET_")},
    )
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout)["properties"]) == set(SECTIONS)


def test_run_service_is_still_importable_from_the_cli() -> None:
    from tradefleet.cli import run_service  # services/md_gateway/__main__.py and recorder's

    assert callable(run_service)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p@ss@h:5432/db", "postgresql://u:***@h:5432/db"),  # an unescaped @
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("nats://tok@h:4222,nats://u:pw@h2:4222", "nats://***@h:4222,nats://u:***@h2:4222"),
        (
            "postgresql://h/db?user=u&password=pw&sslmode=require",
            "postgresql://h/db?user=u&password=***&sslmode=require",
        ),
        ("host=h user=u password=pw dbname=d", "host=h user=u password=*** dbname=d"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),  # no password: nothing to hide
        ("http://h:8080/a@b", "http://h:8080/a@b"),  # a port is not a password
        ("plain text", "plain text"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_secrets_by_type_by_name_and_in_urls() -> None:
    data: dict[str, Any] = {
        "sentiment": {"webhook_token": SecretStr("t"), "unset": SecretStr("")},
        "api": {"password": "pw", "client_secret": ["a", "b"], "token_file": None, "Secret": ""},
        "flags": {"require_token": False},
        "db": {"url": "postgresql://u:pw@h/db", "root": Path("var/x"), "symbols": frozenset({"B", "A"})},
        "qos": {"weights": {"5m": 0.4}},
        "control": {"tokens": [{"name": "ann", "role": "admin", "token_sha256": "ab" * 32}]},
    }
    assert mask_secrets(data) == {
        "sentiment": {"webhook_token": MASK, "unset": ""},
        # a list under a secret's name: each item masked, the list kept
        "api": {"password": MASK, "client_secret": [MASK, MASK], "token_file": None, "Secret": ""},
        "flags": {"require_token": False},
        "db": {"url": "postgresql://u:***@h/db", "root": "var/x", "symbols": ["A", "B"]},
        "qos": {"weights": {"5m": 0.4}},
        "control": {"tokens": [{"name": "ann", "role": "admin", "token_sha256": "ab" * 32}]},  # digests
    }
