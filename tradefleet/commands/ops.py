"""Operating the fleet: run one service, watch a subject, send an operator command."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from proto.control import Command
from tradefleet.commands.common import ConfigOpt, NatsUrlOpt, VarDirOpt, fail, load, target
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
    count: Annotated[int | None, typer.Option(min=1, help="stop after this many events")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    raw: Annotated[
        bool, typer.Option("--raw", help="exact values: nanosecond times, unrounded numbers")
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(help="JetStream subjects: start at this time (ISO 8601, or relative: -5m, -2h)"),
    ] = None,
    timeout: Annotated[float | None, typer.Option(min=0, help="give up after this many seconds")] = None,
    var_dir: VarDirOpt = None,
    nats_url: NatsUrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Decode and print every event on a subject (New York time, rounded; --raw for exact)."""
    from tradefleet.reach import Unreachable
    from tradefleet.tap import TapError, parse_since, run_tap

    start = None
    if since is not None:
        try:
            start = parse_since(since)
        except ValueError as exc:
            fail(f"--since: {exc}")
    where = target(var_dir, nats_url, load(config))
    try:
        code = asyncio.run(run_tap(where, subject, count, as_json, raw, start, timeout))
    except (Unreachable, TapError) as exc:
        fail(str(exc))
    raise typer.Exit(code)


def ctl(
    command: Annotated[Command, typer.Argument(help="the operator command")],
    arg: Annotated[
        list[str] | None,
        typer.Option(
            "--arg",
            "-a",
            help="KEY=VALUE: kill flatten=true|false; set_mode mode=LIVE|DEGRADED|OBSERVE; cancel "
            "client_order_id=ID; replace client_order_id=ID quantity=N and/or limit_price=P",
        ),
    ] = None,
    issued_by: Annotated[
        str | None, typer.Option(help="who is asking, for the audit (default: $USER)")
    ] = None,
    wait: Annotated[
        float, typer.Option(min=0.1, max=60, help="seconds to wait for the services' answers")
    ] = 5.0,
    var_dir: VarDirOpt = None,
    nats_url: NatsUrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Send an operator command (ctl.COMMAND on JetStream) and print what risk and execution did."""
    import time
    import uuid

    from proto.control import Control, control_arg_problems
    from tradefleet.ctl import send
    from tradefleet.reach import Unreachable

    args = _key_values(arg or [])
    if problems := control_arg_problems(command, args):
        fail(f"ctl {command}: {'; '.join(problems)}")
    where = target(var_dir, nats_url, load(config))
    now = time.time_ns()
    event = Control(
        ts_event=now,
        ts_init=now,
        command_id=f"cli-{uuid.uuid4().hex[:12]}",
        command=command,
        issued_by=issued_by or os.environ.get("USER") or "cli",
        args=args,
    )
    try:
        answers = asyncio.run(send(where, event, wait))
    except Unreachable as exc:
        fail(str(exc))
    typer.echo(f"{command} sent as {event.command_id} by {event.issued_by} to {where.describe()}")
    for line in answers.lines(wait):
        typer.echo(line)
    raise typer.Exit(0 if answers.ok else 1)


def _key_values(items: list[str]) -> dict[str, str]:
    args = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--arg takes KEY=VALUE, not {item!r}")
        args[key] = value
    return args
