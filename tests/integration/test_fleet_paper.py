"""`tradefleet up --mode paper` against the fake TWS (`tradefleet faketws`): the whole fleet trades
a recorded day through the real ibapi client, and the summary says IB's book matches ours."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, service_env

TRADEFLEET = [sys.executable, "-m", "tradefleet"]


def test_paper_mode_trades_through_tws_and_reconciles(tmp_path: Path) -> None:
    env = {**service_env(), "PYTHONPATH": str(REPO)}
    fake = subprocess.Popen(
        [
            *TRADEFLEET,
            "faketws",
            "--port",
            "0",
            "--speed",
            "2000",
            "--start",
            "09:25",
            "--data",
            str(REPO / "data/sample/lean"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None
        line = fake.stdout.readline()
        port = line.split("127.0.0.1:")[1].split()[0]
        # The fake streams a 2013 day: stamp ticks with its time, not the wall clock's.
        run_env = {
            **env,
            "TRADEFLEET_IB__TIMESTAMPS": "exchange",
            "TRADEFLEET_IB__RECONCILE_EVERY_S": "3",
            "TRADEFLEET_IB__NEWS": "true",
        }
        cmd = [*TRADEFLEET, "up", "--mode", "paper", "--ib-port", port, "--duration", "45", "--no-live"]
        out = subprocess.run(
            [*cmd, "--summary", "summary.json"],
            check=False,  # the summary says why; asserted below
            cwd=tmp_path,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["provider"] == "ib", out.stdout[-2000:]
        assert summary["events_published"]["news"] >= 1  # the fake's bulletin, on news.raw
        assert (
            summary["events_published"]["quotes"] > 10_000 and summary["events_published"]["trades"] > 5_000
        )
        trading, signals = summary["trading"], summary["signals"]
        assert signals["intents"] >= 1 and trading["approved"] >= 1, trading
        assert trading["orders_sent"] == trading["approved"] and trading["fills"] >= trading["orders_sent"]
        ib = summary["ib"]
        assert ib["reconciliations"] >= 2 and ib["positions_match"] is True, ib
        assert ib["duplicate_executions"] == 0
        assert summary["ok"] is True and out.returncode == 0
    finally:
        fake.terminate()
        fake.wait(10)
