"""`tradefleet up` end to end: services as processes, taps while it runs, the real sample day."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from aiosmtpd.controller import Controller

from libs.common.localinfra import free_port
from tests.helpers import REPO, http_json, service_env, start_service, wait_until
from tests.kit.fake_telegram import FakeBotApi
from tests.kit.inbox import Inbox

TELEGRAM_TOKEN = "123456:fleet-token"
TELEGRAM_CHAT = 777

TRADEFLEET = [sys.executable, "-m", "tradefleet"]


def _up(tmp: Path, config: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*TRADEFLEET, "up", "--config", str(config), "--summary", "summary.json", "--no-live", *extra],
        cwd=tmp,
        env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _tap(tmp: Path, *args: str) -> list[str]:
    out = subprocess.run(
        [*TRADEFLEET, "tap", *args, "--timeout", "30"],
        cwd=tmp,
        capture_output=True,
        text=True,
        env={**service_env(), "PYTHONPATH": str(REPO)},
        timeout=60,
        check=True,
    )
    return out.stdout.splitlines()


def _ctl(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRADEFLEET, "ctl", *args, "--var-dir", "var", "--wait", "10"],
        cwd=tmp,
        capture_output=True,
        text=True,
        env={**service_env(), "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )


def test_up_runs_the_fleet_taps_decode_it_and_sigterm_stops_every_process(
    tmp_path: Path, pg_dsn: str
) -> None:
    """One synthetic fleet (one start: starts cost most of a fleet test): taps decode live and
    durable subjects while it runs, then SIGTERM to `up` stops every process and still writes the
    summary, with nothing the gateway published left unstored. The replay that finishes on its own
    is the real day's, below."""
    config = tmp_path / "fleet.yaml"
    config.write_text(
        "md_gateway:\n  provider: synthetic\n  synthetic: {symbols: 4, rate: 2000, duration_s: 120}\n"
    )
    proc = _up(tmp_path, config, service_env(TRADEFLEET_DB_URL=pg_dsn))
    state_file = tmp_path / "var" / "fleet.json"
    wait_until(lambda: state_file.exists() or proc.poll() is not None, 60, what="fleet up")
    assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
    pids = json.loads(state_file.read_text())["pids"]

    quotes = _tap(tmp_path, "md.quote.>", "--count", "5")
    assert len(quotes) == 5 and all(" Quote " in line and "bid=" in line for line in quotes)
    as_json = [json.loads(line) for line in _tap(tmp_path, "md.trade.>", "--count", "3", "--json")]
    assert [e["type"] for e in as_json] == ["Trade"] * 3 and all(e["price"] > 0 for e in as_json)
    # JetStream subjects can be read from a point in time: the replay's start is in the past now.
    started = [
        json.loads(line) for line in _tap(tmp_path, "md.status", "--since", "-10m", "--count", "1", "--json")
    ]
    assert started[0]["type"] == "FeedStatus" and started[0]["state"] == "replay_started"

    # ctl finds the fleet by its state directory and prints what risk and execution did.
    observe = _ctl(tmp_path, "set_mode", "-a", "mode=OBSERVE", "--issued-by", "alice")
    assert observe.returncode == 0, observe.stderr
    nats_url = json.loads(state_file.read_text())["nats_url"]
    lines = observe.stdout.splitlines()
    assert lines[0].endswith(f"by alice to nats: {nats_url} (the fleet in var)")
    assert lines[1:] == ["risk: set_mode done: mode LIVE -> OBSERVE"]
    unknown = _ctl(tmp_path, "cancel", "-a", "client_order_id=nope")
    assert unknown.returncode == 1  # heard, refused, and said so
    assert unknown.stdout.splitlines()[1:] == ["execution: cancel REFUSED: order nope is unknown"]
    kill = _ctl(tmp_path, "kill")
    assert kill.returncode == 0, kill.stdout + kill.stderr
    assert kill.stdout.splitlines()[1:] == [
        "execution: kill done: killed: new approvals refused; 0 open order(s) cancelled; positions kept",
        "risk: kill done: mode OBSERVE -> EMERGENCY",
    ]

    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, output  # not ok: it did not finish its replay
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["error"] == "interrupted by SIGTERM"
    assert summary["md_rows_lost"] == 0
    # The gateway's count is its last /status before the SIGTERM; it may publish a few more after.
    assert summary["rows_stored"]["quotes"] >= summary["events_published"]["quotes"] > 1000
    for pid in pids.values():
        assert not _alive(pid)
    assert not state_file.exists()  # stopped and cleaned up


def test_a_paced_replay_starts_at_the_open_and_reaches_bars_and_intents_within_90_s(tmp_path: Path) -> None:
    """`up --speed 20 --duration 90`: time is kept from the session open (the pre-market is
    replayed at once), so 90 s at 20x reach 10:00, past the day's first entry (09:58); reaching
    the duration is a normal, ok end, summarised in a few lines."""
    config = tmp_path / "fleet.yaml"
    config.write_text(f"md_gateway:\n  replay: {{root: {REPO / 'data/sample/lean'}, news: []}}\n")
    proc = _up(tmp_path, config, service_env(), "--speed", "20", "--duration", "90")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["ok"] and s["ended"] == "duration" and s["error"] is None
    assert "2013-10-08 09:59" in s["market_time_end"] or "2013-10-08 10:0" in s["market_time_end"]
    assert s["signals"]["feature_vectors"]["1m"] >= 2 * 25  # both symbols' bars from 09:30
    assert s["signals"]["intents"] >= 1 and s["trading"]["approved"] >= 1
    assert s["md_rows_lost"] == 0
    summary_lines = [line for line in output.splitlines() if line.startswith(("tradefleet up:", "  "))]
    assert summary_lines[0].startswith("tradefleet up: OK: 2013-10-08 (IBM, BAC) stopped at --duration")
    assert any(line.startswith("  trading   P&L ") and "(realized " in line for line in summary_lines)
    assert not any(line.lstrip().startswith("{") for line in output.splitlines())  # JSON only on request


def test_make_run_path_replays_the_real_day_into_a_private_postgres(tmp_path: Path) -> None:
    """The acceptance run: the shipped IBM+BAC day, as fast as possible, PostgreSQL started under var/."""
    config = tmp_path / "fleet.yaml"
    news = REPO / "data/sample/news/20131008.jsonl"
    # The alerts service tells people: Telegram through a fake Bot API server, email into aiosmtpd.
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    telegram = FakeBotApi(TELEGRAM_TOKEN, chats=[TELEGRAM_CHAT])
    telegram_url, stop_telegram = telegram.run_in_thread()
    config.write_text(
        f"md_gateway:\n  replay: {{root: {REPO / 'data/sample/lean'}, news: [{news}]}}\n"
        "alerts:\n"
        f"  telegram: {{api_url: '{telegram_url}', token: '{TELEGRAM_TOKEN}', chat_ids: [{TELEGRAM_CHAT}]}}\n"
        f"  email: {{host: 127.0.0.1, port: {smtp.port}, starttls: false, recipients: [desk@example.test]}}\n"
        # Nothing drifts on the sample day (a day like the models' training days). A drift
        # limit no day meets quarantines each model once its window fills, for the alerts.
        "fastlane: {drift_psi_limit: 0.001}\n"
    )
    env = service_env()
    proc = _up(tmp_path, config, env, "--speed", "0")
    wait_until(
        lambda: (tmp_path / "var" / "fleet.json").exists() or proc.poll() is not None, 120, what="fleet up"
    )
    # Taps started while the replay runs see the spine's live output: predictions on core NATS,
    # and the first intent on JetStream.
    taps = {
        subject: subprocess.Popen(
            [*TRADEFLEET, "tap", subject, "--count", str(count), "--timeout", "90", "--json"],
            cwd=tmp_path,
            env={**env, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            text=True,
        )
        for subject, count in (("sig.>", 3), ("order.intent.>", 1))
    }
    try:
        output, _ = proc.communicate(timeout=300)
    finally:
        stop_telegram()
        smtp.stop()
    assert proc.returncode == 0, output
    # The (forced) drift quarantines: exactly one Telegram message and one email per model, each
    # naming the model and the feature that drifted.
    s = json.loads((tmp_path / "summary.json").read_text())
    quarantined = sorted(h for h, m in s["signals"]["models"].items() if m["quarantined"])
    assert quarantined == ["15m", "30m", "5m", "60m"], s["signals"]["models"]
    for horizon in quarantined:
        texts = [t for _, t in telegram.sent if f"model {horizon} " in t]
        mails = [m for m in inbox.messages if f"model {horizon} " in m["Subject"]]
        assert len(texts) == 1 and len(mails) == 1, (
            horizon,
            telegram.sent,
            [m["Subject"] for m in inbox.messages],
        )
        assert "quarantined" in texts[0] and "worst_feature: " in texts[0]
        assert "worst_feature: " in mails[0].get_body(("plain",)).get_content()
    delivered = s["alerts"]["delivered"]  # read before the service stopped: at least those
    assert delivered["telegram"] >= len(quarantined) and delivered["email"] >= len(quarantined)
    seen = {
        subject: [json.loads(line) for line in tap.communicate(timeout=120)[0].splitlines()]
        for subject, tap in taps.items()
    }
    assert [e["type"] for e in seen["sig.>"]] == ["Prediction"] * 3
    assert all(0 <= e["probability"] <= 1 and -1 <= e["signal"] <= 1 for e in seen["sig.>"])
    assert seen["order.intent.>"][0]["type"] == "OrderIntent" and seen["order.intent.>"][0]["reason"]
    spine = s["signals"]
    # Every 1-minute bar of both symbols' regular session, every vector scored by all 4 horizons,
    # and the feature store holding every vector published.
    assert spine["feature_vectors"]["1m"] == 780 and spine["feature_vectors"]["60m"] == 14
    assert spine["predictions"] == 4 * 780
    assert {m["engine"] for m in spine["models"].values()} <= {"lleaves", "onnx", "lightgbm"}
    assert spine["qos_scores"] > 0 and spine["intents"] >= 2
    kinds = spine["intents_by_kind"]
    assert (
        kinds["enter"] >= 1
        and kinds["enter"] + kinds.get("exit", 0) + kinds["protective_exit"] == spine["intents"]
    )
    assert s["rows_stored"]["feature_vectors"] == sum(spine["feature_vectors"].values())
    assert s["rows_stored"]["order_intents"] == spine["intents"]
    # The order path: every intent decided, every approval sent, filled and costed.
    trading = s["trading"]
    assert trading["approved"] + trading["denied"] == spine["intents"]
    assert trading["orders_sent"] == trading["approved"] >= 2 and trading["fills"] >= 2
    assert trading["open_orders_at_end"] == 0 and s["rows_stored"]["fills"] == trading["fills"]
    # TCA reports trail the orders (each waits for the market to move on, or the end of the data);
    # the fleet does not wait for the last of them.
    assert 1 <= trading["tca_reports"] <= trading["orders_sent"]
    # 576,095 + 125,871 BAC and 125,749 + 33,380 IBM quote/trade rows (data/sample/lean/PROVENANCE.txt
    # counts newlines; the last row of each file has none).
    assert s["ticks_replayed"] == 861_099
    assert s["storage_mode"] == "native"
    assert s["bad_ticks"]["crossed"] > 0 and s["bad_ticks"]["locked"] > 0
    md_stored = {k: v for k, v in s["rows_stored"].items() if k in ("quotes", "trades", "bars")}
    assert md_stored == {k: v for k, v in s["events_published"].items() if v and k != "news"}
    # ...counted again in the database itself at the end: stored once, nothing lost or doubled
    assert {k: s["rows_in_database"][k] for k in md_stored} == md_stored
    assert s["rows_in_database"]["fills"] == trading["fills"] and s["md_rows_duplicated"] == 0
    assert s["md_rows_lost"] == 0 and s["ok"]
    assert (tmp_path / "var" / "pg" / "data" / "PG_VERSION").exists()
    # The dashboard is served while the replay runs, its URL and this run's token said once.
    url = s["control"]["url"]
    assert url.startswith("http://127.0.0.1:") and f"dashboard: {url}  token: tf_" in output
    # Headlines interleaved with the day (data/sample/news): scored by the sentiment service once
    # per story (2b repeats 2; 6 names no ticker), every score taken by QOS, which re-scored
    # symbols on headlines and counted sentiment in its scores.
    news = s["news"]
    assert news["headlines"] == s["events_published"]["news"] == 10
    assert news["model"]["version"] and news["model_error"] is None
    c = news["counters"]
    assert c["received"] == 10 and c["dropped.duplicate"] == 1 and c["dropped.no_ticker"] == 1
    assert c["scored"] == 8 and c["published"] == 10  # headline 9 names $WORK $IBM $MSFT
    assert news["reached_qos"] == c["published"]
    assert news["qos_rescored_on_headline"] >= 1 and news["qos_scores_with_sentiment"] > 0


def test_sigterm_drains_and_exits_cleanly(tmp_path: Path, nats_url: str) -> None:
    port = free_port()
    env = service_env(
        TRADEFLEET_NATS_URL=nats_url,
        TRADEFLEET_HTTP__PORT=str(port),
        TRADEFLEET_MD_GATEWAY__PROVIDER="synthetic",
        TRADEFLEET_MD_GATEWAY__SYNTHETIC__RATE="5000",
    )
    proc = start_service("md-gateway", env, tmp_path / "gw.log")
    wait_until(lambda: http_json(port, "/readyz")[0] == 200, 30, what="gateway ready")
    wait_until(
        lambda: (http_json(port, "/status")[1] or {}).get("app", {}).get("stats", {}).get("quotes"),
        30,
        what="quotes flowing",
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    log = (tmp_path / "gw.log").read_text()
    assert '"event": "draining"' in log and '"event": "stopped"' in log
    assert os.path.getsize(tmp_path / "gw.log") > 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _fleet_state(tmp: Path) -> dict[str, object]:
    path = tmp / "var" / "fleet.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def test_up_restarts_a_killed_service_and_its_nats_server_and_carries_on(tmp_path: Path) -> None:
    """kill -9 of the alerts service, then of the NATS server, during a paced replay: each comes
    back (the services reconnect to the restarted server), the replay carries on to the end of
    its duration, and the summary counts the restarts."""
    config = tmp_path / "fleet.yaml"
    config.write_text(
        f"md_gateway:\n  replay: {{root: {REPO / 'data/sample/lean'}, news: [], symbols: [IBM]}}\n"
    )
    proc = _up(tmp_path, config, service_env(), "--speed", "10", "--duration", "45")
    try:
        wait_until(lambda: _fleet_state(tmp_path).get("pids"), 120, what="the fleet up")
        state = _fleet_state(tmp_path)
        alerts_pid = state["pids"]["alerts"]  # type: ignore[index]
        os.kill(alerts_pid, signal.SIGKILL)
        wait_until(
            lambda: _fleet_state(tmp_path).get("pids", {}).get("alerts") not in (None, alerts_pid),  # type: ignore[union-attr]
            30,
            what="alerts restarted",
        )
        nats = subprocess.run(
            ["pgrep", "-f", f"nats-server.*{tmp_path}"], capture_output=True, text=True, check=False
        )
        pids = [int(p) for p in nats.stdout.split()]
        assert len(pids) == 1, nats.stdout
        os.kill(pids[0], signal.SIGKILL)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "alerts exited with -9: restarting in 0.5 s" in output
    assert "nats-server exited with -9: restarting it" in output
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["restarts"] == {"alerts": 1, "nats-server": 1} and s["exit_codes"]["alerts"] == [-9]
    assert s["ended"] == "duration" and s["error"] is None  # it carried on to the end
    # what the dead server held never reached the recorder: asked for again by number and stored
    assert s["md_sequence"]["ticks_missing_now"] == 0 and s["md_rows_lost"] == 0
    assert s["signals"]["feature_vectors"]["1m"] > 0
