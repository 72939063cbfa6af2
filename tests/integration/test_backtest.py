"""The backtest on the shipped real day: deterministic, its report complete, its HTML rendering in
a real headless Chromium, and its input readable from the database the fleet records into."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from libs.common.config import load_settings
from tests.conftest import REPO, SAMPLE_LEAN, SHARED_DATA
from tests.kit import golden
from tradefleet.backtest.engine import Backtest, BacktestResult
from tradefleet.backtest.sources import find_days

DAY = "2013-10-08"
NEWS = REPO / "data" / "sample" / "news" / "20131008.jsonl"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
METRICS = {
    "total_return",
    "annualized_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "hit_rate",
    "expectancy",
    "profit_factor",
    "turnover",
    "avg_holding_min",
    "cost_bps",
    "alpha",
    "beta",
}


def _run(symbols: list[str], until: str | None = None) -> BacktestResult:
    days = find_days(str(SAMPLE_LEAN), symbols, DAY, DAY)
    settings = load_settings(None, md_gateway={"replay": {"until": until}})
    return asyncio.run(Backtest(settings, days, news=[NEWS]).run())


def test_two_runs_give_byte_identical_orders_and_fills() -> None:
    # Two mornings byte for byte (ids included); the whole day against the golden record, which a
    # run of the code before the issue-16 reshaping made: so every run of the day makes the same.
    first, second = _run(["IBM", "BAC"], "10:30"), _run(["IBM", "BAC"], "10:30")
    a = json.dumps(first.ledger.trading_record(), sort_keys=True)
    b = json.dumps(second.ledger.trading_record(), sort_keys=True)
    assert a == b and len(first.ledger.fills) >= 2
    first = _run(["IBM", "BAC"])
    record = first.ledger.trading_record()
    assert len(record["fills"]) >= 2 and len(record["orders"]) >= len(record["fills"])
    # every core took part: bars, predictions, scores, intents, the gate, the broker, TCA, news
    qos = first.statuses["qos"]
    assert qos["predictions_in"] == 4 * 780 and qos["intents"] == len(first.ledger.intents) >= 2
    assert first.ledger.approvals == len(first.ledger.intents) - sum(first.ledger.denials.values())
    assert len(first.ledger.tca) >= 1 and first.events["news"] == 10
    assert first.statuses["sentiment"]["stats"]["scored"] == 8 and qos["sentiment_in"] == 10
    assert first.records == 861_099 and first.ledger.minutes[-1].equity > 0
    # the same intents, orders and fills as before the issue-16 reshaping (commit 2e11967)
    ledger = first.ledger
    now = golden.trading(ledger.intents, ledger.orders, ledger.fills, dict(ledger.denials))
    assert now == golden.expected("day")
    # the account the ledger keeps agrees with the execution gateway's own books
    realized = first.statuses["execution"]["realized_pnl"]
    flat = not any(first.ledger.positions.values())
    assert flat and abs(first.ledger.cash - first.ledger.capital - realized) < 0.05


def test_the_cli_writes_the_report_and_it_renders_in_chromium(tmp_path: Path) -> None:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: `make test` installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (make test installs it)")
    report = tmp_path / "report"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tradefleet",
            "backtest",
            "--data",
            str(SAMPLE_LEAN),
            "--symbols",
            "IBM,BAC",
            "--start",
            DAY,
            "--end",
            DAY,
            "--report",
            str(report),
            "--no-progress",
            "--record",
            str(tmp_path / "rec.jsonl"),
        ],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((report / "report.json").read_text())
    assert set(data["metrics"]) == {"strategy", "buy_and_hold", "naive_momentum"}
    for row in data["metrics"].values():
        assert set(row) >= METRICS
    assert data["metrics"]["buy_and_hold"]["beta"] is not None  # SPY minute bars ship beside the ticks
    lines = [json.loads(x) for x in (tmp_path / "rec.jsonl").read_text().splitlines()]
    assert data["orders"]["fills"] == sum(1 for x in lines if x["kind"] == "fills") >= 2
    assert data["contribution_by_term"] and data["ticks"] == 861_099

    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((report / "report.html").as_uri())
        page.wait_for_function(
            "[...document.querySelectorAll('.plot')].every(p => p.querySelector('.main-svg'))", timeout=30_000
        )
        rendered = page.eval_on_selector_all(
            ".plot",
            "els => els.map(e => [e.dataset.plot, e.querySelectorAll('.main-svg .trace').length])",
        )
        page.screenshot(path=str(tmp_path / "report.png"), full_page=False)
        browser.close()
    assert not errors, errors
    names = [name for name, _ in rendered]
    assert names == [
        "equity",
        "drawdown",
        "returns",
        "price-IBM",
        "price-BAC",
        "slippage",
        "qos",
        "contribution",
    ]
    assert all(traces > 0 for _, traces in rendered), rendered


SHARED_LEAN = SHARED_DATA / "market" / "lean"


@pytest.mark.skipif(
    not (SHARED_LEAN / "equity/usa/tick/ibm/20131009_trade.zip").exists(),
    reason="needs the three recorded days in ../shared/data (not shipped with the project)",
)
def test_walk_forward_trains_on_each_window_and_tests_the_next(tmp_path: Path) -> None:
    from tradefleet.backtest import walkforward

    days = find_days(str(SHARED_LEAN), ["IBM"], "2013-10-07", "2013-10-09")
    out = walkforward.run(
        load_settings(), str(SHARED_LEAN), ["IBM"], days, tmp_path, 1, 1, [], "force", sentiment=False
    )
    assert [(f["train"], f["test"]) for f in out["folds"]] == [
        (["20131007"], ["20131008"]),
        (["20131008"], ["20131009"]),
    ]
    for fold in out["folds"]:
        trained = {h: v for h, v in fold["training"].items() if isinstance(v, dict) and v.get("version")}
        assert trained, fold["training"]
        test_day = f"{fold['test'][0][:4]}-{fold['test'][0][4:6]}-{fold['test'][0][6:]}"
        for horizon, model in trained.items():
            assert model["span"][1] < test_day  # nothing of the test window was trained on
            active = (
                (tmp_path / f"fold-{fold['fold']}" / "registry" / "fastlane" / horizon / "ACTIVE")
                .read_text()
                .strip()
            )
            assert active == model["version"]
        folder = tmp_path / f"fold-{fold['fold']}"
        assert json.loads((folder / "report.json").read_text())["days"] == fold["test"]
        assert (folder / "report.html").stat().st_size > 100_000
    assert set(out["overall"]) == {"strategy", "buy_and_hold", "naive_momentum"}
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["mode"] == "walk-forward" and len(saved["folds"]) == 2
    assert "fold-2/report.html" in (tmp_path / "report.html").read_text()


UNTIL = "11:00"


def test_a_backtest_from_what_the_fleet_recorded_matches_one_from_the_files(pg_dsn: str) -> None:
    """The recorder's rows (its own row builders and binary COPY writer) read back by the backtest
    give the same orders and fills as the LEAN files they came from (the first 90 minutes)."""
    import msgspec

    from libs.common.clock import SimClock
    from libs.common.config import DbSettings
    from libs.common.markettime import ny_time_ns
    from libs.common.storage.migrate import migrate
    from libs.common.storage.writer import BatchWriter
    from proto.market import Quote, Trade
    from services.md_gateway.core import MarketDataCore
    from services.md_gateway.providers.lean import LeanReplay
    from services.recorder.core import days_of, rows_of

    migrate(pg_dsn, DbSettings())
    provider = LeanReplay(SAMPLE_LEAN, "20131008", ["IBM", "BAC"], "none")
    md = MarketDataCore(SimClock(), 10.0, True, provider.session())
    # the morning the backtests below read (until 11:00), as the recorder would have stored it
    until = ny_time_ns("20131008", UNTIL)
    events = [
        e
        for e in map(md.on_record, provider.records())
        if isinstance(e, (Quote, Trade)) and e.ts_event < until
    ]
    # ts_init as the live gateway stamps it: when it made each event, in order
    events = [
        msgspec.structs.replace(e, ts_init=1_700_000_000_000_000_000 + i * 1000) for i, e in enumerate(events)
    ]
    quotes = [e for e in events if isinstance(e, Quote)]
    trades = [e for e in events if isinstance(e, Trade)]
    writer = BatchWriter(pg_dsn)
    writer.write(
        {"quotes": rows_of(quotes), "trades": rows_of(trades)},  # type: ignore[arg-type]
        {},
        "test",
        {"quotes": days_of(quotes), "trades": days_of(trades)},  # type: ignore[arg-type]
    )
    writer.close()

    settings = load_settings(None, md_gateway={"replay": {"until": UNTIL}})
    from_db = asyncio.run(Backtest(settings, find_days(pg_dsn, ["IBM", "BAC"], DAY, DAY), news=[NEWS]).run())
    days = find_days(str(SAMPLE_LEAN), ["IBM", "BAC"], DAY, DAY)
    from_files = asyncio.run(Backtest(settings, days, news=[NEWS]).run())
    assert from_db.events["quotes"] == from_files.events["quotes"] > 10_000
    record = from_files.ledger.trading_record()
    assert len(record["fills"]) >= 2
    assert from_db.ledger.trading_record() == record


def test_the_backtest_runs_with_the_policy_on_and_off_and_reports_both(tmp_path: Path) -> None:
    """`--policy both`: the same morning with QOS sizing by its rules and with the shipped RL
    policy sizing and timing its entries; report.json holds both rows, and the policy's facts."""
    from models.policy import registry

    active = registry.active_version(REPO / "models" / "registry")
    assert active is not None, "the shipped registry has an active policy"
    config = tmp_path / "config.yaml"
    config.write_text('md_gateway:\n  replay:\n    until: "12:30"\n')
    report = tmp_path / "report"
    args = [
        sys.executable,
        "-m",
        "tradefleet",
        "backtest",
        "--config",
        str(config),
        "--data",
        str(SAMPLE_LEAN),
    ]
    args += [
        "--symbols",
        "IBM,BAC",
        "--start",
        DAY,
        "--report",
        str(report),
        "--no-progress",
        "--no-sentiment",
    ]
    proc = subprocess.run(
        [*args, "--policy", "both"], check=False, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((report / "report.json").read_text())
    assert set(data["metrics"]) == {"strategy", "rules_sizing", "buy_and_hold", "naive_momentum"}
    facts = data["policy"]
    assert facts["on"] and facts["compared_with_rules"] and facts["version"] == active
    qos = facts["qos"]
    assert qos["proposals"] > 0 and qos["policy_silent"] == 0  # every proposal answered, in lockstep
    assert qos["entries_by_policy"] + qos["entries_deferred_by_policy"] <= qos["proposals"]
    assert facts["inference_us"]["p99"] > 0 and facts["rules_orders"]["intents"] > 0
    assert "rules sizing" in (report / "report.html").read_text()

    # the policy asked for where none is active: a clear refusal, not a silent rules-only run
    (tmp_path / "empty").mkdir()
    config.write_text(f"policy:\n  registry: {tmp_path / 'empty'}\n")
    refused = subprocess.run(
        [*args, "--policy", "on"], check=False, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2 and "no active policy" in refused.stderr
