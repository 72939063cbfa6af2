"""`tradefleet train`: the fast lane, the RL policy and the sentiment model into their registries."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer

from tradefleet.commands.common import ConfigOpt, Promote, csv_list, day, fail, load

app = typer.Typer(no_args_is_help=True, help="train models into the registry")

Labels = Literal["fixed", "triple-barrier"]
Algorithm = Literal["ppo", "sac", "ddpg"]  # models.policy.train.ALGORITHMS (that module needs the rl extra)


@app.command("fastlane")
def fastlane(
    data: Annotated[
        str | None,
        typer.Option(help="LEAN data folder (e.g. ../shared/data) or a postgresql:// feature store"),
    ] = None,
    from_store: Annotated[
        bool, typer.Option("--from-store", help="the recorded feature store at db.url (TRADEFLEET_DB_URL)")
    ] = False,
    last_days: Annotated[
        int | None, typer.Option(help="only the latest N days found (a rolling window)", min=1)
    ] = None,
    alert: Annotated[
        bool, typer.Option("--alert", help="publish what was promoted or refused, and why, as an alert")
    ] = False,
    horizons: Annotated[str, typer.Option(help="comma-separated horizons")] = "5m,10m,15m,30m,60m",
    families: Annotated[
        str | None,
        typer.Option(
            help="model families per horizon (lightgbm, logistic, mlp, sequence), blended when several "
            "(default fastlane.families)"
        ),
    ] = None,
    symbols: Annotated[str | None, typer.Option(help="comma-separated; default: every symbol found")] = None,
    dates: Annotated[
        str | None,
        typer.Option(help="comma-separated days, YYYY-MM-DD or YYYYMMDD; default: every day found"),
    ] = None,
    folds: Annotated[
        int, typer.Option(min=2, max=20, help="evaluated walk-forward folds (after a training-only start)")
    ] = 4,
    embargo: Annotated[str, typer.Option()] = "5m",
    labels: Annotated[
        Labels, typer.Option(help="the sign of the horizon's net return, or the ATR barrier touched first")
    ] = "fixed",
    promote: Annotated[
        Promote,
        typer.Option(help="gate: only a model --min-gain better than the base rate and the active one"),
    ] = "gate",
    min_gain: Annotated[float, typer.Option(help="log-loss gain the gate requires", min=0)] = 0.002,
    registry: Annotated[Path | None, typer.Option(help="registry root (default fastlane.registry)")] = None,
    report: Annotated[Path | None, typer.Option(help="report folder (default var/reports/...)")] = None,
    seed: Annotated[int, typer.Option()] = 7,
    config: ConfigOpt = None,
) -> None:
    """Label, cross-validate, calibrate and register one model (or a blended zoo) per horizon."""
    from libs.common.calendar import market_calendar
    from libs.common.markettime import parse_duration_ns
    from models.fastlane.cli import run
    from models.fastlane.train import TrainConfig
    from models.fastlane.zoo import check_families

    wanted = csv_list(horizons)
    try:
        for h in [*wanted, embargo]:
            parse_duration_ns(h)
    except ValueError as exc:
        fail(str(exc))
    days = [day(d, "--dates") for d in csv_list(dates)] if dates else None
    settings = load(config)
    try:
        zoo = check_families(csv_list(families) if families else settings.fastlane.families)
    except ValueError as exc:
        fail(str(exc))
    source = _source(data, from_store, settings.db.url)
    cfg = TrainConfig(
        horizons=wanted,
        families=zoo,
        folds=folds,
        embargo=embargo,
        labels=labels,
        promote=promote,
        seed=seed,
        min_gain=min_gain,
    )
    try:
        result = run(
            source,
            cfg,
            settings.features,
            registry or settings.fastlane.registry,
            report,
            csv_list(symbols, upper=True) if symbols else None,
            days,
            calendar=market_calendar(settings.market),
            last_days=last_days,
            progress=sys.stderr.isatty(),
        )
    except (ValueError, FileNotFoundError, OSError) as exc:
        _failed("fastlane", f"train fastlane: {exc}", settings if alert else None)
    for r in result["results"]:
        typer.echo(_fastlane_line(r))
    typer.echo(f"report: {result['report_html']}")
    if alert:
        from tradefleet import retrain

        _tell(settings, retrain.fastlane_alert(result))


def _source(data: str | None, from_store: bool, db_url: str | None) -> str:
    """--data, or with --from-store the database of db.url: exactly one of them."""
    if from_store and data:
        fail("--data and --from-store both name the training data: give one")
    if from_store:
        return db_url or fail("--from-store reads db.url: set TRADEFLEET_DB_URL (or db.url in the config)")
    return data or fail("no training data: give --data or --from-store")


def _tell(settings: Any, alert: Any) -> None:
    """Publish the retrain's alert; a bus that cannot take it fails the command (exit 3) so the
    scheduler shows the run as failed: its training and promotion stand."""
    from tradefleet.reach import publish_alert

    try:
        publish_alert(settings.nats, alert, "tradefleet-train")
    except Exception as exc:
        typer.echo(f"the alert could not be published ({settings.nats.url}): {exc!r}", err=True)
        raise typer.Exit(3) from None
    typer.echo(f"alert.{alert.severity}: {alert.title}")


def _failed(kind: str, error: str, settings: Any | None) -> NoReturn:
    """A retrain that could not run: said on stderr, and as an alert when asked for one."""
    if settings is not None:
        from tradefleet import retrain

        typer.echo(error, err=True)
        _tell(settings, retrain.failure_alert(kind, error))
        raise typer.Exit(1)
    fail(error)


def _fastlane_line(r: dict[str, Any]) -> str:
    from models.fastlane.train import verdict_text

    s, verdict = r["summary"], r["promotion"]
    said = verdict_text(verdict)
    promoted = "PROMOTED" + said.removeprefix("promoted") if verdict["promoted"] else said
    return (
        f"{r['horizon']:>4} {r['version']} rows={r['rows']} folds={len(r['folds'])} "
        f"auc={s['mean_auc']:.4f} logloss={s['mean_log_loss']:.4f} (base {s['mean_base_log_loss']:.4f}) "
        f"hit={s['mean_hit_rate']:.4f} ic={s['mean_ic']:.4f} {promoted}"
    )


@app.command("policy")
def policy(
    config: ConfigOpt = None,
    data: Annotated[
        str | None, typer.Option(help="LEAN data folder or a PostgreSQL URL (default: the replay's)")
    ] = None,
    symbols: Annotated[str | None, typer.Option(help="comma-separated (default: the replay's)")] = None,
    start: Annotated[
        str | None, typer.Option(help="first day, YYYY-MM-DD or YYYYMMDD (default: the replay's)")
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="last day, YYYY-MM-DD or YYYYMMDD (default: --start)")
    ] = None,
    hold_out: Annotated[
        str,
        typer.Option(help="comma-separated days held back for evaluation, YYYY-MM-DD or YYYYMMDD"),
    ] = "",
    from_store: Annotated[
        bool, typer.Option("--from-store", help="the recorded ticks at db.url (TRADEFLEET_DB_URL)")
    ] = False,
    last_days: Annotated[
        int | None,
        typer.Option(help="the latest N recorded days of the symbols (instead of --start/--end)", min=2),
    ] = None,
    hold_out_last: Annotated[
        int | None, typer.Option(help="hold back the latest K of the days (instead of --hold-out)", min=1)
    ] = None,
    alert: Annotated[
        bool, typer.Option("--alert", help="publish what was promoted or refused, and why, as an alert")
    ] = False,
    news: Annotated[list[Path] | None, typer.Option(help="headline files (default: the replay's)")] = None,
    sentiment: Annotated[bool, typer.Option("--sentiment/--no-sentiment")] = True,
    algorithm: Annotated[Algorithm, typer.Option(help="the stable-baselines3 learner")] = "ppo",
    timesteps: Annotated[int, typer.Option(help="decisions to learn from", min=64)] = 20_000,
    envs: Annotated[int, typer.Option(help="vectorized environments", min=1, max=64)] = 4,
    subprocess: Annotated[bool, typer.Option("--subprocess", help="one process per environment")] = False,
    risk_penalty: Annotated[float, typer.Option(help="reward lost per bp of drawdown growth", min=0)] = 0.5,
    promote: Annotated[
        Promote, typer.Option(help="gate: only a policy that beats the rules on the held-out days")
    ] = "gate",
    registry: Annotated[Path | None, typer.Option(help="registry root (default policy.registry)")] = None,
    report: Annotated[Path | None, typer.Option(help="report folder (default var/reports/...)")] = None,
    seed: Annotated[int, typer.Option()] = 7,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Train the RL sizing and timing policy on the backtest's cores; evaluate on held-out days."""
    from libs.common.logging import setup_logging
    from libs.common.secrets import mask_url
    from models.policy.cli import run
    from models.policy.train import PolicyTrainConfig
    from tradefleet.backtest.sources import find_days, recorded_days

    first = day(start, "--start") if start else None
    last = day(end, "--end") if end else first
    held = {day(d, "--hold-out") for d in csv_list(hold_out)}
    if held and hold_out_last:
        fail("train policy: --hold-out and --hold-out-last both choose the held-out days: give one")
    if not held and not hold_out_last:
        fail(
            "train policy: no held-out day (--hold-out or --hold-out-last): "
            "evaluation needs days the policy never trained on"
        )
    if last_days and (start or end):
        fail("train policy: --last-days and --start/--end both choose the days: give one")
    settings = load(config)
    setup_logging("train-policy", "WARNING")
    rp = settings.md_gateway.replay
    source = _source(data, from_store, settings.db.url) if (data or from_store) else str(rp.root)
    wanted = csv_list(symbols, upper=True) if symbols else [s.upper() for s in rp.symbols]
    try:
        if last_days:
            recent = recorded_days(source, wanted)[-last_days:]
            if not recent:
                raise ValueError(f"no recorded day of {', '.join(wanted)} in {mask_url(source)}")
            first, last = recent[0], recent[-1]
        if hold_out_last:
            span = find_days(source, wanted, first or rp.date, last or rp.date)
            if len(span) <= hold_out_last:
                raise ValueError(
                    f"{len(span)} day(s) found and {hold_out_last} held out: none left to train on"
                )
            held = {d.date for d in span[-hold_out_last:]}
        cfg = PolicyTrainConfig(
            algorithm=algorithm,
            timesteps=timesteps,
            n_envs=envs,
            subprocess=subprocess,
            risk_penalty=risk_penalty,
            promote=promote,
            seed=seed,
        )
        days = find_days(source, wanted, first or rp.date, last or rp.date)
        headlines = list(news) if news is not None else [p for p in rp.news if p.exists()]
        registry_root = registry or settings.policy.registry
        result = run(settings, days, held, headlines, sentiment, cfg, registry_root, report, progress)
    except (ValueError, FileNotFoundError, OSError) as exc:
        _failed("policy", f"train policy: {exc}", settings if alert else None)
    ev = result["evaluation"]
    summary = {
        "version": result["version"],
        "report": result["report_html"],
        "held_out": {"policy": ev["policy"], "rules": ev["rules"]},
        "promotion": result["promotion"],
        "inference_us": result["inference_us"],
    }
    typer.echo(json.dumps(summary, indent=2))
    if alert:
        from tradefleet import retrain

        _tell(settings, retrain.policy_alert(result))


@app.command("sentiment")
def sentiment(
    data: Annotated[Path, typer.Option(help="labelled tweets: a sent_*.csv file or its folder")] = Path(
        "data/sentiment/twitter_financial_news"
    ),
    epochs: Annotated[int, typer.Option(min=1, max=50)] = 4,
    rank: Annotated[int, typer.Option(help="LoRA rank", min=1, max=128)] = 16,
    lr: Annotated[float, typer.Option(help="adapter learning rate", min=0)] = 1e-3,
    limit: Annotated[int | None, typer.Option(help="rows used (a quick run)", min=30)] = None,
    promote: Annotated[
        Promote,
        typer.Option(help="gate: only a version more accurate than the active one on its held-out rows"),
    ] = "gate",
    registry: Annotated[Path | None, typer.Option(help="registry root (default sentiment.registry)")] = None,
    report: Annotated[Path | None, typer.Option(help="also write the report here")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    remeasure: Annotated[
        str | None, typer.Option(help="only measure the engines of this registered version again")
    ] = None,
    news_eval: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            help="also score the served engine on the analyst-action headlines of this Benzinga CSV "
            "(or its folder, e.g. ../shared/data/news/benzinga_headlines): news-style sentences "
            "labelled by the action they report",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Fine-tune the shipped sentiment model (MiniLM + LoRA) and register it, with its report."""
    from models.sentiment import train as training
    from models.sentiment.train import SentimentTrainConfig

    settings = load(config)
    root = registry or settings.sentiment.registry
    if remeasure is not None:
        try:
            meta = training.remeasure(root, remeasure, news_eval)
        except (ValueError, OSError) as exc:
            raise typer.BadParameter(str(exc)) from exc
        for name, e in meta["engines"].items():
            typer.echo(f"{name}: {json.dumps(e)}")
        typer.echo(f"serving engine: {meta['serving']['engine']}")
        if "news" in meta:
            typer.echo(f"news headlines: {_news_line(meta['news'])}")
        return
    cfg = SentimentTrainConfig(epochs=epochs, lora_rank=rank, lr=lr, limit=limit, promote=promote, seed=seed)
    meta = training.train(data, root, cfg, report, progress=sys.stderr.isatty(), news_eval=news_eval)
    held, ref = meta["held_out"], meta["reference_tfidf_logreg"]
    typer.echo(
        f"{meta['version']} held-out accuracy {held['accuracy']:.4f} macro-F1 {held['macro_f1']:.4f} "
        f"ECE {held['ece']:.4f} (TF-IDF+LR {ref['accuracy']:.4f} / {ref['macro_f1']:.4f}); "
        f"engine {meta['serving']['engine']}; {'PROMOTED' if meta['promoted'] else 'not promoted'}: "
        f"{meta.get('promotion', {}).get('why', '')}"
    )
    if "news" in meta:
        typer.echo(f"news headlines: {_news_line(meta['news'])}")


def _news_line(news: dict[str, Any]) -> str:
    return (
        f"{news['n']} analyst actions ({news['positive']} up, {news['negative']} down), engine "
        f"{news['engine']}: accuracy {news['accuracy']:.4f} (neutral counted as a miss), answered "
        f"neutral {news['answered_neutral']:.3f}, directional accuracy {news['directional_accuracy']:.4f}, "
        f"macro-F1 {news['macro_f1']:.4f}, ECE {news['ece']:.4f}"
    )
