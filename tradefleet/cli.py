"""The `tradefleet` command line: the app, assembled from the command modules (tradefleet/commands)."""

from __future__ import annotations

import typer

from tradefleet.commands import admin, backtest, data, fleet, ops, sentiment, train
from tradefleet.commands.ops import run_service

__all__ = ["app", "main", "run_service"]  # run_service: services/*/__main__.py start through it

app = typer.Typer(
    no_args_is_help=True, add_completion=True, help="tradefleet: an intraday trading fleet on NATS"
)
app.command()(fleet.up)
app.command()(ops.service)
app.command()(ops.tap)
app.command()(ops.ctl)
app.command()(backtest.backtest)
app.add_typer(train.app, name="train")
app.add_typer(sentiment.app, name="sentiment")
app.command()(data.backfill)
app.command()(data.faketws)
app.add_typer(admin.config_app, name="config")
app.add_typer(admin.schemas_app, name="schemas")
app.add_typer(admin.db_app, name="db")


def main() -> None:
    app()
