"""`tradefleet up --mode paper` against the fake TWS (`tradefleet faketws`): the whole fleet trades
a recorded morning through the real ibapi client, and the summary says IB's book matches ours."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, http_json, service_env

TRADEFLEET = [sys.executable, "-m", "tradefleet"]
MORNING = ("--until", "10:30")  # past the morning's first entries and exits


def settle(tmp: Path, quiet_s: float = 6.0, limit_s: float = 90.0) -> None:
    """Until the fleet has taken in everything the fake sent: md-gateway's and QOS's counts
    unchanged for ``quiet_s`` (a slow machine lags the fake), then a reconciliation's worth more."""
    ports = json.loads((tmp / "var" / "fleet.json").read_text())["http_ports"]
    deadline, last, since = time.monotonic() + limit_s, None, time.monotonic()
    while time.monotonic() < deadline:
        marks = []
        for name, key in (("md-gateway", "stats"), ("qos", "intents"), ("execution", "fills")):
            code, body = http_json(ports[name], "/status")
            marks.append(
                json.dumps((body or {}).get("app", {}).get(key), sort_keys=True) if code == 200 else ""
            )
        if marks != last:
            last, since = marks, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.5)


@pytest.mark.timeout(420)
def test_paper_mode_trades_through_tws_and_reconciles(tmp_path: Path) -> None:
    env = {**service_env(), "PYTHONPATH": str(REPO)}
    data = str(REPO / "data/sample/lean")
    fake = subprocess.Popen(
        # The morning: entries, exits and fills through TWS; the whole day through the fake is
        # test_ib_parity's (decisions identical to the replay's).
        [
            *TRADEFLEET,
            "faketws",
            "--port",
            "0",
            "--speed",
            "2000",
            "--start",
            "09:25",
            *MORNING,
            "--data",
            data,
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    up: subprocess.Popen[str] | None = None
    try:
        assert fake.stdout is not None
        port = fake.stdout.readline().split("127.0.0.1:")[1].split()[0]
        run_env = {
            **env,
            "TRADEFLEET_IB__TIMESTAMPS": "exchange",  # the fake streams a 2013 day: stamp ticks with its time
            "TRADEFLEET_IB__RECONCILE_EVERY_S": "2",
            "TRADEFLEET_IB__NEWS": "true",
        }
        up = subprocess.Popen(
            [
                *TRADEFLEET,
                "up",
                "--mode",
                "paper",
                "--ib-port",
                port,
                "--no-live",
                "--summary",
                "summary.json",
            ],
            cwd=tmp_path,
            env=run_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # The fake starts the day with the first subscriber, however long the fleet took to boot;
        # once it says the day is streamed, the fleet gets time to trade and reconcile, then the
        # operator's Ctrl-C ends the session, the normal end of a live one.
        line = fake.stdout.readline()
        assert "has been streamed" in line, line
        settle(tmp_path)
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=120)
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["provider"] == "ib", output[-2000:]
        published = summary["events_published"]
        assert published["news"] >= 1  # the fake's bulletin, on news.raw
        assert published["quotes"] > 10_000 and published["trades"] > 5_000
        trading, signals = summary["trading"], summary["signals"]
        assert signals["intents"] >= 1 and trading["approved"] >= 1, trading
        assert trading["orders_sent"] == trading["approved"] and trading["fills"] >= trading["orders_sent"]
        ib = summary["ib"]
        assert ib["reconciliations"] >= 2 and ib["positions_match"] is True, ib
        assert ib["duplicate_executions"] == 0
        assert summary["error"] == "interrupted by SIGINT" and summary["ok"] is True
        assert up.returncode == 0
    finally:
        for proc in (up, fake):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)
