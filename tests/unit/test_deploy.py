"""Deployment files parse and name every service this build can run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from proto.subjects import SERVICE_NAMES, SERVICES
from tradefleet.services import RUNNABLE

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())


def test_compose_parses_and_runs_every_runnable_catalog_service() -> None:
    services = _compose()["services"]
    fleet = {name for name, svc in services.items() if svc.get("command", [None])[0] == "service"}
    assert fleet == set(RUNNABLE)
    for name in fleet:
        assert name in SERVICE_NAMES
        assert services[name]["command"] == ["service", name]
        assert services[name]["environment"]["TRADEFLEET_NATS_URL"] == "nats://nats:4222"
    assert "-js" in services["nats"]["command"]
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb")
    assert {"redis", "prometheus", "grafana", "migrate"} <= set(services)


def test_catalog_services_not_in_compose_are_the_ones_later_issues_build() -> None:
    services = _compose()["services"]
    missing = [s for s in SERVICES if s.name not in services]
    assert all(s.since_issue > 3 for s in missing), missing


def test_sharded_services_take_their_partition_from_the_pod_ordinal() -> None:
    for name in ("features", "fastlane", "qos"):
        doc = next(d for d in yaml.safe_load_all((DEPLOY / "k8s" / f"{name}.yaml").read_text()) if d)
        assert doc["kind"] == "StatefulSet"
        env = {e["name"]: e for e in doc["spec"]["template"]["spec"]["containers"][0]["env"]}
        ref = env["TRADEFLEET_PARTITION__OWNED"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert "pod-index" in ref and env["TRADEFLEET_PARTITION__COUNT"]["value"] == str(
            doc["spec"]["replicas"]
        )


def test_prometheus_scrapes_every_fleet_service() -> None:
    prom = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    names = prom["scrape_configs"][0]["dns_sd_configs"][0]["names"]
    assert set(names) == set(RUNNABLE)


def test_kustomization_lists_a_deployment_per_runnable_service() -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    deployments = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((DEPLOY / "k8s" / resource).read_text()):
            if doc and doc["kind"] in ("Deployment", "StatefulSet"):
                args = doc["spec"]["template"]["spec"]["containers"][0].get("args", [])
                if args[:1] == ["service"]:  # fleet services (not NATS itself)
                    deployments[doc["metadata"]["name"]] = doc
    assert set(deployments) == set(RUNNABLE)
    for name, doc in deployments.items():
        container = doc["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["service", name]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


JSON_ENDPOINTS = ("/varz", "/connz", "/jsz", "/healthz", "/readyz", "/status")
NATS_MONITOR_PORT = ":8222"  # NATS's monitoring port: JSON, not Prometheus text


def test_every_scrape_job_reads_prometheus_text_not_json() -> None:
    prom = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    compose = _compose()["services"]
    for job in prom["scrape_configs"]:
        path = job.get("metrics_path", "/metrics")
        assert path == "/metrics" and not path.startswith(JSON_ENDPOINTS), job
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                assert not target.endswith(NATS_MONITOR_PORT), job
                assert target.split(":")[0] in compose, target  # a service compose runs
    nats = next(j for j in prom["scrape_configs"] if j["job_name"] == "nats")
    assert nats["static_configs"][0]["targets"] == ["nats-exporter:7777"]
    exporter = compose["nats-exporter"]
    assert exporter["image"].startswith("natsio/prometheus-nats-exporter")
    assert exporter["command"][-1] == "http://nats:8222"


def test_the_k8s_nats_pod_is_scraped_through_its_exporter_sidecar() -> None:
    doc = next(d for d in yaml.safe_load_all((DEPLOY / "k8s" / "nats.yaml").read_text()) if d)
    template = doc["spec"]["template"]
    notes = template["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/port"] == "7777"
    sidecar = next(c for c in template["spec"]["containers"] if c["name"] == "nats-exporter")
    assert sidecar["image"].startswith("natsio/prometheus-nats-exporter")
    assert {p["containerPort"] for p in sidecar["ports"]} == {7777}
    assert sidecar["args"][-1] == "http://localhost:8222"  # the same pod's monitor port


def _registered_metric_names() -> set[str]:
    """Every tf_* name the code registers (runtime metrics and each service's KPIs), as a base
    name: what Prometheus exposes adds _total, _bucket, _sum or _count to some of them."""
    root = DEPLOY.parent
    names: set[str] = set()
    for source in [*(root / "libs").rglob("*.py"), *(root / "services").rglob("*.py")]:
        names |= {_base(n) for n in re.findall(r"\"(tf_[a-z0-9_]+)\"", source.read_text())}
    return names


def _base(name: str) -> str:
    for suffix in ("_total", "_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_every_dashboard_parses_and_queries_only_metrics_the_code_registers() -> None:
    registered = _registered_metric_names()
    assert {"tf_events_received", "tf_risk_mode", "tf_heartbeat_age_seconds"} <= registered
    dashboards = sorted((DEPLOY / "compose" / "grafana" / "dashboards").glob("*.json"))
    assert {d.name for d in dashboards} >= {"tradefleet.json", "trading.json"}
    uids = set()
    for path in dashboards:
        board = json.loads(path.read_text())
        uids.add(board["uid"])
        exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
        assert exprs, path.name
        for expr in exprs:
            used = re.findall(r"\b(tf_[a-z0-9_]+)", expr)
            assert used, (path.name, expr)
            unknown = {n for n in used if _base(n) not in registered}
            assert not unknown, (path.name, expr, unknown)
    assert len(uids) == len(dashboards)  # Grafana provisions one dashboard per uid
