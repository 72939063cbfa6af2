"""Administration: event schemas, the database, and the configuration as the fleet sees it."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import SecretBytes, SecretStr
from pydantic_core import to_jsonable_python

from libs.common.config import Settings
from libs.common.secrets import MASK, SECRET_NAME, mask_url
from tradefleet.commands.common import ConfigOpt, fail, load

schemas_app = typer.Typer(no_args_is_help=True, help="event schemas")
db_app = typer.Typer(no_args_is_help=True, help="database")
config_app = typer.Typer(no_args_is_help=True, help="the configuration: effective values and every key")

DbUrlOpt = Annotated[
    str | None,
    typer.Option("--db-url", help="PostgreSQL / TimescaleDB URL (default: db.url, TRADEFLEET_DB_URL)"),
]


@schemas_app.command("export")
def schemas_export(
    out: Annotated[Path | None, typer.Option(help="directory (default proto/schemas)")] = None,
    check: Annotated[bool, typer.Option(help="only check that the checked-in schemas are fresh")] = False,
) -> None:
    """Write JSON Schema for every event and the subject catalog."""
    from proto import schemas

    directory = out or schemas.SCHEMA_DIR
    if check:
        stale = schemas.stale_files(directory)
        if stale:
            fail(f"stale schemas in {directory}: {', '.join(stale)}; run `tradefleet schemas export`", 1)
        typer.echo("schemas are fresh")
        return
    for path in schemas.export(directory):
        typer.echo(str(path))


@db_app.command("migrate")
def db_migrate(url: DbUrlOpt = None, config: ConfigOpt = None) -> None:
    """Apply database migrations (idempotent)."""
    from libs.common.logging import setup_logging
    from libs.common.storage.migrate import migrate

    settings = load(config)
    setup_logging("migrate", settings.telemetry.log_level, settings.telemetry.log_format)
    dsn = _dsn(url or settings.db.url)
    with database_errors(dsn):
        mode, applied = migrate(dsn, settings.db)
    typer.echo(json.dumps({"storage_mode": mode, "applied": applied}))


@db_app.command("prune")
def db_prune(
    url: DbUrlOpt = None,
    days: Annotated[
        int | None, typer.Option(help="keep this many days where a table has no retention of its own")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="only list what would be dropped")] = False,
    config: ConfigOpt = None,
) -> None:
    """Drop what is past each table's retention (opt-in: db.retention_days, db.tables.NAME),
    counted from when it was written: native day partitions, or TimescaleDB chunks where the
    licence has no retention policies (Apache); a no-op where TimescaleDB's policies do it."""
    from libs.common.storage.retention import prune

    settings = load(config)
    dsn = _dsn(url or settings.db.url)
    with database_errors(dsn):
        dropped = prune(dsn, days or settings.db.retention_days, dt.datetime.now(dt.UTC).date(), dry_run)
    typer.echo(json.dumps({"dropped": dropped, "dry_run": dry_run}))


def _dsn(url: str | None) -> str:
    if not url:
        fail("no database: pass --db-url or set TRADEFLEET_DB_URL")
    return url


@contextlib.contextmanager
def database_errors(dsn: str) -> Iterator[None]:
    """A database that is down or refuses us is one line naming it (password masked), exit 2."""
    import psycopg

    try:
        yield
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())  # libpq's message spans lines
        fail(f"cannot use the database at {mask_url(dsn)}: {reason}")


@config_app.command("show")
def config_show(config: ConfigOpt = None) -> None:
    """The effective configuration (defaults, the file, TRADEFLEET_* on top) as YAML, secrets masked."""
    data = mask_secrets(load(config).model_dump())
    typer.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


@config_app.command("schema")
def config_schema() -> None:
    """The JSON Schema of the configuration: every key, its type, bounds and default."""
    typer.echo(json.dumps(Settings.model_json_schema(), indent=2))


def mask_secrets(value: Any, name: str = "") -> Any:
    """``value`` (a model_dump(), or anything inside one, found under key ``name``) as plain YAML
    data with every secret replaced by MASK: SecretStr and SecretBytes, a value whose key names a
    token, password or secret, and the credentials in a URL. An unset secret (None, "") is shown
    as it is: whether one is configured is what an operator needs to see."""
    if isinstance(value, SecretStr | SecretBytes):
        return MASK if value.get_secret_value() else ""
    # A flag such as require_token: false carries no secret, and masking it would hide the setting;
    # nor does a digest (control.tokens' token_sha256: what admits a token, not the token), and a
    # list or mapping under such a name (control.tokens) is masked inside, not whole.
    plain = isinstance(value, bool | list | tuple | dict) or name.endswith("_sha256")
    if SECRET_NAME.search(name) and value not in (None, "") and not plain:
        return MASK
    if isinstance(value, dict):
        return {_plain(k): mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, set | frozenset):  # sorted: the same configuration prints the same
        return sorted((mask_secrets(v, name) for v in value), key=str)
    if isinstance(value, list | tuple):
        return [mask_secrets(v, name) for v in value]
    if isinstance(value, str):
        return mask_url(value)
    return _plain(value)


def _plain(value: Any) -> Any:
    """A scalar YAML can write (a Path, an Enum... become what their JSON would be)."""
    return value if value is None or isinstance(value, int | float | str) else to_jsonable_python(value)
