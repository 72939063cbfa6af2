"""What several commands share: the --config option, loading the settings, failing with a message,
and finding the fleet's NATS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, NoReturn

import typer

from libs.common.config import ConfigError, Settings, load_settings
from tradefleet.reach import Target, Unreachable, find

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (or TRADEFLEET_CONFIG)")
]
NatsUrlOpt = Annotated[str | None, typer.Option(help="NATS URL (default: config, or the running `up`)")]
# How training commands treat the version they register (the walk-forward has no "never").
Promote = Literal["gate", "force", "never"]
VarDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--var-dir",
        help="the state directory of a running `tradefleet up` (its NATS is used; or TRADEFLEET_VAR_DIR)",
    ),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Stop with one line on stderr; 2 is a usage or configuration problem, as typer's own."""
    typer.echo(message, err=True)
    raise typer.Exit(code)


def load(config: Path | None, **overrides: object) -> Settings:
    """The validated settings; a bad configuration is one message listing every problem, exit 2."""
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        fail(str(exc))


def day(text: str, flag: str = "--date") -> str:
    """A day as YYYYMMDD from either format every command accepts (YYYY-MM-DD or YYYYMMDD)."""
    from tradefleet.backtest.sources import parse_day

    try:
        return parse_day(text)
    except ValueError as exc:
        fail(f"{flag}: {exc}")


def csv_list(text: str, upper: bool = False) -> list[str]:
    """A comma-separated option as a list, blanks dropped: "IBM, bac," -> IBM, BAC (upper)."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    return [x.upper() for x in items] if upper else items


def target(var_dir: Path | None, nats_url: str | None, settings: Settings) -> Target:
    """The fleet's NATS by the one rule of tradefleet.reach (the command says which it used once
    connected); a missing or stale fleet state is one line and exit 2."""
    try:
        return find(var_dir, nats_url, settings)
    except Unreachable as exc:
        fail(str(exc))
