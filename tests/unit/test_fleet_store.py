"""A replay's JetStream store is its own (a second `make run` within the streams' duplicate window
would otherwise lose its headlines and alerts as duplicates), and old ones do not pile up."""

from __future__ import annotations

from pathlib import Path

from libs.common.config import Settings
from tradefleet.fleet import KEEP_RUN_STORES, Fleet


def test_each_replay_gets_a_fresh_store_and_only_the_last_few_are_kept(tmp_path: Path) -> None:
    earlier = [tmp_path / "runs" / f"20260101T00000{i}" / "nats" for i in range(4)]
    for store in earlier:
        (store / "jetstream").mkdir(parents=True)
    fleet = Fleet(Settings(), None, tmp_path)
    store = fleet._nats_store()
    assert store == tmp_path / "runs" / fleet.run_id / "nats" and not store.exists()
    assert [s.exists() for s in earlier] == [False] * (4 - KEEP_RUN_STORES) + [True] * KEEP_RUN_STORES


def test_against_ib_the_store_persists(tmp_path: Path) -> None:
    settings = Settings(md_gateway={"provider": "ib"})  # type: ignore[arg-type]
    assert Fleet(settings, None, tmp_path)._nats_store() == tmp_path / "nats"
