"""Config: file then environment; a bad config lists every problem and stops start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from libs.common.config import ConfigError, load_settings
from tradefleet.cli import app


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("nats: {url: 'http://x', batch_max: 0}\nmd_gateway: {replay: {speed: -1}, provder: x}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(bad)
    text = str(info.value)
    for where in ("nats.url", "nats.batch_max", "md_gateway.replay.speed", "md_gateway.provder"):
        assert where in text
    assert "4 problem(s)" in text


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("recorder: {batch_rows: 10}\nmd_gateway: {replay: {speed: 2}}\n")
    monkeypatch.setenv("TRADEFLEET_MD_GATEWAY__REPLAY__SPEED", "5")
    monkeypatch.setenv("TRADEFLEET_DB_URL", "postgresql://u@h/db")
    settings = load_settings(cfg)
    assert settings.recorder.batch_rows == 10
    assert settings.md_gateway.replay.speed == 5
    assert settings.db.url == "postgresql://u@h/db"


def test_missing_and_unparsable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("nats: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(broken)


def test_cli_refuses_to_start_with_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("recorder: {batch_rows: -5}\nhttp: {port: 99999}\n")
    result = CliRunner().invoke(app, ["service", "md-gateway", "--config", str(bad)])
    assert result.exit_code == 2
    assert "recorder.batch_rows" in result.output and "http.port" in result.output


def test_database_secrets_and_tls_are_checked_and_folded_into_the_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set ssl_ca_file"):
        load_settings(None, db={"url": "postgresql://u@db/x", "sslmode": "verify-full"})
    with pytest.raises(ConfigError, match="go together"):
        load_settings(None, db={"url": "postgresql://u@db/x", "ssl_cert_file": tmp_path / "c.pem"})
    with pytest.raises(ConfigError, match=r"password_file .*No such file"):
        load_settings(None, db={"url": "postgresql://u@db/x", "password_file": tmp_path / "missing"})
    secret = tmp_path / "pw"
    secret.write_text("p&w\n")
    db = load_settings(None, db={"url": "postgresql://u@db/x?application_name=t", "password_file": secret}).db
    assert db.url == "postgresql://u@db/x?application_name=t&password=p%26w"
    assert db.redacted() == "postgresql://u@db/x?application_name=t&password=%2A%2A%2A"
