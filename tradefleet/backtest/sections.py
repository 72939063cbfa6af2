"""The tearsheet's HTML sections that are tables and text: the header, the small-sample warning,
the metrics (percentages, USD and bps as a trader reads them), the trade table, P&L per symbol and
per day, the worst drawdowns and the provenance block. The plots are in report.py."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

TRADE_ROWS_SHOWN = 500  # beyond this the HTML says so; report.json has every row

PERCENT = {"total_return", "annualized_return", "max_drawdown", "hit_rate", "alpha", "annual_volatility"}
SIGNED = {"total_return", "annualized_return", "max_drawdown", "alpha"}  # gains and losses
USD = {"final_equity", "expectancy"}
BPS = {"expectancy_bps", "cost_bps"}
LABELS = {
    "final_equity": "final equity",
    "total_return": "total return",
    "annualized_return": "annualized return",
    "annual_volatility": "volatility",
    "sharpe": "Sharpe",
    "sortino": "Sortino",
    "max_drawdown": "max drawdown",
    "trades": "trades (flat to flat)",
    "hit_rate": "hit rate",
    "expectancy": "expectancy per trade",
    "expectancy_bps": "expectancy per trade, bps of notional",
    "profit_factor": "profit factor",
    "turnover": "turnover (x capital per day)",
    "avg_holding_min": "average holding",
    "cost_bps": "costs over traded notional",
    "alpha": "alpha vs SPY",
    "beta": "beta vs SPY",
    "benchmark_minutes": "minutes paired with SPY",
}
DASH = "&ndash;"


def esc(value: Any) -> str:
    return html.escape(str(value))


def day(yyyymmdd: str) -> str:
    """20131008 -> 2013-10-08 (the backtest's days are named as the data names them)."""
    text = str(yyyymmdd)
    return f"{text[:4]}-{text[4:6]}-{text[6:]}" if len(text) == 8 and text.isdigit() else text


def days_text(days: list[str]) -> str:
    n = len(days)
    span = day(days[0]) if n == 1 else f"{day(days[0])} to {day(days[-1])}" if n else "none"
    return f"{span} ({n} trading day{'s' if n != 1 else ''})"


def _shown(x: float, digits: int) -> float:
    """x as it will print: a -0.001 that rounds to zero prints as 0, not -0."""
    return round(x, digits) + 0.0


def pct(x: float | None, digits: int = 2, signed: bool = True) -> str:
    if x is None:
        return DASH
    x = _shown(x * 100, digits) / 100
    return f"{x * 100:+,.{digits}f}%" if signed else f"{x * 100:,.{digits}f}%"


def usd(x: float | None, digits: int = 2) -> str:
    if x is None:
        return DASH
    x = _shown(x, digits)
    return f"-${-x:,.{digits}f}" if x < 0 else f"${x:,.{digits}f}"


def bps(x: float | None) -> str:
    return DASH if x is None else f"{_shown(x, 1):+,.1f} bps"


def number(x: Any, digits: int = 2) -> str:
    if x is None:
        return DASH
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return esc(x)
    return f"{x:,}" if isinstance(x, int) else f"{x:,.{digits}f}"


def metric(name: str, value: Any) -> str:
    if value is None:
        return DASH
    if name in PERCENT:
        return pct(value, signed=name in SIGNED)
    if name in USD:
        return usd(value)
    if name in BPS:
        return bps(value)
    if name == "turnover":
        return f"{value:,.2f}&times;"
    if name == "avg_holding_min":
        return f"{value:,.1f} min"
    return number(value)


def _row(cells: list[str], head: bool = False, cls: str = "") -> str:
    tag = "th" if head else "td"
    attr = f' class="{cls}"' if cls else ""
    return f"<tr{attr}>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def _table(head: list[str], rows: list[str], cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    head_row = _row([esc(h) for h in head], True)
    return f"<table{attr}><thead>{head_row}</thead><tbody>{''.join(rows)}</tbody></table>"


# -- the top of the page -----------------------------------------------------------------------------
def warning_banner(warning: dict[str, Any] | None) -> str:
    if not warning or not warning.get("small_sample"):
        return ""
    return f'<div class="warning" id="sample-warning"><b>&#9888; {esc(warning["message"])}</b></div>'


def header(report: dict[str, Any]) -> str:
    facts = {
        "days": days_text(report["days"]),
        "symbols": ", ".join(report["symbols"]),
        "capital": usd(report["capital"], 0),
        "replay": f"{report['ticks']:,} ticks in {report['seconds']} s ({report['ticks_per_s']:,}/s)",
        "orders": _orders(report["orders"]),
        "sentiment": _sentiment(report["sentiment"]),
        "benchmark": f"{report['benchmark']['symbol']}, {report['benchmark']['minutes']:,} minutes",
        "RL policy": _policy(report["policy"]),
    }
    return (
        '<table class="facts">'
        + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts.items())
        + "</table>"
    )


def _orders(o: dict[str, Any]) -> str:
    denied = sum(o["denied"].values())
    why = ", ".join(f"{code} {n}" for code, n in sorted(o["denied"].items()))
    return (
        f"{o['intents']} intents, {o['approved']} approved, {denied} denied{f' ({why})' if why else ''}; "
        f"{o['order_events']} order events; {o['fills']} fills; commissions {usd(o['commissions'])}"
    )


def _sentiment(s: dict[str, Any]) -> str:
    text = f"{s['headlines']} headlines, {s['scores']} scores"
    return f"{text} (not scored: {s['error']})" if s.get("error") else text


def _policy(p: dict[str, Any]) -> str:
    if not p.get("on"):
        return "off: QOS sizes and times entries by its rules"
    q = p.get("qos", {})
    text = (
        f"on, version {p.get('version')}: {q.get('proposals', 0)} proposals, "
        f"{q.get('entries_by_policy', 0)} entries, {q.get('entries_deferred_by_policy', 0)} deferred"
    )
    p99 = (p.get("inference_us") or {}).get("p99")
    if p99 is not None:
        text += f"; inference p99 {p99:,.0f} µs"
    if p.get("compared_with_rules"):
        text += "; compared with the same days by the rules alone (rules sizing)"
    return text


# -- metrics -------------------------------------------------------------------------------------------
def metrics_table(rows: dict[str, dict[str, Any]], warning: dict[str, Any] | None = None) -> str:
    """Strategy and baselines side by side; annualized figures say so, and say it loudly when
    the sample is small."""
    names = list(next(iter(rows.values())).keys())
    warning = warning or {}
    annualized = set(warning.get("annualized", ()))
    caveat = ""
    if warning.get("small_sample"):
        caveat = (
            f' <span class="small">&#9888; from {warning["days"]} day(s), {warning["trades"]} trade(s)</span>'
        )
    body = []
    for name in names:
        label = esc(LABELS.get(name, name.replace("_", " ")))
        cls = ""
        if name in annualized:
            label += ' <span class="note">annualized</span>' + caveat
            cls = "small-sample" if caveat else ""
        body.append(_row([label] + [metric(name, rows[k].get(name)) for k in rows], cls=cls))
    head = [""] + [k.replace("_", " ") for k in rows]
    return _table(head, body, "metrics")


def trade_summary(stats: dict[str, Any]) -> str:
    def ref(t: dict[str, Any] | None) -> str:
        return DASH if t is None else f"{usd(t['pnl'])} ({esc(t['symbol'])} {t['side']}, {esc(t['entry'])})"

    cells = {
        "round trips": number(stats["round_trips"]),
        "wins / losses": f"{stats['wins']} / {stats['losses']}",
        "average win": usd(stats["avg_win"]),
        "average loss": usd(stats["avg_loss"]),
        "average win / average loss": number(stats["win_loss_ratio"]),
        "best trade": ref(stats["best"]),
        "worst trade": ref(stats["worst"]),
    }
    return (
        '<table class="trade-stats">'
        + "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in cells.items())
        + "</table>"
    )


# -- the trade table ---------------------------------------------------------------------------------------
TRADE_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("symbol", lambda t: esc(t["symbol"])),
    ("side", lambda t: esc(t["side"])),
    ("shares", lambda t: number(t["quantity"], 0)),
    ("entry (NY)", lambda t: esc(t["entry_time"])),
    ("entry price", lambda t: number(t["entry_price"], 4)),
    ("exit (NY)", lambda t: esc(t["exit_time"]) + (" *" if t["open_at_end"] else "")),
    ("exit price", lambda t: number(t["exit_price"], 4)),
    ("P&L", lambda t: usd(t["pnl"])),
    ("P&L bps", lambda t: bps(t["pnl_bps"])),
    ("holding", lambda t: f"{t['holding_min']:,.1f} min"),
    ("entry reason", lambda t: esc(t["entry_reason"])),
    ("exit reason", lambda t: esc(t["exit_reason"])),
    (
        "slippage",
        lambda t: f"{usd(t['slippage'])} ({bps(t['slippage_bps'])})" if t["slippage"] is not None else DASH,
    ),
]


def trade_table(trades: list[dict[str, Any]], limit: int = TRADE_ROWS_SHOWN) -> str:
    if not trades:
        return "<p>No trades.</p>"
    rows = [
        _row([str(i)] + [cell(t) for _, cell in TRADE_COLUMNS], cls="win" if (t["pnl"] or 0) > 0 else "loss")
        for i, t in enumerate(trades[:limit], start=1)
    ]
    note = (
        f"<p>The first {limit} of {len(trades)} round trips; report.json has every one.</p>"
        if len(trades) > limit
        else ""
    )
    legend = (
        '<p class="note">Round trips first in first out per symbol (a partial close splits a lot); '
        "P&amp;L net of commissions, bps of the entry notional; slippage of both sides against "
        "the arrival mid (positive: paid; &ndash; where the order had no arrival price). "
        "* still open at the end, marked to the mid.</p>"
    )
    return _table(["#"] + [name for name, _ in TRADE_COLUMNS], rows, "trades") + note + legend


# -- P&L by symbol and by day, drawdowns ------------------------------------------------------------
def symbol_table(by_symbol: dict[str, dict[str, Any]]) -> str:
    rows = [
        _row(
            [
                esc(s),
                number(v["trades"]),
                number(v["wins"]),
                usd(v["pnl"]),
                bps(v["pnl_bps"]),
                usd(v["commission"]),
                usd(v["slippage"]),
            ]
        )
        for s, v in by_symbol.items()
    ]
    return _table(
        ["symbol", "round trips", "wins", "P&L", "P&L bps", "commissions", "slippage"], rows, "by-symbol"
    )


def day_table(by_day: list[dict[str, Any]]) -> str:
    rows = [_row([esc(d["day"]), usd(d["pnl"]), pct(d["return"], 3), number(d["trades"])]) for d in by_day]
    return _table(["day (NY)", "P&L", "return", "round trips closed"], rows, "by-day")


def drawdown_table(drawdowns: list[dict[str, Any]]) -> str:
    if not drawdowns:
        return "<p>No drawdown: equity never fell below a previous high.</p>"
    rows = [
        _row(
            [
                pct(d["depth"], 3),
                usd(d["depth_usd"]),
                esc(d["peak"]),
                esc(d["trough"]),
                esc(d["recovery"] or "not recovered"),
                f"{d['minutes']:,.0f} min",
            ]
        )
        for d in drawdowns
    ]
    return _table(
        ["depth", "USD", "peak (NY)", "trough (NY)", "recovered (NY)", "peak to recovery"], rows, "drawdowns"
    )


# -- provenance ------------------------------------------------------------------------------------
def provenance_block(p: dict[str, Any]) -> str:
    commit = p["commit"] + (" (with uncommitted changes)" if p.get("dirty") else "")
    span = p["data"]
    models = p["models"]
    fast = [
        f"{h}: {m['version'] or 'none'} ({m['engine']}, {m['scored'] or 0:,} scored)"
        + (
            f", QUARANTINED at {m['quarantined_at'] or 'an unknown time'} New York"
            if m["quarantined"]
            else ""
        )
        for h, m in models["fastlane"].items()
    ]
    costs = [f"{k.replace('_', ' ')}: {v}" for k, v in p["costs"].items()]
    facts = {
        "commit": commit,
        "config (sha256 of the effective settings, secrets masked)": p["config_sha256"],
        "fast-lane models": fast or ["none"],
        "RL policy": models["policy"] or "off",
        "sentiment model": models["sentiment"] or "none",
        "data": f"{span['first_minute']} to {span['last_minute']} New York, "
        f"{days_text(span['days'])}, from {span['source']}",
        "cost model": costs,
    }
    cells = {k: "<br>".join(esc(x) for x in v) if isinstance(v, list) else esc(v) for k, v in facts.items()}
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in cells.items())
    return f'<table class="provenance">{rows}</table>'


def conventions(items: dict[str, str]) -> str:
    return "<ul>" + "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in items.items()) + "</ul>"
