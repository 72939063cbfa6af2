"""The tearsheet: report.json and report.html (self-contained, plotly.js inline) with the same
content: every metric, the strategy beside buy-and-hold and a naive momentum baseline on the same
data and costs, with a warning beside the annualized figures when the sample is small; the trade
table (round trips from the ledger's fills, with why each side happened and its slippage); P&L by
symbol and by day, calendar heatmaps when the span allows; exposure over time with kills, risk
mode changes and model quarantines marked; rolling Sharpe and volatility, the worst drawdowns;
the equity curves, returns distribution, trades on the price chart, slippage distribution, QOS
over time and each timeframe's contribution; and where it all came from (commit, configuration
hash, models, data span, cost model). Times are New York's."""

from __future__ import annotations

import bisect
import calendar
import collections
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from libs.common.markettime import ny_midnight_ns, ny_text
from libs.common.secrets import mask_url
from proto.units import BPS
from services.execution.commissions import commission_model
from services.md_gateway.providers.lean import bar_records
from tradefleet.backtest import analysis, sections
from tradefleet.backtest.analysis import EquityCurve
from tradefleet.backtest.baselines import Curve, buy_and_hold, naive_momentum
from tradefleet.backtest.engine import BacktestResult
from tradefleet.backtest.ledger import Ledger
from tradefleet.backtest.metrics import Execution, Trade, episodes, performance
from tradefleet.backtest.provenance import provenance
from tradefleet.backtest.roundtrips import ledger_round_trips
from tradefleet.backtest.sources import is_database

BENCHMARK = "SPY"


def benchmark_closes(data: str, days: list[str], symbol: str = BENCHMARK) -> dict[int, float]:
    """The benchmark's 1-minute closes by minute end: LEAN minute bars under the data folder, or
    the recorded 1m bars in the database. Empty when there are none (alpha and beta are then
    not computed, and the report says so)."""
    closes: dict[int, float] = {}
    if is_database(data):
        import psycopg

        with psycopg.connect(data) as conn:
            rows = conn.execute(
                "SELECT (extract(epoch FROM ts) * 1000000)::int8 * 1000, close FROM bars "
                "WHERE symbol = %s AND timeframe = '1m' ORDER BY ts",
                (symbol,),
            ).fetchall()
        return {int(ts): float(c) for ts, c in rows}
    for day in days:
        path = Path(data) / "equity" / "usa" / "minute" / symbol.lower() / f"{day}_trade.zip"
        if path.exists():
            for rec in bar_records(path, symbol, ny_midnight_ns(day), "minute"):
                closes[rec[1]] = rec[7]
    return closes


def strategy_executions(ledger: Ledger) -> list[Execution]:
    return [
        Execution(
            f.ts_event, f.symbol, f.quantity if f.side == "BUY" else -f.quantity, f.price, f.commission or 0
        )
        for f in ledger.fills
    ]


def strategy_cost_bps(ledger: Ledger) -> float | None:
    """Commissions plus slippage against the arrival mid, over the traded notional (TCA's view)."""
    notional = sum(r.quantity * r.fill_ratio * r.arrival_price for r in ledger.tca)
    if not notional:
        return None
    return sum(r.cost_bps * r.quantity * r.arrival_price for r in ledger.tca) / notional


def contributions(trades: list[Trade], ledger: Ledger) -> dict[str, float]:
    """Each trade's P&L split over the QOS terms of the intent that opened it, in proportion to
    their signed part of the score (terms against the trade get a negative share)."""
    entries: dict[str, list[tuple[int, dict[str, float]]]] = collections.defaultdict(list)
    for i in ledger.intents:
        if i.intent_id.endswith("-enter"):
            entries[i.symbol].append((i.ts_event, {k: v for k, v in i.components.items() if k != "qos"}))
    out: dict[str, float] = collections.defaultdict(float)
    for t in trades:
        found = entries.get(t.symbol, [])
        k = bisect.bisect_right([ts for ts, _ in found], t.entry_ts) - 1
        terms = found[k][1] if k >= 0 else {}
        total = sum(terms.values())
        if not terms or total == 0:
            out["unattributed"] += t.pnl
            continue
        for name, value in terms.items():
            out[name] += t.pnl * value / total
    return {k: round(v, 2) for k, v in sorted(out.items())}


def build(
    result: BacktestResult, data: str, symbols: list[str], rules: BacktestResult | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(report.json's content, what the plots need). With ``rules`` (the same days run with the RL
    policy off), ``result`` is the run with the policy on and both are reported side by side."""
    ledger = result.ledger
    capital = ledger.capital
    minutes = ledger.minutes
    ts = np.array([m.ts for m in minutes], dtype=np.int64)
    equity = np.array([m.equity for m in minutes])
    bench = benchmark_closes(data, result.days)
    end_ts = int(ts[-1]) if len(ts) else 0
    trades = episodes(strategy_executions(ledger), ledger.mids, end_ts)
    days = len(result.days)
    commissions = commission_model(ledger.settings.execution.sim.commission)
    rows = {"strategy": performance(ts, equity, capital, trades, days, strategy_cost_bps(ledger), bench)}
    curves: dict[str, Curve] = {}
    for make in (buy_and_hold, naive_momentum):
        curve, spread_paid = make(minutes, symbols, capital, commissions)
        curves[curve.name] = curve
        base_trades = episodes(curve.executions, curve.last_mid, end_ts)
        rows[curve.name] = performance(
            curve.ts, curve.equity, capital, base_trades, days, curve.cost_bps(spread_paid), bench
        )
    if rules is not None:
        r_ledger = rules.ledger
        r_ts = np.array([m.ts for m in r_ledger.minutes], dtype=np.int64)
        r_equity = np.array([m.equity for m in r_ledger.minutes])
        r_trades = episodes(strategy_executions(r_ledger), r_ledger.mids, end_ts)
        rows["rules_sizing"] = performance(
            r_ts, r_equity, capital, r_trades, days, strategy_cost_bps(r_ledger), bench
        )
        curves["rules_sizing"] = Curve("rules_sizing", r_ts, r_equity, [], {})
    trips = ledger_round_trips(ledger)
    account = EquityCurve(ts, equity, capital)
    by_day = analysis.pnl_by_day(account, trips)
    report = {
        "days": result.days,
        "symbols": symbols,
        "data": mask_url(data),
        "capital": capital,
        "ticks": result.records,
        "events": result.events,
        "seconds": round(result.seconds, 2),
        "ticks_per_s": round(result.ticks_per_s),
        "bad_ticks": result.bad_ticks,
        "metrics": rows,
        "contribution_by_term": contributions(trades, ledger),
        "orders": {
            "intents": len(ledger.intents),
            "approved": ledger.approvals,
            "denied": dict(ledger.denials),
            "order_events": len(ledger.orders),
            "fills": len(ledger.fills),
            "commissions": round(ledger.commissions, 2),
        },
        "sample_warning": analysis.sample_warning(days, rows["strategy"]["trades"]),
        "trades": analysis.trade_rows(trips),
        "trade_stats": analysis.trade_stats(trips),
        "pnl_by_symbol": analysis.pnl_by_symbol(trips, symbols),
        "pnl_by_day": by_day,
        "calendar": analysis.calendar_returns(by_day),
        "exposure": analysis.exposure(ledger, symbols) | {"events": analysis.events(ledger)},
        "rolling": analysis.rolling(account, days),
        "drawdowns": analysis.drawdowns(account),
        "equity": _equity_series(ts, equity, curves),
        "provenance": provenance(result, data, analysis.quarantines(ledger)),
        "benchmark": {"symbol": BENCHMARK, "minutes": len(bench)},
        "policy": _policy_facts(result, rules),
        "sentiment": {
            "headlines": ledger.news,
            "scores": len(ledger.sentiment),
            "error": result.sentiment_error,
        },
        "models": {k: v.get("models") for k, v in result.statuses.items() if k == "fastlane"}.get("fastlane"),
        "conventions": {
            "returns": "per minute of the regular session, equity marked to the mid",
            "annualization": "252 days x 390 minutes",
            "trade": "a position episode per symbol, flat to flat, P&L net of commissions",
            "trade_table": "round trips first in first out per symbol (a partial close splits a lot), "
            "P&L net of commissions; slippage of both sides against the arrival mid",
            "times": "New York (America/New_York)",
            "small_sample": f"annualized figures flagged when fewer than {analysis.MIN_DAYS} trading days "
            f"or {analysis.MIN_TRADES} trades",
            "cost_bps": "commissions + slippage vs the arrival mid, over traded notional",
            "alpha_beta": f"OLS of minute returns on {BENCHMARK}'s; alpha annualized",
            "baselines": "trade at the minute's touch (mid -/+ half spread) with the same commission model",
        },
    }
    plots = {"ts": ts, "equity": equity, "curves": curves, "trades": trades, "bench": bench}
    return report, plots


def _equity_series(ts: np.ndarray, equity: np.ndarray, curves: dict[str, Curve]) -> dict[str, Any]:
    """The equity curves the HTML plots, by New York minute."""
    out = {"strategy": {"time": _dt(ts), "equity": [round(float(x), 2) for x in equity]}}
    for name, curve in curves.items():
        out[name] = {"time": _dt(curve.ts), "equity": [round(float(x), 2) for x in curve.equity]}
    return out


def _policy_facts(result: BacktestResult, rules: BacktestResult | None) -> dict[str, Any]:
    """Whether the RL policy sized and timed the entries, which one, and what it did."""
    policy = result.statuses.get("policy")
    qos = result.statuses.get("qos", {}).get("stats", {})
    keys = ("proposals", "entries_by_policy", "entries_deferred_by_policy", "policy_silent")
    facts: dict[str, Any] = {
        "on": policy is not None,
        "compared_with_rules": rules is not None,
        "qos": {k: qos.get(k, 0) for k in keys},
    }
    if policy is not None:
        facts |= {k: policy.get(k) for k in ("version", "inference_us", "refused")}
    if rules is not None:
        facts["rules_orders"] = {"intents": len(rules.ledger.intents), "fills": len(rules.ledger.fills)}
    return facts


def write(
    result: BacktestResult, data: str, symbols: list[str], folder: Path, rules: BacktestResult | None = None
) -> dict[str, Any]:
    report, plots = build(result, data, symbols, rules)
    write_built(report, plots, result.ledger, folder)
    return report


def write_built(report: dict[str, Any], plots: dict[str, Any], ledger: Ledger, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    (folder / "report.html").write_text(render_html(report, plots, ledger))


def write_walk_forward(
    out: dict[str, Any], ts: np.ndarray, returns: dict[str, list[np.ndarray]], capital: float, folder: Path
) -> None:
    """The overall walk-forward report: every test window chained, then the folds."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    warning = analysis.sample_warning(
        sum(len(f["test"]) for f in out["folds"]), out["overall"].get("strategy", {}).get("trades") or 0
    )
    folder.mkdir(parents=True, exist_ok=True)
    saved = {**out, "sample_warning": warning}
    (folder / "report.json").write_text(json.dumps(saved, indent=2, sort_keys=True, default=str))
    chained = go.Figure()
    for name, parts in returns.items():
        chained.add_trace(
            go.Scatter(
                x=_dt(ts), y=capital * np.cumprod(1.0 + np.concatenate(parts)), name=name.replace("_", " ")
            )
        )
    chained.update_layout(
        title="Test windows chained (each fold starts from the last one's equity)",
        template="plotly_white",
        height=380,
        xaxis_title="New York time",
        yaxis_title="USD",
    )
    rows = []
    for f in out["folds"]:
        m = f["metrics"]["strategy"]
        models = ", ".join(
            f"{h}: {v.get('version') or 'none'}" for h, v in f["training"].items() if isinstance(v, dict)
        )
        rows.append(
            f"<tr><td>{f['fold']}</td><td>{', '.join(f['train'])}</td><td>{', '.join(f['test'])}</td>"
            f"<td>{sections.pct(m['total_return'])}</td><td>{sections.number(m['sharpe'])}</td><td>{m['trades']}</td>"
            f'<td>{html.escape(models)}</td><td><a href="fold-{f["fold"]}/report.html">report</a></td></tr>'
        )
    folds_table = (
        "<table><tr><th>fold</th><th>train</th><th>test</th><th>total return</th><th>sharpe</th>"
        f"<th>trades</th><th>models</th><th></th></tr>{''.join(rows)}</table>"
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tradefleet walk-forward</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin: 12px 0; }}
th, td {{ border: 1px solid #ddd; padding: 4px 8px; text-align: right; }}
th {{ background: #f5f5f5; }}
{STYLE}
</style>
<script>{get_plotlyjs()}</script></head>
<body>
<h1>Walk-forward: train {out["train_days"]} day(s), test {out["test_days"]}, roll</h1>
{sections.warning_banner(warning)}
<h2>Over every test window</h2>
{sections.metrics_table(out["overall"], warning)}
<section class="plot" data-plot="chained">{chained.to_html(full_html=False, include_plotlyjs=False)}</section>
<h2>Folds</h2>
{folds_table}
</body></html>
"""
    (folder / "report.html").write_text(page)


# -- HTML -----------------------------------------------------------------------------------------
STYLE = """
.warning { background: #fff3cd; border: 2px solid #e0a800; padding: 10px 14px; margin: 12px 0;
  font-size: 1.1em; }
tr.small-sample td { color: #8a6d00; font-style: italic; }
.small { color: #b35c00; font-weight: bold; font-size: 0.85em; }
.note { color: #666; font-size: 0.85em; }
table.facts td, table.provenance td, table.trade-stats td { text-align: left; }
table.facts th, table.provenance th, table.trade-stats th { text-align: left; }
table.trades td:nth-child(12), table.trades td:nth-child(13) { text-align: left; max-width: 22em;
  font-size: 0.85em; }
table.trades tr.win td:nth-child(9) { color: #137333; }
table.trades tr.loss td:nth-child(9) { color: #b3261e; }
.provenance td { font-family: ui-monospace, monospace; font-size: 0.9em; }
"""
EVENT_COLORS = {
    "quarantine": "#b35c00",
    "release": "#137333",
    "kill": "#b3261e",
    "flatten": "#b3261e",
    "resume": "#137333",
    "mode": "#5f2ca8",
}


def _dt(ts: np.ndarray | list[int]) -> list[str]:
    """New York wall time, the market's (plot axes say so)."""
    return [ny_text(int(t)) for t in ts]


def _figures(report: dict[str, Any], plots: dict[str, Any], ledger: Ledger) -> list[tuple[str, Any]]:
    import plotly.graph_objects as go

    figs: list[tuple[str, Any]] = []
    ts, equity = plots["ts"], plots["equity"]
    capital = report["capital"]

    eq = go.Figure(go.Scatter(x=_dt(ts), y=equity, name="strategy"))
    for name, curve in plots["curves"].items():
        eq.add_trace(go.Scatter(x=_dt(curve.ts), y=curve.equity, name=name.replace("_", " ")))
    eq.update_layout(title="Equity (marked to the mid, minute samples)", yaxis_title="USD")
    figs.append(("equity", eq))

    curve = np.concatenate([[capital], equity]) if len(equity) else np.array([capital])
    dd = curve / np.maximum.accumulate(curve) - 1.0
    draw = go.Figure(go.Scatter(x=_dt(ts), y=dd[1:] * 100, fill="tozeroy", name="drawdown"))
    draw.update_layout(title="Drawdown", yaxis_title="%")
    figs.append(("drawdown", draw))

    rets = (curve[1:] / curve[:-1] - 1.0) * BPS if len(curve) > 1 else np.zeros(0)
    moving = rets[rets != 0]
    dist = go.Figure(go.Histogram(x=moving, nbinsx=60, name="minute returns"))
    dist.update_layout(
        title=f"Minute returns while exposed ({len(moving)} of {len(rets)} minutes moved)",
        xaxis_title="bps",
    )
    figs.append(("returns", dist))
    figs.append(("exposure", _exposure_figure(report["exposure"])))
    figs.append(("rolling", _rolling_figure(report["rolling"], report["sample_warning"])))

    for symbol in report["symbols"]:
        mids = [(m.ts, m.mids[symbol]) for m in ledger.minutes if symbol in m.mids]
        if not mids:
            continue
        price = go.Figure(
            go.Scatter(x=_dt([t for t, _ in mids]), y=[p for _, p in mids], name=f"{symbol} mid")
        )
        for side, marker, color in (("BUY", "triangle-up", "green"), ("SELL", "triangle-down", "red")):
            fills = [f for f in ledger.fills if f.symbol == symbol and f.side == side]
            price.add_trace(
                go.Scatter(
                    x=_dt([f.ts_event for f in fills]),
                    y=[f.price for f in fills],
                    mode="markers",
                    name=side.lower(),
                    marker={"symbol": marker, "size": 11, "color": color},
                    text=[f"{f.quantity:g} @ {f.price:.4f}" for f in fills],
                )
            )
        price.update_layout(title=f"{symbol}: trades on the price", yaxis_title="USD")
        figs.append((f"price-{symbol}", price))

    slip = go.Figure(go.Histogram(x=[r.slippage_bps for r in ledger.tca], nbinsx=30, name="slippage"))
    slip.update_layout(title=f"Slippage vs arrival mid ({len(ledger.tca)} orders)", xaxis_title="bps")
    figs.append(("slippage", slip))

    qos = go.Figure()
    for symbol in report["symbols"]:
        scores = [q for q in ledger.qos if q.symbol == symbol]
        qos.add_trace(
            go.Scatter(x=_dt([q.ts_event for q in scores]), y=[q.score for q in scores], name=symbol)
        )
    qos.update_layout(title="QOS over time", yaxis_title="score")
    figs.append(("qos", qos))

    contrib = report["contribution_by_term"]
    bars = go.Figure(go.Bar(x=list(contrib), y=list(contrib.values())))
    bars.update_layout(
        title="P&L contribution per timeframe (QOS terms of each entry)",
        yaxis_title="USD",
        xaxis_title="QOS term",
    )
    figs.append(("contribution", bars))
    return figs + _pnl_figures(report)


def _exposure_figure(exposure: dict[str, Any]) -> Any:
    """Signed exposure per symbol, gross dotted, and a line at each kill, mode change and model
    quarantine (what it was on hover; events of one kind at one time share a line)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for symbol, values in exposure["by_symbol"].items():
        fig.add_trace(go.Scatter(x=exposure["time"], y=values, name=symbol))
    fig.add_trace(go.Scatter(x=exposure["time"], y=exposure["gross"], name="gross", line={"dash": "dot"}))
    marks: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for e in exposure["events"]:
        marks[(e["time"], e["kind"])].append(e["detail"])
    for (time, kind), details in marks.items():
        color = EVENT_COLORS.get(kind, "#444")
        fig.add_shape(
            type="line", x0=time, x1=time, y0=0, y1=1, yref="paper", line={"color": color, "dash": "dash"}
        )
        label = f"{kind} x{len(details)}" if len(details) > 1 else kind
        fig.add_annotation(
            x=time, y=1, yref="paper", text=label, showarrow=False, yanchor="bottom", font={"color": color}
        )
    if marks:
        top = max((g for g in exposure["gross"] if g is not None), default=0.0)
        fig.add_trace(
            go.Scatter(
                x=[time for time, _ in marks],
                y=[top] * len(marks),
                mode="markers",
                name="events",
                marker={
                    "symbol": "diamond",
                    "size": 10,
                    "color": [EVENT_COLORS.get(kind, "#444") for _, kind in marks],
                },
                text=["<br>".join(html.escape(d) for d in details) for details in marks.values()],
                hoverinfo="text+x",
            )
        )
    kinds = sorted({kind for _, kind in marks})
    fig.update_layout(
        title="Exposure per symbol (position x mid)"
        + (f"; marked: {', '.join(kinds)}" if kinds else "; no kill, mode change or quarantine"),
        yaxis_title="USD",
    )
    return fig


def _rolling_figure(rolling: dict[str, Any], warning: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(go.Scatter(x=rolling["time"], y=rolling["sharpe"], name="Sharpe"))
    fig.add_trace(
        go.Scatter(
            x=rolling["time"],
            y=[v * 100 if v is not None else None for v in rolling["volatility"]],
            name="volatility %",
            yaxis="y2",
        )
    )
    small = " (small sample: extrapolated)" if warning.get("small_sample") else ""
    fig.update_layout(
        title=f"Rolling Sharpe and volatility over {rolling['window']}, annualized{small}",
        yaxis={"title": {"text": "Sharpe"}},
        yaxis2={"title": {"text": "volatility %"}, "overlaying": "y", "side": "right"},
    )
    return fig


def _pnl_figures(report: dict[str, Any]) -> list[tuple[str, Any]]:
    """P&L per symbol, per day when there are several, and the calendar heatmaps the span allows."""
    import plotly.graph_objects as go

    figs: list[tuple[str, Any]] = []
    by_symbol = report["pnl_by_symbol"]
    sym = go.Figure(go.Bar(x=list(by_symbol), y=[v["pnl"] for v in by_symbol.values()], name="P&L"))
    sym.update_layout(
        title="P&L per symbol (round trips, net of commissions)", yaxis_title="USD", xaxis_title="symbol"
    )
    figs.append(("pnl-symbol", sym))
    by_day = report["pnl_by_day"]
    if len(by_day) > 1:
        day = go.Figure(go.Bar(x=[d["day"] for d in by_day], y=[d["pnl"] for d in by_day], name="P&L"))
        day.update_layout(
            title="P&L per day",
            yaxis_title="USD",
            xaxis={"title": {"text": "day (New York)"}, "type": "category"},
        )
        figs.append(("pnl-day", day))
    cal = report["calendar"]
    if cal["daily"]:
        d = cal["daily"]
        heat = go.Figure(
            go.Heatmap(z=_percent(d["returns"]), x=d["weekdays"], y=d["weeks"], colorscale="RdYlGn", zmid=0)
        )
        heat.update_layout(
            title="Daily returns (%)",
            xaxis_title="weekday",
            yaxis={"title": {"text": "week of"}, "type": "category", "autorange": "reversed"},
        )
        figs.append(("heatmap-daily", heat))
    if cal["monthly"]:
        m = cal["monthly"]
        heat = go.Figure(
            go.Heatmap(
                z=_percent(m["returns"]),
                x=[calendar.month_abbr[k] for k in m["months"]],
                y=[str(y) for y in m["years"]],
                colorscale="RdYlGn",
                zmid=0,
            )
        )
        heat.update_layout(
            title="Monthly returns (%)",
            xaxis={"title": {"text": "month"}, "type": "category"},
            yaxis={"title": {"text": "year"}, "type": "category", "autorange": "reversed"},
        )
        figs.append(("heatmap-monthly", heat))
    return figs


def _percent(grid: list[list[float | None]]) -> list[list[float | None]]:
    return [[None if v is None else v * 100 for v in row] for row in grid]


def _plot_divs(report: dict[str, Any], plots: dict[str, Any], ledger: Ledger) -> dict[str, str]:
    divs = {}
    for name, fig in _figures(report, plots, ledger):
        fig.update_layout(template="plotly_white", height=360, margin={"l": 50, "r": 20, "t": 50, "b": 40})
        if fig.layout.xaxis.title.text is None:
            fig.update_xaxes(title_text="New York time")
        divs[name] = (
            f'<section class="plot" data-plot="{name}">'
            + fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{name}")
            + "</section>"
        )
    return divs


def render_html(report: dict[str, Any], plots: dict[str, Any], ledger: Ledger) -> str:
    from plotly.offline import get_plotlyjs

    divs = _plot_divs(report, plots, ledger)

    def take(*names: str) -> str:
        return "".join(divs.pop(n, "") for n in names)

    prices = [f"price-{s}" for s in report["symbols"]]
    calendar_notes = "".join(f'<p class="note">No {html.escape(n)}.</p>' for n in report["calendar"]["notes"])
    title = f"Backtest {sections.days_text(report['days'])}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>tradefleet {html.escape(title.lower())}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin: 12px 0; }}
th, td {{ border: 1px solid #ddd; padding: 4px 8px; text-align: right; }}
th {{ background: #f5f5f5; }} .plot {{ margin: 16px 0; }}
{STYLE}
</style>
<script>{get_plotlyjs()}</script></head>
<body>
<h1>{html.escape(title)}: {html.escape(", ".join(report["symbols"]))}</h1>
{sections.warning_banner(report["sample_warning"])}
{sections.header(report)}
<h2>Metrics</h2>
{sections.metrics_table(report["metrics"], report["sample_warning"])}
{take("equity", "drawdown")}
<h2>Worst drawdowns</h2>
{sections.drawdown_table(report["drawdowns"])}
<h2>Trades</h2>
{sections.trade_summary(report["trade_stats"])}
{sections.trade_table(report["trades"])}
<h2>P&amp;L by symbol and by day</h2>
{sections.symbol_table(report["pnl_by_symbol"])}
{sections.day_table(report["pnl_by_day"])}
{take("pnl-symbol", "pnl-day", "heatmap-daily", "heatmap-monthly")}
{calendar_notes}
<h2>Exposure and risk over time</h2>
{take("exposure", "rolling", "returns")}
<h2>Execution and signals</h2>
{take(*prices, "slippage", "qos", "contribution")}
{"".join(divs.values())}
<h2>Provenance</h2>
{sections.provenance_block(report["provenance"])}
<h2>Conventions</h2>
{sections.conventions(report["conventions"])}
</body></html>
"""
