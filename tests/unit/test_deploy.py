"""Deployment files parse and name every service this build can run."""

from __future__ import annotations

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
