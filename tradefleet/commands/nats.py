"""`tradefleet nats config` and `tradefleet nats provision`: least privilege on the bus from the
catalog, and the streams made by one hand (services only use them)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from tradefleet.commands.common import ConfigOpt, fail, load

app = typer.Typer(no_args_is_help=True, help="the bus: users and permissions, streams")


@app.command("config")
def config(
    out: Annotated[Path, typer.Option("--out", help="where nats-server.conf and the USER.nk seeds go")],
    partitions: Annotated[
        int,
        typer.Option(
            "--partitions",
            min=1,
            max=1024,
            help="replicas of features, fastlane, qos and policy: the server maps symbols to that "
            "many partitions (each replica's partition.count)",
        ),
    ] = 1,
    group: Annotated[
        list[str] | None,
        typer.Option("--group", help="a process group's user too (features+fastlane+qos); repeatable"),
    ] = None,
    config_file: ConfigOpt = None,
) -> None:
    """Write nats-server.conf (one user per service, permissions from proto/subjects.py, plus tap,
    operator and admin, and one per process group of fleet.groups; the partition mappings) and a
    seed per user, USER.nk (0600; kept when already there, so re-running it with another
    --partitions changes only the mappings)."""
    from libs.common.natsauth import users, write

    overrides = {"fleet": {"groups": group}} if group else {}
    groups = load(config_file, **overrides).fleet.groups  # validated: known services, none twice
    files = write(out, partitions=partitions, groups=groups)
    typer.echo(f"wrote {out / 'nats-server.conf'} ({partitions} partition(s)) and {len(files)} seeds:")
    for user, perms in users(groups).items():
        counts = f"publish {len(perms.publish)}, subscribe {len(perms.subscribe)} subjects"
        typer.echo(f"  {files[user]}  {counts}")
    typer.echo("Start nats-server with -c that file (or include it); give each service its seed as")
    typer.echo("nats.nkey_seed_file (TRADEFLEET_NATS__NKEY_SEED_FILE); then `tradefleet nats provision`.")


@app.command("provision")
def provision(
    nats_url: Annotated[str | None, typer.Option("--nats-url", help="the server (default: nats.url)")] = None,
    seed_file: Annotated[
        Path | None, typer.Option("--seed-file", help="the admin user's seed (admin.nk from nats config)")
    ] = None,
    config_file: ConfigOpt = None,
) -> None:
    """Create or update every stream of the catalog (subjects, storage, max age and bytes, discard
    policy, nats.stream_replicas): services on a secured bus use streams, never make them."""
    settings = load(config_file)
    url = nats_url or settings.nats.url
    update = {"url": url, "nkey_seed_file": seed_file, "max_reconnect_attempts": 1}
    nats = settings.nats.model_copy(update=update)
    try:
        names = asyncio.run(_provision(nats))
    except Exception as exc:
        fail(f"provision failed on {nats.url}: {type(exc).__name__}: {exc}")
    typer.echo(f"streams provisioned on {nats.url}: {', '.join(names)}")


async def _provision(nats: object) -> list[str]:
    from libs.common.nats_bus import NatsBus
    from proto.subjects import STREAMS

    bus = NatsBus(nats, "tradefleet-provision")  # type: ignore[arg-type]
    await asyncio.wait_for(bus.connect(), 15)
    try:
        await bus.ensure_streams()
    finally:
        await bus.close()
    return [s.name for s in STREAMS]
