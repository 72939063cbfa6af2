"""`tradefleet up`: the whole fleet on one machine."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from libs.common.config import LIVE_PORTS, ConfigError, Settings, load_settings
from tradefleet.commands.common import ConfigOpt, day, fail

if TYPE_CHECKING:
    from tradefleet.fleet import Fleet

Mode = Literal["replay", "paper", "live"]

# The settings each replay flag sets (the services read them from their environment), so one
# validation of the whole configuration checks the flags too, before anything starts.
FLAG_KEYS = {
    "--speed": "md_gateway.replay.speed",
    "--start": "md_gateway.replay.start",
    "--date": "md_gateway.replay.date",
    "--symbols": "md_gateway.replay.symbols",
    "--nats-url": "nats.url",
    "--group": "fleet.groups",
}


def up(
    config: ConfigOpt = None,
    nats_url: Annotated[str | None, typer.Option(help="use this NATS instead of starting one")] = None,
    duration: Annotated[
        float | None, typer.Option(help="stop after this many seconds of running (a normal end)")
    ] = None,
    speed: Annotated[
        float | None, typer.Option(help="replay speed: 0 as fast as possible, 1 real time, 20 twenty times")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(help="replay: keep time from this New York time, HH:MM (default: the open)"),
    ] = None,
    date: Annotated[str | None, typer.Option(help="replay: the recorded day, YYYY-MM-DD or YYYYMMDD")] = None,
    symbols: Annotated[str | None, typer.Option(help="replay: comma-separated symbols")] = None,
    summary: Annotated[Path | None, typer.Option(help="write the JSON summary here")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the JSON summary instead of the short one")
    ] = False,
    var_dir: Annotated[
        Path,
        typer.Option(envvar="TRADEFLEET_VAR_DIR", help="state directory (private NATS and PostgreSQL, logs)"),
    ] = Path("var"),
    live_table: Annotated[bool, typer.Option("--live/--no-live", help="live status table")] = True,
    mode: Annotated[
        Mode, typer.Option(help="replay: a recorded day on the SimBroker; paper, live: TWS / IB Gateway")
    ] = "replay",
    ib_host: Annotated[str | None, typer.Option(help="TWS / IB Gateway host (paper, live)")] = None,
    ib_port: Annotated[int | None, typer.Option(help="TWS / IB Gateway port: paper 7497 / 4002")] = None,
    lockstep: Annotated[
        bool,
        typer.Option(help="replay in lockstep: slower, and the same orders and fills as tradefleet backtest"),
    ] = False,
    replicas: Annotated[
        int,
        typer.Option(
            min=1,
            max=16,
            help="replicas of features, fastlane, qos and policy, each owning one partition of the symbols",
        ),
    ] = 1,
    edge_nats_url: Annotated[
        str | None,
        typer.Option(
            help="with --nats-url (the cloud hub): the on-prem leaf node that md-gateway, risk and "
            "execution use (a hybrid site)"
        ),
    ] = None,
    nats_auth: Annotated[
        Path | None,
        typer.Option(
            help="with --nats-url: the seeds of that server's users (tradefleet nats config --out DIR)"
        ),
    ] = None,
    group: Annotated[
        list[str] | None,
        typer.Option(
            help="run these services in one process, joined by '+' (features+fastlane+qos+risk); "
            "repeatable; instead of fleet.groups"
        ),
    ] = None,
) -> None:
    """Start the local fleet, replay a recorded day (or trade through IB), then print a summary and
    stop what it started. Every flag is checked before anything starts."""
    from tradefleet.fleet import Fleet
    from tradefleet.human import fleet_summary_lines

    env = _replay_env(speed, start, date, symbols)
    if group:
        env["TRADEFLEET_FLEET__GROUPS"] = json.dumps(group)
    if nats_url:
        env["TRADEFLEET_NATS_URL"] = nats_url
    if mode != "replay":
        env.update(_trade_through_ib(mode, ib_host, ib_port))
    if edge_nats_url is not None and not nats_url:
        fail("up: --edge-nats-url is the leaf of a hub given with --nats-url")
    if nats_auth is not None and not nats_url:
        fail("up: --nats-auth names the seeds of a server given with --nats-url")
    if nats_auth is not None and not (nats_auth / "admin.nk").is_file():
        fail(f"up: --nats-auth {nats_auth} holds no admin.nk: write it with tradefleet nats config --out")
    if duration is not None and not duration > 0:
        fail(f"up: --duration must be more than 0 seconds, not {duration:g}")
    settings = _validated(config, env)
    if start is not None and settings.md_gateway.replay.speed == 0:
        fail("up: --start keeps time from HH:MM in a paced replay; give --speed above 0 with it")
    _not_running_already(var_dir)
    if nats_url:
        _reachable(nats_url, nats_auth)
    if edge_nats_url:
        _reachable(edge_nats_url, nats_auth)
    if settings.md_gateway.provider == "replay" and mode == "replay":
        _replay_data_problem(settings)
    os.environ.update(env)  # what every service started below reads
    fleet: Fleet = Fleet(
        settings,
        config,
        var_dir,
        nats_url=nats_url,
        live_table=live_table,
        lockstep=lockstep,
        replicas=replicas,
        nats_auth=nats_auth,
        edge_nats_url=edge_nats_url,
    )
    result = fleet.run(duration=duration)
    text = json.dumps(result, indent=2, sort_keys=True)
    if summary:
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(text + "\n")
    if as_json:
        typer.echo(text)
    else:
        typer.echo("\n".join(fleet_summary_lines(result, summary)))
    raise typer.Exit(0 if result.get("ok") else 1)


def _replay_env(
    speed: float | None, start: str | None, date: str | None, symbols: str | None
) -> dict[str, str]:
    env = {}
    if speed is not None:
        env["TRADEFLEET_MD_GATEWAY__REPLAY__SPEED"] = str(speed)
    if start is not None:
        env["TRADEFLEET_MD_GATEWAY__REPLAY__START"] = start
    if date is not None:
        env["TRADEFLEET_MD_GATEWAY__REPLAY__DATE"] = day(date, "up: --date")
    if symbols is not None:
        env["TRADEFLEET_MD_GATEWAY__REPLAY__SYMBOLS"] = json.dumps(
            [s.strip().upper() for s in symbols.split(",") if s.strip()]
        )
    return env


def _validated(config: Path | None, env: dict[str, str]) -> Settings:
    """The settings the services will see, flags included; each problem one line, naming the flag."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return load_settings(config)
    except ConfigError as exc:
        fail("\n".join(f"up: {_naming_the_flag(problem)}" for problem in exc.problems))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _naming_the_flag(problem: str) -> str:
    for flag, key in FLAG_KEYS.items():
        if problem.startswith(key + ":"):
            return f"{flag} ({key}){problem.removeprefix(key)}"
    return problem


def _not_running_already(var_dir: Path) -> None:
    """Two fleets in one state directory would share its PostgreSQL and overwrite each other's
    state file; a stale file (its `up` is gone) is replaced."""
    from tradefleet.reach import STATE_FILE, Unreachable, read_state

    if not (var_dir / STATE_FILE).exists():
        return
    try:
        state = read_state(var_dir)
    except Unreachable:
        return
    fail(
        f"up: a fleet is already running in {var_dir} (pid {state.get('supervisor_pid', 'unknown')}): "
        f"stop it, use another --var-dir, or remove {var_dir / STATE_FILE} if it is not running"
    )


def _reachable(url: str, seed_dir: Path | None) -> None:
    import asyncio

    from tradefleet.reach import Target, Unreachable, connect

    async def probe() -> None:
        nc = await connect(Target(url, "--nats-url", seed_dir=seed_dir), "tradefleet-up-probe")
        await nc.close()

    try:
        asyncio.run(probe())
    except Unreachable as exc:
        fail(f"up: {exc}")


def _replay_data_problem(settings: Settings) -> None:
    """The recorded day must be there before a database and nine services start for it."""
    from services.md_gateway.runtime import make_provider

    rp = settings.md_gateway.replay
    try:
        make_provider(settings, 0)
    except (FileNotFoundError, ValueError) as exc:
        fail(f"up: cannot replay {rp.date} for {','.join(rp.symbols)} from {rp.root}: {exc}")


def _trade_through_ib(mode: Mode, host: str | None, port: int | None) -> dict[str, str]:
    """Point the services at TWS / IB Gateway; refuse a port of the other kind (paper vs live)."""
    port = port or (7496 if mode == "live" else 7497)
    if (port in LIVE_PORTS) != (mode == "live"):
        fail(f"port {port} is a {'live' if port in LIVE_PORTS else 'paper'} port but --mode {mode}")
    # The services read these; live also needs ib.allow_live in the config (checked on load).
    return {
        "TRADEFLEET_MD_GATEWAY__PROVIDER": "ib",
        "TRADEFLEET_EXECUTION__BROKER": "ib",
        "TRADEFLEET_IB__PORT": str(port),
        "TRADEFLEET_IB__HOST": host or "127.0.0.1",
    }
