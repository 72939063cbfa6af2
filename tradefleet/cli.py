"""The `tradefleet` command line: the app, assembled from the command modules (tradefleet/commands)."""

from __future__ import annotations

from typing import Annotated

import typer

from tradefleet.commands import admin, audit, backtest, control, data, fleet, nats, ops, sentiment, train
from tradefleet.commands.ops import run_service

__all__ = ["app", "main", "run_service"]  # run_service: services/*/__main__.py start through it

app = typer.Typer(
    no_args_is_help=True, add_completion=True, help="tradefleet: an intraday trading fleet on NATS"
)


def _version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        typer.echo(f"tradefleet {version('tradefleet')}")
        raise typer.Exit()


@app.callback()
def _main(
    _version_flag: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit"),
    ] = False,
) -> None:
    """tradefleet: an intraday trading fleet on NATS."""


def _service_help() -> str:
    from proto.subjects import SERVICES
    from tradefleet.services import RUNNABLE

    lines = [f"{s.name}: {s.role}" for s in SERVICES if s.name in RUNNABLE]
    group = (
        "A process group, NAME+NAME+... (features+fastlane+qos+risk), runs them in one process: "
        "in-process among themselves, NATS for the rest (fleet.groups)."
    )
    return "Run one service (what a container runs).\n\n" + "\n\n".join([*lines, group])


app.command()(fleet.up)
app.command(help=_service_help())(ops.service)
app.command()(ops.tap)
app.command()(ops.ctl)
app.command()(audit.audit)
app.command()(backtest.backtest)
app.command()(backtest.ablate)
app.add_typer(train.app, name="train")
app.add_typer(sentiment.app, name="sentiment")
app.command()(data.backfill)
app.command()(data.faketws)
app.add_typer(admin.config_app, name="config")
app.add_typer(admin.schemas_app, name="schemas")
app.add_typer(admin.db_app, name="db")
app.add_typer(control.app, name="control")
app.add_typer(nats.app, name="nats")


def main() -> None:
    app()
