"""The scheduled retrain's word to people: one alert naming what the promotion gate promoted or
refused, and why (`tradefleet train fastlane|policy --alert`, run by the k8s CronJobs and the
compose `retrain` profile).

A run that promoted something is ``info``; one that promoted nothing is a ``warning`` (the gate
did its job, but the fleet keeps trading older models, which someone should know); a run that
failed is a ``warning`` naming the error. The alert is published as the ``trainer`` NATS user
(``nats.nkey_seed_file``), which may publish alerts and nothing else.
"""

from __future__ import annotations

import time
from typing import Any

from proto.alerts import Alert, Severity


def _alert(kind: str, severity: Severity, title: str, body: str, labels: dict[str, str]) -> Alert:
    now = time.time_ns()
    return Alert(
        ts_event=now,
        ts_init=now,
        alert_id=f"retrain-{kind}-{now}",
        severity=severity,
        source=f"retrain-{kind}",
        title=title,
        body=body,
        dedupe=f"retrain:{kind}:{now}",
        labels={"kind": kind, **labels},
    )


def fastlane_alert(result: dict[str, Any]) -> Alert:
    """One line per horizon: promoted (which version, over which) or refused, with the gate's
    reasons and the out-of-fold figures it judged on."""
    from models.fastlane.train import verdict_text

    promoted: list[str] = []
    refused: list[str] = []
    lines: list[str] = []
    for r in result["results"]:
        verdict, s = r["promotion"], r["summary"]
        (promoted if verdict["promoted"] else refused).append(r["horizon"])
        was = verdict.get("previous_active") or "none"
        lines.append(
            f"{r['horizon']} {r['version']} (active before: {was}): {verdict_text(verdict)}. "
            f"Out of fold: AUC {s['mean_auc']:.3f}, log loss {s['mean_log_loss']:.4f} "
            f"(base rate {s['mean_base_log_loss']:.4f}), {r['rows']} rows."
        )
    days = result.get("days")
    span = f" on {len(days)} day(s), {min(days)}..{max(days)}" if days else ""
    lines.append(
        f"Data: {result['source']}{span}; {result['vectors']} vectors. Report: {result['report_html']}"
    )
    return _alert(
        "fastlane",
        "info" if promoted else "warning",
        f"fastlane retrain: {_counted(promoted, refused)}",
        "\n".join(lines),
        {"promoted": ",".join(promoted), "refused": ",".join(refused)},
    )


def policy_alert(result: dict[str, Any]) -> Alert:
    ev, verdict = result["evaluation"], result["promotion"]
    promoted = bool(verdict["promoted"])
    body = (
        f"{result['version']}: {'promoted' if promoted else 'refused'}: {verdict['why']}.\n"
        f"Held-out days: policy {ev['policy']}, rules {ev['rules']}.\nReport: {result['report_html']}"
    )
    return _alert(
        "policy",
        "info" if promoted else "warning",
        f"policy retrain: {'promoted ' + result['version'] if promoted else 'refused'}",
        body,
        {"promoted": result["version"] if promoted else "", "refused": "" if promoted else result["version"]},
    )


def failure_alert(kind: str, error: str) -> Alert:
    return _alert(
        kind,
        "warning",
        f"{kind} retrain failed: nothing was trained or promoted",
        f"{error}\nThe active models are unchanged.",
        {"failed": "true"},
    )


def _counted(promoted: list[str], refused: list[str]) -> str:
    parts = []
    if promoted:
        parts.append("promoted " + ", ".join(promoted))
    if refused:
        parts.append("refused " + ", ".join(refused))
    return "; ".join(parts) or "nothing trained"
