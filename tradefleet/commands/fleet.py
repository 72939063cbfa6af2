"""`tradefleet up`: the whole fleet on one machine."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

import typer

from libs.common.config import LIVE_PORTS
from tradefleet.commands.common import ConfigOpt, fail, load

Mode = Literal["replay", "paper", "live"]


def up(
    config: ConfigOpt = None,
    nats_url: Annotated[str | None, typer.Option(help="use this NATS instead of starting one")] = None,
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    speed: Annotated[
        float | None, typer.Option(help="replay speed: 0 as fast as possible, 1 real time")
    ] = None,
    summary: Annotated[Path | None, typer.Option(help="write a JSON summary here")] = None,
    var_dir: Annotated[Path, typer.Option(help="state directory (private NATS and PostgreSQL)")] = Path(
        "var"
    ),
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
) -> None:
    """Start the local fleet, replay (or trade through IB), print a summary, stop what it started."""
    from tradefleet.fleet import Fleet

    if mode != "replay":
        _trade_through_ib(mode, ib_host, ib_port)
    settings = load(config)
    fleet = Fleet(
        settings, config, var_dir, nats_url=nats_url, speed=speed, live_table=live_table, lockstep=lockstep
    )
    result = fleet.run(duration=duration)
    text = json.dumps(result, indent=2, sort_keys=True)
    if summary:
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(text + "\n")
    typer.echo(text)
    raise typer.Exit(0 if result.get("ok") else 1)


def _trade_through_ib(mode: Mode, host: str | None, port: int | None) -> None:
    """Point the services at TWS / IB Gateway; refuse a port of the other kind (paper vs live)."""
    port = port or (7496 if mode == "live" else 7497)
    if (port in LIVE_PORTS) != (mode == "live"):
        fail(f"port {port} is a {'live' if port in LIVE_PORTS else 'paper'} port but --mode {mode}")
    # The services read these; live also needs ib.allow_live in the config (checked on load).
    os.environ.update(
        TRADEFLEET_MD_GATEWAY__PROVIDER="ib",
        TRADEFLEET_EXECUTION__BROKER="ib",
        TRADEFLEET_IB__PORT=str(port),
        TRADEFLEET_IB__HOST=host or "127.0.0.1",
    )
