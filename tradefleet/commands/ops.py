"""Operating the fleet: run one service, watch a subject, send an operator command."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from proto.control import Command
from tradefleet.commands.common import ConfigOpt, NatsUrlOpt, VarDirOpt, fail, load, target
from tradefleet.services import BATCHING, RUNNABLE

if TYPE_CHECKING:
    from libs.common.config import Settings
    from libs.common.runtime import ServiceApp


def run_service(name: str, config: Path | None = None) -> None:
    """Run one service, or a process group of them ("features+fastlane+qos"), until it stops,
    then exit with its code (what a container runs)."""
    from libs.common.config import group_members
    from libs.common.logging import setup_logging
    from libs.common.runtime import Runtime

    members = group_members(name)
    if unknown := [m for m in members if m not in RUNNABLE]:
        fail(f"service: {unknown[0]!r} is not one of {'|'.join(RUNNABLE)} (a group joins them with '+')")
    if len(set(members)) != len(members):
        fail(f"service: {name} names a service twice")
    settings = load(config)
    for member in members:
        group = settings.fleet.group_of(member)
        if group is not None and set(group_members(group)) != set(members):
            fail(f"service: {member} runs in the process group {group} (fleet.groups): run that group")
    if len(members) > 1:
        setup_logging(name, settings.telemetry.log_level, settings.telemetry.log_format)
        sys.exit(asyncio.run(run_group(name, members, settings)))
    setup_logging(name, settings.telemetry.log_level, settings.telemetry.log_format)
    batching = name in BATCHING and settings.md_gateway.batching
    service_app = RUNNABLE[name](settings)

    async def main() -> int:
        rt = Runtime(name, settings, batching=batching)
        return await rt.run(service_app)

    sys.exit(asyncio.run(main()))


async def run_group(name: str, members: list[str], settings: Settings) -> int:
    """The members' apps and runtimes, as each would run alone, on one connection and loop
    (libs/common/group.py). Started one at a time, consumers first; stopped on SIGTERM/SIGINT,
    producers first. A member that fails ends the process (its supervisor restarts the group,
    which recovers like any service); one that finishes (a replay at its end) leaves the others
    running."""
    import signal

    import structlog

    from libs.common.group import ProcessGroup, member_order
    from libs.common.logging import get_logger
    from libs.common.runtime import Runtime

    log = get_logger("tradefleet.group")
    group = ProcessGroup(name, settings.nats)
    runtimes: list[Runtime] = []
    tasks: list[asyncio.Task[int]] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def all_ready() -> bool:
        return len(runtimes) == len(members) and all(rt.ready for rt in runtimes)

    async def run_member(rt: Runtime, app: ServiceApp) -> int:
        structlog.contextvars.bind_contextvars(service=rt.service, group=name)
        return await rt.run(app, install_signals=False)

    try:
        for member in member_order(members):
            own = member_settings(settings, members.index(member))
            rt = Runtime(member, own, batching=member in BATCHING and own.md_gateway.batching, group=group)
            rt.also_ready = all_ready
            runtimes.append(rt)
            task = asyncio.create_task(run_member(rt, RUNNABLE[member](own)), name=member)
            tasks.append(task)
            ready, stopped = asyncio.create_task(rt.became_ready.wait()), asyncio.create_task(stop.wait())
            await asyncio.wait({task, ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            stopped.cancel()
            if task.done() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
            if stop.is_set():
                return 0
        log.info("group ready", members=[rt.service for rt in runtimes])
        stopping = asyncio.create_task(stop.wait())
        pending = {t for t in tasks if not t.done()}
        while pending and not stop.is_set():
            done, pending = await asyncio.wait(pending | {stopping}, return_when=asyncio.FIRST_COMPLETED)
            pending.discard(stopping)
            for task in done - {stopping}:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        stopping.cancel()
        return 0
    except Exception as exc:
        log.error("a member failed: the group stops", error=repr(exc), exc_info=exc)
        return 1
    finally:
        for rt, task in reversed(list(zip(runtimes, tasks, strict=False))):
            rt.request_stop()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 30)
        await group.close()


def member_settings(settings: Settings, index: int) -> Settings:
    """A member's settings: the group's, with its own HTTP endpoint (http.port + its index)."""
    if settings.http.port <= 0:
        return settings
    http = settings.http.model_copy(update={"port": settings.http.port + index})
    return settings.model_copy(update={"http": http})


def service(
    name: Annotated[
        str,
        typer.Argument(
            help="the service to run, or services to run in one process joined by '+' "
            "(a process group: features+fastlane+qos+risk)"
        ),
    ],
    config: ConfigOpt = None,
) -> None:
    """Run one service, or a process group (what a container runs)."""
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
