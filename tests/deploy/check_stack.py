"""Checks a running test stack (tests/deploy/run.sh): the sample day replayed through the
containers, intents, approvals and fills made, every container healthy with /readyz 200, and
the journal and spill volumes written by the service user.

Usage: python3 tests/deploy/check_stack.py COMPOSE_CMD... (the `docker compose -p .. -f ..` prefix).
Only the standard library: it runs with the machine's python3, outside the project's venv.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

COMPOSE = sys.argv[1:]
REPLAY_TIMEOUT_S = 420.0
SETTLE_TIMEOUT_S = 120.0
GET = (
    "import json, sys, urllib.request\n"
    "try:\n"
    "    r = urllib.request.urlopen('http://127.0.0.1:9100' + sys.argv[1], timeout=3)\n"
    "    print(json.dumps({'code': r.status, 'body': json.loads(r.read() or b'null')}))\n"
    "except urllib.error.HTTPError as e:\n"
    "    print(json.dumps({'code': e.code, 'body': None}))\n"
)
DASHBOARD = (
    "import urllib.request\n"
    "print(urllib.request.urlopen('http://127.0.0.1:8600/', timeout=3).read().decode())\n"
)


def sh(*args: str, check: bool = True) -> str:
    out = subprocess.run(args, check=False, capture_output=True, text=True, timeout=60)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {out.returncode}: {out.stderr.strip()[-500:]}")
    return out.stdout


def get(service: str, path: str) -> tuple[int, Any]:
    try:
        out = sh(*COMPOSE, "exec", "-T", service, "python", "-c", GET, path)
        res = json.loads(out.strip().splitlines()[-1])
        return int(res["code"]), res["body"]
    except (RuntimeError, ValueError, IndexError, subprocess.TimeoutExpired):
        return 0, None


def app(service: str) -> dict[str, Any]:
    code, body = get(service, "/status")
    return dict((body or {}).get("app", {})) if code == 200 else {}


def running_services() -> list[str]:
    return sorted(sh(*COMPOSE, "ps", "--services", "--status", "running").split())


def fail(msg: str) -> None:
    print(f"test-deploy: FAIL: {msg}", flush=True)
    sys.exit(1)


def main() -> None:
    services = running_services()
    print(f"test-deploy: running: {' '.join(services)}", flush=True)
    expected = {
        "nats",
        "timescaledb",
        "redis",
        "md-gateway",
        "recorder",
        "features-0",
        "features-1",
        "fastlane-0",
        "fastlane-1",
        "policy-0",
        "policy-1",
        "qos-0",
        "qos-1",
        "risk",
        "execution",
        "tca",
        "alerts",
        "control",
    }
    if missing := expected - set(services):
        fail(f"not running: {sorted(missing)}")

    # 1. the replay ends (md-gateway keeps serving after it)
    started = time.monotonic()
    while True:
        md = app("md-gateway")
        if md.get("finished"):
            break
        if time.monotonic() - started > REPLAY_TIMEOUT_S:
            fail(f"replay not finished after {REPLAY_TIMEOUT_S:.0f}s: {md}")
        time.sleep(5)
    print(
        f"test-deploy: replay finished in {time.monotonic() - started:.0f}s: "
        f"{ {k: v for k, v in md.items() if isinstance(v, (int, float, bool))} }",
        flush=True,
    )

    # 2. the orders it made have been decided and taken (as `tradefleet up` checks)
    started = time.monotonic()
    while True:
        qos = [app("qos-0"), app("qos-1")]
        risk, execution, tca = app("risk"), app("execution"), app("tca")
        intents = sum(q.get("intents", 0) for q in qos)
        approved, denied = risk.get("approved", 0), risk.get("denied", 0)
        stats = execution.get("stats", {})
        taken = stats.get("sent", 0) + stats.get("refused", 0) + stats.get("duplicate_approvals", 0)
        fills = execution.get("fills", 0)
        settled = approved + denied >= intents and taken >= approved
        if intents and approved and fills and settled:
            break
        if time.monotonic() - started > SETTLE_TIMEOUT_S:
            fail(
                f"no settled trading after {SETTLE_TIMEOUT_S:.0f}s: intents={intents} approved={approved} "
                f"denied={denied} taken={taken} fills={fills}"
            )
        time.sleep(3)
    # Partitioned on the server (nats config --partitions 2): no replica was sent another's symbol.
    replicas = [s for s in services if s.rpartition("-")[0] in ("features", "fastlane", "qos")]
    if leaks := {s: n for s in replicas if (n := app(s).get("other_partition"))}:
        fail(f"replicas received other partitions' symbols: {leaks}")
    owners = {s: app(s).get("owned_symbols") for s in replicas if s.startswith("features")}
    print(f"test-deploy: partitions served by the server: {owners}", flush=True)
    page = sh(*COMPOSE, "exec", "-T", "control", "python", "-c", DASHBOARD, check=False)
    if '<div id="root">' not in page:
        fail(f"the control service does not serve the dashboard: {page[:300]!r}")
    print("test-deploy: the dashboard is served from the image", flush=True)
    recorder = {k: v for k, v in app("recorder").items() if isinstance(v, int)}
    print(
        f"test-deploy: trading: intents={intents} approved={approved} denied={denied} "
        f"sent={stats.get('sent', 0)} refused={stats.get('refused', 0)} fills={fills} "
        f"tca_reports={tca.get('reports', 0)} recorder={recorder}",
        flush=True,
    )

    # 3. every container healthy, every service's /readyz 200
    ids = sh(*COMPOSE, "ps", "-q").split()
    health = {}
    for cid in ids:
        fmt = "{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
        name, state = sh("docker", "inspect", "-f", fmt, cid).split()
        health[name.lstrip("/")] = state
    if bad := {n: s for n, s in health.items() if s != "healthy"}:
        fail(f"containers not healthy: {bad}")
    print(f"test-deploy: {len(health)} containers healthy (HEALTHCHECK)", flush=True)
    infra = {"nats", "timescaledb", "redis"}
    not_ready = {s: c for s in services if s not in infra and (c := get(s, "/readyz")[0]) != 200}
    if not_ready:
        fail(f"/readyz not 200: {not_ready}")
    print(f"test-deploy: /readyz 200 in {len(services) - len(infra)} services", flush=True)

    # 4. the state volumes, written by the service user
    journal = sh(
        *COMPOSE,
        "exec",
        "-T",
        "execution",
        "sh",
        "-c",
        "id -u; stat -c '%u %s %n' /journal/*; touch /journal/.w && rm /journal/.w && echo ok",
    )
    spill = sh(
        *COMPOSE,
        "exec",
        "-T",
        "recorder",
        "sh",
        "-c",
        "id -u; stat -c '%u %n' /spill; touch /spill/.w && rm /spill/.w && echo ok",
    )
    for what, out in (("journal", journal), ("spill", spill)):
        lines = out.split()
        if lines[0] != "10001" or lines[-1] != "ok":
            fail(f"{what} volume not writable by the service user: {out!r}")
    if "/journal/execution-journal.msgpack" not in journal:
        fail(f"no execution journal written: {journal!r}")
    print(
        f"test-deploy: journal and spill writable by uid 10001: {' | '.join(journal.splitlines()[1:-1])}",
        flush=True,
    )
    print("test-deploy: OK", flush=True)


if __name__ == "__main__":
    main()
