"""Deployment files: the compose file and the Kubernetes overlays run every service this build
can run, and what they hand a cluster or a Docker engine is what those accept.

The overlays are rendered with `kubectl kustomize` (kustomize built into kubectl) and every
object is validated against the Kubernetes 1.30 schemas in strict mode (kubernetes-validate,
which bundles them: an unknown field fails). The compose file is validated against the compose
spec's JSON schema (tests/fixtures/compose-spec, vendored with its licence). The NATS configs
are checked by the nats-server the fleet runs (`nats-server -t`).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from proto.subjects import SERVICE_NAMES, SERVICES
from tradefleet.services import RUNNABLE

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("cloud", "onprem", "cloud-grouped")
KUBERNETES_VERSION = "1.30"

# The hybrid split: beside TWS / IB Gateway on-prem, everything else in the cloud.
EDGE = {"md-gateway", "risk", "execution"}
PARTITIONED = {"features", "fastlane", "policy", "qos"}
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


# --- rendering --------------------------------------------------------------------------------


def _kustomize_command() -> list[str]:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    # These machines carry kubectl (google-cloud-sdk); one without it says so and skips rather
    # than fail a build over a missing tool (nothing installs it from the package registries).
    pytest.skip("neither kubectl nor kustomize is installed: the overlays cannot be rendered")


def _build(path: Path) -> list[dict[str, Any]]:
    command = [*_kustomize_command(), str(path)]
    out = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@functools.cache
def _rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(_build(K8S / "overlays" / overlay))


def _render(overlay: str) -> list[dict[str, Any]]:
    return [json.loads(json.dumps(d)) for d in _rendered(overlay)]  # a copy each caller may edit


def _of(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def _pod_template(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]
    return doc["spec"]["template"]


def _containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def _workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in WORKLOADS]


def _fleet(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The workloads that run `tradefleet service NAME`, by NAME."""
    fleet = {}
    for doc in _workloads(docs):
        args = _pod_template(doc)["spec"]["containers"][0].get("args", [])
        if args[:1] == ["service"]:
            fleet[args[1]] = doc
    return fleet


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


# --- compose ----------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())


def _compose_fleet() -> dict[str, list[str]]:
    """Catalog service -> the compose services that run it (one per partition when sharded)."""
    fleet: dict[str, list[str]] = {}
    for name, svc in _compose()["services"].items():
        command = svc.get("command", [None])
        if command[0] == "service":
            fleet.setdefault(command[1], []).append(name)
    return fleet


def test_compose_parses_and_runs_every_runnable_catalog_service() -> None:
    services = _compose()["services"]
    fleet = _compose_fleet()
    assert set(fleet) == set(RUNNABLE)
    for name, replicas in fleet.items():
        assert name in SERVICE_NAMES
        for replica in replicas:
            svc = services[replica]
            assert svc["command"] == ["service", name]
            assert svc["environment"]["TRADEFLEET_NATS_URL"] == "nats://nats:4222"
        if name not in PARTITIONED:
            assert replicas == [name]
    assert services["nats"]["command"] == ["--config", "/etc/nats/nats.conf"]
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb")
    assert {"redis", "prometheus", "grafana", "migrate"} <= set(services)


def test_catalog_services_not_in_compose_are_the_ones_later_issues_build() -> None:
    fleet = _compose_fleet()
    missing = [s for s in SERVICES if s.name not in fleet]
    assert all(s.since_issue > 3 for s in missing), missing


def _compose_schema() -> dict[str, Any]:
    return json.loads((ROOT / "tests" / "fixtures" / "compose-spec" / "compose-spec.json").read_text())


def test_compose_validates_against_the_compose_spec() -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(_compose_schema(), format_checker=jsonschema.FormatChecker())
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(_compose())]
    assert not errors, errors
    # The schema is strict enough to catch a misspelt key.
    broken = _compose()
    broken["services"]["nats"]["helthcheck"] = broken["services"]["nats"].pop("healthcheck")
    assert list(validator.iter_errors(broken))


def test_compose_runs_one_replica_per_partition() -> None:
    services = _compose()["services"]
    for name, replicas in _compose_fleet().items():
        if name not in PARTITIONED:
            continue
        assert replicas == [f"{name}-{i}" for i in range(len(replicas))], replicas
        for i, replica in enumerate(replicas):
            env = services[replica]["environment"]
            assert env["TRADEFLEET_PARTITION__COUNT"] == str(len(replicas)), replica
            assert env["TRADEFLEET_PARTITION__OWNED"] == str(i), replica
            # Every replica answers to the service's name (Prometheus's dns_sd finds them all).
            assert name in services[replica]["networks"]["default"]["aliases"]


def test_compose_images_are_pinned() -> None:
    for name, svc in _compose()["services"].items():
        image = svc["image"]
        assert re.fullmatch(r"[a-z0-9./_-]+:[A-Za-z0-9._-]+", image), (name, image)
        assert "latest" not in image.rsplit(":", 1)[1], (name, image)
        if svc.get("build"):  # this release's images, tagged with its version
            assert image.rsplit(":", 1)[1] == _version(), (name, image)


def test_compose_nats_runs_the_generated_config_with_a_healthcheck() -> None:
    compose = _compose()
    services = compose["services"]
    nats = services["nats"]
    assert nats["configs"] == [{"source": "nats-site", "target": "/etc/nats/nats.conf"}]
    site = compose["configs"]["nats-site"]["content"]
    assert site.splitlines()[0] == "include ./nats-server.conf"
    assert "./nats/nats-server.conf:/etc/nats/nats-server.conf:ro" in nats["volumes"]
    assert "/healthz" in " ".join(nats["healthcheck"]["test"])
    for name, replicas in _compose_fleet().items():
        for replica in replicas:
            svc = services[replica]
            assert svc["depends_on"]["nats"] == {"condition": "service_healthy"}, replica
            seed = svc["environment"]["TRADEFLEET_NATS__NKEY_SEED_FILE"]
            assert seed == f"/run/secrets/nats/{name}.nk", replica
            assert "nats-seeds:/run/secrets/nats:ro" in svc["volumes"], replica


def test_compose_volumes_the_services_write_are_the_service_users() -> None:
    """The image runs as uid 10001; a named volume starts root-owned. The init service, which
    every fleet service waits for, chowns each volume a service writes."""
    services = _compose()["services"]
    init = services["init"]
    script = init["command"][-1]
    chowned = set(re.findall(r"chown 10001:10001 ([^\n]+)", script)[0].split())
    mounted = dict(v.split(":")[:2] for v in init["volumes"])
    for replicas in _compose_fleet().values():
        for replica in replicas:
            svc = services[replica]
            assert svc["depends_on"]["init"] == {"condition": "service_completed_successfully"}
            for volume in svc.get("volumes", []):
                source, target, *mode = volume.split(":")
                if mode == ["ro"] or source.startswith("."):
                    continue
                assert mounted.get(source) == target and target in chowned, (replica, volume)


def test_compose_nats_config_passes_the_nats_servers_check(tmp_path: Path) -> None:
    site = _compose()["configs"]["nats-site"]["content"].replace("/data", str(tmp_path / "data"))
    (tmp_path / "nats.conf").write_text(site)
    _generate_nats_users(tmp_path)
    _nats_check(tmp_path / "nats.conf", {})


def test_compose_makes_the_streams_as_admin_before_the_fleet_starts() -> None:
    services = _compose()["services"]
    provision = services["nats-provision"]
    assert provision["command"] == ["nats", "provision", "--seed-file", "/run/secrets/nats/admin.nk"]
    assert provision["depends_on"]["nats"] == {"condition": "service_healthy"}
    for replicas in _compose_fleet().values():
        for replica in replicas:
            assert services[replica]["depends_on"]["nats-provision"] == {
                "condition": "service_completed_successfully"
            }


def test_prometheus_scrapes_every_fleet_service() -> None:
    prom = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    names = prom["scrape_configs"][0]["dns_sd_configs"][0]["names"]
    assert set(names) == set(RUNNABLE)
    services = _compose()["services"]
    aliases = {
        a for svc in services.values() for a in svc.get("networks", {}).get("default", {}).get("aliases", [])
    }
    assert set(names) <= set(services) | aliases  # each name resolves on the compose network


JSON_ENDPOINTS = ("/varz", "/connz", "/jsz", "/healthz", "/readyz", "/status")
NATS_MONITOR_PORT = ":8222"  # NATS's monitoring port: JSON, not Prometheus text


def test_every_scrape_job_reads_prometheus_text_not_json() -> None:
    for prom_file in (
        DEPLOY / "compose" / "prometheus.yml",
        K8S / "base" / "observability" / "prometheus.yml",
    ):
        prom = yaml.safe_load(prom_file.read_text())
        for job in prom["scrape_configs"]:
            path = job.get("metrics_path", "/metrics")
            assert path == "/metrics" and not path.startswith(JSON_ENDPOINTS), job
    prom = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    compose = _compose()["services"]
    for job in prom["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                assert not target.endswith(NATS_MONITOR_PORT), job
                assert target.split(":")[0] in compose, target  # a service compose runs
    nats = next(j for j in prom["scrape_configs"] if j["job_name"] == "nats")
    assert nats["static_configs"][0]["targets"] == ["nats-exporter:7777"]
    exporter = compose["nats-exporter"]
    assert exporter["image"].startswith("natsio/prometheus-nats-exporter")
    assert exporter["command"][-1] == "http://nats:8222"


# --- Kubernetes -------------------------------------------------------------------------------


def test_the_overlays_run_every_runnable_service_once() -> None:
    cloud, onprem = _fleet(_render("cloud")), _fleet(_render("onprem"))
    assert set(onprem) == EDGE
    assert set(cloud) == set(RUNNABLE) - EDGE
    for name, doc in {**cloud, **onprem}.items():
        container = _pod_template(doc)["spec"]["containers"][0]
        assert container["args"] == ["service", name]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert doc["kind"] == (
            "StatefulSet" if name in PARTITIONED | {"execution", "recorder"} else "Deployment"
        )


def test_the_grouped_overlay_runs_the_spine_as_one_process_per_partition() -> None:
    """fleet.groups on Kubernetes: features, fastlane and qos of a partition in one pod."""
    cloud, grouped = _fleet(_render("cloud")), _render("cloud-grouped")
    workloads = {d["metadata"]["name"]: d for d in _workloads(grouped)}
    assert "fastlane" not in workloads and "qos" not in workloads
    assert not _of(grouped, "Service", "qos") and not _of(grouped, "PodDisruptionBudget", "fastlane")
    spine = workloads["features"]
    container = _pod_template(spine)["spec"]["containers"][0]
    assert container["args"] == ["service", "features+fastlane+qos"]
    env = _env(container)
    assert env["TRADEFLEET_FLEET__GROUPS"]["value"] == '["features+fastlane+qos"]'
    assert env["TRADEFLEET_PARTITION__COUNT"]["value"] == str(spine["spec"]["replicas"])
    assert [p["containerPort"] for p in container["ports"]] == [9100, 9101, 9102]
    seed = next(v for v in _pod_template(spine)["spec"]["volumes"] if v["name"] == "nats-seed")
    assert seed["secret"]["secretName"] == "tradefleet-nats-features-fastlane-qos"
    # every other service of the cloud site runs as before
    assert set(_fleet(grouped)) == set(cloud) - {"features", "fastlane", "qos"} | {"features+fastlane+qos"}


def test_the_grouped_compose_runs_the_spine_as_one_process_per_partition() -> None:
    import jsonschema

    override = yaml.safe_load((DEPLOY / "compose" / "grouped.yml").read_text())
    validator = jsonschema.Draft202012Validator(_compose_schema())
    assert not [e.message for e in validator.iter_errors(override)]
    services = override["services"]
    separate = [f"{s}-{i}" for s in ("features", "fastlane", "qos") for i in range(2)]
    assert all(services[n]["profiles"] == ["separate"] for n in separate)  # defined, not started
    base = _compose()["services"]
    for i in range(2):
        spine = services[f"spine-{i}"]
        assert spine["extends"] == {"file": "docker-compose.yml", "service": "features-0"}
        assert spine["command"] == ["service", "features+fastlane+qos"]
        env = {**base["features-0"]["environment"], **spine["environment"]}
        assert env["TRADEFLEET_PARTITION__OWNED"] == str(i) and env["TRADEFLEET_PARTITION__COUNT"] == "2"
        assert env["TRADEFLEET_NATS__NKEY_SEED_FILE"].endswith("/features+fastlane+qos.nk")
        assert set(spine["networks"]["default"]["aliases"]) == {"features", "fastlane", "qos"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_is_valid_kubernetes_in_strict_mode(overlay: str) -> None:
    import kubernetes_validate

    docs = _render(overlay)
    assert len(docs) > 10
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except Exception as exc:  # ValidationError, SchemaNotFoundError: both mean rejected
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert not errors, errors


def test_strict_validation_rejects_a_field_kubernetes_does_not_know() -> None:
    import kubernetes_validate

    deployment = json.loads(json.dumps(_of(_render("cloud"), "Deployment", "control")[0]))
    kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def _version() -> str:
    import tomllib

    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


IMAGE = re.compile(
    r"(?P<registry>[a-z0-9-]+(\.[a-z0-9-]+)+(:\d+)?)/(?P<repo>[a-z0-9._/-]+):(?P<tag>[A-Za-z0-9._-]+)"
)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_names_its_registry_and_a_fixed_tag(overlay: str) -> None:
    for doc in _workloads(_render(overlay)):
        for container in _containers(_pod_template(doc)["spec"]):
            ref = IMAGE.fullmatch(container["image"])
            assert ref, (doc["metadata"]["name"], container["image"])
            assert ref["tag"] != "latest" and "latest" not in ref["tag"], container["image"]
            if ref["repo"].rsplit("/", 1)[-1].startswith("tradefleet"):
                assert ref["tag"] == _version(), container["image"]


RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_meets_the_restricted_pod_security_standard(overlay: str) -> None:
    docs = _render(overlay)
    labels = _of(docs, "Namespace")[0]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in _workloads(docs):
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        spec = _pod_template(doc)["spec"]
        pod = spec.get("securityContext", {})
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), where
        for volume in spec.get("volumes", []):
            assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, (where, volume)
        for container in _containers(spec):
            sc = container.get("securityContext", {})
            what = (where, container["name"])
            assert sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, what
            assert sc.get("runAsUser", pod.get("runAsUser")) not in (0, None), what
            assert sc.get("allowPrivilegeEscalation") is False, what
            assert not sc.get("privileged"), what
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], what
            assert set(sc.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}, what
            seccomp = sc.get("seccompProfile", pod.get("seccompProfile", {}))
            assert seccomp.get("type") in ("RuntimeDefault", "Localhost"), what
            # Not required by the profile, but every container here can have it.
            assert sc.get("readOnlyRootFilesystem") is True, what


def test_the_journal_and_the_spill_are_writable_by_the_service_user() -> None:
    docs = _render("cloud") + _render("onprem")
    for name, mount in (("execution", "/journal"), ("recorder", "/spill")):
        doc = _of(docs, "StatefulSet", name)[0]
        spec = doc["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsUser"] == 10001  # the image's user
        assert spec["securityContext"]["fsGroup"] == 10001  # so the volume is its group's
        volume = next(m["name"] for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == mount)
        assert volume in {t["metadata"]["name"] for t in doc["spec"]["volumeClaimTemplates"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_states_its_resources(overlay: str) -> None:
    for doc in _workloads(_render(overlay)):
        for container in _containers(_pod_template(doc)["spec"]):
            resources = container.get("resources", {})
            what = (doc["metadata"]["name"], container["name"])
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), what
            assert "memory" in resources.get("limits", {}), what


@pytest.mark.parametrize(("overlay", "pool"), [("cloud", "core"), ("onprem", "edge")])
def test_every_pod_is_placed_on_its_sites_nodes(overlay: str, pool: str) -> None:
    for doc in _workloads(_render(overlay)):
        spec = _pod_template(doc)["spec"]
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ]
        assert terms == [
            {"matchExpressions": [{"key": "tradefleet.io/pool", "operator": "In", "values": [pool]}]}
        ]
        toleration = {
            "key": "tradefleet.io/dedicated",
            "operator": "Equal",
            "value": pool,
            "effect": "NoSchedule",
        }
        assert toleration in spec["tolerations"], doc["metadata"]["name"]


@pytest.mark.parametrize(
    ("overlay", "storage_class"), [("cloud", "managed-csi-premium"), ("onprem", "local-path")]
)
def test_every_volume_claim_names_its_sites_storage_class(overlay: str, storage_class: str) -> None:
    claims = [
        t for d in _of(_render(overlay), "StatefulSet") for t in d["spec"].get("volumeClaimTemplates", [])
    ]
    assert claims
    assert {t["spec"].get("storageClassName") for t in claims} == {storage_class}


def test_the_partition_count_is_the_statefulsets_replica_count() -> None:
    docs = _render("cloud")
    for name in PARTITIONED:
        doc = _of(docs, "StatefulSet", name)[0]
        env = _env(doc["spec"]["template"]["spec"]["containers"][0])
        ref = env["TRADEFLEET_PARTITION__OWNED"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert ref == "metadata.labels['apps.kubernetes.io/pod-index']"  # the pod's ordinal
        assert env["TRADEFLEET_PARTITION__COUNT"]["value"] == str(doc["spec"]["replicas"])
        assert doc["spec"]["replicas"] > 1


def test_changing_the_replicas_changes_the_partition_count(tmp_path: Path) -> None:
    """The count is wired to the replicas (a kustomize replacement), not kept equal by hand."""
    shutil.copytree(K8S, tmp_path / "k8s")
    kustomization = tmp_path / "k8s" / "overlays" / "cloud" / "kustomization.yaml"
    spec = yaml.safe_load(kustomization.read_text())
    counts = {"features": 5, "fastlane": 3, "policy": 4, "qos": 7}
    spec["replicas"] = [r for r in spec["replicas"] if r["name"] not in counts]
    spec["replicas"] += [{"name": name, "count": count} for name, count in counts.items()]
    kustomization.write_text(yaml.safe_dump(spec))
    docs = _build(tmp_path / "k8s" / "overlays" / "cloud")
    for name, count in counts.items():
        doc = _of(docs, "StatefulSet", name)[0]
        env = _env(doc["spec"]["template"]["spec"]["containers"][0])
        assert doc["spec"]["replicas"] == count
        assert env["TRADEFLEET_PARTITION__COUNT"]["value"] == str(count)


def test_sentiment_scales_with_an_autoscaler_that_owns_its_replicas() -> None:
    docs = _render("cloud")
    hpa = _of(docs, "HorizontalPodAutoscaler", "sentiment")[0]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sentiment"}
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]
    assert "replicas" not in _of(docs, "Deployment", "sentiment")[0]["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_long_running_workload_has_one_disruption_budget(overlay: str) -> None:
    docs = _render(overlay)
    budgets = _of(docs, "PodDisruptionBudget")
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        labels = doc["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if _selects(b["spec"]["selector"], labels)]
        assert len(matching) == 1, doc["metadata"]["name"]
    nats = next(b for b in budgets if b["metadata"]["name"] == "nats")
    assert nats["spec"]["maxUnavailable"] == 1  # a 3-node JetStream cluster keeps its quorum


# NATS ------------------------------------------------------------------------------------------


def _generate_nats_users(out: Path) -> dict[str, Path]:
    """What `tradefleet nats config --out DIR` writes: nats-server.conf (the users and their
    permissions, which every site config includes) and a seed per user."""
    from libs.common.natsauth import write

    return write(out)


def _nats_check(conf: Path, env: dict[str, str]) -> None:
    from libs.common.localinfra import nats_server_binary

    out = subprocess.run(
        [nats_server_binary(), "-c", str(conf), "-t"],
        check=False,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _nats_site_config(docs: list[dict[str, Any]]) -> str:
    (config_map,) = [d for d in _of(docs, "ConfigMap") if d["metadata"]["name"].startswith("nats-site")]
    return str(config_map["data"]["nats.conf"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_nats_server_runs_its_sites_config_file(overlay: str) -> None:
    docs = _render(overlay)
    nats = _of(docs, "StatefulSet", "nats")[0]
    spec = nats["spec"]["template"]["spec"]
    server = next(c for c in spec["containers"] if c["name"] == "nats")
    assert server["args"] == ["--config", "/etc/nats/nats.conf"]
    config = next(v for v in spec["volumes"] if v["name"] == "config")
    sources = config["projected"]["sources"]
    site = next(s["configMap"] for s in sources if "configMap" in s)
    assert site["name"].startswith("nats-site") and site["items"] == [
        {"key": "nats.conf", "path": "nats.conf"}
    ]
    generated = next(s["secret"] for s in sources if "secret" in s)
    assert generated == {
        "name": "tradefleet-nats-config",
        "items": [{"key": "nats-server.conf", "path": "nats-server.conf"}],
    }
    assert _nats_site_config(docs).splitlines()[0].startswith("# ")
    assert "include ./nats-server.conf" in _nats_site_config(docs).splitlines()


def test_the_cloud_runs_a_three_node_jetstream_cluster_that_leaf_nodes_join() -> None:
    docs = _render("cloud")
    nats = _of(docs, "StatefulSet", "nats")[0]
    replicas = nats["spec"]["replicas"]
    assert replicas == 3
    conf = _nats_site_config(docs)
    routes = re.findall(r"nats://(nats-\d+)\.nats-headless:6222", conf)
    assert routes == [f"nats-{i}" for i in range(replicas)]
    assert "jetstream {" in conf and "leafnodes {" in conf and "cluster {" in conf
    spec = nats["spec"]["template"]["spec"]
    anti = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
    leaf = _of(docs, "Service", "nats-leafnodes")[0]["spec"]
    assert leaf["type"] == "LoadBalancer" and leaf["ports"][0]["port"] == 7422


def test_onprem_runs_a_leaf_node_whose_remote_comes_from_a_secret() -> None:
    docs = _render("onprem")
    nats = _of(docs, "StatefulSet", "nats")[0]
    assert nats["spec"]["replicas"] == 1 and "volumeClaimTemplates" not in nats["spec"]
    conf = _nats_site_config(docs)
    assert "jetstream: disabled" in conf and "remotes" in conf and "cluster {" not in conf
    server = next(c for c in nats["spec"]["template"]["spec"]["containers"] if c["name"] == "nats")
    env = _env(server)
    for name, key in (("NATS_LEAF_URL", "url"), ("NATS_LEAF_SEED", "seed")):
        assert f"${name}" in conf
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "tradefleet-nats-leaf", "key": key}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_nats_site_config_passes_the_nats_servers_check(overlay: str, tmp_path: Path) -> None:
    """`nats-server -t` with the same server version as the image: unknown fields, bad values and
    missing files fail it. The certificate and the CA are throwaway ones made here."""
    if not shutil.which("openssl"):
        pytest.skip("openssl makes the test certificate")
    conf = _nats_site_config(_render(overlay))
    for path in ("/etc/nats-tls", "/etc/nats-leaf", "/data"):
        conf = conf.replace(path, str(tmp_path))
    (tmp_path / "nats.conf").write_text(conf)
    seeds = _generate_nats_users(tmp_path)
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"),
            *("-keyout", str(tmp_path / "tls.key"), "-out", str(tmp_path / "tls.crt"), "-days", "1"),
            *("-subj", "/CN=nats-leafnodes.test"),
        ],
        check=True,
        capture_output=True,
    )
    shutil.copy(tmp_path / "tls.crt", tmp_path / "ca.crt")
    seed = seeds["admin"].read_text().strip()  # any user seed: the leaf's own is not generated yet
    env = {"POD_NAME": "nats-0", "NATS_LEAF_URL": "tls://nats-leafnodes.test:7422", "NATS_LEAF_SEED": seed}
    _nats_check(tmp_path / "nats.conf", env)


def test_the_streams_are_made_as_admin_with_one_copy_per_hub_server() -> None:
    docs = _render("cloud")
    job = _of(docs, "Job", "tradefleet-nats-provision")[0]
    spec = job["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["args"] == ["nats", "provision", "--seed-file", "/run/secrets/nats/seed"]
    replicas = _env(container)["TRADEFLEET_NATS__STREAM_REPLICAS"]["value"]
    assert replicas == str(_of(docs, "StatefulSet", "nats")[0]["spec"]["replicas"])
    seed = next(v for v in spec["volumes"] if v["name"] == "nats-seed")
    assert seed["secret"]["secretName"] == "tradefleet-nats-admin"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_fleet_service_connects_as_its_own_nats_user(overlay: str) -> None:
    for name, doc in _fleet(_render(overlay)).items():
        spec = _pod_template(doc)["spec"]
        container = spec["containers"][0]
        seed = _env(container)["TRADEFLEET_NATS__NKEY_SEED_FILE"]["value"]
        assert seed == "/run/secrets/nats/seed"
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/run/secrets/nats")
        assert mount["readOnly"] is True
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        # a process group's user: its name with '-' for '+' (a Secret's name has no '+')
        assert volume["secret"]["secretName"] == f"tradefleet-nats-{name.replace('+', '-')}"
        assert volume["secret"]["defaultMode"] == 0o440  # the pod's group (fsGroup) reads it


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_nats_pod_is_scraped_through_its_exporter_sidecar(overlay: str) -> None:
    template = _of(_render(overlay), "StatefulSet", "nats")[0]["spec"]["template"]
    notes = template["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/port"] == "7777"
    sidecar = next(c for c in template["spec"]["containers"] if c["name"] == "nats-exporter")
    assert "prometheus-nats-exporter" in sidecar["image"]
    assert {p["containerPort"] for p in sidecar["ports"]} == {7777}
    assert sidecar["args"][-1] == "http://localhost:8222"  # the same pod's monitor port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_shipped_in_the_manifests(overlay: str) -> None:
    docs = _render(overlay)
    assert not _of(docs, "Secret")  # made by infra/terraform (or by hand), never from this repo


# Network policies ------------------------------------------------------------------------------

# What each service needs besides NATS (the catalog: services talk to each other only there).
NEEDS = {
    "md-gateway": {"broker"},
    "execution": {"broker"},
    "recorder": {"db"},
    "control": {"db", "redis"},
    "features": {"redis"},
    "qos": {"redis"},
    "alerts": {"notify"},
}
EGRESS = {
    "dns": {("UDP", 53), ("TCP", 53)},
    "nats": {("TCP", 4222)},
    "db": {("TCP", 5432)},
    "redis": {("TCP", 6379)},
    "broker": {("TCP", 4001), ("TCP", 4002), ("TCP", 7496), ("TCP", 7497)},
    "notify": {("TCP", 443), ("TCP", 465), ("TCP", 587)},
}
INGRESS = {"control": {("TCP", 8600)}, "sentiment": {("TCP", 8080)}}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert not selector.get("matchExpressions")  # not used here; the check below would ignore it
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _allowed(policies: list[dict[str, Any]], labels: dict[str, str], direction: str) -> set[tuple[str, int]]:
    allowed: set[tuple[str, int]] = set()
    for policy in policies:
        spec = policy["spec"]
        if direction not in spec["policyTypes"] or not _selects(spec["podSelector"], labels):
            continue
        for rule in spec.get(direction.lower(), []):
            assert rule.get("ports"), f"{policy['metadata']['name']}: a rule without ports opens them all"
            allowed |= {(p.get("protocol", "TCP"), p["port"]) for p in rule["ports"]}
    return allowed


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_each_service_only_what_it_needs(overlay: str) -> None:
    docs = _render(overlay)
    policies = _of(docs, "NetworkPolicy")
    deny = _of(docs, "NetworkPolicy", "default-deny")[0]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    for name, doc in _fleet(docs).items():
        labels = _pod_template(doc)["metadata"]["labels"]
        needs = set().union(*(NEEDS.get(member, set()) for member in name.split("+")))  # a group's
        assert {
            k.split("/")[1] for k, v in labels.items() if k.startswith("tradefleet.io/") and v == "client"
        } == ({"nats"} | needs), name
        egress = set().union(EGRESS["dns"], EGRESS["nats"], *(EGRESS[n] for n in needs))
        assert _allowed(policies, labels, "Egress") == egress, name
        assert _allowed(policies, labels, "Ingress") == {("TCP", 9100)} | INGRESS.get(name, set()), name
    for job, reaches in (("tradefleet-nats-provision", "nats"), ("tradefleet-migrate", "db")):
        for doc in _of(docs, "Job", job):
            labels = _pod_template(doc)["metadata"]["labels"]
            assert _allowed(policies, labels, "Egress") == EGRESS["dns"] | EGRESS[reaches], job
            assert _allowed(policies, labels, "Ingress") == set(), job
    nats = _pod_template(_of(docs, "StatefulSet", "nats")[0])["metadata"]["labels"]
    hub = {("TCP", 6222), ("TCP", 7422)} if overlay.startswith("cloud") else set()
    assert _allowed(policies, nats, "Ingress") == {("TCP", 4222), ("TCP", 7777)} | hub
    leaf = {("TCP", 6222)} if overlay.startswith("cloud") else {("TCP", 7422)}
    assert _allowed(policies, nats, "Egress") == EGRESS["dns"] | leaf


# Settings --------------------------------------------------------------------------------------

# Read straight from the environment, not through the settings (models/sentiment/serving.py).
RAW_ENV = {"TRADEFLEET_SENTIMENT_THREADS"}


def _is_setting(env_name: str) -> bool:
    from libs.common.config import ENV_ALIASES, ENV_PREFIX, Settings

    if env_name in ENV_ALIASES or env_name in RAW_ENV:
        return True
    model: Any = Settings
    for part in env_name.removeprefix(ENV_PREFIX).lower().split("__"):
        if model is None or part not in model.model_fields:  # past a leaf, or no such field
            return False
        fields = model.model_fields
        annotation = fields[part].annotation
        model = next((a for a in (annotation, *typing.get_args(annotation)) if _is_model(a)), None)
    return True


def _is_model(annotation: Any) -> bool:
    return (
        isinstance(annotation, type)
        and not isinstance(annotation, types.GenericAlias)
        and issubclass(annotation, BaseModel)
    )


def _nkey_setting_pending() -> bool:
    """nats.nkey_seed_file comes with `tradefleet nats config`; until it lands, its variable is
    the one name allowed to be unknown."""
    from libs.common.config import NatsSettings

    return "nkey_seed_file" not in NatsSettings.model_fields


def test_every_tradefleet_variable_the_deployments_set_is_a_setting() -> None:
    names: set[str] = set()
    for overlay in OVERLAYS:
        docs = _render(overlay)
        for config_map in _of(docs, "ConfigMap"):
            names |= set(config_map.get("data", {}))
        for doc in _workloads(docs):
            for container in _containers(_pod_template(doc)["spec"]):
                names |= set(_env(container))
    for svc in _compose()["services"].values():
        names |= set(svc.get("environment", {}))
    names = {n for n in names if n.startswith("TRADEFLEET_")}
    assert "TRADEFLEET_PARTITION__COUNT" in names
    unknown = {n for n in names if not _is_setting(n)}
    if _nkey_setting_pending():
        unknown.discard("TRADEFLEET_NATS__NKEY_SEED_FILE")
    assert not unknown


# Dashboards -----------------------------------------------------------------------------------


def _registered_metric_names() -> set[str]:
    """Every tf_* name the code registers (runtime metrics and each service's KPIs), as a base
    name: what Prometheus exposes adds _total, _bucket, _sum or _count to some of them."""
    names: set[str] = set()
    for source in [*(ROOT / "libs").rglob("*.py"), *(ROOT / "services").rglob("*.py")]:
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


def test_the_clusters_grafana_ships_the_compose_dashboards() -> None:
    """kustomize reads no file outside its directory: base/observability keeps a copy."""
    compose = {p.name: p.read_bytes() for p in (DEPLOY / "compose" / "grafana" / "dashboards").glob("*.json")}
    k8s = {p.name: p.read_bytes() for p in (K8S / "base" / "observability" / "dashboards").glob("*.json")}
    assert k8s == compose
    config_map = [
        d
        for d in _of(_render("cloud"), "ConfigMap")
        if d["metadata"]["name"].startswith("grafana-dashboards")
    ]
    assert set(config_map[0]["data"]) == set(compose)


def test_the_cloud_retrains_on_a_schedule_through_the_gate_into_the_served_registry() -> None:
    """Weekly fast lane, monthly policy (seed 000), from the store, never forced past the gate,
    as the trainer user, writing the registry volume that fastlane and policy serve from."""
    docs = _render("cloud")
    claim = _of(docs, "PersistentVolumeClaim", "model-registry")[0]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == "azurefile-csi-premium"
    schedules = {}
    for job in _of(docs, "CronJob"):
        if not job["metadata"]["name"].startswith("tradefleet-retrain-"):
            continue
        pod = _pod_template(job)["spec"]
        (container,) = _containers(pod)
        kind = container["args"][1]
        schedules[kind] = job["spec"]["schedule"]
        assert container["args"][:2] == ["train", kind] and "--from-store" in container["args"]
        assert "--alert" in container["args"] and "--promote" not in container["args"]
        env = _env(container)
        assert env[f"TRADEFLEET_{kind.upper()}__REGISTRY"]["value"] == "/registry"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["registry"]["persistentVolumeClaim"]["claimName"] == "model-registry"
        assert volumes["nats-seed"]["secret"]["secretName"] == "tradefleet-nats-trainer"
        assert job["spec"]["concurrencyPolicy"] == "Forbid"
    assert schedules == {"fastlane": "0 6 * * 6", "policy": "0 8 1 * *"}
    for name in ("fastlane", "policy"):
        pod = _pod_template(_of(docs, "StatefulSet", name)[0])["spec"]
        (seed,) = pod["initContainers"]
        assert seed["command"] == ["cp", "-Rn", "/app/models/registry/.", "/registry/"]  # never over
        served = next(c for c in _containers(pod) if c["name"] == name)
        assert _env(served)[f"TRADEFLEET_{name.upper()}__REGISTRY"]["value"] == "/registry"
        assert {"name": "registry", "mountPath": "/registry", "readOnly": True} in served["volumeMounts"]


def test_compose_retrains_in_a_profile_into_the_volume_the_fleet_serves_from() -> None:
    services = _compose()["services"]
    for kind in ("fastlane", "policy"):
        job = services[f"retrain-{kind}"]
        assert job["profiles"] == ["retrain"] and job["restart"] == "no"
        assert job["command"][:3] == ["train", kind, "--from-store"] and "--alert" in job["command"]
        assert job["environment"]["TRADEFLEET_NATS__NKEY_SEED_FILE"] == "/run/secrets/nats/trainer.nk"
        assert "model-registry:/registry" in job["volumes"]
        for replica in _compose_fleet()[kind]:
            assert "model-registry:/registry:ro" in services[replica]["volumes"]
            assert services[replica]["environment"][f"TRADEFLEET_{kind.upper()}__REGISTRY"] == "/registry"
    assert "cp -Rn /app/models/registry/. /registry/" in services["registry-init"]["entrypoint"][-1]
