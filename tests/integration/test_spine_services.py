"""features -> fastlane -> qos as processes on a real NATS, with Redis hot state and hot reload."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis

from libs.common.localinfra import free_port
from models.fastlane import registry
from tests.helpers import REPO, http_json, service_env, start_service, wait_until

REDIS_URL = "redis://127.0.0.1:6379/15"  # a database of its own, flushed by this test


def _redis() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    return client


def _app(port: int) -> dict[str, Any]:
    return dict((http_json(port, "/status")[1] or {}).get("app", {}))


def test_spine_services_score_the_replay_write_hot_state_and_reload_a_promoted_model(
    tmp_path: Path, nats_url: str
) -> None:
    client = _redis()
    client.flushdb()
    models = tmp_path / "registry"
    shutil.copytree(REPO / "models" / "registry", models)
    ports = {name: free_port() for name in ("features", "fastlane", "qos", "md-gateway")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in ("qos", "fastlane", "features", "md-gateway"):
            env = service_env(
                TRADEFLEET_NATS_URL=nats_url,
                TRADEFLEET_HTTP__PORT=str(ports[name]),
                TRADEFLEET_FEATURES__REDIS_URL=REDIS_URL,
                TRADEFLEET_FEATURES__REDIS_FLUSH_MS="50",
                TRADEFLEET_FASTLANE__REGISTRY=str(models),
                TRADEFLEET_FASTLANE__RELOAD_INTERVAL_S="0.2",
                TRADEFLEET_MD_GATEWAY__REPLAY__LIMIT="300000",
            )
            procs[name] = start_service(name, env, tmp_path / f"{name}.log")
            wait_until(lambda n=name: http_json(ports[n], "/readyz")[0] == 200, 90, what=f"{name} ready")
        wait_until(lambda: _app(ports["features"]).get("finished"), 120, what="features finished")
        feats = _app(ports["features"])
        assert feats["vectors"]["1m"] > 100 and feats["received"]["quotes"] > 10_000
        wait_until(
            lambda: (
                _app(ports["qos"]).get("predictions_in", 0) == _app(ports["fastlane"]).get("predictions", -1)
                and _app(ports["fastlane"]).get("vectors_in") == feats["vectors"]["1m"]
            ),
            60,
            what="spine caught up",
        )
        fast = _app(ports["fastlane"])
        assert fast["predictions"] == 4 * feats["vectors"]["1m"] and not fast["dropped"]
        assert _app(ports["qos"])["scores"] > 0

        # Hot state: the latest vector per symbol and timeframe, as JSON, written behind.
        wait_until(lambda: client.exists("tradefleet:feat:IBM:1m"), 10, what="redis hot state")
        latest = json.loads(client.get("tradefleet:feat:IBM:1m") or b"{}")
        assert latest["symbol"] == "IBM" and latest["timeframe"] == "1m"
        assert len(latest["values"]) == len(latest["names"]) > 40 and latest["names"][0] == "ret_bps"
        assert _app(ports["features"])["redis"]["written"] > 0

        # Promote a new 15m version: the service loads it off the event loop and swaps it in.
        old = registry.active_version(models, "15m")
        assert old is not None and fast["models"]["15m"]["version"] == old
        new_dir = registry.horizon_dir(models, "15m") / "20990101T000000-promoted"
        shutil.copytree(registry.horizon_dir(models, "15m") / old, new_dir)
        meta = json.loads((new_dir / "meta.json").read_text())
        meta["version"] = new_dir.name
        (new_dir / "meta.json").write_text(json.dumps(meta))
        registry.activate(models, "15m", new_dir.name)
        wait_until(
            lambda: _app(ports["fastlane"]).get("models", {}).get("15m", {}).get("version") == new_dir.name,
            30,
            what="hot reload",
        )
        assert _app(ports["fastlane"])["reloads"] == 1
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(20)
        client.flushdb()
