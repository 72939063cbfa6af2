"""`tradefleet backtest`: every trading core in one process on simulated time, or a walk-forward."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from tradefleet.commands.common import ConfigOpt, csv_list, fail, load

if TYPE_CHECKING:
    from libs.common.config import Settings
    from tradefleet.backtest.engine import BacktestResult

PolicyMode = Literal["on", "off", "both"]
WalkForwardPromote = Literal["gate", "force"]  # a fold that never promotes would test nothing new
SUMMARY_KEYS = ("total_return", "sharpe", "max_drawdown", "trades", "hit_rate")
# The options `backtest` and `ablate` share: the same days from the same data.
DataOpt = Annotated[
    str | None,
    typer.Option(help="LEAN data folder, or a PostgreSQL/TimescaleDB URL (recorded or backfilled ticks)"),
]
SymbolsOpt = Annotated[str | None, typer.Option(help="comma-separated (default: the replay's symbols)")]
StartOpt = Annotated[str | None, typer.Option(help="first day, YYYY-MM-DD (default: the replay's date)")]
EndOpt = Annotated[str | None, typer.Option(help="last day, YYYY-MM-DD (default: --start)")]
NewsOpt = Annotated[
    list[Path] | None, typer.Option(help="headline files replayed beside the ticks (default: the replay's)")
]


def backtest(
    config: ConfigOpt = None,
    data: DataOpt = None,
    symbols: SymbolsOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    report: Annotated[Path, typer.Option(help="folder for report.json and report.html")] = Path(
        "var/backtest"
    ),
    news: NewsOpt = None,
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
        WalkForwardPromote,
        typer.Option(help="walk-forward: gate (the production gate) or force (test whatever trained)"),
    ] = "gate",
    as_json: Annotated[
        bool, typer.Option("--json", help="print the summary as JSON instead of a few lines")
    ] = False,
    policy: Annotated[
        PolicyMode | None,
        typer.Option(
            help="the RL policy sizing and timing entries: on, off, or both (two runs, compared in "
            "the report); default: qos.policy from the config"
        ),
    ] = None,
) -> None:
    """Every trading core in one process on simulated time: deterministic, with a tearsheet."""
    from libs.common.logging import setup_logging
    from tradefleet.backtest.report import write

    settings = load(config)
    setup_logging("backtest", settings.telemetry.log_level)
    data, wanted, days, headlines = _inputs(settings, data, symbols, start, end, news)
    if walk_forward:
        _walk_forward(
            settings, data, wanted, days, report, train_days, test_days, headlines, promote, sentiment
        )
        return
    mode = policy or settings.qos.policy
    if mode != "off":
        problem = _policy_problem(settings)
        if problem:
            fail(f"backtest: the policy cannot run: {problem}")
    result, rules = _run(settings, mode, days, headlines, progress, sentiment)
    out = write(result, data, wanted, report, rules)
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(
            "".join(
                json.dumps(e, sort_keys=True) + "\n" for e in _record_lines(result.ledger.trading_record())
            )
        )
    summary = _summary(out, report)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        from tradefleet.human import backtest_summary_lines

        typer.echo("\n".join(backtest_summary_lines(summary)))


def _inputs(
    settings: Settings,
    data: str | None,
    symbols: str | None,
    start: str | None,
    end: str | None,
    news: list[Path] | None,
) -> tuple[str, list[str], list[Any], list[Path]]:
    """The data, symbols, days and headlines asked for, the replay's where not."""
    rp = settings.md_gateway.replay
    source = data or str(rp.root)
    wanted = csv_list(symbols, upper=True) if symbols else [s.upper() for s in rp.symbols]
    days = _days(source, wanted, start or rp.date, end or start or rp.date)
    headlines = list(news) if news is not None else [p for p in rp.news if p.exists()]
    return source, wanted, days, headlines


def _days(data: str, symbols: list[str], start: str, end: str) -> list[Any]:
    from tradefleet.backtest.sources import find_days

    try:
        days = find_days(data, symbols, start, end)
    except (ValueError, FileNotFoundError) as exc:
        fail(f"backtest: {exc}")
    if not days:
        fail(f"backtest: no data for {','.join(symbols)} in {data} between those days")
    return days


def _run(
    settings: Settings,
    mode: PolicyMode,
    days: list[Any],
    headlines: list[Path],
    progress: bool,
    sentiment: bool,
) -> tuple[BacktestResult, BacktestResult | None]:
    """The backtest with the policy as asked; with "both", also the same days by the rules alone."""
    from tradefleet.backtest.engine import Backtest, HandlerFailed

    def once(policy: Literal["on", "off"]) -> BacktestResult:
        bt = Backtest(_with_policy(settings, policy), days, headlines, progress, sentiment=sentiment)
        return asyncio.run(bt.run())

    try:
        rules = once("off") if mode == "both" else None
        return once("off" if mode == "off" else "on"), rules
    except HandlerFailed as exc:
        fail(f"backtest failed: {exc}", 1)


def _summary(out: dict[str, Any], report: Path) -> dict[str, Any]:
    """What the terminal shows of report.json: the strategy's headline figures, and the rules-only
    run's beside them when --policy both ran one."""
    metrics = out["metrics"]
    summary = {
        "report": str(report / "report.html"),
        "days": out["days"],
        "ticks_per_s": out["ticks_per_s"],
        "orders": out["orders"],
        "strategy": {k: metrics["strategy"][k] for k in SUMMARY_KEYS},
        "policy": out["policy"],
    }
    warning = out.get("sample_warning", {})
    if warning.get("small_sample"):
        summary["warning"] = warning["message"]  # beside the annualized figures it qualifies
    if "rules_sizing" in metrics:
        summary["rules_sizing"] = {k: metrics["rules_sizing"][k] for k in SUMMARY_KEYS}
    return summary


def _walk_forward(
    settings: Settings,
    data: str,
    symbols: list[str],
    days: list[Any],
    report: Path,
    train_days: int,
    test_days: int,
    news: list[Path],
    promote: WalkForwardPromote,
    sentiment: bool,
) -> None:
    from tradefleet.backtest import walkforward

    try:
        out = walkforward.run(
            settings, data, symbols, days, report, train_days, test_days, news, promote, sentiment
        )
    except ValueError as exc:
        fail(f"walk-forward: {exc}")
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


def _with_policy(settings: Settings, mode: Literal["on", "off"]) -> Settings:
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


def ablate(
    config: ConfigOpt = None,
    data: DataOpt = None,
    symbols: SymbolsOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    report: Annotated[Path, typer.Option(help="folder for report.json and report.html")] = Path("var/ablate"),
    news: NewsOpt = None,
    components: Annotated[
        str | None,
        typer.Option(help="comma-separated components to remove one at a time (default: every one on)"),
    ] = None,
    train_days: Annotated[int, typer.Option(help="trading days trained on per fold")] = 1,
    test_days: Annotated[int, typer.Option(help="trading days tested (and rolled) per fold")] = 1,
    promote: Annotated[
        WalkForwardPromote,
        typer.Option(help="gate (the production gate) or force (test whatever trained)"),
    ] = "gate",
    resamples: Annotated[int, typer.Option(min=100, help="bootstrap resamples per interval")] = 1000,
    seed: Annotated[
        int, typer.Option(help="the bootstrap's seed (the runs themselves are deterministic)")
    ] = 7,
) -> None:
    """The walk-forward backtest with the full system, again with nothing removed, and with each
    component removed: P&L, profit factor, Sharpe, hit rate, trades and cost with bootstrap
    intervals, and a verdict per component (keep / remove / no evidence)."""
    from libs.common.logging import setup_logging
    from tradefleet.backtest import ablation

    settings = load(config)
    setup_logging("ablate", settings.telemetry.log_level)
    data, wanted, days, headlines = _inputs(settings, data, symbols, start, end, news)
    only = csv_list(components) if components else None
    try:
        out = ablation.run(
            settings,
            data,
            wanted,
            days,
            report,
            train_days,
            test_days,
            headlines,
            promote,
            only,
            resamples,
            seed,
        )
    except ValueError as exc:
        fail(f"ablate: {exc}")
    for row in out["rows"]:
        ci = row["pnl_ci"]
        typer.echo(
            f"{row['component']:<14} P&L {row['pnl']:>+10.2f} [{ci[0]}, {ci[1]}]  trades {row['trades']:>3}  "
            f"{row.get('verdict', '')}"
        )
    typer.echo(f"report: {report / 'report.html'}")
    if not out["reproduced"]:
        fail(
            "ablate: removing nothing did not reproduce the full run (its rows compare unlike runs)",
            1,
        )
