"""The scheduled retrain (what the k8s CronJob and the compose `retrain` profile run):
`tradefleet train fastlane --from-store --last-days N --alert` trains on the feature store's latest
days, always through the promotion gate, and tells people what it promoted or refused and why, as
the `trainer` NATS user, which may publish alerts and nothing else."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import psycopg
import pytest

from libs.common import codec
from libs.common.config import DbSettings, FeaturesSettings
from libs.common.localinfra import start_nats
from libs.common.storage.migrate import migrate
from models.fastlane import registry
from models.fastlane.dataset import lean_tick_dates, replay_vectors, store_days
from proto.alerts import Alert
from proto.features import FeatureVector
from tests.helpers import record_vectors, run_cli, service_env
from tests.kit.synthetic import write_days
from tradefleet.backtest.sources import recorded_days

DAYS = ["2013-10-14", "2013-10-15", "2013-10-16"]


def _record_vectors(data: Path, dsn: str) -> None:
    """The planted-edge days' 1m vectors into the feature store, as the recorder writes them."""
    migrate(dsn, DbSettings())
    vectors: list[FeatureVector] = list(
        replay_vectors(data, lean_tick_dates(data, ["AAA", "BBB"]), FeaturesSettings(), progress=False)
    )
    record_vectors(dsn, vectors)


async def test_a_scheduled_retrain_trains_on_the_latest_days_and_says_what_the_gate_did(
    tmp_path: Path, pg_dsn: str
) -> None:
    data = tmp_path / "lean"
    write_days(data, DAYS, edge_bps=4.0)
    await asyncio.to_thread(_record_vectors, data, pg_dsn)
    assert store_days(pg_dsn, FeaturesSettings().feature_set) == [d.replace("-", "") for d in DAYS]

    auth = tmp_path / "auth"
    out = await asyncio.to_thread(run_cli, "nats", "config", "--out", str(auth))
    assert out.returncode == 0, out.stderr
    server = start_nats(tmp_path / "js", config=auth / "nats-server.conf")
    try:
        provision = await asyncio.to_thread(
            run_cli, "nats", "provision", "--nats-url", server.url, "--seed-file", str(auth / "admin.nk")
        )
        assert provision.returncode == 0, provision.stderr
        tap = await nats.connect(server.url, nkeys_seed=str(auth / "tap.nk"))
        heard: list[Alert] = []

        async def hear(msg: nats.aio.msg.Msg) -> None:
            heard.append(msg_decode(msg.data))

        await tap.subscribe("alert.>", cb=hear)
        await tap.flush()
        root = tmp_path / "registry"
        env = {
            **service_env(),
            "TRADEFLEET_DB_URL": pg_dsn,
            "TRADEFLEET_NATS__URL": server.url,
            "TRADEFLEET_NATS__NKEY_SEED_FILE": str(auth / "trainer.nk"),
        }
        retrain = (
            "train", "fastlane", "--from-store", "--last-days", "2", "--horizons", "5m",
            "--folds", "3", "--registry", str(root), "--alert",
        )  # fmt: skip

        # The first run: the planted edge passes the gate on the latest two days.
        first = await asyncio.to_thread(
            run_cli, *retrain, "--report", str(tmp_path / "r1"), env=env, timeout=300
        )
        assert first.returncode == 0, first.stderr
        alert = await _next_alert(heard, 1)
        version = registry.active_version(root, "5m")
        assert version is not None
        assert alert.severity == "info" and alert.title == "fastlane retrain: promoted 5m", alert
        assert alert.labels == {"kind": "fastlane", "promoted": "5m", "refused": ""}
        assert f"5m {version} (active before: none): promoted: passed the gate" in alert.body
        assert "on 2 day(s), 20131015..20131016" in alert.body
        report = json.loads((tmp_path / "r1" / "report.json").read_text())
        assert report["context"]["days"] == ["20131015", "20131016"]
        assert report["context"]["source"] == "feature store"

        # Again on the same days: the same model cannot beat itself, so the gate refuses it and
        # the active version stays; the alert is a warning that says why.
        second = await asyncio.to_thread(
            run_cli, *retrain, "--report", str(tmp_path / "r2"), env=env, timeout=300
        )
        assert second.returncode == 0, second.stderr
        alert = await _next_alert(heard, 2)
        assert alert.severity == "warning" and alert.title == "fastlane retrain: refused 5m", alert
        assert "better than the active model's" in alert.body and f"active before: {version}" in alert.body
        assert registry.active_version(root, "5m") == version

        # A store without the days asked for: the run fails, says so, and the alert says nothing
        # changed.
        failed = await asyncio.to_thread(run_cli, *retrain, "--dates", "2014-01-02", env=env, timeout=120)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "vectors for days ['20140102']" in failed.stderr
        alert = await _next_alert(heard, 3)
        assert alert.severity == "warning" and alert.title.startswith("fastlane retrain failed")
        assert "active models are unchanged" in alert.body and alert.labels["failed"] == "true"

        # The trainer's identity may publish alerts and nothing else.
        errors: list[str] = []

        async def seen(exc: Exception) -> None:
            errors.append(str(exc).lower())

        trainer = await nats.connect(server.url, nkeys_seed=str(auth / "trainer.nk"), error_cb=seen)
        await trainer.publish("ctl.kill", b"{}")
        await trainer.flush()
        for _ in range(50):
            if errors:
                break
            await asyncio.sleep(0.05)
        assert any('permissions violation for publish to "ctl.kill"' in e for e in errors), errors
        await trainer.close()
        await tap.close()
    finally:
        server.stop()


async def test_a_retrain_whose_alert_cannot_be_published_fails(tmp_path: Path, pg_dsn: str) -> None:
    """Trained and judged, but nobody told: the scheduler must show the run as failed (exit 3)."""
    data = tmp_path / "lean"
    write_days(data, DAYS[:2], edge_bps=4.0)
    await asyncio.to_thread(_record_vectors, data, pg_dsn)
    env = {**service_env(), "TRADEFLEET_DB_URL": pg_dsn, "TRADEFLEET_NATS__URL": "nats://127.0.0.1:1"}
    out = await asyncio.to_thread(
        run_cli,
        *("train", "fastlane", "--from-store", "--horizons", "5m", "--folds", "3", "--promote", "never"),
        *("--registry", str(tmp_path / "registry"), "--report", str(tmp_path / "r"), "--alert"),
        env=env,
        timeout=300,
    )
    assert out.returncode == 3, out.stdout + out.stderr
    assert "the alert could not be published" in out.stderr
    assert "not promoted: --promote never" in out.stdout  # the training itself ran


def test_the_data_options_say_what_is_wrong() -> None:
    both = run_cli("train", "fastlane", "--from-store", "--data", "x")
    assert both.returncode == 2 and "give one" in both.stderr
    env = {k: v for k, v in service_env().items() if k != "TRADEFLEET_DB_URL"}
    no_db = run_cli("train", "fastlane", "--from-store", env=env)
    assert no_db.returncode == 2 and "--from-store reads db.url" in no_db.stderr
    neither = run_cli("train", "policy", "--hold-out", "2013-10-07", "--hold-out-last", "1")
    assert neither.returncode == 2 and "give one" in neither.stderr


@pytest.mark.parametrize("where", ["lean", "db"])
def test_recorded_days_are_every_day_with_data_in_order(tmp_path: Path, pg_dsn: str, where: str) -> None:
    data = tmp_path / "lean"
    write_days(data, DAYS, edge_bps=0.0)
    if where == "lean":
        assert recorded_days(str(data), ["AAA", "ZZZ"]) == [d.replace("-", "") for d in DAYS]
        return
    migrate(pg_dsn, DbSettings())
    with psycopg.connect(pg_dsn) as conn:
        for d in (DAYS[2], DAYS[0]):
            conn.execute(
                "INSERT INTO trades (ts, ts_init, symbol, price, size) "
                "VALUES (%s::timestamptz, %s::timestamptz, 'AAA', 10, 1)",
                (f"{d} 15:59:00-04", f"{d} 15:59:00-04"),
            )
    assert recorded_days(pg_dsn, ["AAA"]) == ["20131014", "20131016"]
    assert recorded_days(pg_dsn, ["BBB"]) == []


def msg_decode(data: bytes) -> Alert:
    event = codec.decode(data)
    assert isinstance(event, Alert), event
    return event


async def _next_alert(heard: list[Alert], count: int) -> Alert:
    for _ in range(200):
        if len(heard) >= count:
            return heard[count - 1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(heard)} alert(s) heard, waiting for alert {count}")
