"""Operating the fleet: run one service, watch a subject, send an operator command."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from proto.control import Command
from tradefleet.commands.common import ConfigOpt, NatsUrlOpt, bus_url, fail, load
from tradefleet.services import BATCHING, RUNNABLE

# The runnable services as choices, from the one table that builds them; mypy cannot read a Literal
# made at run time, so to it a service name is a str.
if TYPE_CHECKING:
    ServiceName = str
else:
    ServiceName = Literal[tuple(RUNNABLE)]


def run_service(name: ServiceName, config: Path | None = None) -> None:
    """Run one service until it stops, then exit with its code (what a container runs)."""
    from libs.common.logging import setup_logging
    from libs.common.runtime import Runtime

    settings = load(config)
    setup_logging(name, settings.telemetry.log_level, settings.telemetry.log_format)
    batching = name in BATCHING and settings.md_gateway.batching
    service_app = RUNNABLE[name](settings)

    async def main() -> int:
        rt = Runtime(name, settings, batching=batching)
        return await rt.run(service_app)

    sys.exit(asyncio.run(main()))


def service(
    name: Annotated[ServiceName, typer.Argument(help="the service to run")],
    config: ConfigOpt = None,
) -> None:
    """Run one service (what a container runs)."""
    run_service(name, config)


def tap(
    subject: Annotated[str, typer.Argument(help="subject or wildcard, e.g. 'md.quote.>'")],
    count: Annotated[int | None, typer.Option(help="stop after this many events")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    since: Annotated[
        str | None, typer.Option(help="JetStream subjects: start at this time (ISO 8601 or -5m)")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="give up after this many seconds")] = None,
    nats_url: NatsUrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Decode and print every event on a subject."""
    from tradefleet.tap import run_tap

    url = bus_url(nats_url, load(config))
    raise typer.Exit(asyncio.run(run_tap(url, subject, count, as_json, since, timeout)))


def ctl(
    command: Annotated[Command, typer.Argument(help="the operator command")],
    arg: Annotated[
        list[str] | None,
        typer.Option("--arg", "-a", help="KEY=VALUE, e.g. mode=LIVE, client_order_id=..., flatten=true"),
    ] = None,
    issued_by: Annotated[str, typer.Option(help="who is asking (audit)")] = os.environ.get("USER", "cli"),
    nats_url: NatsUrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Send an operator command to the fleet (ctl.COMMAND on JetStream): the kill switch and friends."""
    import time
    import uuid

    import msgspec

    from libs.common.nats_bus import NatsBus
    from proto.control import Control

    args = _key_values(arg or [])
    settings = load(config)
    url = bus_url(nats_url, settings)
    now = time.time_ns()
    event = Control(
        ts_event=now,
        ts_init=now,
        command_id=f"cli-{uuid.uuid4().hex[:12]}",
        command=command,
        issued_by=issued_by,
        args=args,
    )

    async def send() -> None:
        bus = NatsBus(settings.nats.model_copy(update={"url": url}), "ctl-cli")
        await bus.connect()
        try:
            await bus.ensure_streams()
            await bus.publish(f"ctl.{command}", event)
            await bus.flush()
        finally:
            await bus.close()

    asyncio.run(send())
    typer.echo(msgspec.json.encode(event).decode())


def _key_values(items: list[str]) -> dict[str, str]:
    args = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--arg takes KEY=VALUE, not {item!r}")
        args[key] = value
    return args
