"""`tradefleet control token`: a new control API token and the config line that admits it."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from tradefleet.commands.common import fail

app = typer.Typer(no_args_is_help=True, help="the control API (REST, WebSocket, dashboard)")


@app.command("token")
def token(
    name: Annotated[str, typer.Option(help="who acts with it: carried into ctl.* and the audit trail")],
    role: Annotated[str, typer.Option(help="viewer (reads), operator (acts), admin (parameters)")],
) -> None:
    """Print a new token (once: only its SHA-256 is kept) and its entry for control.tokens."""
    from pydantic import ValidationError

    from libs.common.config import ApiToken
    from services.control.auth import digest, new_token

    secret = new_token()
    try:
        entry = ApiToken(name=name, role=role, token_sha256=digest(secret))
    except ValidationError as exc:
        fail("; ".join(f"--{e['loc'][0]}: {e['msg']}" for e in exc.errors()))
    line = json.dumps(entry.model_dump())
    typer.echo(f"token: {secret}")
    typer.echo("Give the token to its holder; it is not stored anywhere. Add this to control.tokens:")
    typer.echo(f"  YAML:  - {{name: {entry.name}, role: {entry.role}, token_sha256: {entry.token_sha256}}}")
    typer.echo(f"  env:   TRADEFLEET_CONTROL__TOKENS='[{line}]'  (a JSON list of every token)")
