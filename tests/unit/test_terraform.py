"""infra/terraform: every file parses (python-hcl2) and is as `terraform fmt` writes it, every
module pins Terraform and its providers, module calls and references match what the modules
declare, no credential is in a file, and what the stacks create is what deploy/k8s expects
(the secrets the overlays mount, the namespace's Pod Security labels, the cloud node pool's
label and taint). Nothing here plans or applies: there is no cloud account in a test."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from tests.unit.test_deploy import K8S, _of, _pod_template, _render, _workloads

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "infra" / "terraform"
FILES = sorted(TERRAFORM.rglob("*.tf"))
DIRS = sorted({f.parent for f in FILES})
STACKS = ("cloud", "cloud-fleet", "onprem")


def _unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _clean(node: Any) -> Any:
    """python-hcl2's tree without its markers (__is_block__, __comments__) and quotes."""
    if isinstance(node, dict):
        return {
            _unquote(k): _clean(v) for k, v in node.items() if not (isinstance(k, str) and k.startswith("__"))
        }
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return _unquote(node)


@functools.cache
def _parse(path: Path) -> dict[str, Any]:
    with path.open() as f:
        return dict(_clean(hcl2.load(f)))


def _blocks(directory: Path, kind: str) -> dict[str, dict[str, Any]]:
    """name -> body of every `kind "name" {}` block in a directory (variable, output, module)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        for entry in _parse(path).get(kind, []):
            out.update(entry)
    return out


def _resources(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for path in sorted(directory.glob("*.tf")):
        for entry in _parse(path).get("resource", []):
            for rtype, named in entry.items():
                for name, body in named.items():
                    out[(rtype, name)] = body
    return out


def _text(directory: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(directory.glob("*.tf")))


def test_the_stacks_and_modules_are_there() -> None:
    assert {d.name for d in DIRS} >= {
        *STACKS,
        "cloud-cluster",
        "cloud-database",
        "cloud-storage",
        "fleet-namespace",
    }
    assert not list(TERRAFORM.glob("*.tf"))  # the old single file is gone: stacks and modules only
    for directory in DIRS:
        assert (directory / "versions.tf").exists() and (directory / "variables.tf").exists(), directory


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_file_parses(path: Path) -> None:
    assert _parse(path)


def test_every_file_is_formatted_as_terraform_fmt_writes_it() -> None:
    for path in FILES:
        text = path.read_text()
        assert text.endswith("\n") and not text.endswith("\n\n"), path
        for number, line in enumerate(text.splitlines(), 1):
            where = f"{path.relative_to(TERRAFORM)}:{number}"
            assert "\t" not in line and line == line.rstrip(), where
            assert (len(line) - len(line.lstrip(" "))) % 2 == 0, where  # two spaces a level
    if not shutil.which("terraform"):
        pytest.skip("terraform is not installed: only the layout rules above were checked")
    out = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout


PROVIDERS = {
    "azurerm": "hashicorp/azurerm",
    "timescale": "timescale/timescale",
    "kubernetes": "hashicorp/kubernetes",
}


@pytest.mark.parametrize("directory", DIRS, ids=lambda d: str(d.relative_to(TERRAFORM)))
def test_every_module_pins_terraform_and_the_providers_it_uses(directory: Path) -> None:
    (block,) = _parse(directory / "versions.tf")["terraform"]
    assert block["required_version"] == ">= 1.5"
    required = {k: v for entry in block["required_providers"] for k, v in entry.items()}
    used = {rtype.split("_")[0] for rtype, _ in _resources(directory)}
    for path in directory.glob("*.tf"):
        for entry in _parse(path).get("data", []):
            used |= {dtype.split("_")[0] for dtype in entry}
        for entry in _parse(path).get("provider", []):
            used |= set(entry)
    for module in _blocks(directory, "module").values():
        (required_by_module,) = _parse((directory / module["source"]).resolve() / "versions.tf")["terraform"]
        used |= {k for entry in required_by_module["required_providers"] for k in entry}
    assert set(required) == used, directory
    for name, spec in required.items():
        assert spec["source"] == PROVIDERS[name]
        assert re.fullmatch(r"~> \d+\.\d+", spec["version"]), (name, spec)  # a minor floor, no major jump


@pytest.mark.parametrize("directory", DIRS, ids=lambda d: str(d.relative_to(TERRAFORM)))
def test_references_and_module_calls_match_what_is_declared(directory: Path) -> None:
    variables = _blocks(directory, "variable")
    text = _text(directory)
    assert set(re.findall(r"\bvar\.([a-z_]+)", text)) <= set(variables), directory
    for name, call in _blocks(directory, "module").items():
        source = (directory / call["source"]).resolve()
        assert source.is_dir() and source.relative_to(TERRAFORM / "modules"), call["source"]
        declared = _blocks(source, "variable")
        passed = set(call) - {"source", "providers", "depends_on", "count", "for_each"}
        assert passed <= set(declared), (name, passed - set(declared))
        required = {v for v, body in declared.items() if "default" not in body}
        assert required <= passed, (name, required - passed)
        outputs = _blocks(source, "output")
        assert set(re.findall(rf"\bmodule\.{re.escape(name)}\.([a-z_]+)", text)) <= set(outputs), name


SEED = re.compile(r"\bS[UAONC][A-Z2-7]{56}\b")  # an nkey seed
CREDENTIAL = re.compile(r"(password|secret|access_key|token|seed)", re.I)


def test_no_credential_is_written_in_a_file() -> None:
    for path in FILES:
        text = path.read_text()
        assert not SEED.search(text), path
        assert "PRIVATE KEY" not in text, path
        assert not re.search(r'(password|secret_key|access_key|client_secret)\s*=\s*"', text), path
    for directory in DIRS:
        for name, body in _blocks(directory, "variable").items():
            if CREDENTIAL.search(name) or name == "db_url":
                assert "default" not in body, (directory, name)  # supplied at apply time
                if name != "timescale_access_key":  # an id, like a user name
                    assert body.get("sensitive") is True, (directory, name)
        for name, body in _blocks(directory, "output").items():
            if "db_url" in name:
                assert body.get("sensitive") is True, (directory, name)


def _default(directory: Path, variable: str) -> list[str]:
    return list(_blocks(directory, "variable")[variable]["default"])


def _mounted_secrets(overlay: str) -> set[str]:
    names = set()
    for doc in _workloads(_render(overlay)):
        spec = _pod_template(doc)["spec"]
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                names.add(volume["secret"]["secretName"])
            for source in volume.get("projected", {}).get("sources", []):
                if "secret" in source:
                    names.add(source["secret"]["name"])
        for container in spec["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    names.add(ref["name"])
            for source in container.get("envFrom", []):
                if "secretRef" in source and not source["secretRef"].get("optional"):
                    names.add(source["secretRef"]["name"])
    return names


def test_the_cloud_stack_makes_every_secret_the_cloud_overlay_needs() -> None:
    stack = TERRAFORM / "cloud-fleet"
    users = [*_default(stack, "services"), "admin", "trainer"]
    made = {f"tradefleet-nats-{u}" for u in users} | {"tradefleet-nats-config"}
    made |= {body["metadata"][0]["name"] for body in _resources(stack).values()}
    optional = {"tradefleet-alerts", "tradefleet-control"}  # the operator's, when wanted
    assert _mounted_secrets("cloud") - optional == made
    (call,) = _blocks(stack, "module").values()
    assert call["users"] == '${concat(var.services, ["admin", "trainer"])}'


def test_the_onprem_stack_makes_every_secret_the_onprem_overlay_needs() -> None:
    module = TERRAFORM / "modules" / "onprem"
    made = {f"tradefleet-nats-{u}" for u in _default(module, "services")} | {"tradefleet-nats-config"}
    leaf = _resources(module)[("kubernetes_secret_v1", "leaf")]
    key = _resources(module)[("kubernetes_secret_v1", "approval_key")]  # the approval signing key
    made |= {leaf["metadata"][0]["name"], key["metadata"][0]["name"]}
    assert _mounted_secrets("onprem") == made
    # The keys the leaf's pod reads are the ones the module writes.
    nats = _of(_render("onprem"), "StatefulSet", "nats")[0]["spec"]["template"]["spec"]
    refs = [
        e["valueFrom"]["secretKeyRef"]
        for e in nats["containers"][0]["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    ]
    read = {r["key"] for r in refs if r["name"] == "tradefleet-nats-leaf"}
    for volume in nats["volumes"]:
        if volume.get("secret", {}).get("secretName") == "tradefleet-nats-leaf":
            read |= {item["key"] for item in volume["secret"]["items"]}
    assert read == set(leaf["data"]) == {"url", "seed", "ca.crt"}


def test_the_namespace_is_labelled_as_the_manifests_label_it() -> None:
    namespace = yaml.safe_load((K8S / "base" / "namespace.yaml").read_text())
    body = _resources(TERRAFORM / "modules" / "fleet-namespace")[("kubernetes_namespace_v1", "this")]
    assert body["metadata"][0]["labels"] == namespace["metadata"]["labels"]


def test_the_fleets_node_pool_is_where_the_cloud_overlay_places_pods() -> None:
    pool = _resources(TERRAFORM / "modules" / "cloud-cluster")[
        ("azurerm_kubernetes_cluster_node_pool", "fleet")
    ]
    deployment = _of(_render("cloud"), "Deployment", "control")[0]["spec"]["template"]["spec"]
    term = deployment["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (expression,) = term["nodeSelectorTerms"][0]["matchExpressions"]
    assert pool["node_labels"] == {expression["key"]: expression["values"][0]}
    (toleration,) = deployment["tolerations"]
    assert pool["node_taints"] == [f"{toleration['key']}={toleration['value']}:{toleration['effect']}"]
    cluster = _resources(TERRAFORM / "modules" / "cloud-cluster")[("azurerm_kubernetes_cluster", "this")]
    assert cluster["network_profile"][0]["network_policy"]  # the NetworkPolicies are enforced


def test_the_readme_says_what_was_applied() -> None:
    readme = (TERRAFORM / "README.md").read_text()
    assert "applied" in readme.lower()
    for stack in STACKS:
        assert f"`{stack}`" in readme or f"{stack}/" in readme, stack
