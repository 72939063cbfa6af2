"""How every command that talks to a running fleet finds it and connects: one rule, said aloud.

Order: ``--var-dir`` names a fleet started by ``tradefleet up --var-dir``, whose state file must
exist and whose supervisor must be alive; then ``--nats-url``; then the environment's
TRADEFLEET_VAR_DIR (the same checks) and TRADEFLEET_NATS_URL; then a fleet in ./var; then the
config's ``nats.url``. Flags beat the environment. The command prints
which server it uses and why, so a kill switch never lands silently on the wrong bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
from nats.aio.client import Client as NatsClient

from libs.common.config import NatsSettings, Settings
from proto.alerts import Alert

STATE_FILE = "fleet.json"  # written by `tradefleet up` in its --var-dir while it runs
DEFAULT_VAR_DIR = Path("var")
CONNECT_TIMEOUT_S = 2.0


class Unreachable(Exception):
    """The fleet or its NATS cannot be found or reached: one line for the operator."""


@dataclass(frozen=True)
class Target:
    url: str
    source: str  # why this server: said before anything is sent
    #: a secured fleet's seeds (`up` writes them: tap.nk for reading, operator.nk for ctl), or
    #: one seed file (nats.nkey_seed_file); none for an open bus
    seed_dir: Path | None = None
    seed_file: Path | None = None
    tls: ssl.SSLContext | None = None  # nats.tls_* from the config, for a server of the config's

    def seed_for(self, user: str) -> Path | None:
        if self.seed_file is not None:
            return self.seed_file
        return self.seed_dir / f"{user}.nk" if self.seed_dir is not None else None

    def describe(self) -> str:
        return f"nats: {self.url} ({self.source})"


def read_state(var_dir: Path) -> dict[str, Any]:
    """The state of the `up` running in var_dir; Unreachable when there is none or it is stale."""
    path = var_dir / STATE_FILE
    if not path.exists():
        raise Unreachable(
            f"no fleet is running in {var_dir}: {path} is missing "
            f"(start one with `tradefleet up --var-dir {var_dir}`, or pass --nats-url)"
        )
    try:
        state = json.loads(path.read_text())
        url, pid = str(state["nats_url"]), int(state.get("supervisor_pid", 0))
    except (ValueError, KeyError, TypeError) as exc:
        raise Unreachable(f"{path} is not a fleet state file: {exc}") from None
    if pid and not _alive(pid):
        # Its services may outlive it (a kill -9 of `up` leaves its children running): say where
        # they were, so an operator can still reach them on purpose, never by a guess.
        raise Unreachable(
            f"{path} is stale: the `tradefleet up` that wrote it (pid {pid}) is gone; "
            f"if its services still run, reach them with --nats-url {url}"
        )
    return {**state, "nats_url": url}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def find(var_dir: Path | None, nats_url: str | None, settings: Settings) -> Target:
    """The server to use, by the rule in the module's docstring."""
    seed, tls = settings.nats.nkey_seed_file, settings.nats.tls_context()
    if var_dir is not None:
        state = read_state(var_dir)
        url = state["nats_url"]
        if nats_url and nats_url != url:
            raise Unreachable(f"--nats-url {nats_url} is not the NATS of the fleet in {var_dir} ({url})")
        return _of_fleet(state, f"the fleet in {var_dir}")
    if nats_url:
        return Target(nats_url, "--nats-url", seed_file=seed, tls=tls)  # a flag beats the environment
    if env_dir := os.environ.get("TRADEFLEET_VAR_DIR"):
        return _of_fleet(read_state(Path(env_dir)), f"the fleet in {env_dir} (TRADEFLEET_VAR_DIR)")
    if env := os.environ.get("TRADEFLEET_NATS_URL"):
        return Target(env, "TRADEFLEET_NATS_URL", seed_file=seed, tls=tls)
    if (DEFAULT_VAR_DIR / STATE_FILE).exists():
        return _of_fleet(read_state(DEFAULT_VAR_DIR), f"the fleet in {DEFAULT_VAR_DIR}")
    source = "nats.url from the config: no fleet state found"
    return Target(settings.nats.url, source, seed_file=seed, tls=tls)


def _of_fleet(state: dict[str, Any], source: str) -> Target:
    auth = state.get("nats_auth")
    return Target(state["nats_url"], source, seed_dir=Path(auth) if auth else None)


async def connect(
    target: Target, name: str, on_closed: Callable[[], None] | None = None, user: str = "tap"
) -> NatsClient:
    """Connect once, briefly: an operator's command gives up on a dead server within seconds
    instead of retrying forever as a service does, and nats-py's error tracebacks stay quiet
    (a fleet shutting down under a tap is not an error of the tap)."""

    async def quiet(_exc: Exception) -> None:
        return None

    async def closed() -> None:
        if on_closed is not None:
            on_closed()

    # nats-py retries a refused server inside one connect until it has been tried more than
    # max_reconnect_attempts times (0 would mean forever): 1 is two quick tries, and the
    # wait_for bounds the whole thing whatever the library does.
    try:
        return await asyncio.wait_for(
            nats.connect(
                servers=[s.strip() for s in target.url.split(",")],
                name=name,
                connect_timeout=CONNECT_TIMEOUT_S,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                error_cb=quiet,
                disconnected_cb=closed,
                closed_cb=closed,
                nkeys_seed=str(seed) if (seed := target.seed_for(user)) is not None else None,
                tls=target.tls,
            ),
            timeout=2 * CONNECT_TIMEOUT_S + 1,
        )
    except Exception as exc:  # NoServersError, TimeoutError, OSError, an invalid URL...
        reason = f"no answer in {CONNECT_TIMEOUT_S:g}s" if isinstance(exc, TimeoutError) else str(exc)
        reason = reason or type(exc).__name__
        raise Unreachable(f"cannot reach NATS at {target.url} ({target.source}): {reason}") from None


async def stored_since(
    target: Target, subject: str, since_ns: int, idle_s: float = 0.5
) -> list[dict[str, Any]]:
    """Every event JetStream holds on ``subject`` from ``since_ns`` on, decoded (e.g. the alerts a
    run raised, for its summary); stops once nothing more arrives for ``idle_s``."""
    import datetime as dt

    from nats.js import api as js_api

    from libs.common import codec

    nc = await connect(target, "tradefleet-read")
    found: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        with contextlib.suppress(codec.DecodeFailure):
            found.append(codec.to_builtins(codec.decode(msg.data)))  # type: ignore[arg-type]
        arrived.set()

    try:
        start = dt.datetime.fromtimestamp(since_ns / 1e9, dt.UTC)
        config = js_api.ConsumerConfig(
            deliver_policy=js_api.DeliverPolicy.BY_START_TIME, opt_start_time=start
        )
        with contextlib.suppress(nats.js.errors.NotFoundError):  # no stream: nothing was raised
            await nc.jetstream(timeout=3.0).subscribe(
                subject, cb=on_msg, ordered_consumer=True, config=config
            )
            while True:
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), idle_s)
                except TimeoutError:
                    break
    finally:
        await nc.close()
    return found


def publish_alert(settings: NatsSettings, alert: Alert, client: str, timeout_s: float = 15.0) -> None:
    """One alert on alert.<severity>, waiting for the stream's acknowledgement (a durable subject:
    the bus retries, then raises), from a command that is not a service (`up` itself, the
    scheduled retrain). Raises when the bus cannot be reached or refuses it: the caller says so."""
    from libs.common.nats_bus import NatsBus

    async def send() -> None:
        bus = NatsBus(settings.model_copy(update={"max_reconnect_attempts": 1}), client)
        await asyncio.wait_for(bus.connect(), timeout_s)
        try:
            await asyncio.wait_for(bus.publish(f"alert.{alert.severity}", alert), timeout_s)
        finally:
            await bus.close()

    asyncio.run(send())
