"""What `tradefleet up` shows a person: the live view while it runs and a short summary at the end.

Pure functions of the services' /status bodies and of the run's JSON summary, so a test can
check what a reader sees without starting a fleet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from libs.common.markettime import ny_text, parse_duration_ns

# Quotes the gateway drops as a matter of course, not because the data is bad: a locked book
# (bid == ask) is ordinary in a consolidated feed and cannot be traded against at a spread.
ORDINARY_DROPS = frozenset({"locked"})


def ny_clock(ns: int | None) -> str:
    if not ns:
        return "--:--:--"
    return ny_text(ns, "%Y-%m-%d %H:%M:%S ET")


def split_drops(bad: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """(ordinary drops, bad data) by reason."""
    ordinary = {k: v for k, v in bad.items() if k in ORDINARY_DROPS and v}
    problems = {k: v for k, v in bad.items() if k not in ORDINARY_DROPS and v}
    return ordinary, problems


def by_reason(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"


def usd(x: float | None) -> str:
    return "-" if x is None else f"{x:+,.2f}"


# -- the live view ----------------------------------------------------------------------------------
def live_view(statuses: dict[str, dict[str, Any]], pids: dict[str, int]) -> Group:
    apps = {n: dict(s.get("app", {})) for n, s in statuses.items()}
    return Group(_headline(apps), _book_table(apps), _service_table(statuses, pids))


def _headline(apps: dict[str, dict[str, Any]]) -> Text:
    gw, risk, fast = apps.get("md-gateway", {}), apps.get("risk", {}), apps.get("fastlane", {})
    ordinary, problems = split_drops(gw.get("bad_ticks", {}))
    models = " ".join(
        f"{h}:{'QUARANTINED' if m.get('quarantined') else 'ok'}"
        for h, m in sorted(fast.get("models", {}).items())
    )
    mode = risk.get("mode", "?")
    lines = [
        f"market {ny_clock(gw.get('market_ns'))}   risk {mode}"
        + (f" ({risk.get('mode_reason')})" if mode != "LIVE" and risk.get("mode_reason") else "")
        + f"   day P&L {usd(risk.get('day_pnl'))}",
        f"models {models or '-'}",
        f"feed dropped: {by_reason(ordinary)} (ordinary); bad data: {by_reason(problems)}",
    ]
    return Text("\n".join(lines))


def _book_table(apps: dict[str, dict[str, Any]]) -> Table:
    risk, execution = apps.get("risk", {}), apps.get("execution", {})
    book: dict[str, dict[str, float]] = risk.get("book", {})
    orders: dict[str, int] = execution.get("orders_by_symbol", {})
    table = Table(title="positions", expand=False)
    for col in ("symbol", "position", "avg", "mark", "realized", "unrealized", "orders"):
        table.add_column(col, justify="left" if col == "symbol" else "right")
    for symbol in sorted(set(book) | set(orders)):
        p = book.get(symbol, {})
        table.add_row(
            symbol,
            f"{p.get('quantity', 0):+g}",
            f"{p.get('avg_price', 0):.2f}" if p.get("quantity") else "",
            f"{p.get('mark', 0):.2f}" if p.get("mark") else "",
            usd(p.get("realized", 0.0)),
            usd(p.get("unrealized", 0.0)),
            str(orders.get(symbol, 0)),
        )
    table.caption = (
        f"orders {execution.get('orders', 0)} events, fills {execution.get('fills', 0)}, "
        f"open {execution.get('open_orders', 0)}; approved {risk.get('approved', 0)}, "
        f"denied {risk.get('denied', 0)}"
    )
    return table


def _service_table(statuses: dict[str, dict[str, Any]], pids: dict[str, int]) -> Table:
    table = Table(title="services", expand=False)
    for col in ("service", "pid", "ready", "in", "out", "stored", "dropped"):
        table.add_column(col)
    for name, pid in pids.items():
        st = statuses.get(name, {})
        app = st.get("app", {})
        table.add_row(
            name,
            str(pid),
            "yes" if st.get("ready") else "no",
            _count(consumed(name, app)),
            _count(published(name, app)),
            _count(sum(app.get("rows_stored", {}).values())),
            _count(sum(st.get("dropped", {}).values())),
        )
    return table


def _count(n: int) -> str:
    return f"{n:,}" if n else ""


def consumed(name: str, app: dict[str, Any]) -> int:
    if name == "md-gateway":
        return int(app.get("stats", {}).get("records", 0))
    if name == "fastlane":
        return int(app.get("vectors_in", 0))
    if name == "qos":
        return int(app.get("predictions_in", 0))
    if name == "sentiment":
        return int(app.get("counters", {}).get("received", 0))
    return 0


def published(name: str, app: dict[str, Any]) -> int:
    """What a service put on the bus, from its own /status."""
    if name == "features":
        return int(sum(app.get("vectors", {}).values()))
    if name == "fastlane":
        return int(app.get("predictions", 0))
    if name == "qos":
        return int(app.get("scores", 0) + app.get("intents", 0))
    if name == "risk":
        return int(app.get("approved", 0) + app.get("denied", 0))
    if name == "execution":
        return int(app.get("orders", 0) + app.get("fills", 0))
    if name == "tca":
        return int(app.get("reports", 0))
    if name == "sentiment":
        return int(app.get("counters", {}).get("published", 0))
    stats = app.get("stats", {})
    return int(stats.get("quotes", 0) + stats.get("trades", 0) + stats.get("bars", 0))


def _horizon_ns(horizon: str) -> int:
    try:
        return parse_duration_ns(horizon)
    except ValueError:
        return 0


# -- the end of a run -------------------------------------------------------------------------------
def fleet_summary_lines(s: dict[str, Any], json_path: Path | None) -> list[str]:
    """A few lines a trader reads at the end of `up`; the JSON has everything."""
    replay = s.get("replay", {})
    date = str(replay.get("date", "?"))
    if len(date) == 8 and date.isdigit():
        date = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    what = f"{date} ({', '.join(replay.get('symbols', []))})" if s.get("provider") != "ib" else "IB session"
    how = {"finished": "finished", "duration": "stopped at --duration"}.get(s.get("ended", ""), "ended")
    verdict = "OK" if s.get("ok") else "FAILED"
    head = f"tradefleet up: {verdict}: {what} {how} after {s.get('elapsed_s', 0):.1f} s"
    if s.get("market_time_end"):
        head += f", market time {s['market_time_end']}"
    lines = [head]
    if s.get("error"):
        lines.append(f"  error     {s['error']}")
    t = s.get("trading", {})
    pnl = f"P&L {usd(t.get('day_pnl'))} USD (realized {usd(t.get('realized_pnl'))})"
    if t.get("day_pnl") is None:
        pnl = f"realized P&L {usd(t.get('realized_pnl'))} USD"
    lines.append(
        f"  trading   {pnl}; {t.get('fills', 0)} fills of "
        f"{t.get('orders_sent', 0)} orders; risk approved {t.get('approved', 0)}, denied "
        f"{t.get('denied', 0)}" + (f" ({by_reason(t.get('denials_by_code', {}))})" if t.get("denied") else "")
    )
    held = {k: v for k, v in (t.get("positions_at_end") or {}).items() if v}
    lines.append(
        "  positions "
        + (", ".join(f"{k} {v:+g}" for k, v in sorted(held.items())) if held else "flat at the end")
        + f"; risk mode {t.get('risk_mode') or '?'}"
    )
    if t.get("tca_reports"):
        lines.append(
            f"  costs     {t.get('cost_bps_all_in') or 0:.2f} bps all-in per order over "
            f"{t['tca_reports']} orders; {t.get('slippage_alerts', 0)} slippage alerts"
        )
    models = s.get("signals", {}).get("models", {})
    if models:
        quarantined = sorted((h for h, m in models.items() if m.get("quarantined")), key=_horizon_ns)
        engines = sorted({str(m.get("engine")) for m in models.values()})
        lines.append(
            f"  models    {len(models)} horizons on {'/'.join(engines)}"
            + (f"; quarantined: {', '.join(quarantined)}" if quarantined else "; none quarantined")
        )
    alerts = s.get("alerts", {})
    lines.append(
        f"  alerts    {alerts.get('count', 0)}"
        + (f" ({by_reason(alerts.get('by_severity', {}))})" if alerts.get("count") else "")
    )
    if alerts.get("sinks"):
        sent = ", ".join(f"{k} {v}" for k, v in sorted(alerts.get("delivered", {}).items())) or "none"
        failed = sum(alerts.get("failed", {}).values())
        lines.append(f"            messages delivered: {sent}" + (f"; {failed} failed" if failed else ""))
    elif alerts.get("count"):
        lines.append("            no sink configured (alerts.telegram / alerts.email): nobody was told")
    lines += [f"            {a}" for a in alerts.get("first", [])[:5]]
    ordinary, problems = split_drops(s.get("bad_ticks", {}))
    lost = s.get("md_rows_lost", 0)
    dropped = sum(sum(d.values()) for d in s.get("dropped_messages", {}).values())
    lines.append(
        f"  data      {s.get('ticks_replayed', 0):,} ticks; {lost:,} market-data rows lost; "
        f"{dropped:,} messages dropped by services"
    )
    lines.append(f"  feed      dropped {by_reason(ordinary)} (ordinary); bad data: {by_reason(problems)}")
    if json_path is not None:
        lines.append(f"  details   {json_path} (JSON)")
    else:
        lines.append("  details   tradefleet up --json, or --summary FILE")
    return lines


def backtest_summary_lines(s: dict[str, Any]) -> list[str]:
    """What `tradefleet backtest` prints: the headline figures, the sample-size warning first
    when it applies, and where the tearsheet is."""
    days = [f"{d[:4]}-{d[4:6]}-{d[6:]}" if len(d) == 8 else d for d in s.get("days", [])]
    span = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]} ({len(days)} days)" if days else "?"
    o = s.get("orders", {})
    lines = [f"backtest: {span}, {s.get('ticks_per_s') or 0:,} ticks/s"]
    if s.get("warning"):
        lines.append(f"  WARNING   {s['warning']}")
    for name in ("strategy", "rules_sizing"):
        if name in s:
            lines.append(f"  {name.replace('_', ' '):<9} {_metrics_line(s[name])}")
    denied = sum((o.get("denied") or {}).values())
    lines.append(
        f"  orders    {o.get('intents', 0)} intents, {o.get('approved', 0)} approved, {denied} denied, "
        f"{o.get('fills', 0)} fills, commissions {o.get('commissions') or 0:,.2f} USD"
    )
    lines.append(f"  report    {s.get('report')} (tearsheet; --json for these figures as JSON)")
    return lines


def _metrics_line(m: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:+.3f}%"

    hit, sharpe = m.get("hit_rate"), m.get("sharpe")  # None: undefined (no trade, no variance)
    return (
        f"total return {pct(m.get('total_return'))}, max drawdown {pct(m.get('max_drawdown'))}, "
        f"{m.get('trades', 0)} trades, hit rate {'-' if hit is None else f'{100 * hit:.0f}%'}, "
        f"Sharpe {'-' if sharpe is None else f'{sharpe:.2f}'} (annualized)"
    )
