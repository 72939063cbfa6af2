"""Trading KPIs on /metrics: a runtime exposes its app's ``kpis()`` at scrape time, and each
service's KPIs read its real state (small core states driven by stub events)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from libs.common.bus import InProcessBus
from libs.common.clock import SimClock
from libs.common.config import ExecutionSettings, Settings
from libs.common.metrics import Kpi
from libs.common.runtime import Runtime, ServiceApp
from models.fastlane.drift import DriftMonitor, DriftReport
from models.fastlane.serving import ServedModel
from proto.alerts import Alert
from proto.control import Heartbeat
from proto.execution import OrderEvent
from proto.orders import OrderApproved, OrderDenied
from services.alerts.runtime import AlertsApp
from services.execution.broker import BrokerReport
from services.execution.runtime import ExecutionApp
from services.fastlane.core import FastlaneCore
from services.fastlane.runtime import FastlaneApp
from services.risk.runtime import RiskApp
from services.tca.runtime import TcaApp
from tests.kit import stubs
from tests.kit.clocks import MS, T0, S


def samples(rt: Runtime) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """What a Prometheus scrape of ``rt`` would read: (sample name, labels) -> value."""
    text = generate_latest(rt.metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def by_name(kpis: list[Kpi]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(k.name, frozenset(k.labels.items())): k.value for k in kpis}


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def runtime(app: ServiceApp, service: str) -> Runtime:
    """A runtime bound to ``app`` as run() binds it (no bus traffic: the KPIs are read only)."""
    rt = Runtime(service, Settings(), bus=InProcessBus())
    rt.app = app
    app.rt = rt  # type: ignore[attr-defined]
    return rt


class _Fake(ServiceApp):
    name = "fake"

    def __init__(self) -> None:
        super().__init__()
        self.pnl = 12.5
        self.broken = False

    async def start(self, rt: Runtime) -> None:
        pass

    def kpis(self) -> list[Kpi]:
        if self.broken:
            raise RuntimeError("state half built")
        return [
            Kpi("tf_pnl_realized_usd", "P&L", self.pnl),
            Kpi("tf_position_shares", "pos", 100, {"symbol": "IBM"}),
            Kpi("tf_position_shares", "pos", -5, {"symbol": "MSFT"}),
            Kpi("tf_fills_total", "fills", 3, kind="counter"),
        ]


def test_a_runtime_exposes_its_apps_kpis_at_scrape_time_labelled_with_the_service() -> None:
    app = _Fake()
    rt = runtime(app, "fake")
    got = samples(rt)
    assert got[key("tf_pnl_realized_usd", service="fake")] == 12.5
    assert got[key("tf_position_shares", service="fake", symbol="IBM")] == 100
    assert got[key("tf_position_shares", service="fake", symbol="MSFT")] == -5
    assert got[key("tf_fills_total", service="fake")] == 3  # a counter: exposed as _total
    app.pnl = -3.0  # read at each scrape, never cached
    assert samples(rt)[key("tf_pnl_realized_usd", service="fake")] == -3.0
    app.broken = True  # a failing kpis() costs the KPIs, never the bus metrics
    rt.metrics.on_published("md.quote.>", 2)
    got = samples(rt)
    assert key("tf_pnl_realized_usd", service="fake") not in got
    assert got[key("tf_events_published_total", service="fake", subject="md.quote.>")] == 2


def test_a_runtime_without_an_app_or_kpis_exposes_none() -> None:
    rt = Runtime("bare", Settings(), bus=InProcessBus())
    assert not any(name.startswith("tf_pnl") for name, _ in samples(rt))


def test_risk_kpis_mode_pnl_positions_limit_usage_and_denials() -> None:
    app = RiskApp(Settings())
    rt = runtime(app, "risk")
    core = app.core
    core.clock = SimClock(T0)
    core.on_quote(stubs.quote(ts=T0, bid=100.00, ask=100.02))
    decision = core.on_intent(stubs.intent(quantity=100, ts=T0))
    assert isinstance(decision, OrderApproved)
    rt.emitted["OrderApproved"] += 1  # as the runtime counts what it emits
    core.on_event(stubs.fill(quantity=100, price=100.01, client_order_id=decision.client_order_id))
    core.on_quote(stubs.quote(ts=T0 + S, bid=100.50, ask=100.52))
    denied = core.on_intent(stubs.intent(symbol="MSFT", ts=T0 + S))
    assert isinstance(denied, OrderDenied) and denied.code == "PRICE_NO_QUOTE"

    got = by_name(app.kpis())
    assert got[key("tf_risk_mode", mode="LIVE")] == 1
    assert got[key("tf_risk_mode", mode="EMERGENCY")] == 0
    assert got[key("tf_position_shares", symbol="IBM")] == 100
    assert got[key("tf_pnl_unrealized_usd")] == pytest.approx(50.0)  # (100.51 - 100.01) * 100
    assert got[key("tf_pnl_realized_usd")] == pytest.approx(core.books.realized)
    assert got[key("tf_denials_total", code="PRICE_NO_QUOTE")] == 1
    assert got[key("tf_approvals_total")] == 1
    lim = core.limits
    assert got[key("tf_limit_usage_ratio", limit="gross_exposure")] == pytest.approx(
        core.books.gross / lim.max_gross_exposure
    )
    # open until its terminal order event, which this script does not send
    assert got[key("tf_limit_usage_ratio", limit="open_orders")] == 1 / lim.max_open_orders
    assert got[key("tf_limit_usage_ratio", limit="daily_loss")] == 0  # a gain uses none of it
    # on /metrics too, the denials as a counter
    assert samples(rt)[key("tf_denials_total", service="risk", code="PRICE_NO_QUOTE")] == 1


def test_execution_kpis_fills_orders_positions_and_pnl(tmp_path: Path) -> None:
    settings = Settings(
        execution=ExecutionSettings(journal=tmp_path / "journal.msgpack"),
        signing={"approval_key": stubs.TEST_APPROVAL_KEY},
    )
    app = ExecutionApp(settings)
    rt = runtime(app, "execution")
    core = app.core
    core.clock = SimClock(T0)
    core.on_quote(stubs.quote(ts=T0, bid=99.99, ask=100.01))
    out = core.on_approved(stubs.approved("c1", quantity=100, ts=T0))
    assert out.actions  # journaled and sent
    for report in (
        BrokerReport("ack", "c1", T0 + MS, T0 + MS),
        BrokerReport("fill", "c1", T0 + 2 * MS, T0 + 2 * MS, quantity=100, price=100.01, exec_id="x1"),
    ):
        for e in core.on_report(report).events:
            rt.emitted[type(e).__name__] += 1
    got = by_name(app.kpis())
    assert got[key("tf_fills_total")] == 1
    assert got[key("tf_position_shares", symbol="IBM")] == 100
    assert got[key("tf_orders_open")] == 0
    assert got[key("tf_kill_switch")] == 0
    assert got[key("tf_approvals_untrusted_total")] == 0
    assert got[key("tf_orders_sent_total")] == 1
    assert got[key("tf_pnl_realized_usd")] == pytest.approx(sum(p.realized for p in core.positions.values()))
    app.journal.close()


class _Scorer:
    """Never called: the KPIs read the model's state, not its scores."""


def _model(horizon: str) -> ServedModel:
    return ServedModel(
        horizon=horizon,
        version="v1",
        feature_set="fs",
        scorer=_Scorer(),  # type: ignore[arg-type]
        signal_center=0.5,
        signal_scale=0.1,
        drift=DriftMonitor({"features": [], "score_quantiles": []}),
        engine="onnx",
    )


def test_fastlane_kpis_quarantine_and_drift_per_horizon() -> None:
    app = FastlaneApp(Settings())
    app.core = core = FastlaneCore(SimClock(T0), ["5m", "15m"])
    for horizon in ("5m", "15m"):
        core.install(_model(horizon))
    core.models["5m"].quarantined = True
    core.models["5m"].drift.last = DriftReport(
        max_psi=0.41, worst_feature="spread_bps", ks=0.12, samples=500, drifted=True
    )
    got = by_name(app.kpis())
    assert got[key("tf_model_quarantined", horizon="5m")] == 1
    assert got[key("tf_model_quarantined", horizon="15m")] == 0
    assert got[key("tf_model_drift_psi", horizon="5m")] == 0.41
    assert key("tf_model_drift_psi", horizon="15m") not in got  # no check yet: no number
    assert got[key("tf_predictions_total")] == 0


def test_tca_kpis_are_the_quantity_weighted_means_of_the_filled_reports() -> None:
    app = TcaApp(Settings())
    core = app.core
    core.clock = SimClock(T0)
    core.on_quote(stubs.quote(ts=T0, bid=99.98, ask=100.02))  # arrival mid 100.00
    core.on_intent(stubs.intent(intent_id="i1", quantity=100, ts=T0))
    core.on_approved(stubs.approved("c1", intent_id="i1", quantity=100, ts=T0))
    ev: dict[str, Any] = {"client_order_id": "c1", "symbol": "IBM", "side": "BUY", "quantity": 100.0}
    core.on_order_event(OrderEvent(ts_event=T0, ts_init=T0, status="SUBMITTED", seq=1, **ev))
    core.on_fill(stubs.fill(quantity=100, price=100.03, client_order_id="c1", ts=T0 + S, commission=1.0))
    core.on_order_event(
        OrderEvent(ts_event=T0 + S, ts_init=T0 + S, status="FILLED", seq=2, filled_quantity=100, **ev)
    )
    app.reports += core.on_quote(stubs.quote(ts=T0 + 10 * S))  # past realized_after_s: reported
    assert len(app.reports) == 1
    got = by_name(app.kpis())
    assert got[key("tf_tca_reports_total")] == 1
    assert got[key("tf_tca_shortfall_bps")] == pytest.approx(3.0, abs=1e-3)  # 100.03 vs 100.00
    assert got[key("tf_tca_commission_usd")] == pytest.approx(1.0)


class _Sink:
    def __init__(self, name: str) -> None:
        self.name = name
        self.enabled = True


def test_alerts_kpis_produced_delivered_failed_and_heartbeat_age() -> None:
    app = AlertsApp(Settings(), sinks=[_Sink("telegram"), _Sink("email")])  # type: ignore[list-item]
    clock = SimClock(T0)
    app.core.clock = app.absence.clock = clock
    alert = Alert(
        ts_event=T0,
        ts_init=T0,
        alert_id="a1",
        severity="critical",
        source="risk",
        title="risk mode LIVE -> EMERGENCY",
        dedupe="risk-mode:EMERGENCY",
    )
    app.core.take(alert, alert.alert_id)
    app.delivered["telegram"] += 1
    app.failed["email"] += 1
    hb = Heartbeat(ts_event=T0, ts_init=T0, service="risk", instance=1, seq=1)
    app.absence.on_heartbeat(hb)
    clock.set(T0 + 7 * S)
    got = by_name(app.kpis())
    assert got[key("tf_alerts_produced_total", source="risk", severity="critical")] == 1
    assert got[key("tf_alerts_delivered_total", sink="telegram")] == 1
    assert got[key("tf_alerts_delivered_total", sink="email")] == 0
    assert got[key("tf_alerts_failed_total", sink="email")] == 1
    assert got[key("tf_heartbeat_age_seconds", watched="risk")] == pytest.approx(7.0)
    assert got[key("tf_service_absent", watched="risk")] == 0
