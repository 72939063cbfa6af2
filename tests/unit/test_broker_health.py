"""The broker link as events: the gate hears of a lost link at once and people only past its
expected outage; a reconciliation mismatch is EMERGENCY until an operator resumes."""

from __future__ import annotations

from libs.common.clock import SimClock
from libs.common.ib.windows import parse_windows
from proto.alerts import Alert
from proto.control import Control
from proto.execution import BrokerStatus
from services.execution.health import BrokerHealth, BrokerWatch
from tests.kit import cores

T0_S = 1_381_240_800.0  # 2013-10-08 10:00 New York, a Tuesday: outside IB's reset windows


def health(connected: bool, done: int, match: bool | None = True) -> BrokerHealth:
    return BrokerHealth(connected, done, match, {"IBM": 100.0}, {"IBM": 100.0 if match else 50.0})


def kinds(events: list[object]) -> list[str]:
    return [e.state if isinstance(e, BrokerStatus) else f"alert:{e.severity}" for e in events]  # type: ignore[attr-defined]


def test_a_lost_link_is_told_to_the_gate_at_once_and_to_people_past_its_expected_outage() -> None:
    watch = BrokerWatch("ib:1", parse_windows([]), max_disconnect_s=60)
    assert kinds(watch.observe(health(False, 0), T0_S)) == []  # still starting: nothing to say
    assert kinds(watch.observe(health(True, 1), T0_S + 1)) == ["reconciled"]
    assert kinds(watch.observe(health(False, 1), T0_S + 2)) == ["disconnected"]
    assert kinds(watch.observe(health(False, 1), T0_S + 50)) == []  # within max_disconnect_s
    (page,) = watch.observe(health(False, 1), T0_S + 63)
    assert isinstance(page, Alert) and page.severity == "critical" and "lost for 61 s" in page.title
    assert watch.observe(health(True, 1), T0_S + 70) == []  # connected, not yet reconciled
    back = watch.observe(health(True, 2), T0_S + 71)
    assert kinds(back) == ["reconciled", "alert:warning"] and "back after 69 s" in back[1].title  # type: ignore[attr-defined]


def test_a_mismatch_is_critical_and_emergency_at_the_gate_until_an_operator_resumes() -> None:
    watch = BrokerWatch("ib:1", parse_windows([]), max_disconnect_s=60)
    watch.observe(health(True, 1), T0_S)
    mismatch = watch.observe(health(True, 2, match=False), T0_S + 60)
    assert kinds(mismatch) == ["mismatch", "alert:critical"]
    assert "ours {'IBM': 100.0} vs the broker's {'IBM': 50.0}" in mismatch[1].title  # type: ignore[attr-defined]

    gate = cores.risk(SimClock(int(T0_S * 1e9)))
    gate.on_event(mismatch[0])  # type: ignore[arg-type]
    assert gate.mode == "EMERGENCY" and gate.mode_reason.startswith("reconciliation mismatch")
    # the link coming back reconciled does not clear it: only an operator does
    gate.on_event(watch.observe(health(True, 3), T0_S + 120)[0])  # type: ignore[arg-type]
    assert gate.mode == "EMERGENCY"
    ts = int(T0_S * 1e9)
    gate.on_event(Control(ts_event=ts, ts_init=ts, command_id="r", command="resume", issued_by="ops"))
    assert gate.mode == "OBSERVE"


def test_a_lost_link_degrades_the_gate_until_it_is_back_and_reconciled() -> None:
    gate = cores.risk(SimClock(int(T0_S * 1e9)))
    down = BrokerStatus(ts_event=1, ts_init=1, broker="ib:1", state="disconnected", seq=1)
    gate.on_event(down)
    assert gate.mode == "DEGRADED" and gate.mode_reason.startswith("broker link down")
    gate.on_event(BrokerStatus(ts_event=2, ts_init=2, broker="ib:1", state="reconciled", seq=2))
    assert gate.mode == "LIVE"


def test_a_gate_restarted_after_a_mismatch_stays_in_emergency() -> None:
    gate = cores.risk(SimClock(int(T0_S * 1e9)))
    gate.on_event(BrokerStatus(ts_event=1, ts_init=1, broker="ib:1", state="mismatch", seq=1, detail="x"))
    state = gate.state(int(T0_S * 1e9))
    after = cores.risk(SimClock(int(T0_S * 1e9)))
    after.restore(None, state)
    assert after.mode == "EMERGENCY" and after.mode_reason.startswith("reconciliation mismatch")
