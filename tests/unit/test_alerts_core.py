"""The alerts service's decisions: severity floors per sink, critical always out, a burst of the
same alert folded into one message with its count, repeats in the window into one more."""

from __future__ import annotations

from libs.common.clock import SimClock
from libs.common.config import AlertsSettings
from proto.alerts import Alert
from proto.units import SECOND_NS
from services.alerts.core import BURST_S, AlertsCore

T0 = 1_381_254_000_000_000_000  # 2013-10-08 13:40 New York
SINKS = ("telegram", "email")


def alert(n: int, severity: str = "warning", dedupe: str = "drift:60m", **labels: str) -> Alert:
    return Alert(
        ts_event=T0 + n,
        ts_init=T0 + n,
        alert_id=f"a-{n}",
        severity=severity,  # type: ignore[arg-type]
        source="fastlane",
        title="fast-lane model 60m quarantined: input drift",
        dedupe=dedupe,
        labels={"horizon": "60m", **labels},
    )


def core(**cfg: object) -> tuple[AlertsCore, SimClock]:
    clock = SimClock(T0)
    return AlertsCore(AlertsSettings(**cfg), clock, SINKS), clock  # type: ignore[arg-type]


def test_a_burst_of_the_same_alert_is_one_message_with_its_count() -> None:
    c, clock = core()
    out = [o for n in range(100) for o in c.take(alert(n), ref=n)]
    assert out == []  # held for the burst
    clock.advance(int(BURST_S * SECOND_NS))
    (message,) = c.due()
    assert message.sinks == SINKS and message.refs == list(range(100))
    assert message.message.count == 100
    assert message.message.headline() == (
        "[WARNING] fastlane: fast-lane model 60m quarantined: input drift (x100 in 2 s)"
    )
    assert c.stats["folded"] == 99 and c.due() == []


def test_repeats_later_in_the_window_go_out_once_when_it_closes() -> None:
    c, clock = core(dedupe_window_s=300)
    c.take(alert(0), ref=0)
    clock.advance(int(BURST_S * SECOND_NS))
    assert [o.message.count for o in c.due()] == [1]
    for n in range(1, 38):
        clock.advance(5 * SECOND_NS)
        assert c.take(alert(n), ref=n) == []
    clock.set(T0 + 300 * SECOND_NS)
    (later,) = c.due()
    assert later.message.count == 37 and later.refs == list(range(1, 38))
    assert "(x37 in 5 min)" in later.message.headline()
    # the window is over: the next one opens a new window, held only for its burst
    clock.advance(SECOND_NS)
    c.take(alert(99), ref=99)
    clock.advance(int(BURST_S * SECOND_NS))
    assert [o.refs for o in c.due()] == [[99]]


def test_critical_goes_out_at_once_to_every_sink_whatever_the_floors() -> None:
    c, _ = core(min_severity={"telegram": "critical", "email": "critical"})
    (out,) = c.take(alert(0, "critical", dedupe="broker"), ref="r")
    assert out.sinks == SINKS and out.message.severity == "critical" and out.refs == ["r"]


def test_each_sink_has_its_floor_and_below_every_floor_is_acknowledged_at_once() -> None:
    c, clock = core(min_severity={"telegram": "info", "email": "critical"})
    (ignored,) = core(min_severity={"telegram": "critical", "email": "critical"})[0].take(alert(0), "x")
    assert ignored.sinks == () and ignored.refs == ["x"]  # nothing to deliver: acknowledged now
    c.take(alert(1, "info", dedupe="note"), ref="i")
    clock.advance(int(BURST_S * SECOND_NS))
    (only_telegram,) = c.due()
    assert only_telegram.sinks == ("telegram",)


def test_different_keys_do_not_fold_and_stopping_flushes_what_is_held() -> None:
    c, _ = core()
    c.take(alert(0, dedupe="drift:5m"), ref=0)
    c.take(alert(1, dedupe="drift:60m"), ref=1)
    held = c.flush_all()
    assert sorted(o.message.key for o in held) == ["drift:5m", "drift:60m"]
    assert c.produced == {"fastlane/warning": 2}


def test_a_muted_key_is_acknowledged_without_a_message_until_its_mute_ends() -> None:
    c, clock = core()
    c.mute("drift:60m", T0 + 60 * SECOND_NS)
    (quiet,) = c.take(alert(0), ref="m")
    assert quiet.sinks == () and quiet.refs == ["m"]  # acknowledged now, delivered nowhere
    c.take(alert(1, dedupe="drift:5m"), ref="other")  # other keys are not muted
    clock.advance(int(BURST_S * SECOND_NS))
    assert [o.message.key for o in c.due()] == ["drift:5m"]
    assert c.stats["muted"] == 1 and c.mutes() == {"drift:60m": T0 + 60 * SECOND_NS}
    clock.set(T0 + 60 * SECOND_NS)  # the mute is over
    assert c.mutes() == {}
    c.take(alert(2), ref="after")
    clock.advance(int(BURST_S * SECOND_NS))
    assert [o.refs for o in c.due()] == [["after"]]


def test_a_critical_alert_is_never_muted_and_a_past_time_lifts_a_mute() -> None:
    c, _ = core()
    c.mute("broker", T0 + 3600 * SECOND_NS)
    (out,) = c.take(alert(0, "critical", dedupe="broker"), ref="c")
    assert out.sinks == SINKS and c.stats["muted"] == 0
    c.mute("broker", T0)
    assert c.mutes() == {}
    # without a dedupe key the source and title are the key
    c.mute("fastlane:fast-lane model 60m quarantined: input drift", T0 + SECOND_NS)
    (quiet,) = c.take(alert(1, dedupe=""), ref="k")
    assert quiet.sinks == () and c.stats["muted"] == 1


def test_a_repeat_critical_in_the_window_goes_out_at_once_too() -> None:
    c, clock = core()
    (first,) = c.take(alert(0, "critical", dedupe="absent:md"), ref=0)
    clock.advance(60 * SECOND_NS)
    (again,) = c.take(alert(1, "critical", dedupe="absent:md"), ref=1)
    assert first.refs == [0] and again.refs == [1]  # not held to the window's end
