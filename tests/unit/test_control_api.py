"""The control API in-process (FastAPI's TestClient) over a FleetView fed one of every event:
what each read shows, roles, rate limits, no CORS by default, field errors, and a property-based
run of every endpoint from its OpenAPI schema (schemathesis): no input makes a 5xx."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from libs.common import params
from libs.common.config import ApiToken, ControlSettings, Settings
from proto.control import CONFIG_RESPONDERS, RESPONDERS, Command, ConfigSection
from services.control.api import Answers, ParamsAnswer, SignalIn, build_api
from services.control.auth import TokenBook
from services.control.view import FleetView
from tests.kit.samples import sample_events

TOKENS = {"viewer": "tf_v", "operator": "tf_o", "admin": "tf_a"}


class StubFleet:
    """The Fleet the API needs, without a bus: every responder accepts at once."""

    def __init__(self) -> None:
        self.view = FleetView()
        for event in sample_events():
            self.view.on_event(event, event.ts_init)
        self.settings = Settings()
        self.sections = {s: params.current(self.settings, s) for s in ("risk", "qos", "exits")}
        self.sent: list[tuple[str, dict[str, str], str]] = []
        self.signals: list[SignalIn] = []

    def now_ns(self) -> int:
        return 1_381_240_800_000_000_000

    async def command(self, command: Command, args: dict[str, str], who: str) -> Answers:
        self.sent.append((command, args, who))
        acks = [{"service": s, "accepted": True, "summary": "done"} for s in RESPONDERS[command]]
        return Answers(command_id="c-1", ok=True, acks=acks, silent=[])

    def params(self, section: ConfigSection) -> dict[str, Any]:
        values = params.values_of(self.sections[section])
        return {"section": section, "values": values, "changed_by": "", "changed_at": None}

    async def change_params(self, section: ConfigSection, values: dict[str, Any], who: str) -> ParamsAnswer:
        before = self.sections[section]
        after = self.sections[section] = params.validate(section, before, values)
        acks = [{"service": s, "accepted": True, "summary": "applied"} for s in CONFIG_RESPONDERS[section]]
        return ParamsAnswer(
            command_id="p-1",
            ok=True,
            acks=acks,
            silent=[],
            section=section,
            values=params.values_of(after),
            changed=params.changes(before, after),
        )

    async def signal(self, body: SignalIn, who: str) -> str:
        self.signals.append(body)
        return f"{body.source}:{body.symbol}"

    def thresholds(self) -> tuple[dict[str, float], list[str]]:
        return {"entry_threshold": 0.35}, []

    def limits(self) -> Any:
        return self.sections["risk"]

    async def audit(self, since: dt.datetime, kinds: list[str], limit: int) -> list[dict[str, Any]]:
        return []

    async def watch_quotes(self, symbol: str) -> None:
        return None

    def subscribe(self) -> asyncio.Queue[str | None]:
        return asyncio.Queue()

    def unsubscribe(self, queue: asyncio.Queue[str | None]) -> None:
        return None


def app(**cfg: Any) -> tuple[TestClient, StubFleet]:
    tokens = [
        ApiToken(name=f"{role}-1", role=role, token_sha256=hashlib.sha256(t.encode()).hexdigest())  # type: ignore[arg-type]
        for role, t in TOKENS.items()
    ]
    settings = ControlSettings(tokens=tokens, **cfg)
    fleet = StubFleet()
    return TestClient(build_api(fleet, settings, TokenBook(tokens), None)), fleet


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def test_reads_show_the_fleet_as_its_events_said() -> None:
    client, _ = app()
    status = client.get("/api/status", headers=auth("viewer")).json()
    assert status["risk"]["mode"] and status["services"][0]["service"] == "md-gateway"
    assert set(status["limits"]) >= {"daily_loss", "gross_exposure", "open_orders"}
    news = client.get("/api/news", headers=auth("viewer")).json()["news"]
    assert news and news[0]["sentiment"]["label"] in ("positive", "negative", "neutral")
    orders = client.get("/api/orders", headers=auth("viewer")).json()
    assert orders["today"] and orders["today"][0]["client_order_id"]
    assert client.get("/api/positions", headers=auth("viewer")).json()["positions"]
    assert client.get("/api/models", headers=auth("viewer")).json()["models"][0]["horizon"]
    assert client.get("/api/book", headers=auth("viewer")).json()["symbols"]


def test_roles_decide_who_acts_and_who_changes_parameters() -> None:
    client, fleet = app()
    assert client.post("/api/kill", headers=auth("viewer"), json={}).status_code == 403
    ok = client.post("/api/kill", headers=auth("operator"), json={"flatten": True})
    assert ok.status_code == 200 and fleet.sent == [("kill", {"flatten": "true"}, "api:operator-1")]
    change = {"values": {"stop_atr": 3.0}}
    assert client.put("/api/params/exits", headers=auth("operator"), json=change).status_code == 403
    done = client.put("/api/params/exits", headers=auth("admin"), json=change)
    assert done.status_code == 200 and done.json()["changed"] == {"stop_atr": [2.0, 3.0]}
    wrong = client.put(
        "/api/params/qos", headers=auth("admin"), json={"values": {"entry_threshold": 7, "x": 1}}
    )
    assert wrong.status_code == 422
    assert {tuple(e["loc"]) for e in wrong.json()["detail"]} == {
        ("values", "x"),
        ("values", "entry_threshold"),
    }
    assert client.post("/api/mode", headers=auth("operator"), json={"mode": "EMERGENCY"}).status_code == 422
    assert client.get("/api/status").status_code == 401


def test_every_endpoint_is_rate_limited_per_token() -> None:
    client, _ = app(read_per_minute=3, act_per_minute=2)
    codes = [client.get("/api/pnl", headers=auth("viewer")).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert client.get("/api/pnl", headers=auth("operator")).status_code == 200  # its own budget
    acts = [client.post("/api/resume", headers=auth("operator")).status_code for _ in range(3)]
    assert acts == [200, 200, 429]
    # Guessing tokens is limited too (per address).
    guesses = [
        client.get("/api/pnl", headers={"Authorization": f"Bearer g{i}"}).status_code for i in range(40)
    ]
    assert guesses[0] == 401 and guesses[-1] == 429


def test_no_cross_origin_access_unless_configured() -> None:
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    client, _ = app()
    assert "access-control-allow-origin" not in client.options("/api/kill", headers=preflight).headers
    allowed, _ = app(cors_origins=["https://desk.example"])
    answer = allowed.options("/api/kill", headers={**preflight, "Origin": "https://desk.example"})
    assert answer.headers["access-control-allow-origin"] == "https://desk.example"


def test_an_outside_signal_is_typed_and_bounded() -> None:
    client, fleet = app()
    body = {"symbol": "IBM", "source": "desk", "signal": 0.4, "horizon": "15m"}
    assert client.post("/api/signal", headers=auth("operator"), json=body).status_code == 202
    assert fleet.signals[0].signal == 0.4
    assert (
        client.post("/api/signal", headers=auth("operator"), json={**body, "signal": 1.5}).status_code == 422
    )


# Limits out of the way: every generated call must reach its route.
SCHEMA = schemathesis.openapi.from_asgi(
    "/api/openapi.json", app(read_per_minute=10**6, act_per_minute=10**6)[0].app
)


@pytest.mark.filterwarnings("ignore")
@SCHEMA.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=auth("admin"), checks=[not_a_server_error])


def test_a_models_drift_is_read_from_its_quarantine_alert() -> None:
    from proto.alerts import Alert
    from tests.kit import stubs

    view = FleetView()
    view.on_event(stubs.prediction(horizon="15m", quarantined=True))
    ts = 1_381_240_800_000_000_000
    labels = {"horizon": "15m", "version": "m-test", "worst_feature": "vwap_dist_bps", "max_psi": "0.412"}
    drift = Alert(
        ts_event=ts, ts_init=ts, alert_id="d", severity="warning", source="fastlane", title="x", labels=labels
    )
    view.on_event(drift)
    (model,) = view.models_view()["models"]
    assert model["quarantined"] and model["max_psi"] == 0.412
    assert model["drift"] == {"worst_feature": "vwap_dist_bps", "max_psi": "0.412"}
