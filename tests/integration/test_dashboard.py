"""The dashboard in Debian's Chromium (Playwright) against a fleet replaying the sample day: a
token login, positions and P&L that update, a headline coloured by its sentiment, and Kill with
its confirmation putting risk in EMERGENCY (read back through /api/status) and execution refusing
the next approval. Each panel is saved as a screenshot (var/test-artifacts/dashboard/)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from libs.common.config import NatsSettings
from libs.common.nats_bus import NatsBus
from proto.execution import OrderEvent
from tests.helpers import REPO, service_env, wait_until
from tests.integration.test_backtest import CHROMIUM
from tests.kit import stubs

TOKEN = "tf_dashboard_admin"
ARTIFACTS = REPO / "var" / "test-artifacts" / "dashboard"
PANELS = (
    "positions",
    "pnl",
    "orders",
    "qos",
    "risk",
    "models",
    "news",
    "alerts",
    "book",
    "controls",
    "params",
)


def _status(url: str) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}api/status", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return dict(json.loads(answer.read()))


async def _refused_after_the_kill(nats_url: str, risk_seed: Path) -> OrderEvent:
    """A well-formed approval straight onto the bus, with the risk gate's identity (the only one
    that may publish approvals on the fleet's secured NATS): a killed execution gateway refuses it."""
    bus = NatsBus(NatsSettings(url=nats_url, nkey_seed_file=risk_seed), "test-approver")
    seen: list[OrderEvent] = []

    async def hear(d: Any) -> None:
        if isinstance(d.event, OrderEvent) and d.event.client_order_id == "after-kill-1":
            seen.append(d.event)

    await bus.connect()
    try:
        await bus.subscribe("exec.order.>", hear)
        await bus.barrier()
        approval = stubs.approved("after-kill-1", quantity=1, ts=time.time_ns(), valid_ms=5000)
        await bus.publish("order.approved.IBM", approval)
        await bus.flush()
        for _ in range(100):
            if seen:
                return seen[-1]
            await asyncio.sleep(0.1)
        raise AssertionError("execution said nothing of the approval")
    finally:
        await bus.close()


def test_the_dashboard_shows_the_day_and_its_kill_switch_stops_the_fleet(tmp_path: Path) -> None:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: `make test` installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (make test installs it)")
    if not (REPO / "web" / "dist" / "index.html").exists():
        pytest.fail("the dashboard is not built: `make test` builds it (make web)")
    token_entry = {
        "name": "desk",
        "role": "admin",
        "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
    }
    news = REPO / "data/sample/news/20131008.jsonl"
    config = tmp_path / "fleet.yaml"
    config.write_text(
        f"md_gateway:\n  replay: {{root: {REPO / 'data/sample/lean'}, news: [{news}]}}\n"
        f"control:\n  tokens: [{json.dumps(token_entry)}]\n  web_dir: {REPO / 'web' / 'dist'}\n"
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "tradefleet", "up", "--config", str(config), "--no-live", "--speed", "60"],
        cwd=tmp_path,
        env={**service_env(), "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    state_file = tmp_path / "var" / "fleet.json"
    try:
        wait_until(lambda: state_file.exists() or up.poll() is not None, 180, what="fleet up")
        assert up.poll() is None, up.communicate()[0][-3000:]
        state = json.loads(state_file.read_text())
        url = state["control_url"]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        from playwright.sync_api import expect, sync_playwright

        errors: list[str] = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
            )
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.get_by_test_id("token").fill(TOKEN)
            page.get_by_test_id("login").click()
            expect(page.get_by_test_id("panel-positions")).to_be_visible(timeout=20_000)
            # The 09:41 IBM headline, coloured once its sentiment is scored.
            item = "[data-testid=news-item][data-sentiment={}]"
            scored = page.locator(f"{item.format('positive')}, {item.format('negative')}")
            expect(scored.first).to_be_visible(timeout=90_000)
            assert scored.first.evaluate("e => getComputedStyle(e).color") != "rgb(0, 0, 0)"
            # The day's first entries fill at 09:58 (28 s at 60x): a position and a moving P&L.
            expect(page.get_by_test_id("position-row").first).to_be_visible(timeout=120_000)
            pnl = page.get_by_test_id("pnl-total")
            first = pnl.inner_text()
            wait_until(lambda: pnl.inner_text() != first, 60, what="the P&L to move")
            for panel in PANELS:
                page.get_by_test_id(f"panel-{panel}").screenshot(path=str(ARTIFACTS / f"{panel}.png"))
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            # Kill, confirmed: the gate in EMERGENCY, as the API and the page say.
            page.get_by_test_id("kill").click()
            page.get_by_test_id("kill-confirm").click()
            wait_until(lambda: _status(url)["risk"]["mode"] == "EMERGENCY", 20, what="EMERGENCY")
            expect(page.get_by_test_id("risk-mode")).to_have_text("EMERGENCY", timeout=20_000)
            page.get_by_test_id("panel-risk").screenshot(path=str(ARTIFACTS / "risk-after-kill.png"))
            browser.close()
        assert not errors, errors
        risk_seed = Path(state["nats_auth"]) / "risk.nk"
        refused = asyncio.run(_refused_after_the_kill(state["nats_url"], risk_seed))
        assert refused.status == "REJECTED" and "kill switch engaged" in refused.reason
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                up.kill()
