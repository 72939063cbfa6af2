"""A service that stops heart-beating is a critical alert, once; its return a recovered one; a
clean stop is not an absence."""

from __future__ import annotations

from libs.common.clock import SimClock
from proto.control import Heartbeat
from proto.units import SECOND_NS
from services.alerts.absence import AbsenceWatch

T0 = 1_764_000_000_000_000_000


def beat(service: str, instance: int = 1, seq: int = 1, stopping: bool = False) -> Heartbeat:
    return Heartbeat(ts_event=T0, ts_init=T0, service=service, instance=instance, seq=seq, stopping=stopping)


def test_silence_past_the_limit_is_one_critical_alert_then_a_recovered_one() -> None:
    clock = SimClock(T0)
    watch = AbsenceWatch(10.0, clock)
    assert watch.on_heartbeat(beat("md-gateway")) == []
    clock.advance(10 * SECOND_NS)
    assert watch.check() == []  # at the limit, not past it
    clock.advance(SECOND_NS)
    (absent,) = watch.check()
    assert absent.severity == "critical" and absent.dedupe == "absent:md-gateway"
    assert absent.title.startswith("md-gateway silent: no heartbeat since ")
    clock.advance(30 * SECOND_NS)
    assert watch.check() == []  # said once
    (back,) = watch.on_heartbeat(beat("md-gateway", instance=2))
    assert back.severity == "warning" and back.dedupe == "recovered:md-gateway"
    assert back.title == "md-gateway is back after 41 s of silence (restarted)"
    assert watch.on_heartbeat(beat("md-gateway", instance=2, seq=2)) == []


def test_a_clean_stop_is_not_an_absence_and_unknown_services_are_not_expected() -> None:
    clock = SimClock(T0)
    watch = AbsenceWatch(10.0, clock)
    watch.on_heartbeat(beat("risk"))
    watch.on_heartbeat(beat("risk", seq=2, stopping=True))
    clock.advance(60 * SECOND_NS)
    assert watch.check() == []


def test_each_replica_of_a_partitioned_service_is_watched_on_its_own() -> None:
    clock = SimClock(T0)
    watch = AbsenceWatch(10.0, clock)
    a = Heartbeat(ts_event=T0, ts_init=T0, service="features", instance=1, seq=1, replica="0/2")
    b = Heartbeat(ts_event=T0, ts_init=T0, service="features", instance=2, seq=1, replica="1/2")
    watch.on_heartbeat(a)
    watch.on_heartbeat(b)
    clock.advance(11 * SECOND_NS)
    watch.on_heartbeat(b)  # replica 1 lives on; replica 0 died
    (absent,) = watch.check()
    assert absent.title.startswith("features[0/2] silent")
