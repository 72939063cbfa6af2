"""The sample day's trading as the fleet made it before the issue-16 reshaping (commit 2e11967,
tests/fixtures/golden/): intents, orders and fills of a backtest of 2013-10-08 (IBM, BAC, the
shipped headlines), the whole day and the morning to 10:30. A reshaping must leave them unchanged;
the lockstep parity test holds the fleet to the same morning. Deliberate changes of behaviour
since are applied to the record by name (``expected``), each with the issue that made it.

Runs compared with it serve the sentiment model with fp32 ONNX (``GOLDEN_SENTIMENT``), the engine
that runs on every x86 CPU: int8 is served only where it reproduces its probes (AVX-512 VNNI
machines, say), and its scores, close as they are, move a decision of the day."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import msgspec

from proto.execution import Fill, OrderEvent
from proto.orders import OrderIntent

GOLDEN_SENTIMENT = {"engine": "onnx"}
GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "sample-day-2e11967.json"


# What a model computed on the way to a decision: the only floats compared with a tolerance.
COMPUTED = frozenset({"components", "score"})


def differences(now: Any, before: Any, where: str = "", computed: bool = False) -> list[str]:
    """Where ``now`` departs from the golden record: decisions (sides, sizes, prices, ids, times)
    exactly, what the models computed (an intent's QOS components and score) within 1e-6
    relative. The last bits of a sentiment probability differ between CPUs (AVX2 and AVX-512
    kernels sum in other orders), so an exact comparison of those would test the machine."""
    if (
        computed
        and isinstance(now, float)
        and isinstance(before, float | int)
        and not isinstance(before, bool)
    ):
        return (
            []
            if math.isclose(now, before, rel_tol=1e-6, abs_tol=1e-9)
            else [f"{where}: {now!r} != {before!r}"]
        )
    if isinstance(now, dict) and isinstance(before, dict):
        if now.keys() != before.keys():
            return [f"{where}: keys {sorted(now)} != {sorted(before)}"]
        return [
            d for k in now for d in differences(now[k], before[k], f"{where}.{k}", computed or k in COMPUTED)
        ]
    if isinstance(now, list) and isinstance(before, list):
        if len(now) != len(before):
            return [f"{where}: {len(now)} items != {len(before)}"]
        pairs = enumerate(zip(now, before, strict=True))
        return [d for i, (a, b) in pairs for d in differences(a, b, f"{where}[{i}]", computed)]
    return [] if now == before else [f"{where}: {now!r} != {before!r}"]


# Issue 23: the drift monitor compares like with like (models/fastlane/drift.py). On the sample
# day, held out from the shipped models' training days, none is quarantined any more (all four were at
# 13:40), so the afternoon trades on the models: the day's record since is the one below, made by
# the run of that change; up to 13:40 it is 2e11967's decision for decision (``before_quarantine``
# checks it). The morning is unchanged.
GOLDEN_DAY = GOLDEN.parent / "sample-day-issue23.json"
QUARANTINED_AT_NS = 1381254000000000000  # 2013-10-08 13:40 New York


def expected(window: str) -> dict[str, Any]:
    """``window``: "day" or "morning": the record with the deliberate changes since 2e11967."""
    if window == "day":
        return dict(json.loads(GOLDEN_DAY.read_text())["day"])
    return dict(json.loads(GOLDEN.read_text())[window])


def before_quarantine(record: dict[str, Any]) -> dict[str, Any]:
    """The intents, orders and fills of a day's record before 13:40 (when the old drift monitor
    quarantined every model of the sample day)."""
    early = QUARANTINED_AT_NS
    # PENDING_SUBMIT rows carry no market time: an order counts by its other rows' times
    ids = {o["client_order_id"] for o in record["orders"] if o.get("ts_event", early) < early}
    return {
        "intents": [i for i in record["intents"] if i["ts_event"] < early],
        "orders": [
            o for o in record["orders"] if o["client_order_id"] in ids and o.get("ts_event", 0) < early
        ],
        "fills": [f for f in record["fills"] if f["ts_event"] < early],
    }


def expected_2e11967_day() -> dict[str, Any]:
    """The day as it was before issue 23: 2e11967 with issue 18's denial."""
    return _denied_when_every_model_is_quarantined(dict(json.loads(GOLDEN.read_text())["day"]))


# Issue 18: every fast-lane model quarantined holds the risk gate in OBSERVE (entries denied,
# exits pass). On the sample day all four are quarantined at 13:40; the 14:02 IBM entry, made on
# sentiment alone (its only QOS component), is denied since: its orders, fills and exit are gone.
QUARANTINE_DENIED = "qos<run>-IBM-1381258920000000000-enter"
QUARANTINE_UNMADE_EXIT = "qos<run>-IBM-1381259160000000000-exit"


def _denied_when_every_model_is_quarantined(record: dict[str, Any]) -> dict[str, Any]:
    gone = {f"intent {QUARANTINE_DENIED}", f"intent {QUARANTINE_UNMADE_EXIT}"}
    orders = {o["client_order_id"] for o in record["orders"] if o["reason"] in gone}
    assert len(orders) == 2, "the golden record no longer holds the round trip this change removes"
    return {
        **record,
        "intents": [i for i in record["intents"] if i["intent_id"] != QUARANTINE_UNMADE_EXIT],
        "orders": [o for o in record["orders"] if o["client_order_id"] not in orders],
        "fills": [f for f in record["fills"] if f["client_order_id"] not in orders],
        "denials": {**record["denials"], "MODE_OBSERVE": 1},
    }


def normalized(orders: list[OrderEvent], fills: list[Fill]) -> dict[str, list[dict[str, Any]]]:
    """Orders and fills with what differs by construction taken out: ``ts_init`` (when a process
    made the event), the run's namespace in ids (renumbered by first appearance), and the
    time of PENDING_SUBMIT (the gateway's clock when it took the approval: wall time in the fleet).
    Everything decided (symbol, side, sizes, prices, statuses, market times) stays."""
    ids: dict[str, str] = {}

    def rename(value: str, kind: str) -> str:
        if not value:
            return value
        return ids.setdefault(f"{kind}:{value}", f"{kind}{sum(k.startswith(kind) for k in ids) + 1}")

    out: dict[str, list[dict[str, Any]]] = {"orders": [], "fills": []}
    for o in orders:
        row = msgspec.structs.asdict(o)
        row.pop("ts_init")
        if row["status"] == "PENDING_SUBMIT":
            row.pop("ts_event")
        row["client_order_id"] = rename(row["client_order_id"], "order")
        row["broker_order_id"] = rename(row["broker_order_id"], "child")
        row["reason"] = re.sub(r"\bqos\d+-", "qos<run>-", row["reason"])  # the intent id it carries
        out["orders"].append(row)
    for f in fills:
        row = msgspec.structs.asdict(f)
        row.pop("ts_init")
        row["client_order_id"] = rename(row["client_order_id"], "order")
        row["exec_id"] = rename(row["exec_id"], "exec")
        row["order_ref"] = rename(row["order_ref"], "ref")
        out["fills"].append(row)
    return out


def normalized_intents(intents: list[OrderIntent]) -> list[dict[str, Any]]:
    """Intents without ``ts_init`` and with the run's namespace out of their ids."""
    rows = []
    for i in intents:
        row = msgspec.structs.asdict(i)
        row.pop("ts_init")
        row["intent_id"] = re.sub(r"^(qos|exit)\d+-", r"\1<run>-", row["intent_id"])
        rows.append(row)
    return rows


def trading(
    intents: list[OrderIntent], orders: list[OrderEvent], fills: list[Fill], denials: dict[str, int]
) -> dict[str, Any]:
    """What the golden file holds, made from a run's events (JSON round-tripped, as stored)."""
    made = {**normalized(orders, fills), "intents": normalized_intents(intents), "denials": denials}
    return dict(json.loads(json.dumps(made, sort_keys=True)))
