"""`tradefleet up`: the local fleet, each service its own process, with a live status table."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from rich.console import Console, Group
from rich.live import Live

from libs.common import natsauth
from libs.common.config import GROUP_SEPARATOR, Settings, group_members, redacted_url
from libs.common.localinfra import (
    NatsServer,
    PgCluster,
    free_port,
    free_ports,
    port_free,
    postgres_reachable,
    start_nats,
    start_postgres,
)
from libs.common.nats_bus import NatsBus
from libs.common.storage.migrate import migrate
from proto.alerts import Alert
from proto.subjects import PARTITIONED_SERVICES, SERVICES
from tradefleet.human import live_view, ny_clock, split_drops
from tradefleet.reach import Target, publish_alert, stored_since

STALL_LIMIT_S = 10.0
# Supervision: a dead service (or the NATS server) is restarted after a backoff that doubles with
# each death in the crash window; more deaths than the limit in the window is a crash loop: an
# alert, then a clear exit (a service that cannot stay up must not be retried forever).
RESTART_FIRST_DELAY_S = 0.5
RESTART_MAX_DELAY_S = 8.0
CRASH_WINDOW_S = 60.0
CRASH_LOOP_LIMIT = 5
KEEP_RUN_STORES = 2
# What the summary counts in the database at the end (rows this run made: ts_init from its start)
COUNTED_TABLES = (
    "quotes",
    "trades",
    "bars",
    "feature_vectors",
    "order_intents",
    "orders",
    "order_denials",
    "fills",
)  # earlier replays' JetStream stores kept under var/runs/ (with this run's, 3)


def start_order() -> tuple[str, ...]:
    """The catalog's services (in its start order) whose runtime this build has."""
    from tradefleet.services import RUNNABLE

    return tuple(s.name for s in SERVICES if s.name in RUNNABLE)


# What a lockstep replay waits for: every service that decides or trades (the catalog says which).
LOCKSTEP = tuple(s.name for s in SERVICES if s.lockstep)


def started_services(settings: Settings) -> tuple[str, ...]:
    """The RL policy runs only where QOS asks it (qos.policy: on)."""
    return tuple(n for n in start_order() if n != "policy" or settings.qos.policy == "on")


def md_rows(counts: dict[str, int]) -> int:
    """Market-data rows in a counter of the gateway (published) or the recorder (stored)."""
    return int(counts.get("quotes", 0) + counts.get("trades", 0) + counts.get("bars", 0))


def merged(apps: list[dict[str, Any]]) -> dict[str, Any]:
    """Replicas' status sections as one: counts add up, maps merge key by key, ``finished`` holds
    when every replica finished and another flag when any replica raised it (a quarantine);
    anything else is the first replica's."""
    out: dict[str, Any] = {}
    for app in apps:
        for key, value in app.items():
            if key not in out:
                out[key] = value
            elif isinstance(value, bool):
                out[key] = (out[key] and value) if key == "finished" else (out[key] or value)
            elif isinstance(value, int | float) and isinstance(out[key], int | float):
                out[key] = out[key] + value
            elif isinstance(value, dict) and isinstance(out[key], dict):
                out[key] = merged([out[key], value])
            elif isinstance(value, list) and isinstance(out[key], list):
                out[key] = out[key] + value
    if any("finished" not in app for app in apps):
        out.pop("finished", None)  # a replica that has not said it finished has not
    return out


def _alert_line(alert: dict[str, Any]) -> str:
    """When (New York time: the market's for replayed events), how bad, who, what."""
    when = ny_clock(alert.get("ts_event"))[11:19]
    return f"{when} {alert.get('severity')}: {alert.get('source')}: {alert.get('title')}"


class Fleet:
    def __init__(
        self,
        settings: Settings,
        config: Path | None,
        var_dir: Path,
        nats_url: str | None = None,
        live_table: bool = True,
        lockstep: bool = False,
        replicas: int = 1,
        nats_auth: Path | None = None,
        edge_nats_url: str | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.var = var_dir
        self.nats_url = nats_url
        self.lockstep = lockstep
        self.console = Console(stderr=True)
        self.live_table = live_table and self.console.is_terminal
        self.nats: NatsServer | None = None
        self.pg: PgCluster | None = None
        self.db_url: str | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.statuses: dict[str, dict[str, Any]] = {}
        self.interrupted: str | None = None
        self.ended = ""  # "finished" (the replay and everything it caused), "duration"
        self.running_since_ns = 0
        self.idle_at_end_s = 0.0  # at a --duration end: how long nothing had moved
        self.alerts: list[dict[str, Any]] = []
        self.storage_mode: str | None = None
        self.run_id = time.strftime("%Y%m%dT%H%M%S")
        # The risk gate signs approvals with it, the execution gateway checks them: one per run,
        # for those two only, unless one is configured (settings.signing).
        self.approval_key = "" if settings.signing.key() else secrets.token_hex(32)
        self.control_port = 0
        # the users and seeds of the NATS it started (or of the one given, secured)
        self.nats_auth: Path | None = nats_auth.resolve() if nats_auth is not None else None
        # Replicas of each partitioned service: NAME-i owns partition i of ``replicas``.
        self.replicas = replicas
        # A hybrid site: the on-prem services (natsauth.EDGE_SERVICES) on this leaf node
        self.edge_nats_url = edge_nats_url
        self.control_token = ""
        self.control_token_file: Path | None = None
        # Supervision: each process's environment (made once: a restart gets the same ports,
        # token and partition), its deaths in the crash window, restarts pending and done.
        self._envs: dict[str, dict[str, str]] = {}
        self._deaths: dict[str, list[float]] = {}
        self._restart_at: dict[str, float] = {}
        self.restarts: collections.Counter[str] = collections.Counter()  # by process
        self.restarted: collections.Counter[str] = collections.Counter()  # by service it runs
        # What each process runs: its member instances (a service's own process: itself; a
        # process group, fleet.groups: several), and the process of each member.
        self.layout: dict[str, list[str]] = {}
        self.process_of: dict[str, str] = {}
        self.exits: dict[str, list[int]] = {}  # the exit codes of the restarted
        self._nats_store_dir: Path | None = None
        self.started_ns = time.time_ns()
        self.db_rows: dict[str, int] | None = None  # counted in the database at the end
        self._counted_at = 0.0  # a recent count (_count_in_database_now)
        self._counted: dict[str, int] | None = None

    # -- infrastructure ---------------------------------------------------------------------
    def _start_infra(self) -> None:
        (self.var / "logs").mkdir(parents=True, exist_ok=True)
        if not self.nats_url:
            # Secure by default: its own NATS with a user per service (permissions from the
            # catalog), the streams made once here by the admin user; services only use them.
            store = self._nats_store_dir = self._nats_store()
            self.nats_auth = (store.parent / "nats-auth").resolve()
            natsauth.write(self.nats_auth, partitions=self.replicas, groups=self._group_users())
            log_file = self.var / "logs" / "nats-server.log"
            self.nats = start_nats(store, log_file=log_file, config=self.nats_auth / "nats-server.conf")
            self.nats_url = self.nats.url
            asyncio.run(self._provision())
        elif self.nats_auth is not None:
            asyncio.run(self._provision())  # a secured server of the caller's: streams as the catalog says
        self.db_url = self.settings.db.url
        if self.db_url and not postgres_reachable(self.db_url):
            raise RuntimeError(f"TRADEFLEET_DB_URL={redacted_url(self.db_url)} is not reachable")
        if not self.db_url:
            self.console.print(f"[dim]starting a private PostgreSQL under {self.var / 'pg'}[/dim]")
            self.pg = start_postgres(self.var / "pg")
            self.db_url = self.pg.url
        mode, _ = migrate(self.db_url, self.settings.db)
        self.storage_mode = mode

    async def _provision(self) -> None:
        assert self.nats_auth is not None and self.nats_url
        nats = self.settings.nats.model_copy(
            update={"url": self.nats_url, "nkey_seed_file": self.nats_auth / "admin.nk"}
        )
        bus = NatsBus(nats, "tradefleet-provision")
        await asyncio.wait_for(bus.connect(), 15)
        try:
            await bus.ensure_streams()
        finally:
            await bus.close()

    def _reader(self) -> Target:
        """How `up` itself reads the fleet's streams (its summary): as the tap user."""
        return Target(self.nats_url or "", "the fleet", seed_dir=self.nats_auth)

    def _nats_store(self) -> Path:
        """A replay's JetStream state is the run's own: a second replay of the same day within
        the streams' duplicate window (2 min) publishes the same Nats-Msg-Ids (headlines,
        alerts) and a shared store would drop them as duplicates, stalling the run. Only the
        last few runs' stores are kept. Against IB the store persists: what was ordered and
        filled yesterday is the broker session's history."""
        if self.settings.md_gateway.provider == "ib":
            return self.var / "nats"
        runs = self.var / "runs"
        for old in sorted(runs.glob("*/nats"))[:-KEEP_RUN_STORES]:
            shutil.rmtree(old, ignore_errors=True)
        return runs / self.run_id / "nats"

    def _service(self, name: str) -> str:
        """The service a process runs (features-2 is a replica of features)."""
        base, _, index = name.rpartition("-")
        return base if index.isdigit() and base in PARTITIONED_SERVICES else name

    def _names(self, service: str) -> list[str]:
        """The processes of a service: itself, or its replicas."""
        if self.replicas > 1 and service in PARTITIONED_SERVICES:
            return [f"{service}-{i}" for i in range(self.replicas)]
        return [service]

    def _has(self, service: str) -> bool:
        return any(n in self.process_of for n in self._names(service))

    def _plan(self) -> None:
        """Which processes run which members: a group of fleet.groups (its started services)
        is one process, replicated per partition when all its members are partitioned."""
        self.layout.clear()
        started = started_services(self.settings)
        grouped: set[str] = set()
        for group in self.settings.fleet.groups:
            members = [m for m in group_members(group) if m in started]
            grouped.update(members)
            spec = GROUP_SEPARATOR.join(members)
            if len(members) == 1:
                self.layout.update({n: [n] for n in self._names(members[0])})
                continue
            edge = {m in natsauth.EDGE_SERVICES for m in members}
            if self.edge_nats_url and len(edge) > 1:
                raise RuntimeError(f"group {spec} spans the hub and the on-prem site: group within one")
            partitioned = {m in PARTITIONED_SERVICES for m in members}
            if self.replicas > 1 and True in partitioned:
                if False in partitioned:
                    raise RuntimeError(
                        f"group {spec}: with --replicas only groups of partitioned services "
                        f"({', '.join(PARTITIONED_SERVICES)}) are replicated"
                    )
                for i in range(self.replicas):
                    self.layout[f"{spec}-{i}"] = [f"{m}-{i}" for m in members]
            else:
                self.layout[spec] = members
        for service in started:
            if service not in grouped:
                self.layout.update({n: [n] for n in self._names(service)})
        self.process_of = {m: p for p, members in self.layout.items() for m in members}

    def _group_users(self) -> list[str]:
        """The process groups' NATS users to write (one per group as laid out)."""
        if not self.layout:
            self._plan()
        return list(dict.fromkeys(self._command(p) for p, ms in self.layout.items() if len(ms) > 1))

    def _services_of(self, process: str) -> list[str]:
        return [self._service(m) for m in self.layout.get(process, [process])]

    def _command(self, process: str) -> str:
        """What `tradefleet service` runs for a process: a service, or a group's services."""
        return GROUP_SEPARATOR.join(self._services_of(process))

    def _env(self, name: str) -> dict[str, str]:
        """A process's environment (``name``: a service, a replica, or a process group, whose
        members listen on consecutive ports from the first's)."""
        members = self.layout.get(name, [name])
        services = self._services_of(name)
        service = self._command(name)
        env = dict(os.environ)
        env.update(
            {
                "TRADEFLEET_NATS_URL": self.nats_url or "",
                "TRADEFLEET_DB_URL": self.db_url or "",
                "TRADEFLEET_HTTP__PORT": str(self.ports[members[0]]),
                "TRADEFLEET_TELEMETRY__LOG_FORMAT": "json",
                "TRADEFLEET_RECORDER__SPILL_DIR": str(self.var / "recorder-spill"),
                # A fresh journal per run: the run's NATS is fresh too, and the same replay
                # makes the same client order ids (a journal from the last run would refuse them).
                "TRADEFLEET_EXECUTION__JOURNAL": str(
                    self.var / "runs" / self.run_id / "execution-journal.msgpack"
                ),
                # ... and a fresh simulated account: restarted services restore positions from
                # their account's last snapshot, never from an earlier run's.
                "TRADEFLEET_EXECUTION__ACCOUNT": f"SIM-{self.run_id}",
                # A restarted md-gateway resumes this run's replay where it stopped.
                "TRADEFLEET_MD_GATEWAY__REPLAY__CHECKPOINT": str(
                    self.var / "runs" / self.run_id / "md-gateway.checkpoint"
                ),
            }
        )
        if "features" in services:  # a restarted one resumes its bars (each replica its own file)
            env["TRADEFLEET_FEATURES__CHECKPOINT"] = str(
                self.var / "runs" / self.run_id / f"{name}.checkpoint"
            )
        if self.edge_nats_url and all(s in natsauth.EDGE_SERVICES for s in services):
            env["TRADEFLEET_NATS_URL"] = self.edge_nats_url
        if self.config:
            env["TRADEFLEET_CONFIG"] = str(self.config)
        if self.nats_auth is not None:  # a group's user may do what its members may
            seed = self.nats_auth / f"{service}.nk"
            if not seed.exists():
                raise RuntimeError(
                    f"no NATS user for {service} in {self.nats_auth}: `tradefleet nats config` "
                    "writes one per group of fleet.groups"
                )
            env["TRADEFLEET_NATS__NKEY_SEED_FILE"] = str(seed)
        if self.approval_key and {"risk", "execution"} & set(services):
            env["TRADEFLEET_SIGNING__APPROVAL_KEY"] = self.approval_key
        if "control" in services:
            env.update(self._control_env())
        # The groups as laid out here (of their started services): what `service` checks against.
        env["TRADEFLEET_FLEET__GROUPS"] = json.dumps(self._group_users())
        if members[0] != services[0]:
            env["TRADEFLEET_PARTITION__COUNT"] = str(self.replicas)
            env["TRADEFLEET_PARTITION__OWNED"] = members[0].rpartition("-")[2]
        if self.lockstep:
            env["TRADEFLEET_NATS__SYNC"] = "true"
            started = started_services(self.settings)
            waits = [n for n in LOCKSTEP if n in started]
            waits += ["tca"] if self.settings.execution.feedback else []
            env["TRADEFLEET_MD_GATEWAY__REPLAY__LOCKSTEP"] = json.dumps(waits)
            replicated = {n: self.replicas for n in waits if n in PARTITIONED_SERVICES and self.replicas > 1}
            env["TRADEFLEET_MD_GATEWAY__REPLAY__LOCKSTEP_REPLICAS"] = json.dumps(replicated)
        return env

    def _control_env(self) -> dict[str, str]:
        """The API on control.port (another free one when it is taken: a second fleet on this
        machine), with this run's admin token when none is configured: written to the run's
        folder (0600) and shown once, so a person can log in to the dashboard."""
        cfg = self.settings.control
        self.control_port = cfg.port if cfg.port and port_free(cfg.port, cfg.host) else free_port()
        env = {"TRADEFLEET_CONTROL__PORT": str(self.control_port)}
        if not cfg.tokens:
            from services.control.auth import digest, new_token

            self.control_token = new_token()
            path = self.var / "runs" / self.run_id / "control-token"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.control_token + "\n")
            path.chmod(0o600)
            self.control_token_file = path
            entry = {"name": "up", "role": "admin", "token_sha256": digest(self.control_token)}
            env["TRADEFLEET_CONTROL__TOKENS"] = json.dumps([entry])
        return env

    def control_url(self) -> str | None:
        if "control" not in self.process_of:
            return None
        host = self.settings.control.host
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.control_port}/"

    def _spawn(self, name: str) -> None:
        """Start a service; ``_wait_ready`` waits until it has subscribed. A restart runs it again
        as it was first started (its port, environment and log)."""
        if name not in self._envs:
            members = self.layout.get(name, [name])
            first = free_ports(len(members))
            self.ports.update({m: first + i for i, m in enumerate(members)})
            self._envs[name] = self._env(name)
        log = open(self._log(name), "ab")  # noqa: SIM115 - owned by the child
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "tradefleet", "service", self._command(name)],
            env=self._envs[name],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _supervise(self, now: float | None = None) -> str | None:
        """Restart what died, with backoff: the NATS server this fleet started (same port, store
        and users: services reconnect by themselves) and every service. A crash loop (more than
        CRASH_LOOP_LIMIT deaths in CRASH_WINDOW_S) ends the run with an alert and says why."""
        now = time.monotonic() if now is None else now
        if self.nats is not None and self.nats.process.poll() is not None:
            code = self.nats.process.returncode
            if why := self._died("nats-server", code, now):
                return why
            self.console.print(f"[yellow]nats-server exited with {code}: restarting it[/yellow]")
            self._restart_nats()
        for name, proc in self.procs.items():
            if proc.poll() is None or name in self._restart_at:
                continue
            if why := self._died(name, proc.returncode, now):
                return why
            delay = min(RESTART_FIRST_DELAY_S * 2 ** (len(self._deaths[name]) - 1), RESTART_MAX_DELAY_S)
            self._restart_at[name] = now + delay
            self.console.print(
                f"[yellow]{name} exited with {proc.returncode}: restarting in {delay:g} s "
                f"({len(self._deaths[name])} in the last {CRASH_WINDOW_S:g} s; see {self._log(name)})"
                "[/yellow]"
            )
        restarted = False
        for name, at in list(self._restart_at.items()):
            if now >= at:
                del self._restart_at[name]
                self._spawn(name)
                self.restarts[name] += 1
                for member in self.layout.get(name, [name]):
                    self.restarted[self._service(member)] += 1
                restarted = True
        if restarted:
            self._write_state()  # its new pid, for taps, ctl and whoever watches
        return None

    def _died(self, name: str, code: int, now: float) -> str | None:
        """Count a death; a crash loop: the alert and the run's error."""
        deaths = [t for t in self._deaths.get(name, []) if now - t < CRASH_WINDOW_S] + [now]
        self._deaths[name] = deaths
        self.exits.setdefault(name, []).append(code)
        if len(deaths) <= CRASH_LOOP_LIMIT:
            return None
        why = (
            f"{name} is crash-looping: it exited {len(deaths)} times in {CRASH_WINDOW_S:g} s "
            f"(last with {code}); see {self._log(name)}"
        )
        self._alert(f"{name} crash-looping: the fleet stops", why)
        return why

    def _restart_nats(self) -> None:
        assert self.nats is not None and self.nats_auth is not None and self._nats_store_dir is not None
        port = int(self.nats.url.rsplit(":", 1)[1])
        log_file = self.var / "logs" / "nats-server.log"
        config = self.nats_auth / "nats-server.conf"
        self.nats = start_nats(self._nats_store_dir, port=port, log_file=log_file, config=config)
        self.restarts["nats-server"] += 1

    def _alert(self, title: str, detail: str) -> None:
        """A critical alert from `up` itself (as the admin user on a fleet it secured): the
        alerts service tells people, the summary lists it."""
        now = time.time_ns()
        alert = Alert(
            ts_event=now,
            ts_init=now,
            alert_id=f"up-{self.run_id}-{now}",
            severity="critical",
            source="up",
            title=title,
            body=detail,
            dedupe=f"up:{title}",
        )
        seed = self.nats_auth / "admin.nk" if self.nats_auth is not None else None
        nats = self.settings.nats.model_copy(update={"url": self.nats_url, "nkey_seed_file": seed})
        try:
            publish_alert(nats, alert, "tradefleet-up", timeout_s=10.0)
        except Exception as exc:  # the run still ends with the reason; say the alert failed
            self.console.print(f"[red]the alert could not be published: {exc!r}[/red]")

    def _start_services(self) -> None:
        """Consumers before producers: every service but the md-gateway starts at once (none of
        them publishes anything another one must hear before the replay begins: their durable
        consumers take what comes from now on), and the gateway only once all are ready, so
        nothing it publishes goes unheard. Starting them together rather than one by one uses
        every core for the imports and model loads, which dominate a start."""
        self._plan()
        consumers = [p for p in self.layout if "md-gateway" not in self._services_of(p)]
        for name in consumers:
            self._spawn(name)
        for name in consumers:
            for member in self.layout[name]:
                self._wait_ready(member, timeout=120.0)
        if "md-gateway" in self.process_of:
            producer = self.process_of["md-gateway"]  # alone, or in a group (which starts it last)
            self._spawn(producer)
            for member in self.layout[producer]:
                self._wait_ready(member, timeout=120.0)

    def _get(self, name: str, path: str, timeout: float = 2.0) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.ports[name]}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, None
        except (OSError, ValueError):
            return 0, None

    def _wait_ready(self, name: str, timeout: float = 60.0) -> None:
        """Until the member ``name`` answers /readyz (a group's: once all its members are)."""
        deadline = time.monotonic() + timeout
        process = self.process_of.get(name, name)
        while time.monotonic() < deadline:
            proc = self.procs[process]
            if proc.poll() is not None:
                raise RuntimeError(f"{process} exited with {proc.returncode}; see {self._log(process)}")
            code, _ = self._get(name, "/readyz")
            if code == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} not ready after {timeout}s; see {self._log(name)}")

    def _log(self, name: str) -> Path:
        return self.var / "logs" / f"{name}.log"

    # -- the run ----------------------------------------------------------------------------
    def run(self, duration: float | None = None) -> dict[str, Any]:
        started = time.monotonic()
        error: str | None = None
        # Ctrl-C or a supervisor's SIGTERM ends the run the same clean way: stop, then summarise.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        try:
            self._start_infra()
            self._start_services()
            self._write_state()
            self._say_dashboard()
            self.running_since_ns = time.time_ns()
            # --duration counts from here: a slow start-up does not eat the replay.
            error = self._watch(time.monotonic(), duration)
        except KeyboardInterrupt:
            error = "interrupted"
        except Exception as exc:
            error = str(exc)
        finally:
            self._stop_all()
        return self._summary(time.monotonic() - started, error)

    def _say_dashboard(self) -> None:
        url = self.control_url()
        if url is None:
            return
        if self.control_token:
            where = f" (this run's admin token; also in {self.control_token_file})"
            self.console.print(f"dashboard: {url}  token: {self.control_token}{where}", soft_wrap=True)
        else:
            self.console.print(f"dashboard: {url}  (log in with a token of control.tokens)", soft_wrap=True)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.interrupted = signal.Signals(signum).name

    def _write_state(self) -> None:
        state = {
            "supervisor_pid": os.getpid(),  # readers tell a running fleet from a stale file
            "nats_url": self.nats_url,
            "db_url": redacted_url(self.db_url or ""),
            "http_ports": self.ports,
            "pids": {n: p.pid for n, p in self.procs.items()},
            # a process group's members (fleet.groups): their endpoints are in http_ports
            "groups": {n: ms for n, ms in self.layout.items() if len(ms) > 1},
            "control_url": self.control_url(),
            # the seeds of a fleet secured by `up` (tap.nk to read, operator.nk for ctl)
            "nats_auth": str(self.nats_auth) if self.nats_auth is not None else None,
        }
        (self.var / "fleet.json").write_text(json.dumps(state, indent=2))

    def _poll(self, name: str) -> None:
        code, body = self._get(name, "/status")
        if code == 200 and body:
            self.statuses[name] = body

    def _poll_all(self) -> None:
        for name in self.process_of:
            self._poll(name)

    def _app(self, name: str) -> dict[str, Any]:
        """A service's /status app section; a replicated one's replicas' together (merged)."""
        names = self._names(name)
        if len(names) == 1:
            return dict(self.statuses.get(name, {}).get("app", {}))
        return merged([dict(self.statuses.get(n, {}).get("app", {})) for n in names])

    def _replica_app(self, name: str) -> dict[str, Any]:
        return dict(self.statuses.get(name, {}).get("app", {}))

    def _expected_rows(self) -> int:
        return md_rows(self._app("md-gateway").get("stats", {}))

    def _stored_md_rows(self) -> int:
        return md_rows(self._app("recorder").get("rows_stored", {}))

    def _recorder_caught_up(self) -> bool:
        rec = self._app("recorder")
        vectors = sum(self._app("features").get("vectors", {}).values())
        pending = rec.get("pending_rows", 1)
        if rec.get("sequence", {}).get("ticks_missing_now", 0) or pending:
            return False  # still asking for ticks it missed, or writing
        if self.restarted["recorder"]:
            # Its counters started again from zero: the database says what it holds. Market data
            # is numbered and asked for again; feature vectors published while it was down are
            # not (derived data, the ticks make them again): the summary counts them instead.
            counted = self._count_in_database_now()
            return counted is not None and md_rows(counted) >= self._expected_rows()
        stored_vectors = rec.get("rows_stored", {}).get("feature_vectors", 0)
        return self._stored_md_rows() >= self._expected_rows() and stored_vectors >= vectors

    def _vectors_not_stored(self) -> int | None:
        if self.db_rows is None or self.restarted["features"]:
            return None  # a restarted features service counts from its restart only
        published = sum(self._app("features").get("vectors", {}).values())
        return max(published - self.db_rows.get("feature_vectors", 0), 0)

    def _count_in_database_now(self) -> dict[str, int] | None:
        """``_count_in_database`` at most every 2 s (the watch loop polls every 0.25 s)."""
        now = time.monotonic()
        if now - self._counted_at >= 2.0:
            self._counted_at, self._counted = now, self._count_in_database()
        return self._counted

    def _spine_caught_up(self) -> bool:
        """Every vector the fast lane should score reached it, and every prediction reached QOS."""
        feats, fast, qos = self._app("features"), self._app("fastlane"), self._app("qos")
        if not self._has("features"):
            return True
        source = self.settings.fastlane.source_timeframe
        # A consumer restarted in this run counts from its restart only: what reached its earlier
        # life is not in its counters, so its "in" cannot be held against what was sent (core
        # NATS keeps nothing to count again); the summary's restarts say so.
        fast_restarted, qos_restarted = bool(self.restarted["fastlane"]), bool(self.restarted["qos"])
        return (
            self._news_caught_up()
            and bool(feats.get("finished"))
            and (fast_restarted or fast.get("vectors_in", -1) >= feats.get("vectors", {}).get(source, 0))
            and (qos_restarted or qos.get("predictions_in", -1) >= fast.get("predictions", 0))
            # ...and every vector reached QOS's protective exits (they may still make intents)
            and (qos_restarted or qos.get("vectors_in", -1) >= sum(feats.get("vectors", {}).values()))
        )

    def _news_caught_up(self) -> bool:
        """Every headline the gateway sent was taken by sentiment, every score reached QOS."""
        if not self._has("sentiment"):
            return True
        counters = self._app("sentiment").get("counters", {})
        qos = self._app("qos")
        sent = self._app("md-gateway").get("news_published", 0)
        taken = counters.get("received", 0) >= sent
        return taken and qos.get("sentiment_in", 0) >= counters.get("published", 0)

    def _orders_caught_up(self) -> bool:
        """Every intent decided by the risk gate, every approval taken by execution."""
        if not self._has("risk"):
            return True
        if any(self.restarted[n] for n in ("risk", "execution", "qos")):
            # their counters started again from zero: the database says what was decided, taken
            counted = self._count_in_database_now()
            if counted is None:
                return False
            decided_db = counted["orders"] + counted["order_denials"]
            return decided_db >= counted["order_intents"] and counted["orders_taken"] >= counted["orders"]
        risk, execution, qos = self._app("risk"), self._app("execution"), self._app("qos")
        decided = risk.get("approved", 0) + risk.get("denied", 0)
        stats = execution.get("stats", {})
        taken = stats.get("sent", 0) + stats.get("refused", 0) + stats.get("duplicate_approvals", 0)
        flattened = stats.get("control_flatten", 0)  # not from approvals
        return decided >= qos.get("intents", 0) and taken - flattened >= risk.get("approved", 0)

    def _all_caught_up(self) -> bool:
        return self._spine_caught_up() and self._orders_caught_up() and self._recorder_caught_up()

    def _progress_mark(self) -> tuple[int, ...]:
        return (
            self._app("md-gateway").get("stats", {}).get("records", 0),  # a replay in a quiet stretch
            self._stored_md_rows(),
            sum(self._app("features").get("vectors", {}).values()),
            self._app("fastlane").get("vectors_in", 0),
            self._app("qos").get("predictions_in", 0),
            sum(self._app("recorder").get("rows_stored", {}).values()),
            self._app("execution").get("orders", 0),
        )

    def _watch(self, started: float, duration: float | None) -> str | None:
        live = Live(self._table(), console=self.console, refresh_per_second=4) if self.live_table else None
        last_print = 0.0
        progress_at, last_mark = time.monotonic(), self._progress_mark()
        with live if live is not None else contextlib.nullcontext():
            while True:
                time.sleep(0.25)
                if crash_loop := self._supervise():
                    return crash_loop
                self._poll_all()
                if live is not None:
                    live.update(self._table())
                elif time.monotonic() - last_print > 5:
                    last_print = time.monotonic()
                    self.console.print(self._one_line())
                if self.interrupted:
                    return f"interrupted by {self.interrupted}"
                mark = self._progress_mark()
                if mark != last_mark:
                    progress_at, last_mark = time.monotonic(), mark
                if duration is not None and time.monotonic() - started >= duration:
                    self.ended = "duration"
                    self.idle_at_end_s = time.monotonic() - progress_at
                    return None
                if self._app("md-gateway").get("finished"):
                    if self._all_caught_up():
                        self.ended = "finished"
                        return None
                    if time.monotonic() - progress_at > STALL_LIMIT_S:
                        return self._stalled()

    def _stalled(self) -> str:
        """Which part is behind, with the counts it was judged by."""
        rec = self._app("recorder")
        counted = self._counted if self.restarts else None  # what a restart made it judge by
        return (
            f"pipeline stalled: {self._stored_md_rows()} of {self._expected_rows()} market-data rows "
            f"stored by the recorder's counters, spine caught up={self._spine_caught_up()}, orders "
            f"caught up={self._orders_caught_up()}, recorder caught up={self._recorder_caught_up()} "
            f"(db_up={rec.get('db_up')}, pending={rec.get('pending_rows')}, "
            f"missing={rec.get('sequence', {}).get('ticks_missing_now')}, in the database: {counted})"
        )

    def _table(self) -> Group:
        return live_view(self.statuses, self._member_pids())

    def _member_pids(self) -> dict[str, int]:
        return {m: self.procs[p].pid for m, p in self.process_of.items() if p in self.procs}

    def _one_line(self) -> str:
        gw, rec, risk = self._app("md-gateway"), self._app("recorder"), self._app("risk")
        ordinary, problems = split_drops(gw.get("bad_ticks", {}))
        return (
            f"market {ny_clock(gw.get('market_ns'))}: replayed "
            f"{gw.get('stats', {}).get('records', 0):,} records, stored "
            f"{sum(rec.get('rows_stored', {}).values()):,} rows; risk {risk.get('mode', '?')}, "
            f"day P&L {risk.get('day_pnl', 0):+,.2f}; dropped {sum(ordinary.values()):,} ordinary, "
            f"{sum(problems.values()):,} bad"
        )

    def _settle(self, timeout: float = 10.0) -> None:
        """With the producers stopped, give the recorder time to store what it received."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._poll_all()
            if self._all_caught_up():
                return
            time.sleep(0.2)

    def _stop_order(self) -> list[str]:
        """Producers first, then consumers; the alerts service after every service that may
        still raise an alert, and the recorder last of all."""
        last = [self.process_of[s] for s in ("alerts", "recorder") if s in self.process_of]
        order = [n for n in reversed(list(self.procs)) if n not in last]
        return order + [n for n in dict.fromkeys(last) if n in self.procs]

    def _stop_all(self) -> None:
        """Producers first, then consumers once they settled; final statuses read before each stop."""
        for name in self._stop_order():
            proc = self.procs[name]
            if "recorder" in self.layout.get(name, [name]) and proc.poll() is None:
                self._settle()
            for member in self.layout.get(name, [name]):
                self._poll(member)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._collect_alerts()
        self.db_rows = self._count_in_database()
        if self.nats is not None:
            self.nats.stop()
        if self.pg is not None:
            self.pg.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.var / "fleet.json").unlink()

    def _count_in_database(self) -> dict[str, int] | None:
        """What this run stored, counted where it is (rows made since the run began), not read
        from the recorder's counters, which a restart sets back to zero. None: not readable."""
        if not self.db_url:
            return None
        since = dt.datetime.fromtimestamp(self.started_ns / 1e9, tz=dt.UTC)
        try:
            with psycopg.connect(self.db_url, connect_timeout=5) as conn:
                counts = {}
                for table in COUNTED_TABLES:
                    query = sql.SQL("SELECT count(*) FROM {} WHERE ts_init >= %s").format(
                        sql.Identifier(table)
                    )
                    row = conn.execute(query, (since,)).fetchone()
                    counts[table] = int(row[0]) if row else 0
                row = conn.execute(  # approvals execution took (sent, or refused: either says so)
                    "SELECT count(DISTINCT client_order_id) FROM order_events WHERE ts_init >= %s", (since,)
                ).fetchone()
                counts["orders_taken"] = int(row[0]) if row else 0
                return counts
        except Exception as exc:  # the summary says it could not count, and falls back
            self.console.print(f"[red]rows could not be counted in the database: {exc!r}[/red]")
            return None

    def _stored_md_rows_at_end(self) -> int:
        """Market-data rows stored: counted in the database when it could be, else the recorder's."""
        return md_rows(self.db_rows) if self.db_rows is not None else self._stored_md_rows()

    def _ended_well(self, stored: int, expected: int) -> bool:
        """A finished replay stored exactly what the gateway published. One stopped at --duration
        stored at least that (the gateway's count is its last /status; it may publish a few
        more before its SIGTERM) and was still moving: a pipeline that had stalled is not ok."""
        if self.ended == "duration":
            return stored >= expected and self.idle_at_end_s <= STALL_LIMIT_S
        missing = self._app("recorder").get("sequence", {}).get("ticks_missing_now", 0)
        return bool(self._app("md-gateway").get("finished")) and stored == expected and not missing

    def _collect_alerts(self) -> None:
        """The alerts this run raised, read back from their stream (alert.> on JetStream)."""
        if not self.nats_url or not self.running_since_ns:
            return
        try:
            self.alerts = asyncio.run(stored_since(self._reader(), "alert.>", self.running_since_ns))
        except Exception as exc:  # a summary without alerts beats no summary: say why
            self.alerts = [{"severity": "unknown", "source": "up", "title": f"alerts unreadable: {exc!r}"}]

    def _alerts_summary(self) -> dict[str, Any]:
        by_severity = collections.Counter(str(a.get("severity")) for a in self.alerts)
        service = self._app("alerts")
        return {
            "count": len(self.alerts),
            "by_severity": dict(by_severity),
            "by_source": dict(collections.Counter(str(a.get("source")) for a in self.alerts)),
            "first": [_alert_line(a) for a in self.alerts[:10]],
            # what the alerts service made of them: messages per sink, failures
            "sinks": service.get("sinks", []),
            "delivered": service.get("delivered", {}),
            "failed": service.get("failed", {}),
            "folded": service.get("stats", {}).get("folded", 0),
            "muted": service.get("muted", 0),
            "produced": service.get("produced", {}),  # "source/severity": count, as it saw them
        }

    def _control_summary(self) -> dict[str, Any]:
        app = self._app("control")
        return {k: app.get(k, 0) for k in ("actions", "ws_clients", "ws_dropped")}

    def _summary(self, elapsed: float, error: str | None) -> dict[str, Any]:
        gw, rec = self._app("md-gateway"), self._app("recorder")
        stats = gw.get("stats", {})
        rows = rec.get("rows_stored", {})
        expected, stored = self._expected_rows(), self._stored_md_rows_at_end()
        rp = self.settings.md_gateway.replay
        summary: dict[str, Any] = {
            "ok": error is None and self._ended_well(stored, expected),
            "error": error,
            "ended": self.ended or ("error" if error else ""),
            "replay": {"date": rp.date, "symbols": rp.symbols, "speed": rp.speed, "start": rp.start},
            "market_time_end": ny_clock(gw.get("market_ns")) if gw.get("market_ns") else None,
            "quiet_skipped_s": gw.get("quiet_skipped_s", 0.0),
            "alerts": self._alerts_summary(),
            "control": {"url": self.control_url(), **self._control_summary()},
            "elapsed_s": round(elapsed, 2),
            "replay_s": gw.get("elapsed_s"),
            "provider": gw.get("provider"),
            "storage_mode": self.storage_mode,
            "ticks_replayed": stats.get("quote_records", 0) + stats.get("trade_records", 0),
            "records_replayed": stats.get("records", 0),
            "events_published": {
                "quotes": stats.get("quotes", 0),
                "trades": stats.get("trades", 0),
                "bars": stats.get("bars", 0),
                "depth": stats.get("depth", 0),
                "news": gw.get("news_published", 0),
            },
            "filtered": {
                "outside_session": stats.get("outside_session", 0),
                "unchanged_quotes": stats.get("unchanged", 0),
            },
            "bad_ticks": gw.get("bad_ticks", {}),
            "bad_ticks_total": gw.get("bad_total", 0),
            "rows_stored": rows,
            # counted in the database at the end (None: it could not be): what "lost" is made of
            "rows_in_database": self.db_rows,
            "md_rows_lost": max(expected - stored, 0),
            # (a run stopped at --duration: its gateway's last count lags, so no such claim)
            "md_rows_duplicated": max(stored - expected, 0) if self.ended != "duration" else None,
            "dropped_messages": {n: s.get("dropped", {}) for n, s in self.statuses.items()},
            "recorder": {k: rec.get(k) for k in ("outages", "spill_files", "batches", "duplicates_skipped")},
            # the ticks' numbering (services/recorder/sequence.py): holes seen and asked for, ticks
            # still missing, duplicates (a resumed replay's) not written again
            "md_sequence": rec.get("sequence", {}),
            # published by features but not in the database (a recorder down meanwhile; derived
            # data: the stored ticks make them again), None: not countable
            "feature_vectors_not_stored": self._vectors_not_stored(),
            "signals": self._signals_summary(),
            "news": self._news_summary(),
            "trading": self._trading_summary(),
        }
        if self.replicas > 1:
            # what each replica owned, and what reached it that was not its own (0 where the
            # server maps partitions)
            keys = (
                "owned_symbols",
                "other_partition",
                "finished",
                "vectors",
                "vectors_in",
                "predictions",
                "predictions_in",
                "sentiment_in",
            )
            summary["replicas"] = {
                n: {k: v for k, v in self._replica_app(n).items() if k in keys}
                for n in self.process_of
                if n != self._service(n)
            }
        # Restarts, and the exit codes that caused them: a restarted service's counters start
        # again from zero, so the counts above understate what it did before.
        summary["restarts"] = dict(self.restarts)
        summary["exit_codes"] = self.exits
        if self.lockstep:
            summary["lockstep"] = gw.get("lockstep")
            summary["ok"] = summary["ok"] and not (gw.get("lockstep") or {}).get("timeouts")
        if gw.get("provider") == "ib":
            # A live feed never finishes: the run is good when it ended as asked (its duration,
            # or Ctrl-C / SIGTERM, the normal end of a live session) and IB's book matched ours
            # at the last reconciliation.
            ib = self._app("execution").get("ib", {})
            summary["ib"] = ib
            ended_as_asked = error is None or error.startswith("interrupted")
            summary["ok"] = ended_as_asked and ib.get("positions_match") is True
            return summary
        if self.ended != "duration":  # stopped mid-replay, the spine is not expected to be through
            summary["ok"] = summary["ok"] and self._spine_caught_up() and self._orders_caught_up()
        return summary

    def _trading_summary(self) -> dict[str, Any]:
        risk, execution, tca = self._app("risk"), self._app("execution"), self._app("tca")
        stats = execution.get("stats", {})
        return {
            "risk_mode": risk.get("mode"),
            "approved": risk.get("approved", 0),
            "denied": risk.get("denied", 0),
            "denials_by_code": risk.get("denials", {}),
            "orders_sent": stats.get("sent", 0),
            "orders_refused": stats.get("refused", 0),
            "fills": execution.get("fills", 0),
            "open_orders_at_end": execution.get("open_orders", 0),
            "positions_at_end": execution.get("positions", {}),
            "realized_pnl": execution.get("realized_pnl", 0.0),
            "day_pnl": risk.get("day_pnl"),  # realized and open, marked at the last mid
            "tca_reports": tca.get("reports", 0),
            "cost_bps_mean_shortfall": tca.get("mean_shortfall_bps"),
            "effective_spread_bps": tca.get("mean_effective_spread_bps"),
            "commission": tca.get("commission"),
            "cost_bps_all_in": tca.get("mean_cost_bps"),
            "tca_feedback_published": tca.get("feedback", 0),
            "slippage_alerts": tca.get("alerts", 0),
            "feedback_applied": stats.get("feedback_applied", 0),
            "tactics": execution.get("tactics", {}),
        }

    def _news_summary(self) -> dict[str, Any]:
        sentiment = self._app("sentiment")
        return {
            "headlines": self._app("md-gateway").get("news_published", 0),
            "model": sentiment.get("model"),
            "model_error": sentiment.get("model_error") or None,
            "counters": sentiment.get("counters", {}),
            "reached_qos": self._app("qos").get("sentiment_in", 0),
            "qos_rescored_on_headline": self._app("qos").get("stats", {}).get("rescored_on_headline", 0),
            "qos_scores_with_sentiment": self._app("qos").get("stats", {}).get("scores_with_sentiment", 0),
            "qos_sentiment_weight": self.settings.qos.weights.get("sentiment", 0.0),
        }

    def _signals_summary(self) -> dict[str, Any]:
        feats, fast, qos = self._app("features"), self._app("fastlane"), self._app("qos")
        return {
            "feature_set": feats.get("feature_set"),
            "feature_vectors": feats.get("vectors", {}),
            "predictions": fast.get("predictions", 0),
            "models": {
                h: {k: m.get(k) for k in ("version", "engine", "quarantined", "scored")}
                for h, m in fast.get("models", {}).items()
            },
            "qos_scores": qos.get("scores", 0),
            "intents": qos.get("intents", 0),
            "intents_by_kind": {
                **{
                    k.removeprefix("intents_"): v
                    for k, v in qos.get("stats", {}).items()
                    if k.startswith("intents_")
                },
                "protective_exit": qos.get("protective_exits", 0),
            },
            "open_positions": qos.get("positions", {}),
            "policy": self._policy_summary(),
        }

    def _policy_summary(self) -> dict[str, Any]:
        """The RL policy's part: what it answered, and what QOS made of it (a full-speed replay
        runs ahead of the answers, so QOS may find the policy silent and fall back)."""
        if self.settings.qos.policy != "on":
            return {"on": False}
        policy, stats = self._app("policy"), self._app("qos").get("stats", {})
        keys = ("proposals", "entries_by_policy", "entries_deferred_by_policy", "policy_silent")
        return {
            "on": True,
            **{k: policy.get(k) for k in ("version", "engine", "inference_us", "refused")},
            "answers": policy.get("stats", {}).get("answers", 0),
            "qos": {k: stats.get(k, 0) for k in (*keys, "entries_by_rules_policy_silent")},
        }
