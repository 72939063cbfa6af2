"""The `tradefleet` command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from libs.common.config import ConfigError, Settings, load_settings

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="tradefleet: an intraday trading fleet on NATS"
)
schemas_app = typer.Typer(no_args_is_help=True, help="event schemas")
db_app = typer.Typer(no_args_is_help=True, help="database")
app.add_typer(schemas_app, name="schemas")
app.add_typer(db_app, name="db")
train_app = typer.Typer(no_args_is_help=True, help="train models into the registry")
app.add_typer(train_app, name="train")

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (or TRADEFLEET_CONFIG)")
]


def _settings(config: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def run_service(name: str, config: Path | None = None) -> None:
    from libs.common.logging import setup_logging
    from libs.common.runtime import Runtime
    from tradefleet.services import BATCHING, RUNNABLE

    if name not in RUNNABLE:
        typer.echo(
            f"unknown or not yet built service {name!r}; runnable: {', '.join(sorted(RUNNABLE))}", err=True
        )
        raise typer.Exit(2)
    settings = _settings(config)
    setup_logging(name, settings.telemetry.log_level, settings.telemetry.log_format)
    batching = name in BATCHING and settings.md_gateway.batching
    service_app = RUNNABLE[name](settings)

    async def main() -> int:
        rt = Runtime(name, settings, batching=batching)
        return await rt.run(service_app)

    sys.exit(asyncio.run(main()))


@app.command()
def service(
    name: Annotated[str, typer.Argument(help="service name, e.g. md-gateway")], config: ConfigOpt = None
) -> None:
    """Run one service (what a container runs)."""
    run_service(name, config)


@app.command()
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
        str, typer.Option(help="replay (recorded day, SimBroker) | paper | live (TWS / IB Gateway)")
    ] = "replay",
    ib_host: Annotated[str | None, typer.Option(help="TWS / IB Gateway host (paper, live)")] = None,
    ib_port: Annotated[int | None, typer.Option(help="TWS / IB Gateway port: paper 7497 / 4002")] = None,
    lockstep: Annotated[
        bool,
        typer.Option(help="replay in lockstep: slower, and the same orders and fills as tradefleet backtest"),
    ] = False,
) -> None:
    """Start the local fleet, replay (or trade through IB), print a summary, stop what it started."""
    from libs.common.config import LIVE_PORTS
    from tradefleet.fleet import Fleet

    if mode not in ("replay", "paper", "live"):
        typer.echo(f"--mode {mode!r}: replay, paper or live", err=True)
        raise typer.Exit(2)
    if mode != "replay":
        port = ib_port or (7496 if mode == "live" else 7497)
        if (port in LIVE_PORTS) != (mode == "live"):
            typer.echo(
                f"port {port} is a {'live' if port in LIVE_PORTS else 'paper'} port but --mode {mode}",
                err=True,
            )
            raise typer.Exit(2)
        # The services read these; live also needs ib.allow_live in the config (checked on load).
        os.environ.update(
            TRADEFLEET_MD_GATEWAY__PROVIDER="ib",
            TRADEFLEET_EXECUTION__BROKER="ib",
            TRADEFLEET_IB__PORT=str(port),
            TRADEFLEET_IB__HOST=ib_host or "127.0.0.1",
        )
    settings = _settings(config)
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


@app.command()
def tap(
    subject: Annotated[str, typer.Argument(help="subject or wildcard, e.g. 'md.quote.>'")],
    count: Annotated[int | None, typer.Option(help="stop after this many events")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    since: Annotated[
        str | None, typer.Option(help="JetStream subjects: start at this time (ISO 8601 or -5m)")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="give up after this many seconds")] = None,
    nats_url: Annotated[
        str | None, typer.Option(help="NATS URL (default: config, or the running `up`)")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Decode and print every event on a subject."""
    from tradefleet.tap import run_tap

    settings = _settings(config)
    url = nats_url or os.environ.get("TRADEFLEET_NATS_URL") or _fleet_nats_url() or settings.nats.url
    code = asyncio.run(run_tap(url, subject, count, as_json, since, timeout))
    raise typer.Exit(code)


@app.command()
def ctl(
    command: Annotated[
        str,
        typer.Argument(help="kill | resume | cancel_all | flatten | set_mode | cancel | replace | reload"),
    ],
    arg: Annotated[
        list[str] | None,
        typer.Option("--arg", "-a", help="KEY=VALUE, e.g. mode=LIVE, client_order_id=..., flatten=true"),
    ] = None,
    issued_by: Annotated[str, typer.Option(help="who is asking (audit)")] = os.environ.get("USER", "cli"),
    nats_url: Annotated[
        str | None, typer.Option(help="NATS URL (default: config, or the running `up`)")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Send an operator command to the fleet (ctl.COMMAND on JetStream): the kill switch and friends."""
    import time
    import uuid
    from typing import get_args

    import msgspec

    from libs.common.nats_bus import NatsBus
    from proto.control import Command, Control

    if command not in get_args(Command):
        typer.echo(f"unknown command {command!r}; one of: {', '.join(get_args(Command))}", err=True)
        raise typer.Exit(2)
    args = {}
    for item in arg or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            typer.echo(f"--arg takes KEY=VALUE, not {item!r}", err=True)
            raise typer.Exit(2)
        args[key] = value
    settings = _settings(config)
    url = nats_url or os.environ.get("TRADEFLEET_NATS_URL") or _fleet_nats_url() or settings.nats.url
    now = time.time_ns()
    event = Control(
        ts_event=now,
        ts_init=now,
        command_id=f"cli-{uuid.uuid4().hex[:12]}",
        command=command,  # type: ignore[arg-type]
        issued_by=issued_by,
        args=args,
    )

    async def send() -> None:
        bus = NatsBus(settings.nats.model_copy(update={"url": url}), "ctl-cli")
        await bus.connect()
        try:
            await bus.ensure_streams()
            await bus.publish(f"ctl.{command}", event)
            await bus.flush()
        finally:
            await bus.close()

    asyncio.run(send())
    typer.echo(msgspec.json.encode(event).decode())


@app.command()
def backfill(
    symbols: Annotated[str, typer.Option(help="comma-separated, e.g. IBM,BAC")],
    start: Annotated[str, typer.Option(help="first day, YYYYMMDD")],
    end: Annotated[str, typer.Option(help="last day, YYYYMMDD")],
    bar: Annotated[str, typer.Option(help="1min | 5s | ticks")] = "1min",
    hours: Annotated[
        str, typer.Option(help="ticks: the New York hours to fetch, HH:MM-HH:MM")
    ] = "09:30-16:00",
    db_url: Annotated[str | None, typer.Option(help="PostgreSQL / TimescaleDB URL")] = None,
    ib_host: Annotated[str | None, typer.Option(help="TWS / IB Gateway host")] = None,
    ib_port: Annotated[int | None, typer.Option(help="TWS / IB Gateway port")] = None,
    config: ConfigOpt = None,
) -> None:
    """IB historical bars or ticks into the database: paced by IB's rules, resumable (done chunks
    are skipped; a tick chunk resumes at the page it was on)."""
    import datetime as dt
    import time

    from libs.common.ib.historical import HistoricalPacer
    from libs.common.ib.session import IbSession, session_config
    from libs.common.storage.migrate import migrate
    from tradefleet.backfill import Backfill, plan

    if bar not in ("1min", "5s", "ticks"):
        typer.echo(f"--bar: 1min, 5s or ticks, not {bar!r}", err=True)
        raise typer.Exit(2)
    try:
        first, last = (dt.time.fromisoformat(x.strip()) for x in hours.split("-"))
        days = [dt.datetime.strptime(d, "%Y%m%d").date() for d in (start, end)]
    except ValueError as exc:
        typer.echo(f"--start/--end YYYYMMDD, --hours HH:MM-HH:MM: {exc}", err=True)
        raise typer.Exit(2) from exc
    settings = _settings(config)
    dsn = db_url or settings.db.url
    if not dsn:
        typer.echo("no database: pass --db-url or set db.url", err=True)
        raise typer.Exit(2)
    migrate(dsn, settings.db)
    names = [x.strip().upper() for x in symbols.split(",") if x.strip()]
    chunks = plan(names, days[0], days[1], bar, (first, last))  # type: ignore[arg-type]
    ib = settings.ib
    cfg = session_config(ib, ib.backfill_client_id, host=ib_host or ib.host, port=ib_port or ib.port)

    async def main() -> None:
        from tqdm import tqdm

        holder: dict[str, Backfill] = {}
        session = IbSession(cfg, lambda name, args: holder["job"].on_event(name, args))  # noqa: PLW0108
        job = holder["job"] = Backfill(session, dsn, HistoricalPacer(time.monotonic))
        runner = asyncio.create_task(session.run())
        try:
            with tqdm(total=len(chunks), unit="chunk", disable=not sys.stderr.isatty()) as bar_:
                result = await job.run(chunks, progress=bar_.update)
        finally:
            await session.stop()
            runner.cancel()
        typer.echo(json.dumps(result.__dict__, indent=2, sort_keys=True))
        if result.failed:
            raise typer.Exit(1)

    asyncio.run(main())


@app.command()
def faketws(
    data: Annotated[Path, typer.Option(help="LEAN data root")] = Path("data/sample/lean"),
    date: Annotated[str, typer.Option(help="the recorded day, YYYYMMDD")] = "20131008",
    symbols: Annotated[str, typer.Option(help="comma-separated")] = "IBM,BAC",
    port: Annotated[int, typer.Option(help="port to listen on (0: any free one)")] = 7497,
    speed: Annotated[
        float, typer.Option(help="market time per wall second: 1 real time, 60 a minute a second")
    ] = 1.0,
    start: Annotated[
        str, typer.Option(help="New York time to start from, HH:MM (skips the pre-market)")
    ] = "04:00",
    tick_history: Annotated[
        bool, typer.Option(help="also serve the day to reqHistoricalTicks (holds it in memory)")
    ] = False,
) -> None:
    """A fake TWS (server version 157) streaming a recorded day: for trying the IB path without IB."""
    from services.md_gateway.providers.lean import LeanReplay, bar_records
    from tradefleet.faketws import FakeTws
    from tradefleet.faketws import tick_history as faketws_ticks

    names = [x.strip().upper() for x in symbols.split(",") if x.strip()]
    replay = LeanReplay(data, date, names, "none")
    historical = {}
    for name in names:
        path = data / "equity" / "usa" / "minute" / name.lower() / f"{date}_trade.zip"
        if path.exists():
            historical[name] = [
                (r[1] // 1_000_000_000 - 60, r[4], r[5], r[6], r[7], r[8])
                for r in bar_records(path, name, replay.day_ns, "minute")
            ]

    async def main() -> None:
        fake = await FakeTws(replay.records()).start(port=port)
        fake.historical = historical
        if tick_history:
            fake.historical_ticks = faketws_ticks(replay.records())
        typer.echo(f"fake TWS listening on 127.0.0.1:{fake.port} (server version 157)")
        sys.stdout.flush()
        hh, mm = (int(x) for x in start.split(":"))

        def finished() -> None:
            typer.echo(f"fake TWS: the recorded day {date} has been streamed")
            sys.stdout.flush()

        await fake.autoplay(speed, replay.day_ns + (hh * 3600 + mm * 60) * 1_000_000_000, finished)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


@app.command()
def backtest(
    config: ConfigOpt = None,
    data: Annotated[
        str | None,
        typer.Option(help="LEAN data folder, or a PostgreSQL/TimescaleDB URL (recorded or backfilled ticks)"),
    ] = None,
    symbols: Annotated[
        str | None, typer.Option(help="comma-separated (default: the replay's symbols)")
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="first day, YYYY-MM-DD (default: the replay's date)")
    ] = None,
    end: Annotated[str | None, typer.Option(help="last day, YYYY-MM-DD (default: --start)")] = None,
    report: Annotated[Path, typer.Option(help="folder for report.json and report.html")] = Path(
        "var/backtest"
    ),
    news: Annotated[
        list[Path] | None,
        typer.Option(help="headline files replayed beside the ticks (default: the replay's)"),
    ] = None,
    sentiment: Annotated[bool, typer.Option("--sentiment/--no-sentiment", help="score replayed news")] = True,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    record: Annotated[
        Path | None, typer.Option(help="also write the orders and fills (JSON lines) here")
    ] = None,
    walk_forward: Annotated[
        bool, typer.Option("--walk-forward", help="train on a window, test on the next, roll")
    ] = False,
    train_days: Annotated[int, typer.Option(help="walk-forward: trading days trained on per fold")] = 1,
    test_days: Annotated[
        int, typer.Option(help="walk-forward: trading days tested (and rolled) per fold")
    ] = 1,
    promote: Annotated[
        str, typer.Option(help="walk-forward: gate (the production gate) or force (test whatever trained)")
    ] = "gate",
    policy: Annotated[
        str | None,
        typer.Option(
            help="the RL policy sizing and timing entries: on, off, or both (two runs, compared in "
            "the report); default: qos.policy from the config"
        ),
    ] = None,
) -> None:
    """Every trading core in one process on simulated time: deterministic, with a tearsheet."""
    from libs.common.logging import setup_logging
    from tradefleet.backtest.engine import Backtest, HandlerFailed
    from tradefleet.backtest.report import write
    from tradefleet.backtest.sources import find_days

    settings = _settings(config)
    setup_logging("backtest", settings.telemetry.log_level)
    rp = settings.md_gateway.replay
    data = data or str(rp.root)
    wanted = [s.strip().upper() for s in symbols.split(",")] if symbols else [s.upper() for s in rp.symbols]
    try:
        days = find_days(data, wanted, start or rp.date, end or start or rp.date)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"backtest: {exc}", err=True)
        raise typer.Exit(2) from None
    if not days:
        typer.echo(f"backtest: no data for {','.join(wanted)} in {data} between those days", err=True)
        raise typer.Exit(2)
    headlines = list(news) if news is not None else [p for p in rp.news if p.exists()]
    if walk_forward:
        _walk_forward(
            settings, data, wanted, days, report, train_days, test_days, headlines, promote, sentiment
        )
        return
    mode = policy or settings.qos.policy
    if mode not in ("on", "off", "both"):
        typer.echo(f"backtest: --policy is on, off or both, not {mode!r}", err=True)
        raise typer.Exit(2)
    if mode != "off":
        problem = _policy_problem(settings)
        if problem:
            typer.echo(f"backtest: the policy cannot run: {problem}", err=True)
            raise typer.Exit(2)
    rules = None  # the same days with the rules alone, when compared
    try:
        if mode == "both":
            off = Backtest(_with_policy(settings, "off"), days, headlines, progress, sentiment=sentiment)
            rules = asyncio.run(off.run())
        bt = Backtest(
            _with_policy(settings, "off" if mode == "off" else "on"),
            days,
            headlines,
            progress,
            sentiment=sentiment,
        )
        result = asyncio.run(bt.run())
    except HandlerFailed as exc:
        typer.echo(f"backtest failed: {exc}", err=True)
        raise typer.Exit(1) from None
    out = write(result, data, wanted, report, rules)
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(
            "".join(
                json.dumps(e, sort_keys=True) + "\n" for e in _record_lines(result.ledger.trading_record())
            )
        )
    m = out["metrics"]["strategy"]
    typer.echo(
        json.dumps(
            {
                "report": str(report / "report.html"),
                "days": out["days"],
                "ticks_per_s": out["ticks_per_s"],
                "orders": out["orders"],
                "strategy": {
                    k: m[k] for k in ("total_return", "sharpe", "max_drawdown", "trades", "hit_rate")
                },
                "policy": out["policy"],
                **(
                    {
                        "rules_sizing": {
                            k: out["metrics"]["rules_sizing"][k]
                            for k in ("total_return", "sharpe", "max_drawdown", "trades", "hit_rate")
                        }
                    }
                    if "rules_sizing" in out["metrics"]
                    else {}
                ),
            },
            indent=2,
        )
    )


def _walk_forward(
    settings: Settings,
    data: str,
    symbols: list[str],
    days: list[Any],
    report: Path,
    train_days: int,
    test_days: int,
    news: list[Path],
    promote: str,
    sentiment: bool,
) -> None:
    from tradefleet.backtest import walkforward

    if promote not in ("gate", "force"):
        typer.echo("--promote: gate or force", err=True)
        raise typer.Exit(2)
    try:
        out = walkforward.run(
            settings, data, symbols, days, report, train_days, test_days, news, promote, sentiment
        )
    except ValueError as exc:
        typer.echo(f"walk-forward: {exc}", err=True)
        raise typer.Exit(2) from None
    folds = [
        {
            "fold": f["fold"],
            "train": f["train"],
            "test": f["test"],
            "total_return": f["metrics"]["strategy"]["total_return"],
        }
        for f in out["folds"]
    ]
    overall = {k: out["overall"]["strategy"][k] for k in ("total_return", "sharpe", "max_drawdown", "trades")}
    typer.echo(
        json.dumps({"report": str(report / "report.html"), "folds": folds, "overall": overall}, indent=2)
    )


def _record_lines(record: dict[str, list[dict[str, object]]]) -> list[dict[str, object]]:
    return [{"kind": kind, **e} for kind in ("orders", "fills") for e in record[kind]]


def _fleet_nats_url() -> str | None:
    state = Path("var/fleet.json")
    if state.exists():
        try:
            return str(json.loads(state.read_text())["nats_url"])
        except (ValueError, KeyError):
            return None
    return None


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
            typer.echo(
                f"stale schemas in {directory}: {', '.join(stale)}; run `tradefleet schemas export`", err=True
            )
            raise typer.Exit(1)
        typer.echo("schemas are fresh")
        return
    for path in schemas.export(directory):
        typer.echo(str(path))


@db_app.command("migrate")
def db_migrate(
    url: Annotated[str | None, typer.Option(help="database URL (default TRADEFLEET_DB_URL)")] = None,
    config: ConfigOpt = None,
) -> None:
    """Apply database migrations (idempotent)."""
    from libs.common.logging import setup_logging
    from libs.common.storage.migrate import migrate

    settings = _settings(config)
    setup_logging("migrate", settings.telemetry.log_level, settings.telemetry.log_format)
    dsn = url or settings.db.url
    if not dsn:
        typer.echo("no database: pass --url or set TRADEFLEET_DB_URL", err=True)
        raise typer.Exit(2)
    mode, applied = migrate(dsn, settings.db)
    typer.echo(json.dumps({"storage_mode": mode, "applied": applied}))


@db_app.command("prune")
def db_prune(
    url: Annotated[str | None, typer.Option(help="database URL (default TRADEFLEET_DB_URL)")] = None,
    days: Annotated[int | None, typer.Option(help="keep this many days (default db.retention_days)")] = None,
    dry_run: Annotated[bool, typer.Option(help="only list what would be dropped")] = False,
    config: ConfigOpt = None,
) -> None:
    """Native storage mode: drop day partitions past the retention window."""
    import datetime as dt

    from libs.common.storage.retention import prune

    settings = _settings(config)
    dsn = url or settings.db.url
    if not dsn:
        typer.echo("no database: pass --url or set TRADEFLEET_DB_URL", err=True)
        raise typer.Exit(2)
    dropped = prune(dsn, days or settings.db.retention_days, dt.datetime.now(dt.UTC).date(), dry_run)
    typer.echo(json.dumps({"dropped": dropped, "dry_run": dry_run}))


def _with_policy(settings: Settings, mode: str) -> Settings:
    return settings.model_copy(update={"qos": settings.qos.model_copy(update={"policy": mode})})


def _policy_problem(settings: Settings) -> str:
    """Why the active policy cannot serve this configuration ("" when it can)."""
    from models.policy import registry as policy_registry
    from models.policy.serving import load_version
    from services.policy.runtime import PolicyApp

    root = settings.policy.registry
    version = policy_registry.active_version(root)
    if version is None:
        return f"no active policy in {root} (train one: tradefleet train policy)"
    try:
        PolicyApp(settings).check(load_version(root, version, settings.policy.engine))
    except Exception as exc:
        return str(exc)
    return ""


@train_app.command("fastlane")
def train_fastlane(
    data: Annotated[
        str, typer.Option(help="LEAN data folder (e.g. ../shared/data) or a postgresql:// feature store")
    ],
    horizons: Annotated[str, typer.Option(help="comma-separated horizons")] = "5m,15m,30m,60m",
    symbols: Annotated[str | None, typer.Option(help="comma-separated; default: every symbol found")] = None,
    dates: Annotated[
        str | None, typer.Option(help="comma-separated YYYYMMDD; default: every day found")
    ] = None,
    folds: Annotated[int, typer.Option(min=2, max=20)] = 4,
    embargo: Annotated[str, typer.Option()] = "5m",
    labels: Annotated[str, typer.Option(help="fixed or triple-barrier")] = "fixed",
    promote: Annotated[str, typer.Option(help="gate (default), force or never")] = "gate",
    min_gain: Annotated[float, typer.Option(help="log-loss gain the gate requires", min=0)] = 0.002,
    registry: Annotated[Path | None, typer.Option(help="registry root (default fastlane.registry)")] = None,
    report: Annotated[Path | None, typer.Option(help="report folder (default var/reports/...)")] = None,
    seed: Annotated[int, typer.Option()] = 7,
    config: ConfigOpt = None,
) -> None:
    """Label, cross-validate, calibrate and register one LightGBM model per horizon."""
    from libs.common.markettime import parse_duration_ns
    from models.fastlane.cli import run
    from models.fastlane.train import TrainConfig
    from services.features.runtime import feature_config

    if labels not in ("fixed", "triple-barrier") or promote not in ("gate", "force", "never"):
        typer.echo("--labels is fixed|triple-barrier; --promote is gate|force|never", err=True)
        raise typer.Exit(2)
    wanted = [h.strip() for h in horizons.split(",") if h.strip()]
    try:
        for h in [*wanted, embargo]:
            parse_duration_ns(h)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    settings = _settings(config)
    cfg = TrainConfig(
        horizons=wanted,
        folds=folds,
        embargo=embargo,
        labels=labels,
        promote=promote,
        seed=seed,
        min_gain=min_gain,
    )
    result = run(
        data,
        cfg,
        feature_config(settings),
        registry or settings.fastlane.registry,
        report,
        [s.strip().upper() for s in symbols.split(",")] if symbols else None,
        [d.strip() for d in dates.split(",")] if dates else None,
    )
    for r in result["results"]:
        s, verdict = r["summary"], r["promotion"]
        typer.echo(
            f"{r['horizon']:>4} {r['version']} rows={r['rows']} auc={s['mean_auc']:.4f} "
            f"logloss={s['mean_log_loss']:.4f} (base {s['mean_base_log_loss']:.4f}) "
            f"hit={s['mean_hit_rate']:.4f} ic={s['mean_ic']:.4f} "
            f"{'PROMOTED' if verdict['promoted'] else 'not promoted: ' + '; '.join(verdict['reasons'])}"
        )
    typer.echo(f"report: {result['report_html']}")


@train_app.command("policy")
def train_policy(
    config: ConfigOpt = None,
    data: Annotated[
        str | None, typer.Option(help="LEAN data folder or a PostgreSQL URL (default: the replay's)")
    ] = None,
    symbols: Annotated[str | None, typer.Option(help="comma-separated (default: the replay's)")] = None,
    start: Annotated[str | None, typer.Option(help="first day, YYYY-MM-DD (default: the replay's)")] = None,
    end: Annotated[str | None, typer.Option(help="last day, YYYY-MM-DD (default: --start)")] = None,
    hold_out: Annotated[
        str, typer.Option(help="comma-separated days held back for evaluation, YYYY-MM-DD (required)")
    ] = "",
    news: Annotated[list[Path] | None, typer.Option(help="headline files (default: the replay's)")] = None,
    sentiment: Annotated[bool, typer.Option("--sentiment/--no-sentiment")] = True,
    algorithm: Annotated[str, typer.Option(help="ppo (default), sac or ddpg")] = "ppo",
    timesteps: Annotated[int, typer.Option(help="decisions to learn from", min=64)] = 20_000,
    envs: Annotated[int, typer.Option(help="vectorized environments", min=1, max=64)] = 4,
    subprocess: Annotated[bool, typer.Option("--subprocess", help="one process per environment")] = False,
    risk_penalty: Annotated[float, typer.Option(help="reward lost per bp of drawdown growth", min=0)] = 0.5,
    promote: Annotated[
        str, typer.Option(help="gate (beat the rules on the held-out days), force or never")
    ] = "gate",
    registry: Annotated[Path | None, typer.Option(help="registry root (default policy.registry)")] = None,
    report: Annotated[Path | None, typer.Option(help="report folder (default var/reports/...)")] = None,
    seed: Annotated[int, typer.Option()] = 7,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Train the RL sizing and timing policy on the backtest's cores; evaluate on held-out days."""
    from libs.common.logging import setup_logging
    from models.policy.cli import run
    from models.policy.train import PolicyTrainConfig
    from tradefleet.backtest.sources import find_days, parse_day

    settings = _settings(config)
    setup_logging("train-policy", "WARNING")
    rp = settings.md_gateway.replay
    source = data or str(rp.root)
    wanted = [s.strip().upper() for s in symbols.split(",")] if symbols else [s.upper() for s in rp.symbols]
    try:
        held = {parse_day(d.strip()) for d in hold_out.split(",") if d.strip()}
        if not held:
            raise ValueError("--hold-out names no day: evaluation needs days the policy never trained on")
        cfg = PolicyTrainConfig(
            algorithm=algorithm,
            timesteps=timesteps,
            n_envs=envs,
            subprocess=subprocess,
            risk_penalty=risk_penalty,
            promote=promote,
            seed=seed,
        )
        days = find_days(source, wanted, start or rp.date, end or start or rp.date)
        headlines = list(news) if news is not None else [p for p in rp.news if p.exists()]
        result = run(
            settings,
            days,
            held,
            headlines,
            sentiment,
            cfg,
            registry or settings.policy.registry,
            report,
            progress,
        )
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"train policy: {exc}", err=True)
        raise typer.Exit(2) from None
    ev = result["evaluation"]
    typer.echo(
        json.dumps(
            {
                "version": result["version"],
                "report": result["report_html"],
                "held_out": {"policy": ev["policy"], "rules": ev["rules"]},
                "promotion": result["promotion"],
                "inference_us": result["inference_us"],
            },
            indent=2,
        )
    )


@train_app.command("sentiment")
def train_sentiment(
    data: Annotated[Path, typer.Option(help="labelled tweets: a sent_*.csv file or its folder")] = Path(
        "data/sentiment/twitter_financial_news"
    ),
    epochs: Annotated[int, typer.Option(min=1, max=50)] = 4,
    rank: Annotated[int, typer.Option(help="LoRA rank", min=1, max=128)] = 16,
    lr: Annotated[float, typer.Option(help="adapter learning rate", min=0)] = 1e-3,
    limit: Annotated[int | None, typer.Option(help="rows used (a quick run)", min=30)] = None,
    promote: Annotated[str, typer.Option(help="gate (default), force or never")] = "gate",
    registry: Annotated[Path | None, typer.Option(help="registry root (default sentiment.registry)")] = None,
    report: Annotated[Path | None, typer.Option(help="also write the report here")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    remeasure: Annotated[
        str | None, typer.Option(help="only measure the engines of this registered version again")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Fine-tune the shipped sentiment model (MiniLM + LoRA) and register it, with its report."""
    from models.sentiment import train as training
    from models.sentiment.train import SentimentTrainConfig, train

    if promote not in ("gate", "force", "never"):
        typer.echo("--promote is gate|force|never", err=True)
        raise typer.Exit(2)
    settings = _settings(config)
    if remeasure is not None:
        meta = training.remeasure(registry or settings.sentiment.registry, remeasure)
        for name, e in meta["engines"].items():
            typer.echo(f"{name}: {json.dumps(e)}")
        typer.echo(f"serving engine: {meta['serving']['engine']}")
        return
    cfg = SentimentTrainConfig(epochs=epochs, lora_rank=rank, lr=lr, limit=limit, promote=promote, seed=seed)
    meta = train(data, registry or settings.sentiment.registry, cfg, report, progress=sys.stderr.isatty())
    held, ref = meta["held_out"], meta["reference_tfidf_logreg"]
    typer.echo(
        f"{meta['version']} held-out accuracy {held['accuracy']:.4f} macro-F1 {held['macro_f1']:.4f} "
        f"ECE {held['ece']:.4f} (TF-IDF+LR {ref['accuracy']:.4f} / {ref['macro_f1']:.4f}); "
        f"engine {meta['serving']['engine']}; {'PROMOTED' if meta['promoted'] else 'not promoted'}"
    )


sentiment_app = typer.Typer(no_args_is_help=True, help="the sentiment model from the shell")
app.add_typer(sentiment_app, name="sentiment")


@sentiment_app.command("score")
def sentiment_score(
    engine: Annotated[str, typer.Option(help="auto, onnx-int8, onnx or torch")] = "auto",
    model_path: Annotated[
        Path | None, typer.Option(help="a FinBERT-class classifier folder instead of the registry's")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """One text per line on stdin; one JSON object per line out (label, probabilities, polarity)."""
    from libs.common.logging import setup_logging
    from models.sentiment.serving import LABELS, HfScorer, ModelUnavailable, load_active

    setup_logging("sentiment-cli", "WARNING")  # stdout carries the JSON lines only
    settings = _settings(config)
    st = settings.sentiment
    try:
        path = model_path or st.model_path
        scorer = HfScorer(path) if path else load_active(st.registry, engine, st.cache)
    except (ModelUnavailable, OSError, ValueError) as exc:
        typer.echo(f"no sentiment model: {exc}", err=True)
        raise typer.Exit(1) from None
    if scorer is None:
        typer.echo(f"no active sentiment model under {st.registry}", err=True)
        raise typer.Exit(1)
    for line in sys.stdin:
        text = " ".join(line.split())
        if not text:
            typer.echo(json.dumps({"error": "empty line"}))
            continue
        probs, _ = scorer.predict([text])
        p = [round(float(x), 6) for x in probs[0]]
        out = {
            "text": text,
            "label": LABELS[max(range(3), key=p.__getitem__)],
            "probabilities": dict(zip(LABELS, p, strict=True)),
            "polarity": round(p[2] - p[0], 6),
            "model_version": scorer.version,
        }
        typer.echo(json.dumps(out))
        sys.stdout.flush()


def main() -> None:
    app()
