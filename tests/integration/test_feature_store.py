"""The point-in-time feature store: vectors recorded as published, read back unchanged, and a model
trained from the store is the very model trained from the replay that produced them."""

from __future__ import annotations

from pathlib import Path

import msgspec

from libs.common.config import DbSettings, FeaturesSettings
from libs.common.storage.migrate import migrate
from models.fastlane import registry
from models.fastlane.dataset import lean_tick_dates, replay_vectors, vectors_from_db
from proto.features import FeatureVector
from tests.helpers import REPO, record_vectors, train_fastlane

SAMPLE = REPO / "data" / "sample" / "lean"


def _train(data: str, root: Path) -> str:
    out = train_fastlane(data, root, "force")
    assert out.returncode == 0, out.stderr
    version = registry.active_version(root, "15m")
    assert version is not None
    return version


def test_vectors_round_trip_and_train_the_same_model(pg_dsn: str, tmp_path: Path) -> None:
    migrate(pg_dsn, DbSettings())
    cfg = FeaturesSettings()
    vectors: list[FeatureVector] = list(
        replay_vectors(SAMPLE, lean_tick_dates(SAMPLE, ["IBM", "BAC"]), cfg, timeframe="1m", progress=False)
    )
    assert len(vectors) == 780
    record_vectors(pg_dsn, vectors)
    stored = vectors_from_db(pg_dsn, cfg.feature_set)
    key = lambda v: (v.ts_event, v.symbol)  # noqa: E731
    assert [msgspec.json.encode(v) for v in sorted(stored, key=key)] == [
        msgspec.json.encode(v) for v in sorted(vectors, key=key)
    ]
    from_store = _train(pg_dsn, tmp_path / "store")
    from_replay = _train(str(SAMPLE), tmp_path / "replay")
    # Same vectors, same labels, same deterministic LightGBM: the same model file (its digest).
    assert from_store.split("-")[-1] == from_replay.split("-")[-1]
